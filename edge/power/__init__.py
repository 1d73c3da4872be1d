"""Power measurement: meters behind one interface, a background sampler and energy windows.

Optional dependencies (jetson-stats, nvidia-ml-py, psutil) are imported only
when the meter that needs them opens; importing this package reads nothing.
"""
from edge.power.auto import AUTO_ORDER, METER_FACTORIES, MeterChoice, MeterOptions, auto_meter, meter_names, open_meter
from edge.power.base import Meter, Sample, make_sample
from edge.power.estimated import EstimatedMeter
from edge.power.ina3221 import Ina3221Meter
from edge.power.jtop import JtopMeter, parse_jtop_power
from edge.power.nvml import NvmlMeter
from edge.power.rapl import RaplMeter
from edge.power.replay import ReplayMeter, Trace, load_replay_csv, parse_replay_csv
from edge.power.sampler import PowerSampler
from edge.power.tegrastats import TegrastatsMeter, parse_tegrastats_power
from edge.power.window import (
    Measurement,
    counter_window_energy_j,
    energy_per_frame_j,
    measure_samples,
    net_energy_per_frame_j,
    window_energy_j,
)

__all__ = [
    "AUTO_ORDER",
    "METER_FACTORIES",
    "EstimatedMeter",
    "Ina3221Meter",
    "JtopMeter",
    "Measurement",
    "Meter",
    "MeterChoice",
    "MeterOptions",
    "NvmlMeter",
    "PowerSampler",
    "RaplMeter",
    "ReplayMeter",
    "Sample",
    "TegrastatsMeter",
    "Trace",
    "auto_meter",
    "counter_window_energy_j",
    "energy_per_frame_j",
    "load_replay_csv",
    "make_sample",
    "measure_samples",
    "meter_names",
    "net_energy_per_frame_j",
    "open_meter",
    "parse_jtop_power",
    "parse_replay_csv",
    "parse_tegrastats_power",
    "window_energy_j",
]
