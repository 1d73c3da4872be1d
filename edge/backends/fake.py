"""A backend that replays outputs, for testing pipelines without a model."""
import time

import numpy as np

from edge.backends.base import Backend, check_input_dtype
from edge.errors import BackendError


class FakeBackend(Backend):
    """Replays outputs and records every call.

    ``outputs`` is either a callable ``f(batch) -> array or dict`` (called with
    the checked batch in ``input_dtype``), or a sequence whose items (array or
    dict) are returned one per call, in order. A bare array becomes
    ``{output_names[0]: array}``. ``fixed_batch`` None makes the batch
    dynamic up to ``max_batch``. ``latency_s`` sleeps in every call.
    ``calls`` holds the batch size of each call.
    """

    name = "fake"

    def __init__(self, outputs, input_shape=(3, 64, 64), fixed_batch=1, max_batch=None, input_dtype=np.float32,
                 output_names=("output0",), input_name="images", latency_s=0.0, model_path="fake"):
        super(FakeBackend, self).__init__()
        self.model_path = str(model_path)
        if len(input_shape) != 3:
            raise BackendError("FakeBackend input_shape is (C, H, W) without the batch; got %s" % (input_shape,))
        self.input_shape = (fixed_batch,) + tuple(input_shape)
        self.input_name = input_name
        self.input_dtype = check_input_dtype(input_dtype, self.model_path, input_name)
        self.output_names = tuple(output_names)
        self.fixed_batch = fixed_batch
        if fixed_batch is None:
            self.max_batch = int(max_batch) if max_batch is not None else 8
        elif max_batch is not None and int(max_batch) != fixed_batch:
            raise BackendError("FakeBackend: max_batch=%s contradicts fixed_batch=%d" % (max_batch, fixed_batch))
        else:
            self.max_batch = int(fixed_batch)
        self.latency_s = float(latency_s)
        self.calls = []
        if callable(outputs):
            self._produce = outputs
            self._replay = None
        else:
            self._produce = None
            self._replay = iter(list(outputs))

    def _run(self, batch):
        self.calls.append(batch.shape[0])
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        if self._produce is not None:
            result = self._produce(batch)
        else:
            result = next(self._replay, None)
            if result is None:
                raise BackendError("FakeBackend ran out of replayed outputs after %d calls" % (len(self.calls) - 1))
        if not isinstance(result, dict):
            result = {self.output_names[0]: result}
        for name, value in result.items():
            if np.shape(value)[:1] != (batch.shape[0],):
                raise BackendError("FakeBackend output %r has shape %s for a batch of %d"
                                   % (name, np.shape(value), batch.shape[0]))
        return {name: np.asarray(value) for name, value in result.items()}

    def _close(self):
        self._produce = self._replay = None
