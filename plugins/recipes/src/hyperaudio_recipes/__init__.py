"""hyperaudio-recipes: presets for the built-in target networks and a waveform encoder (an example plugin)."""

from .encoder import WaveConvEncoder

__version__ = "0.1.0"
__all__ = ["WaveConvEncoder", "__version__"]
