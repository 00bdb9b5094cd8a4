"""Build benchmark folders of real and speech audio from Debian packages (no network needed).

    python bench/prepare_data.py bench/data

- ``speech/``: espeak-ng sentences in several voices (synthetic speech; package ``espeak-ng``),
  written at 22.05 kHz.
- ``sonicpi/``: the CC0 recordings of ``sonic-pi-samples`` (drums, loops, guitar, ambient).
- ``real/``: real recordings, the set the fitting targets of issue #14 are measured on: human read
  speech (the channel announcements of ``alsa-utils`` and ``sound-theme-freedesktop``, two
  speakers), a piano and a violin phrase played by ``fluidsynth`` from the FluidR3 General MIDI
  soundfont (sampled instruments, ``fluid-soundfont-gm``), and a struck bell (``sonic-pi-samples``).
- ``speech300/`` and ``speech300-val/``: a few hundred varied espeak-ng clips for training a
  hypernetwork (bench/train_eval.py): several languages and voice variants, pitch (``-p``) and
  speed (``-s``) drawn at random, many sentences, 22.05 kHz. The validation folder holds other
  *voices* than the training one (a held-out split by voice, as the papers hold out speakers).

    python bench/prepare_data.py bench/data --speech300 300 --val-clips 40
    python bench/prepare_data.py bench/data --speech300 0        # skip the hypernetwork corpus

Missing packages are named; install them with ``sudo apt-get install espeak-ng sonic-pi-samples
alsa-utils sound-theme-freedesktop fluidsynth fluid-soundfont-gm`` (and ``pip install mido``).
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
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
#: Recorded human speech shipped by system packages (one speaker each).
READ_SPEECH = {"speech_alsa_front_center": Path("/usr/share/sounds/alsa/Front_Center.wav"),
               "speech_freedesktop_front_left": Path("/usr/share/sounds/freedesktop/stereo/audio-channel-front-left.oga")}
#: (General MIDI program, [(MIDI note, beats)...]) at 150 bpm: a piano phrase with chords, a legato violin line.
PHRASES = {"piano_phrase": (0, [((60, 64, 67), 1), ((62,), 0.5), ((64,), 0.5), ((65, 69, 72), 1), ((67,), 1)]),
           "violin_phrase": (40, [((67,), 1), ((69,), 0.5), ((71,), 0.5), ((72,), 1.5), ((74,), 1)])}


def real_clips(out: Path, rate: int = 22050) -> list[str]:
    """Write the ``real/`` set; returns what could not be made and why."""
    import numpy as np
    import soundfile as sf
    import soxr

    out.mkdir(parents=True, exist_ok=True)
    missing = []

    def write(name: str, x: np.ndarray, sr: int) -> None:
        x = np.asarray(x, dtype=np.float32)
        x = (x.mean(axis=1) if x.ndim == 2 else x)
        x = soxr.resample(x, sr, rate)
        sf.write(str(out / f"{name}.wav"), 0.9 * x / max(float(np.abs(x).max()), 1e-9), rate)

    for name, path in READ_SPEECH.items():
        if path.exists():
            write(name, *sf.read(str(path), dtype="float32"))
        else:
            missing.append(f"{path} (alsa-utils / sound-theme-freedesktop)")
    bell = SONIC_PI / "perc_bell.flac"
    if bell.exists():
        write("bell_sonicpi", *sf.read(str(bell), dtype="float32"))
    else:
        missing.append(f"{bell} (sonic-pi-samples)")
    if not (shutil.which("fluidsynth") and SOUNDFONT.exists()):
        return missing + ["fluidsynth with FluidR3_GM.sf2 (fluidsynth, fluid-soundfont-gm)"]
    try:
        import mido
    except ImportError:
        return missing + ["mido (pip install mido)"]
    for name, (program, notes) in PHRASES.items():
        midi = mido.MidiFile(ticks_per_beat=480)
        track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(150)),
                                mido.Message("program_change", program=program)])
        for chord, beats in notes:
            track += [mido.Message("note_on", note=n, velocity=90, time=0) for n in chord]
            track += [mido.Message("note_off", note=n, velocity=0, time=int(beats * 480) if i == 0 else 0)
                      for i, n in enumerate(chord)]
        midi.tracks.append(track)
        with tempfile.TemporaryDirectory() as tmp:
            midi.save(f"{tmp}/phrase.mid")
            subprocess.run(["fluidsynth", "-ni", "-g", "0.8", "-r", "44100", "-F", f"{tmp}/phrase.wav",
                            str(SOUNDFONT), f"{tmp}/phrase.mid"], check=True, capture_output=True)
            write(name, *sf.read(f"{tmp}/phrase.wav", dtype="float32"))
    return missing

# -- the hypernetwork corpus (speech300) ----------------------------------------------------------
#: Sentences per language (espeak-ng voice prefix). Many English ones; a few for each other language.
TEXTS = {
    "en": [
        "The quick brown fox jumps over the lazy dog.",
        "Please call Stella and ask her to bring these things with her from the store.",
        "A hypernetwork turns any sound into a small network in one forward pass.",
        "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
        "We also need a small plastic snake and a big toy frog for the kids.",
        "Implicit neural representations store sound as a continuous function of time.",
        "She can scoop these things into three red bags, and we will go meet her.",
        "The rainbow is a division of white light into many beautiful colours.",
        "These take the shape of a long round arch, with its path high above.",
        "Some have accepted it as a miracle without physical explanation.",
        "When the sunlight strikes raindrops in the air, they act as a prism.",
        "Throughout the centuries people have explained the rainbow in various ways.",
        "Many complicated ideas about the rainbow have been formed.",
        "The boy was there when the sun rose over the quiet harbour.",
        "A rod is used to catch pink salmon in the cold northern rivers.",
        "The source of the huge river is the clear spring up in the hills.",
        "Kick the ball straight and follow through with your whole body.",
        "Help the woman get back to her feet, she slipped on the ice.",
        "A pot of tea helps to pass the evening when the rain will not stop.",
        "Smoky fires lack flame and heat, so bring some dry wood inside.",
        "The soft cushion broke the man's fall from the old wooden ladder.",
        "The salt breeze came across from the sea and cooled the porch.",
        "The girl at the booth sold fifty bonds before the market closed.",
        "Numbers like three hundred and forty two are hard to say quickly.",
        "Is it really true that the train leaves at a quarter past seven?",
        "What a wonderful surprise to see you here after all these years!",
        "Sampling at twenty two kilohertz keeps frequencies up to eleven.",
        "Turn left at the second light, then go straight for two miles.",
    ],
    "de": ["Der schnelle braune Fuchs springt über den faulen Hund.",
           "Heute ist das Wetter schön, wir gehen im Park spazieren.",
           "Können Sie mir bitte sagen, wie spät es ist?",
           "Die Katze schläft den ganzen Tag auf dem warmen Sofa."],
    "fr-fr": ["Le renard brun rapide saute par-dessus le chien paresseux.",
              "Il fait beau aujourd'hui, allons nous promener au bord de la mer.",
              "Pourriez-vous me dire où se trouve la gare, s'il vous plaît?",
              "Les enfants jouent dans le jardin pendant que le soleil brille."],
    "es": ["El veloz zorro marrón salta sobre el perro perezoso.",
           "Mañana vamos a visitar a mis abuelos en el campo.",
           "¿Sabes dónde está la biblioteca más cercana?",
           "La música suena muy bien en esta pequeña sala."],
    "it": ["La volpe veloce salta sopra il cane pigro.",
           "Questa sera mangiamo la pasta con il pomodoro fresco.",
           "Il treno per Roma parte alle otto e mezza.",
           "Mi piace camminare lungo il fiume la domenica mattina."],
    "nl": ["De snelle bruine vos springt over de luie hond.",
           "Morgen gaan we met de fiets naar het strand.",
           "Hoe laat begint de film vanavond in de bioscoop?"],
    "pl": ["Szybki brązowy lis przeskakuje nad leniwym psem.",
           "Jutro pojedziemy pociągiem do Krakowa na cały dzień.",
           "Czy możesz mi pomóc z tym ciężkim pudełkiem?"],
    "pt": ["A rápida raposa marrom pula sobre o cão preguiçoso.",
           "Vamos tomar um café na praça depois do trabalho.",
           "O livro que comprei ontem é muito interessante."],
    "sv": ["Den snabba bruna räven hoppar över den lata hunden.",
           "Vi ska åka till landet i sommar och bada i sjön.",
           "Kan du säga mig vägen till stationen?"],
    "fi": ["Nopea ruskea kettu hyppää laiskan koiran yli.",
           "Huomenna menemme saunaan ja sitten uimaan järveen."],
    "cs": ["Rychlá hnědá liška skáče přes líného psa.",
           "Zítra pojedeme vlakem na hory a budeme lyžovat."],
}
#: Training voices (language + espeak-ng variant) and the held-out voices of the validation split.
TRAIN_VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb+m3", "en-gb-scotland", "en-029+f2", "en-us+m7", "en-gb+f4",
                "de", "de+f2", "fr-fr", "fr-fr+m4", "es", "es+f5", "it+m2", "nl+f1", "pl", "pt+m5", "sv+f3", "fi"]
VAL_VOICES = ["en-gb-x-rp+f5", "en-us-nyc+m4", "en-gb-x-gbclan+f1", "de+m6", "fr-fr+f3", "cs+m1"]


def speech_corpus(out: Path, voices: list[str], count: int, seed: int, rate: int = 22050) -> int:
    """``count`` clips from ``voices``: random sentence of the voice's language, pitch and speed."""
    import random

    import numpy as np
    import soundfile as sf
    import soxr

    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for i in range(count):
        voice = voices[i % len(voices)]
        language = voice.split("+")[0]
        texts = TEXTS.get(language) or TEXTS.get(language.split("-")[0]) or TEXTS["en"]
        text = rng.choice(texts)
        pitch, speed = rng.randint(20, 80), rng.randint(120, 210)
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            done = subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", tmp.name, text],
                                  capture_output=True)
            if done.returncode != 0:
                print(f"espeak-ng failed for voice {voice}: {done.stderr.decode(errors='replace').strip()}")
                continue
            x, sr = sf.read(tmp.name, dtype="float32")
        if x.size == 0 or not np.abs(x).max() > 0:
            continue
        x = soxr.resample(x, sr, rate)
        name = f"{voice.replace('+', '_')}_{i:04d}_p{pitch}_s{speed}.wav"
        sf.write(str(out / name), x / np.abs(x).max() * 0.9, rate)
        written += 1
    return written


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default="bench/data", type=Path)
    ap.add_argument("--speech300", type=int, default=300, metavar="N",
                    help="training clips of the hypernetwork speech corpus (0 = skip)")
    ap.add_argument("--val-clips", type=int, default=40, help="held-out clips (other voices)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out
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
    missing = real_clips(out / "real")
    print(f"wrote the real recordings to {out / 'real'}" + "".join(f"\n  missing: {m}" for m in missing))
    if args.speech300 > 0 and shutil.which("espeak-ng"):
        for folder, voices, count, seed in ((out / "speech300", TRAIN_VOICES, args.speech300, args.seed),
                                            (out / "speech300-val", VAL_VOICES, args.val_clips, args.seed + 1)):
            if folder.is_dir():
                for old_clip in folder.glob("*.wav"):
                    old_clip.unlink()
            n = speech_corpus(folder, voices, count, seed)
            print(f"wrote {n} clips ({len(voices)} voices) to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
