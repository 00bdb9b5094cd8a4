"""The "New job" panel: choose what to run and with which settings.

Target networks and presets come from the plugin registry, so whatever an installed plugin
registers is offered here. Emits a request signal; the main window builds and queues the job.
"""

from __future__ import annotations

import datetime
import math
import re
from pathlib import Path

import torch
from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QScrollArea, QSpinBox, QTabWidget, QVBoxLayout, QWidget)

from hyperaudio import config as config_mod
from hyperaudio import recipe
from hyperaudio.errors import ConfigError
from hyperaudio.plugins import get_registry

from .forms import TRAIN_SECTIONS, ConfigForm
from .jobs.panel import recipe_text

# Progress and previews arrive every fit.eval_every steps: 5 gives a few updates a second for the
# bigger networks (the preset's 25 can mean several seconds between them on a CPU).
GUI_TWEAKS = {"fit.eval_every": 5}
# No preset: the auto recipe (hyperaudio.recipe), on a budget of minutes rather than the papers'
# 10,000 steps (hours on a CPU).
AUTO_TWEAKS = {**GUI_TWEAKS, "fit.seconds": recipe.DEFAULT_SECONDS}
NO_PRESET = "(auto recipe)"
# A worker process starts and imports torch before the fit's clock runs: a few seconds on a CPU.
STARTUP_SECONDS = 5.0
ETA_REFRESH_MS = 5000  # the "ends by" clock time moves on while the tab waits
BUDGET_KEYS = ("", "fit.seconds", "fit.target_sisnr", "fit.steps", "fit.recipe")


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour)."""
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def parse_clock(text: str) -> int | None:
    """Seconds from ``m:ss``, ``h:mm:ss``, ``90``, ``90 s``, ``2 min`` or ``1.5m``; None when it is none of these."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(:\d{1,2}){1,2}", text):
        value = 0
        for part in text.split(":"):
            value = 60 * value + int(part)
        return value
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*(s|sec|m|min|h)?", text)
    if not match:
        return None
    unit = {"m": 60, "min": 60, "h": 3600}.get(match.group(2) or "s", 1)
    return int(round(float(match.group(1)) * unit))


class DurationBox(QSpinBox):
    """Whole seconds, shown and typed as minutes:seconds; 0 shows the special value text (no limit)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setRange(0, 24 * 3600)
        self.setSingleStep(15)
        self.setAccelerated(True)

    def textFromValue(self, value: int) -> str:
        return clock(value)

    def valueFromText(self, text: str) -> int:
        value = parse_clock(text)
        return self.value() if value is None else value

    def validate(self, text: str, pos: int):
        if text == self.specialValueText() or parse_clock(text) is not None:
            return QValidator.State.Acceptable
        # Partly typed ("2:", "1.") may still become one.
        return QValidator.State.Intermediate if re.fullmatch(r"[\d:.\s a-z]*", text.lower()) else QValidator.State.Invalid


def eta_text(seconds: float, steps: int, auto: bool, target_sisnr: float, ahead: tuple[float, int] = (0.0, 0),
             now: datetime.datetime | None = None) -> str:
    """When a fit started now would end, in words: ``ahead`` is the queue's (seconds, jobs of unknown length)."""
    wait, unknown = ahead
    lines = []
    if seconds > 0:
        end = (now or datetime.datetime.now()) + datetime.timedelta(seconds=wait + seconds + STARTUP_SECONDS)
        when = f"Ends by about {end:%H:%M}" if not unknown else f"Runs {clock(seconds)}"
        lines.append(f"{when}: {clock(seconds)} for the whole sound, every chunk and channel"
                     + (f", after {clock(wait)} of jobs ahead" if wait and not unknown else "") + ".")
        if not auto and steps:
            lines.append(f"Sooner if {steps:,} steps per chunk group come first.")
        if auto:
            lines.append(f"The first {clock(seconds * recipe.RACE_FRACTION)} at most choose the learning rate "
                         "and time scale.")
    else:
        lines.append(f"No time limit: {steps:,} steps per chunk group. How long that takes depends on the "
                     "network and the machine; the job row shows the ETA once it runs.")
    if target_sisnr:
        lines.append(f"Stops early once every chunk reaches {target_sisnr:g} dB SI-SNR.")
    if unknown:
        lines.append(f"Starts after {unknown} job{'s' if unknown > 1 else ''} ahead of unknown length.")
    return " ".join(lines)


class FitTab(QWidget):
    """Network, preset, and above the detailed form the two settings a fit is chosen by: a time budget
    and a quality target. They edit the form's ``fit.seconds`` and ``fit.target_sisnr`` fields,
    which stay the only copy of those values, so the two can never disagree."""

    start = Signal()  # the window resolves the form (and shows what is wrong with it)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.target_box = QComboBox()
        self.preset_box = QComboBox()
        self.form = ConfigForm()
        self.budget_box = DurationBox()
        self.budget_box.setObjectName("budget")
        self.budget_box.setKeyboardTracking(False)  # "2:30" reaches the form whole, not as 2, 2:3 and 2:30
        self.budget_box.setToolTip("wall-clock time for the whole fit (minutes:seconds; fit.seconds)")
        self.quality_box = QDoubleSpinBox()
        self.quality_box.setObjectName("quality")
        self.quality_box.setKeyboardTracking(False)
        self.quality_box.setRange(0.0, 99.0)
        self.quality_box.setDecimals(1)
        self.quality_box.setSingleStep(1.0)
        self.quality_box.setSuffix(" dB")
        self.quality_box.setSpecialValueText("off: use the whole budget")
        self.quality_box.setToolTip("stop early once every chunk reaches this SI-SNR (fit.target_sisnr; 0 = off)")
        self.eta_label = QLabel()
        self.eta_label.setWordWrap(True)
        self.recipe_label = QLabel()
        self.recipe_label.setWordWrap(True)
        self.start_button = QPushButton("Fit selected sound")
        self.start_button.setToolTip("queue a fit of the sound selected in the library")
        self.queue = None
        self.choices: dict[str, dict] = {}  # network -> the last race's choice this session, and its fit
        self._syncing = False
        top = QFormLayout()
        top.addRow("target network", self.target_box)
        top.addRow("preset", self.preset_box)
        top.addRow("time budget", self.budget_box)
        top.addRow("stop early at", self.quality_box)
        top.addRow(self.eta_label)
        top.addRow(self.recipe_label)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.start_button)
        self.target_box.currentTextChanged.connect(self._target_changed)
        self.preset_box.currentTextChanged.connect(self._preset_changed)
        self.form.changed.connect(self._form_changed)
        self.budget_box.valueChanged.connect(lambda v: self._edit("fit.seconds", float(v)))
        self.quality_box.valueChanged.connect(lambda v: self._edit("fit.target_sisnr", float(v)))
        self.start_button.clicked.connect(lambda: self.start.emit())
        self._eta_timer = QTimer(self, interval=ETA_REFRESH_MS)
        self._eta_timer.timeout.connect(self.update_eta)
        self._eta_timer.start()
        self.reload()

    # -- budget, quality target, ETA -----------------------------------------------------------------
    def _edit(self, key: str, value: float) -> None:
        if not self._syncing and key in self.form.fields:
            self.form.set_value(key, value)

    def _form_changed(self, key: str) -> None:
        if key not in BUDGET_KEYS:
            return
        self._syncing = True
        try:
            steps = self.form.value("fit.steps", 0)
            # A paper preset ("fixed") keeps its step count and no time limit: it is the reproduction
            # setting, and its 10,000 steps are what the paper's figures need. A budget set here caps
            # it (the fit ends at whichever comes first); the budget box says which one applies.
            special = f"none: {steps:,} steps"
            if self.budget_box.specialValueText() != special:
                self.budget_box.setSpecialValueText(special)
            # Only when they differ: setting a box re-renders its text under the user's cursor.
            for box, name, cast in ((self.budget_box, "fit.seconds", round),
                                    (self.quality_box, "fit.target_sisnr", float)):
                try:
                    value = cast(self.form.value(name, 0.0))
                except ConfigError:
                    continue  # being typed in the form: the ETA says what is wrong
                if box.value() != value:
                    box.setValue(value)
        finally:
            self._syncing = False
        self.update_eta()
        self.show_choice()

    def budget(self) -> float:
        """The fit's time budget in seconds (the form's fit.seconds); ConfigError when it is no number."""
        return float(self.form.value("fit.seconds", 0.0))

    def update_eta(self) -> None:
        try:
            seconds, target = self.budget(), float(self.form.value("fit.target_sisnr", 0.0))
        except ConfigError as exc:
            self.eta_label.setText(str(exc))
            return
        steps = int(self.form.value("fit.steps", 0))
        auto = self.form.value("fit.recipe", "auto") == "auto"
        ahead = self.queue.time_ahead() if self.queue is not None else (0.0, 0)
        self.eta_label.setText(eta_text(seconds, steps, auto, target, ahead))

    # -- the recipe's choice per network ---------------------------------------------------------
    def watch(self, queue) -> None:
        """Follow ``queue``: its jobs delay the ETA, and its fits' races fill :attr:`choices`."""
        self.queue = queue
        queue.added.connect(self._job_added)
        self.update_eta()

    def _job_added(self, job) -> None:
        if job.kind == "fit":
            job.succeeded.connect(self._fit_ended)
        job.changed.connect(lambda _job: self.update_eta())

    def _fit_ended(self, job, result) -> None:
        info = result.get("info", {}) if isinstance(result, dict) else {}
        if not info.get("recipe"):
            return  # a fixed preset: nothing was raced
        sound = job.context.get("sound")
        target = job.spec["config"]["target"]["name"]
        self.choices[target] = {"recipe": info["recipe"], "sisnr": info.get("sisnr"), "budget": job.budget,
                                "sound": getattr(sound, "name", ""), "job": job.id}
        self.show_choice()

    def show_choice(self) -> None:
        target = self.target_box.currentText()
        if self.form.value("fit.recipe", "auto") != "auto":
            self.recipe_label.setText("Fixed preset: the learning rate, loss and time scale as written; no race.")
            return
        choice = self.choices.get(target)
        if choice is None:
            self.recipe_label.setText(f"The recipe races learning rates and time scales for {target} on the "
                                      "sound itself; its choice shows here after the fit.")
            return
        sisnr = choice["sisnr"]
        result = f" → {sisnr:.1f} dB" if isinstance(sisnr, float) and math.isfinite(sisnr) else ""
        budget = f", {clock(choice['budget'])}" if choice["budget"] else ""
        self.recipe_label.setText(f"Last choice for {target} (job #{choice['job']}, {choice['sound']}{budget}): "
                                  f"{recipe_text(choice['recipe'])}{result}.")

    def reload(self) -> None:
        """Fill the choices from the registry (again, after plugins changed)."""
        registry = get_registry()
        current = self.target_box.currentText()
        self.target_box.blockSignals(True)
        self.target_box.clear()
        self.target_box.addItems(registry.names("target_networks"))
        self.target_box.blockSignals(False)
        names = registry.names("target_networks")
        pick = current if current in names else ("kan" if "kan" in names else (names[0] if names else ""))
        self.target_box.setCurrentText(pick)
        self._target_changed(pick)

    def _target_changed(self, target: str) -> None:
        if not target:
            return
        registry = get_registry()
        presets = [n for n in registry.names("presets") if registry.get("presets", n).obj["target"]["name"] == target]
        self.preset_box.blockSignals(True)
        self.preset_box.clear()
        self.preset_box.addItems([NO_PRESET] + presets)
        self.preset_box.setCurrentText(NO_PRESET)
        self.preset_box.blockSignals(False)
        self._preset_changed(self.preset_box.currentText())

    def _preset_changed(self, _preset: str) -> None:
        target = self.target_box.currentText()
        if target:
            preset = self._preset()
            tweaks = GUI_TWEAKS if preset else {**AUTO_TWEAKS, **self._kept_budget()}
            self.form.load(config_mod.resolve(preset, target), tweaks=tweaks)

    def _kept_budget(self) -> dict:
        """The budget and quality target of the auto-recipe form being replaced: they are the user's
        choice for the sound, not a network's setting, so trying another network keeps them."""
        try:
            if self.form.value("fit.recipe") != "auto":
                return {}
            return {"fit.seconds": self.budget(), "fit.target_sisnr": float(self.form.value("fit.target_sisnr", 0.0))}
        except ConfigError:
            return {}

    def _preset(self) -> str | dict:
        """The chosen preset's name, or ``{}``: none, the defaults and the auto recipe."""
        preset = self.preset_box.currentText()
        return {} if preset in ("", NO_PRESET) else preset

    def select(self, target: str, preset: str | None = None) -> None:
        self.target_box.setCurrentText(target)
        if preset is not None:
            self.preset_box.setCurrentText(preset)

    def resolved(self) -> dict:
        """The config to fit with; raises ConfigError (shown by the window) when a field is invalid."""
        return config_mod.resolve(self._preset(), self.target_box.currentText(), self.form.overrides())


def _path_row(edit: QLineEdit, *buttons: QPushButton) -> QHBoxLayout:
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    for button in buttons:
        row.addWidget(button)
    return row


def _scrolled(widget: QWidget) -> QScrollArea:
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setWidget(widget)
    return scroll


class EncodeTab(QWidget):
    """Encode the selected sound with a trained hypernetwork (one forward pass, optional refinement)."""

    start = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("a training run folder or its model.safetensors")
        file_button, folder_button = QPushButton("File…"), QPushButton("Folder…")
        file_button.clicked.connect(self._browse_file)
        folder_button.clicked.connect(self._browse_folder)
        self.model_info = QLabel("no model chosen")
        self.model_info.setWordWrap(True)
        self.refine_box = QSpinBox()
        self.refine_box.setRange(0, 1_000_000)
        self.refine_box.setToolTip("gradient steps from the generated weights (test-time refinement); 0 = none")
        self.start_button = QPushButton("Encode selected sound")
        form = QFormLayout()
        buttons = QHBoxLayout()
        buttons.addWidget(file_button)
        buttons.addWidget(folder_button)
        buttons.addStretch(1)
        form.addRow("model", self.model_edit)
        form.addRow("", buttons)
        form.addRow("", self.model_info)
        form.addRow("refine steps", self.refine_box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(form)
        layout.addStretch(1)
        layout.addWidget(self.start_button)
        self.model_edit.editingFinished.connect(self._describe)
        self.start_button.clicked.connect(lambda: self.start.emit())

    def set_model(self, path: str) -> None:
        self.model_edit.setText(str(path))
        self._describe()

    def model(self) -> str:
        text = self.model_edit.text().strip()
        if not text:
            raise ConfigError("choose a trained hypernetwork (a run folder or its model.safetensors)")
        return text

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Hypernetwork model", "", "Models (*.safetensors);;All files (*)")
        if path:
            self.set_model(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Training run folder")
        if path:
            self.set_model(path)

    def _describe(self) -> None:
        text = self.model_edit.text().strip()
        if not text:
            self.model_info.setText("no model chosen")
            return
        try:
            from hyperaudio.hypernet.model import read_model_file

            cfg = read_model_file(text)[0]
            hc = cfg["hypernet"]
            self.model_info.setText(f"{hc['encoder']} → {hc['strategy']} → {cfg['target']['name']}, "
                                    f"{hc['sample_rate']} Hz, clips of {hc['num_samples']} samples")
        except Exception as exc:  # not a model (yet): say so, the job would fail the same way
            self.model_info.setText(f"not a usable model: {exc}")


class TrainTab(QWidget):
    """Train a hypernetwork on a folder of audio; the run folder keeps checkpoints and metrics."""

    start = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.preset_box = QComboBox()
        self.data_edit, self.val_edit, self.out_edit = QLineEdit(), QLineEdit(), QLineEdit()
        self.data_edit.setPlaceholderText("folder of training audio (searched recursively)")
        self.val_edit.setPlaceholderText("optional: held-out folder or a glob pattern")
        self.out_edit.setPlaceholderText("run folder for checkpoints, metrics and the model")
        self.data_button, self.out_button = QPushButton("…"), QPushButton("…")
        self.data_button.clicked.connect(lambda: self._browse(self.data_edit, "Training audio folder"))
        self.out_button.clicked.connect(lambda: self._browse(self.out_edit, "Run folder"))
        self.resume_box = QCheckBox("resume the run in that folder")
        self.form = ConfigForm()
        self.start_button = QPushButton("Train hypernetwork")
        top = QFormLayout()
        top.addRow("preset", self.preset_box)
        top.addRow("data", _path_row(self.data_edit, self.data_button))
        top.addRow("validation", self.val_edit)
        top.addRow("run folder", _path_row(self.out_edit, self.out_button))
        top.addRow("", self.resume_box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(_scrolled(self.form), 1)
        layout.addWidget(self.start_button)
        self.preset_box.currentTextChanged.connect(self._preset_changed)
        self.start_button.clicked.connect(lambda: self.start.emit())
        self.reload()

    def reload(self) -> None:
        registry = get_registry()
        names = [n for n in registry.names("presets") if isinstance(registry.get("presets", n).obj.get("hypernet"), dict)]
        self.preset_box.blockSignals(True)
        self.preset_box.clear()
        self.preset_box.addItems(names)
        self.preset_box.blockSignals(False)
        if names:
            # The paper preset needs a GPU to learn anything within hours; the small one learns on a CPU
            # in about 20 minutes (docs/hypernetworks.md).
            default = "hypersound-nerf" if torch.cuda.is_available() else "hypersound-small"
            self.preset_box.setCurrentText(default if default in names else names[0])
            self._preset_changed(self.preset_box.currentText())

    def _preset_changed(self, preset: str) -> None:
        if preset:
            self.form.load(config_mod.resolve(preset), sections=TRAIN_SECTIONS)

    def _browse(self, edit: QLineEdit, title: str) -> None:
        path = QFileDialog.getExistingDirectory(self, title)
        if path:
            edit.setText(path)

    def request(self) -> dict:
        """The job's spec; raises ConfigError (shown by the window) when something is missing."""
        data, out = self.data_edit.text().strip(), self.out_edit.text().strip()
        resume = self.resume_box.isChecked()
        if not data and not resume:
            raise ConfigError("choose the training audio (a folder)")
        if not out:
            raise ConfigError("choose a run folder for the checkpoints and the model")
        preset = self.preset_box.currentText() or None
        cfg = config_mod.resolve(preset, None, self.form.overrides())
        return {"config": cfg, "data": data or None, "val": self.val_edit.text().strip() or None,
                "out_dir": str(Path(out)), "resume": resume}


class NewJobPanel(QTabWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.fit = FitTab()
        self.encode = EncodeTab()
        self.train = TrainTab()
        self.addTab(self.fit, "Fit")
        self.addTab(self.encode, "Encode")
        self.addTab(self.train, "Train")

    def reload(self) -> None:
        self.fit.reload()
        self.train.reload()
