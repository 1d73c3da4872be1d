"""Config sections of week 6 (`calibrate`, `export`, `bundle`): the way out of the trainer.

Kept beside trainer.config (which assembles every section) so that module stays short;
the same `spec` rules apply.
"""
from dataclasses import dataclass
from typing import Optional

from trainer.config_rules import spec

# Profiles the device can run, in escalation order (edge.profiles owns the names).
DEVICE_PROFILES = "single,ensemble,ensemble_flip,ensemble_full,cascade"


@dataclass(frozen=True)
class CalibrationConfig:
    """`trainer calibrate`: temperatures and operating thresholds per profile, fitted on the device's outputs."""
    split: str = spec("val", choices=("val", "calibration", "train"))  # never test
    images: int = spec(1000, min=1)                # at most this many images of the split
    profiles: str = spec(DEVICE_PROFILES)          # comma-separated
    min_matches: int = spec(30, min=1)             # classes with fewer matched detections share one temperature
    iou_thr: float = spec(0.5, min=0.0, max=1.0, min_exclusive=True)
    decode_thr: float = spec(0.01, min=0.0, max=1.0)   # what feeds fusion while calibrating (the device's)
    critical_recall_target: float = spec(0.9, min=0.0, max=1.0)  # share of the best reachable critical recall
    critical_min_precision: float = spec(0.2, min=0.0, max=1.0)  # floor on a critical class's operating point
    ece_bins: int = spec(10, min=2)
    fusion_weight_power: float = spec(2.0, min=0.0, max=8.0)  # model weight = (its mAP50 / the best's) ** this; 0: equal


@dataclass(frozen=True)
class ExportConfig:
    """`trainer export`: ONNX for TensorRT 8.2, FP16 parity, engines or the commands to build them."""
    opset: int = spec(12, min=7, max=13)           # TensorRT 8.2 parses opset <= 13
    imgsz: Optional[int] = spec(None, min=32)      # model input; null: each variant's training size (multiscale
                                                   # variants also trained up to multiscale.max)
    dynamic: bool = spec(False)                    # dynamic batch axis; else a fixed batch of `batch`
    batch: Optional[int] = spec(None, min=1)       # null: 1 (one view per call); 7 puts the full plan's views in one call
    efficient_nms: bool = spec(False)              # append an EfficientNMS_TRT tail (onnx-graphsurgeon)
    parity_images: int = spec(50, min=1)           # real images the FP16 twin is compared on
    max_box_deviation_px: float = spec(2.0, min=0.0)
    max_score_deviation: float = spec(0.02, min=0.0, max=1.0)
    max_map50_drop: float = spec(0.005, min=0.0, max=1.0)
    max_outlier_fraction: float = spec(0.01, min=0.0, max=1.0)  # matched boxes that may pass the box/score limits
    fp32_layers: str = spec("detect_head")         # kept FP32 after a parity failure: detect_head (one more module per further try) or node names
    max_tries: int = spec(3, min=1)
    workspace_mb: int = spec(1024, min=16)         # TensorRT builder workspace (1 GB suits a 4 GB Nano)
    ship_fp16: bool = spec(False)                  # the bundle gets the FP16 twin that passed parity (half the bytes)


@dataclass(frozen=True)
class BundleConfig:
    """`trainer bundle`: the edge bundle, its measured figures and the budget gate."""
    target: str = spec("jetson-nano", choices=("jetson-nano", "x86-cpu", "gpu-server"))
    default_profile: Optional[str] = spec(None)    # null: the best mAP50 whose energy fits the budget
    min_map50: float = spec(0.3, min=0.0, max=1.0)
    min_critical_recall: float = spec(0.5, min=0.0, max=1.0)
    budget_wh_day: float = spec(20.0, min=0.0, min_exclusive=True)
    capture_interval_s: float = spec(60.0, min=0.0, min_exclusive=True)
    powered_hours_per_day: float = spec(24.0, min=0.0, max=24.0)
    idle_power_w: float = spec(1.5, min=0.0)
    energy_frames: int = spec(20, min=1)           # frames timed per profile for J/frame
