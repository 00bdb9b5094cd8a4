"""The hyperaudio plugin module (entry point ``hyperaudio: whisper``)."""

from hyperaudio import hookimpl

from .encoder import WhisperLoRAEncoder


@hookimpl
def register_encoders(register):
    register("whisper-lora", WhisperLoRAEncoder, description="Whisper encoder (local checkpoint or random "
             "tiny-sized) with LoRA on q/v, in-encoder 16 kHz log-mel + projection",
             paper="kan-fewsound.txt §2, §4.2, Table 5")
