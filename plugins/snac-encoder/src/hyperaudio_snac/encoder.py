"""The SNAC encoder (Siuzdak et al. 2024) as a hyperaudio encoder (kan-fewsound.txt §2, Table 5)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from hyperaudio.encoders import resample

# Keys of a SNAC config.json that define the encoder (the rest describe the quantizer and decoder).
ARCHITECTURE_KEYS = ("encoder_dim", "encoder_rates", "depthwise", "attn_window_size")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")


class CheckpointError(ValueError):
    """A ``pretrained`` SNAC checkpoint is missing, unreadable, or does not fit the encoder."""


def _checkpoint_files(path: str) -> tuple[Path, Path | None]:
    """The weights file and the ``config.json`` (if any) that ``path`` designates."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"pretrained SNAC checkpoint {str(p)!r} does not exist")
    if p.is_dir():
        found = [p / name for name in WEIGHT_FILES if (p / name).is_file()]
        if not found:
            raise CheckpointError(f"pretrained SNAC folder {str(p)!r} holds none of {', '.join(WEIGHT_FILES)}")
        weights = found[0]
    else:
        weights = p
    config = weights.parent / "config.json"
    return weights, config if config.is_file() else None


def read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read SNAC config {str(path)!r}: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"SNAC config {str(path)!r} is not a JSON object")
    return config


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a torch file loaded with ``weights_only=True`` (no pickled code)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refusals, corrupt archives, safetensors errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load SNAC checkpoint {str(path)!r} as a plain state dict "
                              f"(safetensors, or torch weights only): {first}") from None
    for key in ("state_dict", "model"):  # common wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"SNAC checkpoint {str(path)!r} is not a dict of tensors")
    return state


def encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's entries of a full SNAC state dict (``encoder.*``), or an encoder-only one as is."""
    for prefix in ("encoder.", "snac.encoder.", "model.encoder."):
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked
    return dict(state)


class SNACEncoder(nn.Module):
    """SNAC's encoder (Siuzdak et al. 2024), as in FewSound's encoder comparison (kan-fewsound.txt §2, Table 5).

    ``snac.layers.Encoder`` (the module ``SNAC(**config).encoder`` builds: a weight-normed conv,
    one block per rate with Snake-activated residual units at dilations 1/3/9 and a strided conv,
    optional local windowed attention, a final conv), then a 1×1 projection to ``latent_channels``
    (0 keeps SNAC's ``encoder_dim · 2^len(rates)`` channels). ``forward(x [B, T]) -> [B, frames, D]``.

    The encoder runs at ``codec_rate`` (0 = the input's ``sample_rate``, the default for training
    from scratch as FewSound does); a differing rate is reached by band-limited resampling inside
    the encoder. The signal is zero-padded on the right to a multiple of the hop
    (``prod(encoder_rates)``, times ``attn_window_size`` with attention), so any ``T >= 1`` works:
    ``frames = ceil(T' / hop)`` for ``T'`` samples at the codec rate (rounded up to whole windows).

    ``pretrained``: a local SNAC checkpoint (a folder with ``config.json`` and ``pytorch_model.bin``
    or ``model.safetensors``, as the published ones, or one such file; a ``torch`` file is read with
    ``weights_only=True``, never as a full pickle) whose encoder weights initialise this one. A
    ``config.json`` beside the weights sets the architecture and, unless ``codec_rate`` is given,
    the codec rate; without one the keywords must describe the checkpoint.

    Defaults: the architecture of the published 24 kHz speech model (``encoder_dim = 48``,
    ``encoder_rates = (2, 4, 8, 8)``, depthwise, no attention: hop 512, 6.7 M parameters),
    ``latent_channels = 32``, ``sample_rate = 22050`` (set by the hypernetwork builder),
    ``codec_rate = 0``, random initialisation: 64 × 32 for 32,768 samples.
    """

    conformance_params = {"encoder_dim": 4, "encoder_rates": [2, 4], "latent_channels": 4}
    conformance_samples = 2048

    def __init__(self, sample_rate: int = 22050, encoder_dim: int = 48, encoder_rates: Sequence[int] = (2, 4, 8, 8),
                 depthwise: bool = True, attn_window_size: int = 0, latent_channels: int = 32, codec_rate: int = 0,
                 pretrained: str = ""):
        super().__init__()
        from snac.layers import Encoder  # heavy optional dependency: imported only when built

        state = None
        if pretrained:
            weights, config_path = _checkpoint_files(pretrained)
            state = encoder_state(load_state_dict(weights))
            if config_path is not None:
                config = read_config(config_path)
                encoder_dim = config.get("encoder_dim", encoder_dim)
                encoder_rates = config.get("encoder_rates", encoder_rates)
                depthwise = config.get("depthwise", depthwise)
                attn_window_size = config.get("attn_window_size", attn_window_size) or 0
                if not codec_rate and config.get("sampling_rate"):
                    codec_rate = int(config["sampling_rate"])
        rates = [int(r) for r in encoder_rates]
        if sample_rate <= 0 or codec_rate < 0 or encoder_dim < 1 or not rates or min(rates) < 1:
            raise ValueError("sample_rate, encoder_dim and encoder_rates must be positive, codec_rate >= 0")
        if latent_channels < 0 or attn_window_size < 0:
            raise ValueError("latent_channels and attn_window_size must be >= 0")
        channels = int(encoder_dim) * 2 ** len(rates)
        if attn_window_size and channels % 64:
            raise ValueError(f"SNAC's attention uses 64-dim heads: encoder_dim * 2^len(rates) = {channels} "
                             "must be a multiple of 64")
        self.sample_rate = int(sample_rate)
        self.codec_rate = int(codec_rate) or self.sample_rate
        self.window = int(attn_window_size)
        self.hop = math.prod(rates)
        self.encoder = Encoder(int(encoder_dim), rates, depthwise=bool(depthwise),
                               attn_window_size=self.window or None)
        if state is not None:
            try:
                self.encoder.load_state_dict(state)
            except RuntimeError as exc:
                raise CheckpointError(
                    f"SNAC checkpoint {pretrained!r} does not fit the encoder (encoder_dim={encoder_dim}, "
                    f"encoder_rates={rates}, depthwise={bool(depthwise)}, attn_window_size={self.window}); "
                    f"put its config.json beside it or pass matching keywords: "
                    f"{str(exc).splitlines()[0]}") from None
        self.project = nn.Conv1d(channels, int(latent_channels), 1) if latent_channels else nn.Identity()

    def frames(self, samples: int) -> int:
        """Latent frames for ``samples`` input samples."""
        n = math.ceil(samples * self.codec_rate / self.sample_rate)
        block = self.hop * max(self.window, 1)
        return max(1, math.ceil(n / block)) * block // self.hop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, T], got shape {list(x.shape)}")
        x = resample(x, self.sample_rate, self.codec_rate)
        block = self.hop * max(self.window, 1)
        length = x.shape[-1]
        x = nn.functional.pad(x, (0, max(1, math.ceil(length / block)) * block - length))
        return self.project(self.encoder(x.unsqueeze(1))).transpose(1, 2)
