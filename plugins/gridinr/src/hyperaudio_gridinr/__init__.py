"""hyperaudio-gridinr: a 1-D multi-resolution grid INR for hyperaudio (an example plugin)."""

from .model import GridINR

__version__ = "0.1.0"
__all__ = ["GridINR", "__version__"]
