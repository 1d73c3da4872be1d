"""The edge exception hierarchy: every message names the bad input and the fix."""


class EdgeError(Exception):
    """Base of every error raised on purpose by the edge runtime."""


class BundleError(EdgeError):
    """A bundle (folder or .tar.gz) is missing, malformed or fails its checksums."""


class BackendError(EdgeError):
    """An inference backend cannot load a model or run it."""


class DecodeError(EdgeError):
    """A model output has a shape or layout the decoder does not understand."""


class FrameError(EdgeError):
    """A frame or image cannot be read or is not a usable BGR image."""


class SourceError(EdgeError):
    """A frame source (camera, stream, video, folder) cannot be opened."""


class MeterUnavailable(EdgeError):
    """A power sensor is not present here; the message says what was tried."""


class ConfigError(EdgeError):
    """A configuration value is missing or out of range."""


class BudgetInfeasible(ConfigError):
    """A total energy budget that idle and sleep power alone already exceed."""


class DaemonError(EdgeError):
    """The daemon cannot go on (e.g. every recent frame failed); systemd should restart it."""


class StoreError(EdgeError):
    """The detection store cannot be opened, fails its integrity check, or a write is malformed."""


class TruncatedImage(FrameError):
    """An image file ends before its format's end marker (cut while being written or copied)."""


class NativeError(EdgeError):
    """The native kernels (edge/native) cannot be built or loaded, or were given arrays they cannot take."""


class FusionInputError(EdgeError, ValueError):
    """Bad input to box fusion; a ``ValueError`` so drop-in callers can catch it."""
