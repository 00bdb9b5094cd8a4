"""Built-in target networks, registered through the same hook as third-party plugins."""

from hyperaudio import hookimpl
from hyperaudio.targets import FINER, KAN, RFF, SIREN, WIRE, FiLMSIREN, NeRF, SiameseSIREN


@hookimpl
def register_target_networks(register):
    register("nerf", NeRF, description="FMLP: NeRF positional encoding (L=10) + ReLU MLP, 5x90",
             paper="hypersound.md §3.1")
    register("siren", SIREN, description="SIREN: sine MLP 5x90, omega_0=2000, omega_i=30",
             paper="hypersound.md §3.1, §4.4")
    register("rff", RFF, description="Gaussian random Fourier features (m=256, sigma=1000) + ReLU MLP, 5x90",
             paper="kan-fewsound.txt §2")
    register("finer", FINER, description="FINER: variable-periodic sin(w0(|z|+1)z) MLP 5x90, w0=30, k=20",
             paper="kan-fewsound.txt §2")
    register("wire", WIRE, description="WIRE: complex Gabor wavelet MLP 5x90 (real/imag parameter pairs)",
             paper="kan-fewsound.txt §2")
    register("kan", KAN, description="KAN [20-48-24-12-1], grid 10, order 2: 33,768 parameters",
             paper="kan-fewsound.txt §2, §4.3")
    register("siamese-siren", SiameseSIREN, description="Siamese SIREN: PE(16) + 2x256 trunk, two 128 heads, "
             "noise-reduced by the heads' difference", paper="siamese-siren.txt §2, appendix B")
    register("film-siren", FiLMSIREN, description="SIREN with per-layer FiLM frequency/phase modulations (PCINR)",
             paper="conditional-inr-synthesis.txt")
