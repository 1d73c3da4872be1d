"""One frame in, one fused and calibrated Detections out, for a bundle.

The pipeline owns a backend per model, the view plan and the fusion settings.
Inference profiles (single model, ensemble, +flip, +full TTA) are arguments of
the same call, not copies of it. Its public API is what the trainer and the
benchmarks use, so their figures are the device's:

    Pipeline.open(bundle or path)            a bundle's models on their backends
    Pipeline.from_models([(variant, path)], class names, imgsz)   model files, no bundle
    pipeline.detect(frame, profile=...)      fused, calibrated, at the profile's operating point
    pipeline.detect(frame, ..., all_scores=True)   every fused box above the decode threshold
    pipeline.detect_per_model(frame)         {model: Detections} before fusion across models

Two thresholds: each model decodes at its low `decode_thr` so that fusion
sees the evidence of every view and model; the profile's per-class operating
thresholds apply after fusion and calibration (see edge/bundle.py).
"""
import collections
import time

import numpy as np

from edge.calibration import calibrate
from edge.decode import decode_outputs
from edge.detections import Detections
from edge.boxes import clip_boxes
from edge.errors import BackendError, BundleError, DecodeError
from edge.fusion import fuse_concatenated, fuse_detections
from edge.host_threads import HostThreads
from edge.tta import (BatchBuffer, check_frame, concatenated_to_frame, detections_to_frame, prepare_views, view_plan,
                      views_to_frame)

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


def calibration_profile(bundle, models, plan):
    """The profile whose temperatures and thresholds apply to (models, plan): one model is 'single',
    several are 'ensemble', 'ensemble_flip' or (any other plan) 'ensemble_full'.
    """
    if len(models) == 1:
        return "single"
    names = tuple(v.name for v in plan)
    if names == ("identity",):
        return "ensemble"
    if names == ("identity", "hflip"):
        return "ensemble_flip"
    return "ensemble_full"


class Pipeline(object):
    """Frames to Detections for one bundle; ``last_timing`` splits inference from the rest."""

    def __init__(self, bundle, backends, batch_views=True, host_threads=None):
        self.bundle = bundle
        self.backends = backends
        self.batch_views = batch_views
        # Letterboxing and decoding the views in two halves at once: the cores ONNX Runtime used idle meanwhile.
        self.host = HostThreads(host_threads)
        self.last_timing = None
        self._inference_s = 0.0
        self._calls = 0
        # Batch buffers by shape, reused across frames: a fresh 8 MB float batch per frame can
        # cost its page faults (a few ms after inference has churned memory). A backend gets the
        # buffer for the length of its call only.
        self._free_batches = {}

    @classmethod
    def open(cls, bundle, backend="auto", batch_views=True, decode_thr=None, check=True, host_threads=None,
             **options):
        """Open a Bundle (or a bundle folder / .tar.gz path) on its backends.

        `decode_thr` overrides every model's decode threshold; `check` runs
        one blank frame through each model and refuses a model whose output
        does not fit the bundle's classes (before any real frame is lost);
        `host_threads` (1 or 2, default 2 on a multi-core machine) is how many
        threads letterbox and decode a frame's views.
        """
        if isinstance(bundle, str):
            from edge.bundle import load_bundle

            bundle = load_bundle(bundle)
        if decode_thr is not None:
            bundle = bundle.with_decode_thr(decode_thr)
        pipeline = cls(bundle, open_model_backends(bundle, backend, **options), batch_views, host_threads)
        try:
            if check:
                pipeline.check_models()
        except Exception:
            pipeline.close()
            raise
        return pipeline

    @classmethod
    def from_models(cls, models, names, imgsz=None, plan="none", decode_thr=None, categories=None, **kwargs):
        """A pipeline over model files without a bundle: [(variant, path)], class names (see bundle_from_models)."""
        from edge.bundle_build import bundle_from_models

        bundle = bundle_from_models(models, names, imgsz=imgsz, plan=plan, categories=categories)
        return cls.open(bundle, decode_thr=decode_thr, **kwargs)

    def check_models(self):
        """Run a blank frame through each model: its output must decode for the bundle's classes."""
        for spec in self.bundle.models:
            h, w = spec.input_size
            outputs = self._run(self.backends[spec.name], np.zeros((1, 3, h, w), np.float32))
            try:
                decode_outputs(outputs, self.bundle.num_classes, conf_thr=1.0)
            except DecodeError as e:
                raise BundleError("bundle %s: model %r (%s) does not fit the manifest: %s; rebuild the bundle "
                                  "with the classes file the model was trained on" % (
                                      self.bundle.root, spec.name, spec.path, e)) from e

    def close(self):
        for backend in self.backends.values():
            backend.close()
        self.host.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def detect(self, frame, models=None, plan=None, profile=None, all_scores=False):
        """Fused, calibrated Detections of one BGR frame, clipped to the frame.

        `profile` (single, ensemble, ensemble_flip, ensemble_full) picks the
        models and views, unless `models` / `plan` are given, and the
        temperatures and operating thresholds; without it they follow from
        the models and plan (see calibration_profile). With `all_scores`
        every fused box is returned with its calibrated score, whatever the
        operating threshold (what a COCO evaluator needs).
        """
        start = time.perf_counter()
        self._inference_s, self._calls = 0.0, 0
        if profile is not None and (models is None or plan is None):
            from edge.profiles import profile_spec

            spec_models, spec_plan = profile_spec(self.bundle, profile)
            models = spec_models if models is None else models
            plan = spec_plan if plan is None else plan
        plan = self.bundle.plan if plan is None else view_plan(plan)
        specs = [self.bundle.model(name) for name in models] if models else self.bundle.models
        settings = self.bundle.profile_settings(profile or calibration_profile(self.bundle, specs, plan))
        check_frame(frame)
        frame_wh = (frame.shape[1], frame.shape[0])
        views = {}  # models with the same input size share one prepared batch
        try:
            per_model = collections.OrderedDict((spec.name, self._detect_model(frame, spec, plan, views=views))
                                                for spec in specs)
        finally:
            self._release(views)
        result = self.fuse_models(per_model, frame_wh, settings)
        if not all_scores:
            result = at_operating_point(result, settings)
        self.last_timing = FrameTiming(time.perf_counter() - start, self._inference_s, self._calls, len(plan))
        return result

    __call__ = detect

    def fuse_models(self, per_model, frame_wh, settings):
        """{model name: Detections} of one frame -> fused across models, calibrated with `settings`
        (a ProfileSettings, or a profile name), clipped to the frame; every score kept.
        """
        if isinstance(settings, str):
            settings = self.bundle.profile_settings(settings)
        records = [Detections(d.xyxy, d.score, d.class_id) for d in per_model.values()]
        if len(records) == 1:
            fused = records[0]
        else:
            fusion = self.bundle.fusion
            fused = fuse_detections(records, frame_wh, weights=[self.bundle.model(n).fusion_weight for n in per_model],
                                    iou_thr=fusion["iou_thr"], skip_box_thr=fusion["skip_box_thr"],
                                    conf_type=fusion["conf_type"])
        return _clipped(calibrate(fused, settings.temperatures), frame_wh)

    def detect_per_model(self, frame, models=None, plan="none", class_scores=False):
        """{model name: Detections in frame pixels} before any fusion across models or calibration.

        With class_scores=True and a single view, each box carries extras["class_scores"].
        """
        check_frame(frame)
        plan = view_plan(plan)
        specs = [self.bundle.model(name) for name in models] if models else self.bundle.models
        views = {}
        try:
            return collections.OrderedDict((s.name, self._detect_model(frame, s, plan, class_scores, views))
                                           for s in specs)
        finally:
            self._release(views)

    def _detect_model(self, frame, spec, plan, class_scores=False, views=None):
        in_h, in_w = spec.input_size
        views = {} if views is None else views
        if (in_w, in_h) not in views:
            buffer = self._batch((len(plan), 3, in_h, in_w))
            views[(in_w, in_h)] = prepare_views(frame, plan, in_w, in_h, out=buffer, host=self.host) + (buffer,)
        batch, transforms, _ = views[(in_w, in_h)]
        outputs = self._run(self.backends[spec.name], batch)
        # Several views' boxes go back to the frame and into fusion as one array (fusion drops extras).
        concatenated = len(transforms) > 1 and not class_scores
        try:
            decoded = decode_outputs(outputs, self.bundle.num_classes, conf_thr=spec.decode_thr, iou_thr=spec.iou_thr,
                                     class_scores=class_scores, multi_label=spec.multi_label,
                                     concatenated=concatenated, host=self.host)
        except DecodeError as e:
            raise DecodeError("model %r (%s): %s" % (spec.name, spec.path, e)) from e
        if concatenated:
            return _fuse_views(concatenated_to_frame(*decoded, transforms=transforms),
                               (transforms[0].frame_w, transforms[0].frame_h), self.bundle.fusion)
        if len(decoded) == 1:
            return detections_to_frame(decoded[0], transforms[0])
        return _fuse_views(views_to_frame(decoded, transforms), (transforms[0].frame_w, transforms[0].frame_h),
                           self.bundle.fusion)

    def _batch(self, shape):
        """A free BatchBuffer of this shape (pop and append are atomic: detect may run in several threads)."""
        try:
            return self._free_batches.get(shape, []).pop()
        except IndexError:
            return BatchBuffer(shape)

    def _release(self, views):
        """The frame's batch buffers back to the free ones (two per shape at most)."""
        for _, _, buffer in views.values():
            free = self._free_batches.setdefault(buffer.array.shape, [])
            if len(free) < 2:
                free.append(buffer)

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


def _fuse_views(views, frame_wh, fusion):
    """fuse_concatenated of the views' (xyxy, score, class_id, counts) with the bundle's fusion settings."""
    return fuse_concatenated(*views, frame_wh, iou_thr=fusion["iou_thr"], skip_box_thr=fusion["skip_box_thr"],
                             conf_type=fusion["conf_type"])


def at_operating_point(detections, settings):
    """What the device reports: the detections at or above their class's operating threshold."""
    return detections[detections.score >= settings.thresholds[detections.class_id]]


def _clipped(detections, frame_wh):
    """Boxes inside the frame: fusion's float32 averages can end an ulp past the edge (x2 = 768.0001)."""
    return Detections(clip_boxes(detections.xyxy, frame_wh[0], frame_wh[1]), detections.score,
                      detections.class_id, detections.extras)
