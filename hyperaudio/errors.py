"""User-facing errors: the CLI prints their message on one line and exits with status 2."""


class HyperaudioError(Exception):
    """Base class for errors caused by bad input rather than by a bug."""


class AudioError(HyperaudioError):
    """An audio file is missing, unreadable, empty, non-finite or at an unsupported rate."""


class HyaError(HyperaudioError):
    """A ``.hya`` file is missing, truncated, corrupt, or from an incompatible version."""


class ConfigError(HyperaudioError):
    """A preset or a ``--set`` override is invalid."""


class TrainingError(HyperaudioError):
    """Training could not go on (diverged, or the run folder is not in the state asked for)."""
