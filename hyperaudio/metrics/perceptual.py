"""Perceptual metrics (Siamese SIREN §3, KAN/FewSound §4): PESQ, STOI, ViSQOL, CDPAM.

Each takes two 1-D float arrays of equal length in [-1, 1], reference first, and their sample
rate, resamples (soxr, very high quality) to the rate its standard requires, and returns a float.
The packages come with the ``hyperaudio[metrics]`` extra; they are imported on first use only (CDPAM
and ViSQOL take ~15 s to start), and a missing one raises :class:`MetricUnavailable`.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import warnings

import numpy as np

from ..errors import HyperaudioError


class MetricUnavailable(HyperaudioError, ImportError):
    """A metric's optional package is not installed."""


def _require(module: str, package: str, metric: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MetricUnavailable(
            f"metric '{metric}' needs the package '{package}' ({exc}); "
            f"install it with: pip install 'hyperaudio[metrics]'"
        ) from exc


def _resample(x: np.ndarray, sr: float, target: int) -> np.ndarray:
    if sr == target:
        return np.asarray(x, dtype=np.float64)
    import soxr

    return soxr.resample(np.asarray(x, dtype=np.float64), float(sr), float(target), quality="VHQ")


def pesq_wb(ref, est, sr: float) -> float:
    """Wideband PESQ (ITU-T P.862.2) MOS-LQO, about 1.04 to 4.64, at 16 kHz.

    NaN, with a warning, where PESQ declines the input (silence, no speech found, or shorter than
    about a quarter of a second): a non-speech recording then does not abort a whole evaluation.
    """
    pesq = _require("pesq", "pesq", "pesq")
    ref16, est16 = _resample(ref, sr, 16000), _resample(est, sr, 16000)
    if not np.any(ref16):  # pesq would divide by a zero peak first
        warnings.warn("PESQ undefined for a silent reference; returning NaN", stacklevel=2)
        return float("nan")
    try:
        return float(pesq.pesq(16000, ref16, est16, "wb"))
    except (pesq.NoUtterancesError, pesq.BufferTooShortError) as exc:
        warnings.warn(f"PESQ undefined for this input ({type(exc).__name__}); returning NaN", stacklevel=2)
        return float("nan")


def stoi(ref, est, sr: float) -> float:
    """Short-time objective intelligibility (Taal et al. 2011), 0 to 1.

    pystoi works at 10 kHz and resamples by itself with an Octave-compatible polyphase filter (as
    the reference MATLAB code does), so integer rates are passed through unchanged; only a
    fractional rate is first brought to 10 kHz with soxr.
    """
    pystoi = _require("pystoi", "pystoi", "stoi")
    ref, est = np.asarray(ref, dtype=np.float64), np.asarray(est, dtype=np.float64)
    if float(sr) != int(sr):
        ref, est, sr = _resample(ref, sr, 10000), _resample(est, sr, 10000), 10000
    return float(pystoi.stoi(ref, est, int(sr), extended=False))


@functools.lru_cache(maxsize=1)
def _visqol_api():
    visqol = _require("visqol", "visqol-python", "visqol")
    api = visqol.VisqolApi()
    api.create(mode="audio")
    return api


def visqol(ref, est, sr: float) -> float:
    """ViSQOL v3 audio mode MOS-LQO (1 to about 4.73 for identical signals), at 48 kHz."""
    api = _visqol_api()
    ref48, est48 = _resample(ref, sr, 48000), _resample(est, sr, 48000)
    return float(api.measure_from_arrays(ref48, est48, 48000).moslqo)


#: Every global CDPAM's packaged checkpoint refers to: tensors, their storages, the state dicts.
_CDPAM_GLOBALS = frozenset({("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict"),
                            ("torch", "FloatStorage"), ("torch", "LongStorage")})


class _TensorUnpickler(pickle.Unpickler):
    """An unpickler that builds tensors and ordered dicts, and refuses any other global."""

    def find_class(self, module, name):
        if (module, name) not in _CDPAM_GLOBALS:
            raise pickle.UnpicklingError(f"CDPAM checkpoint: {module}.{name} is not allowed")
        return super().find_class(module, name)


class _TensorPickle:
    """The ``pickle_module`` for ``torch.load``: ``load`` and ``Unpickler`` with the allow-list above."""

    Unpickler = _TensorUnpickler

    @staticmethod
    def load(file, **kwargs):
        return _TensorUnpickler(file, **kwargs).load()


def _load_cdpam_state(path: str) -> dict:
    """The model state dict of CDPAM's packaged checkpoint, without executing pickled code.

    The file is a legacy (Python 2, non-zip) torch pickle whose integer opcodes torch's
    ``weights_only`` unpickler does not implement, so an allow-list unpickler replaces it for this
    one call; no process-wide setting is touched.
    """
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_TensorPickle)
    return checkpoint["state"]  # the file also holds the optimiser's state and the epoch count


@functools.lru_cache(maxsize=1)
def _cdpam_model():
    _require("librosa", "librosa", "cdpam")  # cdpam imports both without declaring them
    _require("resampy", "resampy", "cdpam")
    cdpam = _require("cdpam", "cdpam", "cdpam")
    import torch
    from cdpam.models import FINnet

    # cdpam.CDPAM.__init__ loads with a bare torch.load (refused by torch >= 2.6): build the same
    # network (its constants, cdpam 0.0.6) and load the state ourselves.
    model = FINnet(dev=torch.device("cpu"), encoder_layers=16, encoder_filters=64, ndim=[16, 6], classif_dp=0.05,
                   classif_BN=0, classif_act="no", input_size=512)
    path = os.path.join(os.path.dirname(cdpam.__file__), "CDPAM_trained", "scratchJNDdefault_best_model.pth")
    model.load_state_dict(_load_cdpam_state(path))
    metric = object.__new__(cdpam.CDPAM)  # its forward() needs only these two attributes
    metric.device, metric.model = torch.device("cpu"), model.eval()
    return metric


def cdpam(ref, est, sr: float) -> float:
    """CDPAM perceptual distance (Manocha et al. 2021), 0 for identical signals, lower is better.

    At 22.05 kHz, scaled to the 16-bit integer range as the package's own ``load_audio`` does (which
    we avoid: it uses the removed ``np.float``). Runs on the CPU; the model is loaded once.
    """
    import torch

    model = _cdpam_model()
    ref22, est22 = _resample(ref, sr, 22050), _resample(est, sr, 22050)

    def prepare(x):
        return torch.from_numpy(np.round(x * 32768.0).astype(np.float32)[None])

    with torch.no_grad():
        return float(model.forward(prepare(ref22), prepare(est22)).reshape(-1)[0])
