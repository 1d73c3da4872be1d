"""Run a test module on both paths of edge.native: the C kernels and the numpy/Python fallback."""
import pytest

from edge import native


def both_paths(fallback):
    """An autouse fixture, parametrized 'native' and `fallback`, that selects the path by REEFWATCH_NATIVE."""
    @pytest.fixture(autouse=True, params=["native", fallback])
    def kernel_path(request, monkeypatch):
        monkeypatch.setenv("REEFWATCH_NATIVE", "1" if request.param == "native" else "0")
        if request.param == "native" and not native.available():
            pytest.skip("edge/native library not built (python -m edge.native.build)")
        assert (native.active() is not None) == (request.param == "native")
        return request.param
    return kernel_path
