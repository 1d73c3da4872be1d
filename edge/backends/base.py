"""The Backend interface every inference engine implements, and batching on top of it.

A backend takes an NCHW float32 batch with values in 0..1 and returns a dict
of named float32 arrays. Engines with FP16 inputs or outputs are converted
here, both ways, so nothing past the backend ever sees float16.
"""
import threading

import numpy as np

from edge.errors import BackendError

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


class Backend(object):
    """One loaded model.

    Subclasses set, in ``__init__``: ``name`` (short backend name),
    ``model_path``, ``input_name``, ``input_shape`` (a tuple; dynamic dims
    are None), ``input_dtype`` (np.float32 or np.float16), ``output_names``
    (a tuple), ``max_batch`` (int) and ``fixed_batch`` (int, or None when
    the batch dimension is dynamic), then implement ``_run`` and ``_close``.
    """

    name = "backend"
    model_path = None
    input_name = None
    input_shape = None
    input_dtype = np.float32
    output_names = ()
    max_batch = 1
    fixed_batch = 1

    def __init__(self):
        self._closed = False
        # One call at a time: the engines keep per-call state (bound shapes, host buffers).
        self._lock = threading.Lock()

    @property
    def closed(self):
        return self._closed

    def run(self, batch):
        """Run one batch (N, C, H, W) float32 in 0..1; return {output name: float32 array}."""
        batch = self._check_batch(batch)
        with self._lock:
            if self._closed:
                raise BackendError("%s backend for %s is closed" % (self.name, self.model_path))
            outputs = self._run(batch)
        return {name: _to_float32(value) for name, value in outputs.items()}

    def close(self):
        """Release the model and its buffers; calling it again does nothing."""
        with self._lock:  # never while another thread is inside run()
            if self._closed:
                return
            self._closed = True
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.close()

    def __repr__(self):
        return "%s(%r, input %s %s, batch %s)" % (
            type(self).__name__, self.model_path, _shape_text(self.input_shape),
            np.dtype(self.input_dtype).name, self.fixed_batch if self.fixed_batch else "<=%d" % self.max_batch)

    # Subclass hooks ---------------------------------------------------------

    def _run(self, batch):
        """Run a checked batch already in ``input_dtype``; return raw outputs."""
        raise NotImplementedError

    def _close(self):
        raise NotImplementedError

    # Helpers ---------------------------------------------------------------

    def _check_batch(self, batch):
        """Check the batch against the input shape; return it C-contiguous in ``input_dtype``."""
        batch = np.asarray(batch)
        expected = self._expected_text()
        if batch.ndim != len(self.input_shape):
            raise BackendError("%s: input %r expects shape %s; got %s"
                               % (self.model_path, self.input_name, expected, batch.shape))
        n = batch.shape[0]
        bad_batch = (n != self.fixed_batch) if self.fixed_batch else not 1 <= n <= self.max_batch
        bad_dims = any(want is not None and want != got for want, got in zip(self.input_shape[1:], batch.shape[1:]))
        if bad_batch or bad_dims:
            raise BackendError("%s: input %r expects shape %s; got %s"
                               % (self.model_path, self.input_name, expected, batch.shape))
        if batch.dtype.kind != "f":
            # uint8 pixels would pass a shape check and give garbage: the contract is floats in 0..1.
            raise BackendError("%s: input %r must be a float array in 0..1; got dtype %s"
                               % (self.model_path, self.input_name, batch.dtype))
        return np.ascontiguousarray(batch, dtype=self.input_dtype)

    def _expected_text(self):
        batch = str(self.fixed_batch) if self.fixed_batch else "1..%d" % self.max_batch
        return _shape_text((batch,) + tuple(self.input_shape[1:]))


def run_batched(backend, images):
    """Run a stack of N images through ``backend`` in calls it accepts.

    A fixed-batch engine gets chunks of exactly ``fixed_batch``, the last one
    padded with zeros (its padded outputs are dropped); a dynamic one gets
    chunks of at most ``max_batch``. Outputs are concatenated along axis 0.
    """
    images = np.asarray(images)
    if images.ndim < 1 or images.shape[0] == 0:
        raise BackendError("run_batched: need a stack of at least one image; got shape %s" % (images.shape,))
    n = images.shape[0]
    step = backend.fixed_batch or backend.max_batch
    if step < 1:
        raise BackendError("run_batched: %r reports batch size %d" % (backend, step))
    pieces = {}
    for start in range(0, n, step):
        chunk = images[start:start + step]
        used = chunk.shape[0]
        if backend.fixed_batch and used < backend.fixed_batch:
            pad = np.zeros((backend.fixed_batch - used,) + chunk.shape[1:], dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        for name, value in backend.run(chunk).items():
            pieces.setdefault(name, []).append(value[:used])
    return {name: np.concatenate(values) for name, values in pieces.items()}


def dims_to_shape(dims):
    """A shape tuple with every dynamic dimension (negative, symbolic or None) as None."""
    return tuple(int(d) if isinstance(d, (int, np.integer)) and d >= 0 else None for d in dims)


def _to_float32(value):
    value = np.asarray(value)
    # Integer outputs (EfficientNMS num_dets, det_classes) keep their type.
    if value.dtype.kind == "f" and value.dtype != np.float32:
        return value.astype(np.float32)
    return value


def _shape_text(shape):
    return "(%s)" % ", ".join("?" if d is None else str(d) for d in shape)


def check_input_dtype(dtype, model_path, input_name):
    """np.float32 or np.float16 for an engine's input dtype, else a BackendError."""
    dtype = np.dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise BackendError("%s: input %r has dtype %s; only float32 and float16 inputs are supported"
                           % (model_path, input_name, dtype))
    return dtype.type
