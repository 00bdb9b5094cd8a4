"""Build benchmark folders of real and speech audio from Debian packages (no network needed).

    python bench/prepare_data.py bench/data

- ``speech/``: espeak-ng sentences in several voices (synthetic speech; package ``espeak-ng``),
  written at 22.05 kHz.
- ``sonicpi/``: the CC0 recordings of ``sonic-pi-samples`` (drums, loops, guitar, ambient).

Missing packages are named; install them with ``sudo apt-get install espeak-ng sonic-pi-samples``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things.",
    "A hypernetwork turns any sound into a small network.",
    "Six spoons of fresh snow peas for her brother Bob.",
    "We also need a small plastic snake and a big toy frog.",
    "Implicit neural representations store sound as a function.",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb-x-rp+m4", "en-us+f5", "en-gb+m2"]
SONIC_PI = Path("/usr/share/sonic-pi/samples")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/data")
    speech = out / "speech"
    speech.mkdir(parents=True, exist_ok=True)
    if shutil.which("espeak-ng"):
        import numpy as np
        import soundfile as sf
        import soxr

        for i, (text, voice) in enumerate(zip(SENTENCES, VOICES)):
            with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
                subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", tmp.name, text], check=True)
                x, sr = sf.read(tmp.name, dtype="float32")
            x = soxr.resample(x, sr, 22050)
            sf.write(str(speech / f"speech_{i:02d}_{voice.replace('+', '_')}.wav"), x / np.abs(x).max() * 0.9, 22050)
        print(f"wrote {len(SENTENCES)} speech clips to {speech}")
    else:
        print("espeak-ng not found: sudo apt-get install espeak-ng")
    if SONIC_PI.is_dir():
        dest = out / "sonicpi"
        dest.mkdir(parents=True, exist_ok=True)
        files = sorted(SONIC_PI.glob("*.flac"))
        for f in files:
            shutil.copy(f, dest / f.name)
        print(f"copied {len(files)} sonic-pi recordings to {dest}")
    else:
        print("sonic-pi-samples not found: sudo apt-get install sonic-pi-samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
