"""hyperaudio's desktop app (PySide6 + pyqtgraph), installed as ``hyperaudio_ui``.

Start it with ``hyperaudio gui`` or ``hyperaudio-gui``. The core library (``hyperaudio``) never
imports this package or Qt; the job workers (``hyperaudio_ui.jobs.worker``) import no Qt either, so
a spawned worker process starts without loading it.
"""

from .qtfix import immortalize_singletons

# Before anything here emits a Qt signal: PySide6 miscounts references to None/True/False on
# CPython < 3.12, which would abort the app after a few thousand signals (see qtfix).
immortalize_singletons()
