"""Siamese SIREN target network (siamese-siren.txt §2, appendix B; github.com/lucala/siamese-siren)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .encoding import PositionalEncoding
from .siren import SineLayer, siren_output


class SiameseSIREN(nn.Module):
    """A SIREN with a shared trunk and two twin heads whose difference estimates the noise.

    ``h = SIREN_trunk(γ(t))``; head ``a ∈ {0, 1}``: ``y_a = W_a sin(ω (V_a h + c_a)) + b_a``.
    Both heads are trained on the same signal; they differ only by initialisation, so
    ``y_0 - y_1`` is an estimate of the reconstruction noise, which ``postprocess`` removes with
    Noise Reduce (siamese-siren.txt §2, eq. 4): ``noisereduce.reduce_noise(y=y_0, sr,
    y_noise=α (y_0 - y_1), stationary=True)``.

    Reference configuration of the paper's Table 1 and the authors' ``train_and_eval_siam.py``:
    positional encoding with 16 frequencies, scale 2, raw ``t`` included (33 features, appendix B);
    trunk of two sine layers of 256, heads of one sine layer of 128 each, ``ω = 100`` for every
    sine layer. Because the encoding precedes it, the first sine layer uses the hidden SIREN
    initialisation ``U(±sqrt(6/in)/ω)``, as in the authors' code; each head ends in a linear layer
    initialised the same way. ``α = noise_alpha = 1`` (the code; the paper tunes it). On a
    32768-sample chunk the top encoding octaves (``2^15 π`` rad per unit of ``t``) exceed the
    sampling rate and alias; they are kept for fidelity to the reference, which fitted 10 s clips.

    ``forward`` returns ``[N, 2 * out_channels]``, head-major: all channels of head 0, then head 1.
    """

    heads = 2

    def __init__(
        self,
        num_frequencies: int = 16,
        hidden: Sequence[int] = (256, 256),
        siamese_hidden: Sequence[int] = (128,),
        omega: float = 100.0,
        noise_alpha: float = 1.0,
        out_channels: int = 1,
    ):
        super().__init__()
        self.noise_alpha = float(noise_alpha)
        self.encoding = PositionalEncoding(num_frequencies, scale=2.0, include_input=True)
        widths = [self.encoding.out_features, *map(int, hidden)]
        self.trunk = nn.Sequential(*(SineLayer(widths[i], widths[i + 1], omega) for i in range(len(widths) - 1)))
        self.twins = nn.ModuleList(self._head(widths[-1], [int(w) for w in siamese_hidden], omega, out_channels)
                                   for _ in range(self.heads))

    @staticmethod
    def _head(in_features: int, widths: list[int], omega: float, out_channels: int) -> nn.Sequential:
        widths = [in_features, *widths]
        layers = [SineLayer(widths[i], widths[i + 1], omega) for i in range(len(widths) - 1)]
        return nn.Sequential(*layers, siren_output(widths[-1], out_channels, omega))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = self.trunk(self.encoding(t))
        return torch.cat([twin(h) for twin in self.twins], dim=-1)

    # noisereduce's default STFT size; shorter signals have no spectrum to gate
    min_postprocess_samples = 1024

    def postprocess(self, y: np.ndarray, sr: float) -> np.ndarray:
        """Denoise head 0 with the heads' difference as the noise estimate: ``[2, M]`` -> ``[M]``.

        Signals shorter than one noise-reduction window (1024 samples) are returned as head 0, and
        so is every signal when ``noise_alpha`` is 0 (a compressed file whose encoder measured that
        denoising did not help, :mod:`hyperaudio.compress`).
        """
        y = np.asarray(y, dtype=np.float32)
        if y.shape[-1] < self.min_postprocess_samples or self.noise_alpha == 0:
            return y[0].copy()
        import noisereduce

        noise = self.noise_alpha * (y[0] - y[1])
        return noisereduce.reduce_noise(y=y[0], sr=sr, y_noise=noise, stationary=True).astype(np.float32)
