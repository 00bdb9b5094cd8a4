"""Playback errors: bad input (unsupported rate, unknown device, missing PortAudio) that the CLI
reports on one line with exit status 2, like every ``hyperaudio.errors.HyperaudioError``."""

from ..errors import HyperaudioError


class PlaybackError(HyperaudioError):
    """Playback cannot start: no audio device, an unsupported rate, bad parameters."""
