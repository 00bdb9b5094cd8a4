"""hyperaudio-snac: SNAC's encoder (Siuzdak et al. 2024) as a hyperaudio encoder."""

from .encoder import CheckpointError, SNACEncoder

__version__ = "0.1.0"
__all__ = ["CheckpointError", "SNACEncoder", "__version__"]
