"""The hyperaudio plugin module (entry point ``hyperaudio: gridinr``): registers the network and its preset."""

from importlib import resources

from hyperaudio import hookimpl

from .model import GridINR


@hookimpl
def register_target_networks(register):
    register(
        "grid-inr",
        GridINR,
        description="1-D multi-resolution (hashed) feature grids + small MLP, Instant-NGP style",
        paper="Müller et al. 2022, Instant Neural Graphics Primitives (1-D adaptation)",
    )


@hookimpl
def register_presets(register):
    folder = resources.files("hyperaudio_gridinr").joinpath("presets")
    for item in sorted(folder.iterdir(), key=lambda p: p.name.removesuffix(".toml")):
        if item.name.endswith(".toml"):
            register(item.name.removesuffix(".toml"), str(item))
