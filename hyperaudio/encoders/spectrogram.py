"""Spectrogram encoder with pitch, aperiodicity and loudness features (kan-fewsound.txt §2, Table 5)."""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import sys
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

LOUDNESS_FLOOR_DB = -100.0
F0_REFERENCE_HZ = 200.0
_IMPORT_LOCK = threading.Lock()


def import_pyworld():
    """``pyworld``, imported lazily; a clear error when it is missing.

    pyworld <= 0.3.5 imports ``pkg_resources`` only to read its own version, and setuptools >= 81
    no longer ships that module: a stand-in answering ``get_distribution(name).version`` is
    provided for the duration of the import when the real one is absent.
    """
    with _IMPORT_LOCK:
        return _import_pyworld()


def _import_pyworld():
    try:
        return importlib.import_module("pyworld")
    except ModuleNotFoundError as exc:
        if exc.name == "pyworld":
            raise ImportError("the spectrogram encoder's pitch features need pyworld: "
                              "pip install 'hyperaudio[encoders]' (or pass pitch=false)") from None
        if exc.name != "pkg_resources":
            raise
    shim = types.ModuleType("pkg_resources")
    shim.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))
    sys.modules["pkg_resources"] = shim
    try:
        return importlib.import_module("pyworld")
    finally:
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


def a_weighting_db(freqs: np.ndarray, min_db: float = -80.0) -> np.ndarray:
    """IEC 61672 A-weighting in dB at ``freqs`` (Hz), floored at ``min_db`` (as ``librosa.A_weighting``)."""
    f2 = np.asarray(freqs, dtype=np.float64) ** 2
    c = np.array([12194.217, 20.598997, 107.65265, 737.86223]) ** 2
    with np.errstate(divide="ignore"):
        w = 2.0 + 20.0 * (np.log10(c[0]) + 2 * np.log10(f2) - np.log10(f2 + c[0]) - np.log10(f2 + c[1])
                          - 0.5 * np.log10(f2 + c[2]) - 0.5 * np.log10(f2 + c[3]))
    return np.maximum(w, min_db)


def _band_edges(sample_rate: float, n_bins: int, bands: int) -> list[tuple[int, int]]:
    """``bands`` FFT-bin ranges equally spaced on the mel scale from 0 Hz to Nyquist (never empty)."""
    mel_max = 2595.0 * math.log10(1.0 + (sample_rate / 2) / 700.0)
    hz = [700.0 * (10 ** (mel_max * i / bands / 2595.0) - 1.0) for i in range(bands + 1)]
    bins = [min(n_bins - 1, round(h / (sample_rate / 2) * (n_bins - 1))) for h in hz]
    edges = []
    for i in range(bands):
        lo = min(bins[i], n_bins - 1)
        edges.append((lo, max(lo + 1, bins[i + 1])))
    return edges


class SpectrogramEncoder(nn.Module):
    """VoiceBlock-style spectrogram encoder of FewSound (kan-fewsound.txt §2 "Spectrogram Encoder").

    A linear-magnitude STFT (``n_fft`` Hann window, ``hop_length``, zero-padded centred frames:
    ``1 + T // hop_length`` frames) goes through a trainable frame-wise convolution stack (the FFT
    bins are the input channels; kernel 3, GroupNorm(1) + GELU, so each latent depends only on its
    own clip). Per frame, non-trainable features are appended and mixed in by one more conv layer,
    then a 1×1 conv gives ``latent_channels`` features: ``forward(x [B, T]) -> [B, frames, D]``.

    Features (``frame_features``): loudness, the A-weighted frame power in dB re a full-scale
    signal (from the same STFT, floored at -100 dB, fed as ``dB / 20``); with ``pitch=True`` also
    WORLD's f0 (``pyworld`` DIO + StoneMask, 71–800 Hz, fed as ``log2(f0 / 200 Hz)`` and a voiced
    flag) and D4C aperiodicity averaged in ``aperiodicity_bands`` mel-spaced bands. WORLD runs on
    CPU numpy under no_grad, one clip per thread (about 45 ms per 1.5 s clip at 22.05 kHz, against
    ~440 ms for ``librosa.pyin``); it needs the ``encoders`` extra.

    Defaults: ``sample_rate = 22050`` (set by the hypernetwork builder), ``n_fft = 1024``,
    ``hop_length = 256``, ``hidden = 128``, ``layers = 3``, ``latent_channels = 32``,
    ``pitch = True``, ``aperiodicity_bands = 4``: 129 × 32 for 32,768 samples.
    """

    conformance_params = {"n_fft": 128, "hop_length": 64, "hidden": 8, "layers": 1, "latent_channels": 4}
    conformance_samples = 2048

    def __init__(self, sample_rate: int = 22050, n_fft: int = 1024, hop_length: int = 256, hidden: int = 128,
                 layers: int = 3, latent_channels: int = 32, pitch: bool = True, aperiodicity_bands: int = 4):
        super().__init__()
        if sample_rate <= 0 or n_fft < 2 or hop_length < 1 or hidden < 1 or layers < 1 or latent_channels < 1:
            raise ValueError("sample_rate, hop_length, hidden, layers and latent_channels must be positive, n_fft >= 2")
        if pitch and aperiodicity_bands < 1:
            raise ValueError("aperiodicity_bands must be at least 1")
        self.sample_rate, self.n_fft, self.hop_length = int(sample_rate), int(n_fft), int(hop_length)
        self.pitch, self.aperiodicity_bands = bool(pitch), int(aperiodicity_bands)
        n_bins = self.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        freqs = np.linspace(0, self.sample_rate / 2, n_bins)
        a_weights = torch.from_numpy(10 ** (a_weighting_db(freqs) / 10)).float()
        self.register_buffer("a_weights", a_weights, persistent=False)
        convs: list[nn.Module] = []
        width = n_bins
        for _ in range(int(layers)):
            convs += [nn.Conv1d(width, hidden, 3, padding=1), nn.GroupNorm(1, hidden), nn.GELU()]
            width = hidden
        self.spectral = nn.Sequential(*convs)
        self.joint = nn.Sequential(nn.Conv1d(hidden + self.n_features, hidden, 3, padding=1),
                                   nn.GroupNorm(1, hidden), nn.GELU(), nn.Conv1d(hidden, latent_channels, 1))

    @property
    def n_features(self) -> int:
        """Feature channels appended per frame: loudness [, log-f0, voiced, aperiodicity bands]."""
        return 1 + (2 + self.aperiodicity_bands if self.pitch else 0)

    def frames(self, samples: int) -> int:
        return 1 + samples // self.hop_length

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, self.n_fft, self.hop_length, window=self.window, center=True, pad_mode="constant",
                          return_complex=True)
        return spec.abs()  # [B, bins, frames]

    def _loudness_db(self, mag: torch.Tensor) -> torch.Tensor:
        # Parseval: the window-weighted mean square of the frame is sum_k |X_k|^2 / (N sum w^2) over
        # the full spectrum; the one-sided spectrum counts every bin but DC and Nyquist twice.
        power = mag.square() * self.a_weights[:, None]
        twice = torch.full((mag.shape[1],), 2.0, device=mag.device)
        twice[0] = 1.0
        if self.n_fft % 2 == 0:
            twice[-1] = 1.0
        ms = (power * twice[:, None]).sum(1) / (self.n_fft * self.window.square().sum())
        return (10 * torch.log10(ms + 1e-30)).clamp_min(LOUDNESS_FLOOR_DB)  # [B, frames]

    def _world(self, pw, wave: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(wave, dtype=np.float64)
        period = 1000.0 * self.hop_length / self.sample_rate
        f0, t = pw.dio(x, self.sample_rate, frame_period=period)
        f0 = pw.stonemask(x, f0, t, self.sample_rate)
        ap = pw.d4c(x, f0, t, self.sample_rate)  # [frames, bins of WORLD's own FFT], 0..1
        n_bins = ap.shape[1]
        bands = np.stack([ap[:, lo:hi].mean(1) for lo, hi in
                          _band_edges(self.sample_rate, n_bins, self.aperiodicity_bands)], axis=1)
        out_f0, out_ap = np.zeros(frames), np.ones((frames, self.aperiodicity_bands))
        n = min(frames, len(f0))  # DIO's frames sit at k * hop, as the centred STFT's
        out_f0[:n], out_ap[:n] = f0[:n], bands[:n]
        return out_f0, out_ap

    @torch.no_grad()
    def frame_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Physical per-frame features: ``loudness`` dB ``[B, F]``; with ``pitch``: ``f0`` Hz (0 where
        unvoiced) ``[B, F]`` and ``aperiodicity`` (0 periodic … 1 noise) ``[B, F, bands]``."""
        return self._features(x, self._stft(x.float()))

    def _features(self, x: torch.Tensor, mag: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"loudness": self._loudness_db(mag)}
        if self.pitch:
            frames, pw = mag.shape[-1], import_pyworld()  # imported before any thread starts
            waves = x.detach().to("cpu", torch.float64).numpy()
            workers = min(len(waves), torch.get_num_threads())
            if workers > 1:  # WORLD releases the GIL
                with ThreadPoolExecutor(workers) as pool:
                    results = list(pool.map(lambda w: self._world(pw, w, frames), waves))
            else:
                results = [self._world(pw, w, frames) for w in waves]
            out["f0"] = torch.from_numpy(np.stack([r[0] for r in results])).float().to(mag.device)
            out["aperiodicity"] = torch.from_numpy(np.stack([r[1] for r in results])).float().to(mag.device)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, T], got shape {list(x.shape)}")
        mag = self._stft(x)
        with torch.no_grad():
            feats = self._features(x, mag.detach())
            columns = [feats["loudness"][:, None] / 20.0]
            if self.pitch:
                f0 = feats["f0"]
                voiced = (f0 > 0).float()
                logf0 = torch.where(f0 > 0, torch.log2(f0.clamp_min(1.0) / F0_REFERENCE_HZ), torch.zeros_like(f0))
                columns += [logf0[:, None], voiced[:, None], feats["aperiodicity"].transpose(1, 2)]
            side = torch.cat(columns, dim=1)  # [B, n_features, frames]
        h = self.spectral(torch.log(mag + 1e-5))
        return self.joint(torch.cat([h, side], dim=1)).transpose(1, 2)


__all__ = ["SpectrogramEncoder", "a_weighting_db", "import_pyworld"]
