"""The "New job" panel: choose what to run and with which settings.

Target networks and presets come from the plugin registry, so whatever an installed plugin
registers is offered here. Emits a request signal; the main window builds and queues the job.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QScrollArea, QSpinBox, QTabWidget, QVBoxLayout, QWidget)

from hyperaudio import config as config_mod
from hyperaudio import recipe
from hyperaudio.errors import ConfigError
from hyperaudio.plugins import get_registry

from .forms import TRAIN_SECTIONS, ConfigForm

# Progress and previews arrive every fit.eval_every steps: 5 gives a few updates a second for the
# bigger networks (the preset's 25 can mean several seconds between them on a CPU).
GUI_TWEAKS = {"fit.eval_every": 5}
# No preset: the auto recipe (hyperaudio.recipe), on a budget of minutes rather than the papers'
# 10,000 steps (hours on a CPU).
AUTO_TWEAKS = {**GUI_TWEAKS, "fit.seconds": recipe.DEFAULT_SECONDS}
NO_PRESET = "(auto recipe)"


class FitTab(QWidget):
    start = Signal()  # the window resolves the form (and shows what is wrong with it)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.target_box = QComboBox()
        self.preset_box = QComboBox()
        self.form = ConfigForm()
        self.start_button = QPushButton("Fit selected sound")
        self.start_button.setToolTip("queue a fit of the sound selected in the library")
        top = QFormLayout()
        top.addRow("target network", self.target_box)
        top.addRow("preset", self.preset_box)
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
        self.start_button.clicked.connect(lambda: self.start.emit())
        self.reload()

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
            self.form.load(config_mod.resolve(preset, target), tweaks=GUI_TWEAKS if preset else AUTO_TWEAKS)

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
