"""The trainer's exception hierarchy; messages name the bad input and the fix."""


class TrainerError(Exception):
    """Base of every error raised on purpose by the trainer."""


class ConfigError(TrainerError):
    """A training_config.yaml key or value is unknown or out of range."""


class DataError(TrainerError):
    """A dataset, label file or annotation export is malformed."""


class Stopped(Exception):
    """Not an error: a stage cannot go on yet (run-all's annotation wait); the message says what to do next."""

    def __init__(self, message, status="waiting"):
        super().__init__(message)
        self.status = status
