"""Vectorized box arithmetic: conversions, IoU and class-aware NMS."""
import numpy as np

# Class-aware NMS shifts each class into its own region of the plane, as
# ultralytics does, so one IoU computation never mixes classes.
_CLASS_OFFSET_PX = 7680.0


def xywh_to_xyxy(xywh):
    xywh = np.asarray(xywh, dtype=np.float32).reshape(-1, 4)
    half = xywh[:, 2:] / 2
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)


def xyxy_to_xywh(xyxy):
    """Corner boxes to COCO [x, y, w, h] (top-left corner and size)."""
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def box_area(xyxy):
    wh = np.clip(xyxy[..., 2:] - xyxy[..., :2], 0, None)
    return wh[..., 0] * wh[..., 1]


def box_iou(a, b):
    """IoU matrix (len(a), len(b)) of two sets of xyxy boxes."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / np.maximum(union, np.finfo(np.float32).eps)


def nms(xyxy, score, iou_thr, class_id=None, max_det=None):
    """Greedy NMS; indices of kept boxes in descending score order.

    With ``class_id`` boxes only suppress boxes of their own class. The loop
    runs once per kept box, each step vectorized over the remaining ones.
    """
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    score = np.asarray(score, dtype=np.float32).reshape(-1)
    if class_id is not None:
        xyxy = xyxy + np.asarray(class_id, dtype=np.float32).reshape(-1, 1) * _CLASS_OFFSET_PX
    order = np.argsort(-score, kind="stable")
    keep = []
    limit = len(order) if max_det is None else int(max_det)
    while order.size and len(keep) < limit:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        if not rest.size:
            break
        order = rest[box_iou(xyxy[best], xyxy[rest])[0] <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def clip_boxes(xyxy, width, height):
    out = np.array(xyxy, dtype=np.float32, copy=True).reshape(-1, 4)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    return out
