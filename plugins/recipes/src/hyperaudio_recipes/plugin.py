"""The hyperaudio plugin module (entry point ``hyperaudio: recipes``)."""

from importlib import resources

from hyperaudio import hookimpl

from .encoder import WaveConvEncoder


@hookimpl
def register_encoders(register):
    register("wave-conv", WaveConvEncoder,
             description="strided 1-D conv stack on the raw waveform, mean+max pooling, linear -> latent")


@hookimpl
def register_presets(register):
    # Each TOML file is one preset named after the file; the registry validates its layout, and
    # the conformance kit checks that it resolves against the built-in target networks.
    folder = resources.files("hyperaudio_recipes").joinpath("presets")
    for item in sorted(folder.iterdir(), key=lambda p: p.name.removesuffix(".toml")):
        if item.name.endswith(".toml"):
            register(item.name.removesuffix(".toml"), str(item))
