"""hyperaudio-whisper: Whisper's encoder with LoRA adapters as a hyperaudio encoder."""

from .encoder import CheckpointError, WhisperLoRAEncoder

__version__ = "0.1.0"
__all__ = ["CheckpointError", "WhisperLoRAEncoder", "__version__"]
