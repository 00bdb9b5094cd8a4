"""Whisper's encoder with LoRA adapters as a hyperaudio encoder (kan-fewsound.txt §2, §4.2, Table 5)."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hyperaudio.encoders import resample
from hyperaudio.loss import mel_filterbank

# Whisper's front end (whisper/audio.py): 16 kHz, 25 ms Hann window, 10 ms hop, log10 mel.
WHISPER_RATE = 16000
N_FFT = 400
HOP = 160


class CheckpointError(ValueError):
    """A ``pretrained`` Whisper folder is missing or cannot be loaded."""


def _random_config(d_model: int, layers: int, heads: int, ffn_dim: int):
    from transformers import WhisperConfig

    return WhisperConfig(d_model=d_model, encoder_layers=layers, encoder_attention_heads=heads,
                         encoder_ffn_dim=ffn_dim, decoder_layers=layers, decoder_attention_heads=heads,
                         decoder_ffn_dim=ffn_dim, num_mel_bins=80, max_source_positions=1500)


def load_pretrained_encoder(path: str) -> nn.Module:
    """The encoder of a local Whisper checkpoint folder (``save_pretrained`` layout), offline."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise CheckpointError(f"pretrained Whisper checkpoint {str(folder)!r} does not exist")
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise CheckpointError(f"pretrained Whisper checkpoint {str(folder)!r} must be a folder with config.json "
                              "and the weights (as written by save_pretrained)")
    from transformers import WhisperModel

    try:
        model = WhisperModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, EnvironmentError...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load the Whisper checkpoint in {str(folder)!r}: {first}") from None
    return model.get_encoder().float()


class WhisperLoRAEncoder(nn.Module):
    """Whisper's encoder fine-tuned with LoRA, as FewSound's Whisper T/L encoders (kan-fewsound.txt §2, §4.2).

    Inside the encoder, with torch ops: band-limited resampling from ``sample_rate`` to 16 kHz,
    Whisper's log-mel front end (``n_fft = 400``, hop 160, Hann, Slaney mel filters as
    ``librosa.filters.mel``, ``log10`` clamped at 1e-10, floored at the clip's maximum - 8,
    ``(x + 4) / 4``), then the transformer encoder (``transformers``' ``WhisperEncoder``) and a
    trainable linear projection to ``latent_channels`` (0 keeps ``d_model``):
    ``forward(x [B, T]) -> [B, ceil(frames / 2), D]`` with ``frames = ceil(T16 / 160)``, 75 × 32
    for 1.5 s.

    Short clips: Whisper always sees 3000 mel frames (30 s, zero-padded). By default the encoder
    instead runs only the positions the clip covers (positional embedding truncated, as
    whisper.cpp's ``audio_ctx``): the mel frames and convolutions are exactly Whisper's, attention
    just does not see the padding — 10-15x cheaper for a 1.5 s clip at Whisper-tiny size.
    ``full_context=True`` pads to 30 s as Whisper was trained and keeps the clip's positions.
    Clips longer than 30 s are refused.

    ``pretrained``: a local folder with a Whisper checkpoint (``config.json`` + weights, as
    ``save_pretrained`` writes them), loaded with ``local_files_only``: nothing is downloaded.
    Without it, a randomly initialised Whisper of ``d_model``/``layers``/``heads``/``ffn_dim``
    (defaults: Whisper tiny's 384/4/6/1536, 80 mel bins, 1500 positions).

    LoRA (peft) adapters of rank ``lora_rank`` and scale ``lora_alpha / lora_rank`` on
    ``target_modules`` (default ``q_proj``, ``v_proj``): only the adapters and the projection
    train. ``lora_rank = 0`` trains the whole encoder instead (sensible without a checkpoint).
    The positional embedding never trains (fixed sinusoids, as in Whisper).
    """

    conformance_params = {"d_model": 16, "layers": 1, "heads": 2, "ffn_dim": 32, "lora_rank": 2,
                          "latent_channels": 4}
    conformance_samples = 4096

    def __init__(self, sample_rate: int = 22050, pretrained: str = "", d_model: int = 384, layers: int = 4,
                 heads: int = 6, ffn_dim: int = 1536, lora_rank: int = 8, lora_alpha: float = 16.0,
                 lora_dropout: float = 0.0, target_modules: Sequence[str] = ("q_proj", "v_proj"),
                 latent_channels: int = 32, full_context: bool = False):
        super().__init__()
        if sample_rate <= 0 or lora_rank < 0 or latent_channels < 0 or not 0 <= lora_dropout < 1:
            raise ValueError("sample_rate must be positive, lora_rank and latent_channels >= 0, 0 <= lora_dropout < 1")
        if pretrained:
            encoder = load_pretrained_encoder(pretrained)
        else:
            if d_model < 1 or layers < 1 or heads < 1 or ffn_dim < 1 or d_model % heads:
                raise ValueError(f"need positive d_model, layers, heads, ffn_dim with d_model divisible by heads "
                                 f"(got d_model={d_model}, heads={heads})")
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            encoder = WhisperEncoder(_random_config(int(d_model), int(layers), int(heads), int(ffn_dim)))
        config = encoder.config
        self.sample_rate, self.full_context = int(sample_rate), bool(full_context)
        self.max_positions = int(config.max_source_positions)
        if lora_rank:
            from peft import LoraConfig, inject_adapter_in_model

            lora = LoraConfig(r=int(lora_rank), lora_alpha=float(lora_alpha), lora_dropout=float(lora_dropout),
                              target_modules=list(target_modules))
            encoder = inject_adapter_in_model(lora, encoder)  # in place; freezes everything but the adapters
        encoder.embed_positions.requires_grad_(False)
        self.whisper = encoder
        self.project = nn.Linear(config.d_model, int(latent_channels)) if latent_channels else nn.Identity()
        # The windowed real DFT as 2 * bins convolution kernels: the same power spectrum as torch.stft,
        # but real-valued, so the encoder also exports to ONNX (whose exporter has no complex STFT).
        n = torch.arange(N_FFT, dtype=torch.float64)
        angle = 2 * math.pi * n[:, None] * torch.arange(N_FFT // 2 + 1, dtype=torch.float64)[None] / N_FFT
        window = torch.hann_window(N_FFT, dtype=torch.float64)[:, None]
        dft = torch.cat([window * torch.cos(angle), -window * torch.sin(angle)], dim=1)
        self.register_buffer("dft", dft.T.unsqueeze(1).float(), persistent=False)  # [2 * bins, 1, N_FFT]
        filters = mel_filterbank(WHISPER_RATE, N_FFT, int(config.num_mel_bins))
        self.register_buffer("mel_filters", torch.from_numpy(filters).float(), persistent=False)
        layer_params = inspect.signature(type(encoder.layers[0]).forward).parameters
        # transformers 4.x encoder layers take a head mask and return a tuple; 5.x neither.
        self._layer_kwargs = {"layer_head_mask": None} if "layer_head_mask" in layer_params else {}

    def frames(self, samples: int) -> int:
        """Latent positions for ``samples`` input samples."""
        t16 = math.ceil(samples * WHISPER_RATE / self.sample_rate)
        return math.ceil(max(1, math.ceil(t16 / HOP)) / 2)

    def log_mel(self, x: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
        """Whisper's features ``[B, n_mels, F + 2]`` of a 16 kHz batch, ``F = ceil(T / 160)``, and the
        value ``[B, 1, 1]`` of a silent frame.

        The clip is zero-padded (as Whisper pads to 30 s), so the ``F + 2`` frames, their maximum and
        hence the floor are exactly those of Whisper's 30 s spectrogram; the two frames past the clip
        let the convolutions see what they see in Whisper.
        """
        frames = max(1, math.ceil(x.shape[-1] / HOP))
        x = F.pad(x, (0, HOP * (frames + 3) - x.shape[-1]))
        padded = F.pad(x[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[:, 0]  # stft(center=True)
        spec = F.conv1d(padded[:, None], self.dft, stride=HOP)[..., : frames + 2]  # [B, 2 * bins, F + 2]
        bins = N_FFT // 2 + 1
        power = spec[:, :bins].square() + spec[:, bins:].square()
        logmel = torch.clamp(self.mel_filters @ power, min=1e-10).log10()
        floor = logmel.amax(dim=(1, 2), keepdim=True) - 8.0
        silence = (torch.clamp(floor, min=-10.0) + 4.0) / 4.0  # log10(1e-10) = -10, floored
        return (torch.maximum(logmel, floor) + 4.0) / 4.0, frames, silence

    def encode(self, mel: torch.Tensor, positions: int) -> torch.Tensor:
        """The encoder's last hidden states ``[B, positions, d_model]`` for mel features ``[B, n_mels, F']``."""
        enc = self.whisper
        h = F.gelu(enc.conv2(F.gelu(enc.conv1(mel)))).transpose(1, 2)
        n = h.shape[1] if self.full_context else positions
        h = h[:, :n] + enc.embed_positions.weight[:n]
        h = F.dropout(h, p=float(enc.config.dropout), training=self.training)
        for layer in enc.layers:
            out = layer(h, None, **self._layer_kwargs)
            h = out[0] if isinstance(out, tuple) else out
        return enc.layer_norm(h)[:, :positions]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, T], got shape {list(x.shape)}")
        x16 = resample(x, self.sample_rate, WHISPER_RATE)
        mel, frames, silence = self.log_mel(x16)
        positions = math.ceil(frames / 2)
        if positions > self.max_positions:
            raise ValueError(f"whisper-lora encodes at most {self.max_positions * 2 * HOP / WHISPER_RATE:g} s; "
                             f"got {x.shape[-1] / self.sample_rate:.1f} s")
        if self.full_context:  # Whisper's 30 s window: pad with the silence frames Whisper would see
            mel = mel[..., : 2 * self.max_positions]
            pad = silence.expand(-1, mel.shape[1], 2 * self.max_positions - mel.shape[-1])
            mel = torch.cat([mel, pad], dim=-1)
        return self.project(self.encode(mel, positions))
