"""The ensemble's default variants and augmentation presets (trainer.config's `ensemble` tables)."""

# ultralytics hyperparameters an augmentation preset may set, with their valid range.
AUGMENT_RANGES = {"hsv_h": (0.0, 1.0), "hsv_s": (0.0, 1.0), "hsv_v": (0.0, 1.0), "degrees": (0.0, 180.0),
                  "translate": (0.0, 1.0), "scale": (0.0, 1.0), "shear": (0.0, 180.0), "perspective": (0.0, 0.001),
                  "fliplr": (0.0, 1.0), "flipud": (0.0, 1.0), "mosaic": (0.0, 1.0), "mixup": (0.0, 1.0),
                  "copy_paste": (0.0, 1.0)}
AUGMENT_PRESETS = {
    # heavy: the recall variant sees the most varied water (colour casts, turns, mixed scenes)
    "heavy": {"hsv_h": 0.03, "hsv_s": 0.8, "hsv_v": 0.5, "degrees": 15.0, "translate": 0.2, "scale": 0.6,
              "fliplr": 0.5, "flipud": 0.2, "mosaic": 1.0, "mixup": 0.15, "copy_paste": 0.1},
    # medium: ultralytics' own defaults
    "medium": {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5,
               "fliplr": 0.5, "flipud": 0.0, "mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0},
    # light: the precision variant learns from scenes close to what the camera sees
    "light": {"hsv_h": 0.01, "hsv_s": 0.4, "hsv_v": 0.25, "degrees": 0.0, "translate": 0.05, "scale": 0.25,
              "fliplr": 0.5, "flipud": 0.0, "mosaic": 0.5, "mixup": 0.0, "copy_paste": 0.0},
}
ENSEMBLE_VARIANTS = {"recall": {"threshold": 0.15, "preset": "heavy"},
                     "balanced": {"threshold": 0.25, "preset": "medium"},
                     "precision": {"threshold": 0.40, "preset": "light"}}
