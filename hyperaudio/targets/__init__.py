"""The built-in target networks (registered by ``hyperaudio.default_plugins.targets``).

Each is a plain ``torch.nn.Module`` following the contract in :mod:`hyperaudio.functional`:
keyword hyperparameters with the papers' defaults, ``forward(t [N, 1]) -> [N, out_channels * heads]``.
"""

from .encoding import FourierFeatures, PositionalEncoding
from .film import FiLMSIREN
from .finer import FINER
from .kan import KAN
from .nerf import NeRF
from .rff import RFF
from .siamese import SiameseSIREN
from .siren import SIREN
from .wire import WIRE

__all__ = [
    "FINER",
    "KAN",
    "RFF",
    "SIREN",
    "WIRE",
    "FiLMSIREN",
    "FourierFeatures",
    "NeRF",
    "PositionalEncoding",
    "SiameseSIREN",
]
