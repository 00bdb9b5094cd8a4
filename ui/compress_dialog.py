"""File ▸ Export compressed…: compress the selected sound to a bitrate (issue #17).

The dialog asks for kb/s, the time budget and the bit depth, and shows what the budget buys
(:func:`hyperaudio.compress.plan`: bytes, network, bit depth) as the numbers change. The
compression is a job in the job queue (:func:`compress_job` runs in its worker process), never
the GUI thread; its result joins the library under the sound and is selected, so the transport's
A/B switch compares the original (A) with the compressed file's render (B).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget)

from hyperaudio import compress
from hyperaudio.errors import HyperaudioError

JOB_KIND = "hyperaudio_ui.compress_dialog:compress_job"  # worker.run imports "module:function" kinds


class CompressDialog(QDialog):
    """The settings of one compression; :meth:`request` is the job's spec once accepted."""

    def __init__(self, sound, folder: Path, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Export compressed")
        self.sound = sound
        self.kbps_box = QDoubleSpinBox()
        self.kbps_box.setRange(1.0, 1024.0)
        self.kbps_box.setDecimals(1)
        self.kbps_box.setValue(48.0)
        self.kbps_box.setSuffix(" kb/s")
        self.kbps_box.setToolTip("the whole file, metadata included, over the sound's duration")
        self.seconds_box = QDoubleSpinBox()
        self.seconds_box.setRange(5.0, 3600.0)
        self.seconds_box.setValue(compress.DEFAULT_SECONDS)
        self.seconds_box.setSuffix(" s")
        self.seconds_box.setToolTip("time for fitting and the quantisation-aware fine-tune")
        self.bits_box = QComboBox()
        self.bits_box.addItem("auto (for the budget)", None)
        for bits in (8, 6, 4):
            self.bits_box.addItem(f"{bits} bits", bits)
        self.path_edit = QLineEdit(str(folder / f"{Path(sound.name).stem}_48kbps.hya"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.path_edit)
        layout.addWidget(browse)
        self.size_label = QLabel()
        self.size_label.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("sound", QLabel(f"{sound.name}: {sound.duration:.2f} s, {sound.sample_rate:g} Hz, "
                                    f"{sound.channels} channel(s)"))
        form.addRow("bitrate", self.kbps_box)
        form.addRow("time budget", self.seconds_box)
        form.addRow("bit depth", self.bits_box)
        form.addRow("file", row)
        form.addRow("size", self.size_label)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Compress")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        self.kbps_box.valueChanged.connect(self._kbps_changed)
        self.bits_box.currentIndexChanged.connect(lambda _i: self.update_plan())
        self.plan: compress.Plan | None = None
        self.update_plan()

    def _kbps_changed(self, kbps: float) -> None:
        path = Path(self.path_edit.text())
        if path.stem.endswith("kbps"):  # keep a suggested name in step with the rate
            self.path_edit.setText(str(path.with_name(f"{Path(self.sound.name).stem}_{kbps:g}kbps.hya")))
        self.update_plan()

    def update_plan(self) -> None:
        """What the budget buys; a budget too small for any network disables Compress."""
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        try:
            self.plan = compress.plan(self.kbps_box.value(), self.sound.num_samples, self.sound.sample_rate,
                                      self.sound.channels, bits=self.bits_box.currentData())
        except HyperaudioError as exc:
            self.plan = None
            self.size_label.setText(str(exc))
            ok.setEnabled(False)
            return
        p = self.plan
        self.size_label.setText(f"at most {p.budget:,} bytes ({p.budget / 1024:.1f} KiB); "
                                f"{p.inr} of {p.parameters:,} parameters x {p.members} at {p.bits} bits, "
                                f"about {p.estimate:,} bytes")
        ok.setEnabled(True)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export compressed", self.path_edit.text(), "hyperaudio (*.hya)")
        if path:
            self.path_edit.setText(path)

    def request(self) -> dict:
        return {"audio": self.sound.audio, "sample_rate": self.sound.sample_rate, "kbps": self.kbps_box.value(),
                "seconds": self.seconds_box.value(), "bits": self.bits_box.currentData(),
                "out": self.path_edit.text()}


def compress_job(spec: dict, rep) -> dict:
    """The worker's side (no Qt): compress, write atomically, report the size."""
    import numpy as np

    from hyperaudio import audio, fit, hya

    audio_data = np.atleast_2d(np.asarray(spec["audio"], dtype=np.float32))
    out = audio.check_output(spec["out"])
    share = 1 - compress.QAT_FRACTION

    def callback(progress) -> None:
        rep.wait_if_paused()
        rep.progress(fraction=share * progress.fraction, step=progress.step, loss=progress.loss,
                     sisnr=progress.sisnr, elapsed=progress.elapsed, phase="fit")

    rep.log(f"compressing to {spec['kbps']:g} kb/s in {spec['seconds']:g} s")
    rep.progress(force=True, fraction=0.0, elapsed=0.0, phase="race")
    with rep.using_clock(fit, compress):
        result = compress.compress(audio_data, float(spec["sample_rate"]), float(spec["kbps"]),
                                   seconds=float(spec["seconds"]), bits=spec.get("bits"), callback=callback,
                                   should_stop=rep.should_stop)
    hya.save(result.inr, out, result.packed)
    rep.progress(force=True, fraction=1.0, sisnr=result.info["sisnr"])
    rep.log(f"wrote {out}: {len(result.data):,} bytes, {result.kbps:.2f} kb/s, {result.bits}-bit weights")
    return {"path": str(out), "bytes": len(result.data), "kbps": result.kbps, "bits": result.bits,
            "info": result.info}


def start(window, sound, spec: dict):
    """Queue the compression of ``sound``; its result is added under it in the library and selected."""
    from .jobs.queue import Job
    from .library import InrItem

    job = Job(JOB_KIND, f"compress {sound.name} to {spec['kbps']:g} kb/s", spec, context={"sound": sound})

    def done(job_, result) -> None:
        from hyperaudio import hya

        from .errors import show_exception

        try:
            inr = hya.load(result["path"])
        except HyperaudioError as exc:
            show_exception(window, f"{job_.title}: cannot read the result", exc)
            return
        label = f"compressed {result['kbps']:.1f} kb/s, {result['bytes'] / 1024:.1f} KiB #{job_.id}"
        window.add_inr(InrItem(label, inr, sound, "compress", Path(result["path"])))
        window.statusBar().showMessage(f"wrote {result['path']}: {result['bytes']:,} bytes = {result['kbps']:.2f} kb/s "
                                       f"({result['bits']}-bit); A/B in the transport compares it with the original",
                                       12000)

    job.succeeded.connect(done)
    return window.jobs.submit(job)


def open_dialog(window) -> CompressDialog | None:
    """The menu's entry point: the dialog for the selected sound, the job once accepted."""
    from .errors import show_error

    sound = window.selected_sound()
    if sound is None or sound.audio is None:
        show_error(window, "Export compressed", "Select a sound in the library first (its original audio is what "
                                                "is compressed).")
        return None
    folder = Path(window.settings.value("export_dir", str(Path.home())))
    dialog = CompressDialog(sound, folder, window)
    if dialog.exec() == QDialog.DialogCode.Accepted:
        window.settings.set("export_dir", str(Path(dialog.path_edit.text()).parent))
        start(window, sound, dialog.request())
    return dialog
