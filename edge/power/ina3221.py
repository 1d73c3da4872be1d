"""INA3221 power monitors through sysfs: Nano iio layout and Xavier/Orin hwmon layout.

Nano (L4T R32): /sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/ with
`rail_name_N`, `in_powerN_input` (mW); channel 0 POM_5V_IN is the board.
Xavier/Orin (L4T R35+): /sys/bus/i2c/drivers/ina3221/<bus>-0040/hwmon/hwmon*/
with `inN_label`, `inN_input` (mV), `currN_input` (mA), channels from 1, plus
a summation channel that must not be counted twice.
"""
import glob
import os
import time

from edge.errors import MeterUnavailable
from edge.power.base import Meter, make_sample, read_number, read_text, total_power_w, under_root

IIO_DRIVER_DIR = "/sys/bus/i2c/drivers/ina3221x"
HWMON_DRIVER_DIR = "/sys/bus/i2c/drivers/ina3221"
# Rails that measure the whole board's input; preferred over summing rails.
BOARD_INPUT_RAILS = ("POM_5V_IN", "VDD_IN")
_MAX_CHANNELS = 8


def _is_skipped_label(label):
    # The hwmon driver exposes a "sum of shunt voltages" channel; unconnected
    # channels are labelled NC on some carrier boards.
    low = label.strip().lower()
    return low.startswith("sum") or low in ("", "nc")


def find_iio_channels(root):
    """Return [(rail, power_file)] for every Nano-style iio INA3221 under `root`."""
    pattern = os.path.join(under_root(root, IIO_DRIVER_DIR), "*", "iio:device*")
    channels = []
    for device in sorted(glob.glob(pattern)):
        for n in range(_MAX_CHANNELS):
            name_file = os.path.join(device, "rail_name_{}".format(n))
            power_file = os.path.join(device, "in_power{}_input".format(n))
            if os.path.isfile(name_file) and os.path.isfile(power_file):
                channels.append((read_text(name_file), power_file))
    return channels


def find_hwmon_channels(root):
    """Return [(rail, volt_file, curr_file)] for every hwmon INA3221 under `root`."""
    pattern = os.path.join(under_root(root, HWMON_DRIVER_DIR), "*", "hwmon", "hwmon*")
    channels = []
    for device in sorted(glob.glob(pattern)):
        for n in range(1, 4):  # the summation channel and shunt inputs sit above 3
            label_file = os.path.join(device, "in{}_label".format(n))
            volt_file = os.path.join(device, "in{}_input".format(n))
            curr_file = os.path.join(device, "curr{}_input".format(n))
            if not (os.path.isfile(label_file) and os.path.isfile(volt_file) and os.path.isfile(curr_file)):
                continue
            label = read_text(label_file)
            if not _is_skipped_label(label):
                channels.append((label, volt_file, curr_file))
    return channels


def read_iio_rails_w(channels):
    """Read {rail: W} from iio power files (mW)."""
    return {rail: read_number(power_file) / 1000.0 for rail, power_file in channels}


def read_hwmon_rails_w(channels):
    """Read {rail: W} from hwmon voltage (mV) and current (mA) files."""
    return {
        rail: read_number(volt_file) * read_number(curr_file) / 1.0e6
        for rail, volt_file, curr_file in channels
    }


class Ina3221Meter(Meter):
    """INA3221 rails from sysfs; `layout` is "auto" (iio, then hwmon), "iio" or "hwmon"."""

    name = "ina3221"

    def __init__(self, root="/", layout="auto", clock=time.monotonic):
        if layout not in ("auto", "iio", "hwmon"):
            raise ValueError("layout must be 'auto', 'iio' or 'hwmon', got {!r}".format(layout))
        self.root = root
        self.layout = layout
        self.clock = clock
        self._found = None  # ("iio", channels) or ("hwmon", channels)

    @property
    def source(self):
        return "ina3221:{}".format(self._found[0]) if self._found else self.name

    def open(self):
        if self.layout in ("auto", "iio"):
            channels = find_iio_channels(self.root)
            if channels:
                self._found = ("iio", channels)
                return self
        if self.layout in ("auto", "hwmon"):
            channels = find_hwmon_channels(self.root)
            if channels:
                self._found = ("hwmon", channels)
                return self
        tried = {"auto": "ina3221x and hwmon", "iio": "ina3221x", "hwmon": "hwmon"}[self.layout]
        raise MeterUnavailable("no INA3221 under {}; tried {}".format(self.root, tried))

    def read(self):
        if self._found is None:
            raise MeterUnavailable("INA3221 meter read before open()")
        kind, channels = self._found
        rails = read_iio_rails_w(channels) if kind == "iio" else read_hwmon_rails_w(channels)
        t = self.clock()
        return make_sample(t, total_power_w(rails, BOARD_INPUT_RAILS), rails, self.source, True)

    def close(self):
        self._found = None
