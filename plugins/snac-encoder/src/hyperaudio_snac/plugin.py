"""The hyperaudio plugin module (entry point ``hyperaudio: snac``)."""

from hyperaudio import hookimpl

from .encoder import SNACEncoder


@hookimpl
def register_encoders(register):
    register("snac", SNACEncoder, description="SNAC codec encoder (24 kHz model's architecture, from scratch "
             "or a local checkpoint) + 1x1 projection", paper="kan-fewsound.txt §2, Table 5")
