"""The built-in encoders (registered by ``hyperaudio.default_plugins.encoders``).

An encoder is a plain ``torch.nn.Module``: keyword hyperparameters with defaults (a ``sample_rate``
keyword, if present, is set by the hypernetwork builder to the model's rate), ``forward(x [B, T])``
on a float32 mono waveform of any length ``T >= 1`` -> a latent ``[B, frames, channels]`` (the
hypernetwork flattens it). ``resample`` is a differentiable torch resampler for encoders that run
at a fixed rate.
"""

from .resample import resample
from .soundstream import SoundStreamEncoder
from .spectrogram import SpectrogramEncoder

__all__ = ["SoundStreamEncoder", "SpectrogramEncoder", "resample"]
