"""NVML (nvidia-ml-py, imported as `pynvml`) for discrete NVIDIA GPUs.

`nvmlDeviceGetTotalEnergyConsumption` (mJ since the driver loaded, Volta and
newer) gives an energy counter; `nvmlDeviceGetPowerUsage` (mW) gives the
instantaneous power. NVML is not available on Jetson boards.
"""
import time

from edge.errors import MeterUnavailable
from edge.power.base import Meter, make_sample


class NvmlMeter(Meter):
    """GPU board power from NVML, summed over `indices` (None: every GPU).

    `module` is the imported `pynvml` (a fake in tests); `None` imports
    nvidia-ml-py when the meter opens. Samples carry `energy_j` (counter
    since open) when every selected GPU supports total energy consumption.
    """

    name = "nvml"

    def __init__(self, indices=None, module=None, clock=time.monotonic):
        self.indices = None if indices is None else [int(i) for i in indices]
        self.module = module
        self.clock = clock
        self._nvml = None
        self._handles = []
        self._energy0_mj = None  # per-GPU counters at open; None without counters

    @property
    def has_energy_counter(self):
        return self._energy0_mj is not None

    def _import(self):
        if self.module is not None:
            return self.module
        try:
            import pynvml as module
        except ImportError as e:
            raise MeterUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from e
        return module

    def open(self):
        nvml = self._import()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            raise MeterUnavailable("NVML did not initialise (no NVIDIA driver or GPU?): {}".format(e)) from e
        try:
            count = nvml.nvmlDeviceGetCount()
            indices = list(range(count)) if self.indices is None else self.indices
            bad = [i for i in indices if not 0 <= i < count]
            if not indices or bad:
                raise MeterUnavailable("NVML sees {} GPU(s); asked for {}".format(count, bad or "any"))
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
            self._nvml = nvml
            self._energy0_mj = self._probe_energy_mj()
        except nvml.NVMLError as e:
            nvml.nvmlShutdown()
            raise MeterUnavailable("NVML could not open the GPUs: {}".format(e)) from e
        except MeterUnavailable:
            nvml.nvmlShutdown()
            raise
        return self

    def _probe_energy_mj(self):
        try:
            return [float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self._handles]
        except self._nvml.NVMLError:
            # Pre-Volta GPUs answer NotSupported: fall back to power integration.
            return None

    def read(self):
        if self._nvml is None:
            raise MeterUnavailable("NVML meter read before open()")
        nvml = self._nvml
        try:
            rails = {
                "gpu{}".format(i): nvml.nvmlDeviceGetPowerUsage(h) / 1000.0
                for i, h in zip(self._gpu_indices(), self._handles)
            }
            energy_j = None
            if self._energy0_mj is not None:
                now_mj = [float(nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self._handles]
                energy_j = sum(now - then for now, then in zip(now_mj, self._energy0_mj)) / 1000.0
        except nvml.NVMLError as e:
            raise MeterUnavailable("NVML read failed: {}".format(e)) from e
        t = self.clock()
        return make_sample(t, sum(rails.values()), rails, self.source, True, energy_j)

    def _gpu_indices(self):
        return list(range(len(self._handles))) if self.indices is None else self.indices

    def close(self):
        nvml, self._nvml = self._nvml, None
        self._handles = []
        if nvml is not None:
            nvml.nvmlShutdown()
