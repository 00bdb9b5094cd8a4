"""Built-in encoders, registered through the same hook as third-party plugins."""

from hyperaudio import hookimpl
from hyperaudio.encoders import SoundStreamEncoder, SpectrogramEncoder


@hookimpl
def register_encoders(register):
    register("soundstream", SoundStreamEncoder, description="SoundStream conv encoder, C=16, D=32, strides "
             "2/4/5/8, ELU: 103x32 latent for 32768 samples", paper="hypersound.md §3.2")
    register("spectrogram", SpectrogramEncoder, description="VoiceBlock-style linear-spectrogram conv encoder "
             "+ WORLD f0/aperiodicity + A-weighted loudness", paper="kan-fewsound.txt §2")
