"""A second host thread for a frame's CPU work around inference.

The native kernels (ctypes lets go of the GIL during a call) and OpenCV's
resize run outside the GIL, so the views of one frame can be letterboxed and
decoded in two halves at once. While ONNX Runtime is not running, its cores
idle; on a Jetson Nano (inference on the GPU) three of the four do.
Results do not change: every view is letterboxed and decoded on its own.
"""
import concurrent.futures
import os

from edge.errors import ConfigError


def default_host_threads():
    """2 where the machine has two cores or more, else 1."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


class HostThreads(object):
    """Runs a range of work in two halves, one in a helper thread, or in one piece with threads=1."""

    def __init__(self, threads=None):
        threads = default_host_threads() if threads is None else threads
        if threads not in (1, 2):
            raise ConfigError("host_threads must be 1 or 2 (the frame's work splits in two halves), got %r"
                              % (threads,))
        self.threads = threads
        self._helper = concurrent.futures.ThreadPoolExecutor(1) if threads == 2 else None

    def halves(self, work, n, cost=None):
        """[work(0, k), work(k, n)] run at once, with k the split that balances cost(start, end)
        (default: the number of items); [work(0, n)] with one thread or fewer than two items."""
        if self._helper is None or n < 2:
            return [work(0, n)]
        k = best_split(n, cost or (lambda start, end: end - start))
        second = self._helper.submit(work, k, n)
        try:
            first = work(0, k)
        finally:
            rest = second.result()  # waited for even when the first half fails: no work left behind
        return [first, rest]

    def close(self):
        if self._helper is not None:
            self._helper.shutdown(wait=True)
            self._helper = None


def best_split(n, cost):
    """The k in 1..n-1 whose halves [0, k) and [k, n) have the smallest larger cost (first on ties)."""
    return min(range(1, n), key=lambda k: max(cost(0, k), cost(k, n)))
