"""One frame in, one fused and calibrated Detections out, for a bundle.

The pipeline owns a backend per model, the view plan and the fusion settings.
Inference profiles (single model, ensemble, +flip, +full TTA) are arguments of
the same call, not copies of it.
"""
import collections
import time

import numpy as np

from edge.calibration import calibrate
from edge.decode import decode_outputs
from edge.errors import BackendError, DecodeError
from edge.fusion import fuse_detections
from edge.tta import check_frame, detections_to_frame, prepare_views, view_plan

FrameTiming = collections.namedtuple("FrameTiming", "total_s inference_s calls views")


def open_model_backends(bundle, backend="auto", **options):
    """A backend per model of the bundle: TensorRT engines where asked for (or auto and present)."""
    from edge.backends import open_backend

    backends = collections.OrderedDict()
    try:
        for spec in bundle.models:
            backends[spec.name] = open_backend(_model_file(spec, backend), kind=backend, **options)
    except Exception:
        for opened in backends.values():
            opened.close()
        raise
    return backends


def _model_file(spec, backend):
    if backend == "tensorrt":
        if spec.engine_path is None and spec.format != "engine":
            raise BackendError("model %r has no TensorRT engine in the bundle; build one on the device "
                               "(trtexec --onnx=... --saveEngine=... --fp16) or use --backend onnxruntime" % spec.name)
        return spec.engine_path or spec.path
    if backend == "auto" and spec.engine_path is not None:
        from edge.backends.tensorrt import tensorrt_available

        if tensorrt_available():
            return spec.engine_path
    return spec.path


class Pipeline(object):
    """Frames to Detections for one bundle; ``last_timing`` splits inference from the rest."""

    def __init__(self, bundle, backends, batch_views=True):
        self.bundle = bundle
        self.backends = backends
        self.batch_views = batch_views
        self.last_timing = None
        self._inference_s = 0.0
        self._calls = 0

    @classmethod
    def open(cls, bundle, backend="auto", batch_views=True, **options):
        return cls(bundle, open_model_backends(bundle, backend, **options), batch_views)

    def close(self):
        for backend in self.backends.values():
            backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def detect(self, frame, models=None, plan=None):
        """Detections of one BGR frame with the given models (default all) and views (default the bundle's)."""
        start = time.perf_counter()
        self._inference_s, self._calls = 0.0, 0
        plan = self.bundle.plan if plan is None else view_plan(plan)
        specs = [self.bundle.model(name) for name in models] if models else self.bundle.models
        check_frame(frame)
        frame_wh = (frame.shape[1], frame.shape[0])
        views = {}  # models with the same input size share one prepared batch
        per_model = [self._detect_model(frame, spec, plan, views=views) for spec in specs]
        fusion = self.bundle.fusion
        if len(per_model) == 1:
            fused = per_model[0]
        else:
            fused = fuse_detections(per_model, frame_wh, weights=[s.fusion_weight for s in specs],
                                    iou_thr=fusion["iou_thr"], skip_box_thr=fusion["skip_box_thr"],
                                    conf_type=fusion["conf_type"])
        result = calibrate(fused, self.bundle.temperatures)
        if fusion["score_thr"] > 0:
            result = result[result.score >= fusion["score_thr"]]
        self.last_timing = FrameTiming(time.perf_counter() - start, self._inference_s, self._calls, len(plan))
        return result

    __call__ = detect

    def detect_per_model(self, frame, models=None, plan="none", class_scores=False):
        """{model name: Detections in frame pixels} before any fusion across models or calibration.

        With class_scores=True and a single view, each box carries extras["class_scores"].
        """
        check_frame(frame)
        plan = view_plan(plan)
        specs = [self.bundle.model(name) for name in models] if models else self.bundle.models
        views = {}
        return collections.OrderedDict((s.name, self._detect_model(frame, s, plan, class_scores, views))
                                       for s in specs)

    def _detect_model(self, frame, spec, plan, class_scores=False, views=None):
        in_h, in_w = spec.input_size
        views = {} if views is None else views
        if (in_w, in_h) not in views:
            views[(in_w, in_h)] = prepare_views(frame, plan, in_w, in_h)
        batch, transforms = views[(in_w, in_h)]
        outputs = self._run(self.backends[spec.name], batch)
        try:
            per_view = decode_outputs(outputs, self.bundle.num_classes, conf_thr=spec.conf_thr, iou_thr=spec.iou_thr,
                                      class_scores=class_scores)
        except DecodeError as e:
            raise DecodeError("model %r (%s): %s" % (spec.name, spec.path, e)) from e
        in_frame = [detections_to_frame(d, t) for d, t in zip(per_view, transforms)]
        if len(in_frame) == 1:
            return in_frame[0]
        fusion = self.bundle.fusion
        return fuse_detections(in_frame, (transforms[0].frame_w, transforms[0].frame_h), iou_thr=fusion["iou_thr"],
                               skip_box_thr=fusion["skip_box_thr"], conf_type=fusion["conf_type"])

    def _run(self, backend, batch):
        from edge.backends import run_batched

        chunks = [batch] if self.batch_views else [batch[i:i + 1] for i in range(len(batch))]
        results = []
        for chunk in chunks:
            t0 = time.perf_counter()
            results.append(run_batched(backend, chunk))
            self._inference_s += time.perf_counter() - t0
            self._calls += 1
        if len(results) == 1:
            return results[0]
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}
