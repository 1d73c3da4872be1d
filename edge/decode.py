"""Turn raw detector outputs into per-image Detections (input-pixel coordinates).

Two layouts are understood:
- the plain YOLOv8/YOLO11 detect head, one tensor (B, 4+nc, A): rows cx, cy,
  w, h in input pixels, then one sigmoid score per class, no objectness;
- an EfficientNMS_TRT tail: num_dets (B, 1), det_boxes (B, K, 4) xyxy,
  det_scores (B, K), det_classes (B, K).
"""
import numpy as np

from edge import native
from edge.boxes import CLASS_OFFSET_PX, nms, xywh_to_xyxy
from edge.detections import Detections
from edge.errors import DecodeError

EFFICIENT_NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")


def decode_head(output, num_classes, conf_thr=0.25, iou_thr=0.7, max_det=300, max_candidates=30000,
                class_scores=False, multi_label=False, concatenated=False, host=None):
    """Decode a raw (B, 4+nc, A) head output with class-aware NMS, as ultralytics does.

    Per image: anchors whose best class score is above conf_thr, the
    ``max_candidates`` best of them (ultralytics' max_nms), NMS, then the
    ``max_det`` best survivors. With multi_label=True an anchor gives one
    candidate for every class scoring above conf_thr, not only its best, as
    ultralytics' validation decodes: a model torn between two species keeps
    both hypotheses for fusion (and mAP50 counts them; one YOLOv8n on the demo's
    scenes: 0.358 best-class only, 0.402 multi-label). With class_scores=True
    each box keeps its anchor's full score vector in extras["class_scores"]
    (active learning's margin and entropy need more than the winning score).
    With concatenated=True (no class scores) the images' boxes come one image after the other,
    as (xyxy, score, class_id, counts), without a Detections per image: what edge.tta.views_to_frame
    takes, the same values. ``host``: an edge.host_threads.HostThreads that decodes the images in two
    halves at once (native kernels only; the same results).
    """
    output = np.asarray(output)
    if output.ndim != 3 or output.shape[1] != 4 + num_classes:
        raise DecodeError(
            "model output has shape %s; expected (batch, 4 + %d classes, anchors). "
            "Is the model exported for %d classes, without an NMS tail?"
            % (output.shape, num_classes, num_classes))
    if concatenated and class_scores:
        raise DecodeError("class score vectors travel in each image's Detections; concatenated=True has none")
    if output.dtype != np.float32:
        output = output.astype(np.float32)
    kernels = native.active()
    if kernels is not None:
        if concatenated:
            xyxy, score, class_id, _, counts = _native_boxes(kernels, output, conf_thr, iou_thr, max_det,
                                                             max_candidates, multi_label, host)
            return xyxy, score, class_id.astype(np.int32), counts.tolist()
        return _decode_native(kernels, output, conf_thr, iou_thr, max_det, max_candidates, class_scores, multi_label,
                              host)
    best = output[:, 4:].max(axis=1)
    decode = _decode_multi_label if multi_label else _decode_one
    per_image = [decode(image, best_score, conf_thr, iou_thr, max_det, max_candidates, class_scores)
                 for image, best_score in zip(output, best)]
    return concatenate(per_image) if concatenated else per_image


def concatenate(per_image):
    """Per-image Detections -> (xyxy, score, class_id, counts), one image after the other."""
    if not per_image:
        per_image = [Detections.empty()]
    return (np.concatenate([d.xyxy for d in per_image]), np.concatenate([d.score for d in per_image]),
            np.concatenate([d.class_id for d in per_image]), [len(d) for d in per_image])


def _decode_one(image, best_score, conf_thr, iou_thr, max_det, max_candidates, keep_class_scores):
    """One (4+nc, A) image: columns are picked before anything is copied, since at low
    thresholds a few hundred of several thousand anchors pass."""
    columns = np.flatnonzero(best_score > conf_thr)
    if len(columns) > max_candidates:
        columns = columns[np.argsort(-best_score[columns], kind="stable")[:max_candidates]]
    picked = image[:, columns]
    score = best_score[columns]
    class_id = picked[4:].argmax(axis=0)
    xyxy = xywh_to_xyxy(picked[:4].T)
    keep = nms(xyxy, score, iou_thr, class_id=class_id, max_det=max_det)
    extras = {"class_scores": picked[4:, keep].T} if keep_class_scores else None
    return Detections(xyxy[keep], score[keep], class_id[keep], extras)


def _decode_multi_label(image, best_score, conf_thr, iou_thr, max_det, max_candidates, keep_class_scores):
    """One candidate per (anchor, class) above conf_thr, anchor-major as ultralytics' torch.where orders them."""
    columns = np.flatnonzero(best_score > conf_thr)
    picked = image[:, columns]
    anchor, class_id = np.nonzero(picked[4:].T > conf_thr)
    score = picked[4 + class_id, anchor]
    if len(score) > max_candidates:
        top = np.argsort(-score, kind="stable")[:max_candidates]
        anchor, class_id, score = anchor[top], class_id[top], score[top]
    xyxy = xywh_to_xyxy(picked[:4, anchor].T)
    keep = nms(xyxy, score, iou_thr, class_id=class_id, max_det=max_det)
    extras = {"class_scores": picked[4:, anchor[keep]].T} if keep_class_scores else None
    return Detections(xyxy[keep], score[keep], class_id[keep], extras)


def _decode_native(kernels, output, conf_thr, iou_thr, max_det, max_candidates, keep_class_scores, multi_label,
                   host=None):
    """Every image of the batch (the views of one frame) in one native call: the same candidates, order,
    cap and per-image NMS as the numpy path, bit for bit (tests/test_decode.py)."""
    xyxy, score, class_id, anchor, counts = _native_boxes(kernels, output, conf_thr, iou_thr, max_det, max_candidates,
                                                          multi_label, host)
    results, start = [], 0
    for b, count in enumerate(counts.tolist()):
        end = start + count
        extras = {"class_scores": output[b, 4:, anchor[start:end]]} if keep_class_scores else None
        results.append(Detections(xyxy[start:end], score[start:end], class_id[start:end], extras))
        start = end
    return results


def _native_boxes(kernels, output, conf_thr, iou_thr, max_det, max_candidates, multi_label, host=None):
    """kernels.decode_head of a float32 head: (xyxy, score, class_id, anchor, counts), with ``host``
    in two halves of the batch at once (each image is decoded on its own)."""
    output = np.ascontiguousarray(output)
    max_det = output.shape[1] * output.shape[2] if max_det is None else max(int(max_det), 0)

    def decode(start, end):
        return kernels.decode_head(output[start:end], conf_thr, _compares_in_f32(conf_thr), multi_label,
                                   max_candidates, iou_thr, max_det, CLASS_OFFSET_PX)

    if host is None:
        return decode(0, len(output))
    parts = host.halves(decode, len(output))
    return tuple(np.concatenate(arrays) for arrays in zip(*parts)) if len(parts) > 1 else parts[0]


def _compares_in_f32(conf_thr):
    """Whether numpy compares a float32 score array with conf_thr in float32 (a Python float under
    either casting rule; a numpy float64 only under numpy < 2's value-based casting)."""
    return np.result_type(np.float32, conf_thr) == np.float32


def decode_efficient_nms(num_dets, det_boxes, det_scores, det_classes, num_classes, conf_thr=0.0):
    """Decode the four outputs of an EfficientNMS_TRT plugin."""
    num_dets = np.asarray(num_dets).reshape(-1)
    det_boxes, det_scores, det_classes = (np.asarray(a) for a in (det_boxes, det_scores, det_classes))
    batch = num_dets.shape[0]
    if det_boxes.ndim != 3 or det_boxes.shape[0] != batch or det_boxes.shape[2] != 4:
        raise DecodeError("det_boxes has shape %s; expected (%d, K, 4)" % (det_boxes.shape, batch))
    if det_scores.shape != det_boxes.shape[:2] or det_classes.shape != det_boxes.shape[:2]:
        raise DecodeError("det_scores %s and det_classes %s must both be (%d, K)"
                          % (det_scores.shape, det_classes.shape, batch))
    results = []
    for b in range(batch):
        n = int(num_dets[b])
        cls = det_classes[b, :n].astype(np.int64)
        if cls.size and (cls.min() < 0 or cls.max() >= num_classes):
            raise DecodeError("det_classes holds class %d; the bundle has %d classes" % (cls.max(), num_classes))
        keep = det_scores[b, :n] > conf_thr
        results.append(Detections(det_boxes[b, :n][keep], det_scores[b, :n][keep], cls[keep]))
    return results


def decode_outputs(outputs, num_classes, conf_thr=0.25, iou_thr=0.7, max_det=300, class_scores=False,
                   multi_label=False, concatenated=False, host=None):
    """Decode a backend's named outputs, whichever of the two layouts they are in.

    A list of Detections per image, or with concatenated=True (see decode_head) their boxes in one
    (xyxy, score, class_id, counts).
    """
    if all(name in outputs for name in EFFICIENT_NMS_OUTPUTS):
        if class_scores:
            raise DecodeError("an EfficientNMS_TRT engine keeps only the winning score; class score vectors "
                              "need the plain detect-head export")
        per_image = decode_efficient_nms(*(outputs[n] for n in EFFICIENT_NMS_OUTPUTS),
                                         num_classes=num_classes, conf_thr=conf_thr)
        return concatenate(per_image) if concatenated else per_image
    if len(outputs) != 1:
        raise DecodeError("model has outputs %s; expected one detect-head tensor or the EfficientNMS_TRT "
                          "outputs %s" % (sorted(outputs), list(EFFICIENT_NMS_OUTPUTS)))
    (output,) = outputs.values()
    return decode_head(output, num_classes, conf_thr=conf_thr, iou_thr=iou_thr, max_det=max_det,
                       class_scores=class_scores, multi_label=multi_label, concatenated=concatenated, host=host)
