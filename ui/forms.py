"""A settings form generated from the preset schema: ``hyperaudio.config.DEFAULTS`` gives the fit and
loss settings and their types, ``target_signature`` the target network's constructor keywords. A
plugin's target network therefore gets its own form with no change here.

The form works in ``--set key=value`` overrides (TOML literals), exactly what the command line
passes to ``config.resolve``, which validates them; only fields changed from the preset are sent.
"""

from __future__ import annotations

import json
import math

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QGroupBox, QLineEdit, QSpinBox, QVBoxLayout,
                               QWidget)

from hyperaudio import config as config_mod
from hyperaudio.errors import ConfigError
from hyperaudio.plugins import get_registry

FIT_SECTIONS = (("fit", "fit"), ("loss", "loss"), ("target.params", "target network"))
TRAIN_SECTIONS = (("train", "training"), ("hypernet", "hypernetwork"), ("target.params", "target network"),
                  ("loss", "loss"))


def choices(key: str) -> tuple[str, ...] | None:
    """Closed sets of values: fixed ones, and the registry's (a plugin's encoder appears here)."""
    if key == "fit.optimizer":
        return tuple(config_mod.OPTIMIZERS)
    if key == "hypernet.encoder":
        return tuple(get_registry().names("encoders"))
    if key == "hypernet.strategy":
        return tuple(get_registry().names("strategies"))
    if key == "hypernet.head_kind":
        try:
            from hyperaudio.hypernet.head import HEAD_KINDS
        except ImportError:
            return None
        return tuple(HEAD_KINDS)
    return None
HINTS = {
    "fit.steps": "optimisation steps per group of chunks",
    "fit.seconds": "wall-clock budget for the whole fit (0 = none); the Fit tab's time budget",
    "fit.target_sisnr": "stop once every chunk reaches this SI-SNR in dB (0 = off); the Fit tab's quality target",
    "fit.eval_every": "report progress and preview every N steps",
}


def toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")
    if isinstance(value, dict):  # a TOML inline table
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return json.dumps(value)  # JSON numbers and strings are TOML literals too


class Field:
    """One setting: its widget, how to read it, and the preset's value to compare with."""

    def __init__(self, key: str, value, kind):
        self.key, self.initial, self.kind = key, value, kind
        options = choices(key)
        if options:
            self.widget = QComboBox()
            self.widget.addItems(list(options) + ([str(value)] if str(value) not in options else []))
            self.widget.setCurrentText(str(value))
        elif kind is bool:
            self.widget = QCheckBox()
            self.widget.setChecked(bool(value))
        elif kind is int:
            self.widget = QSpinBox()
            self.widget.setRange(-2_000_000_000, 2_000_000_000)
            self.widget.setValue(int(value))
        elif kind is float:
            self.widget = QLineEdit(repr(float(value)))
        elif kind is str:
            self.widget = QLineEdit(str(value))
        else:  # lists, and keywords without a default: a TOML literal
            self.widget = QLineEdit("" if value is None else toml_literal(value))
        self.widget.setObjectName(key)
        self.widget.setToolTip(HINTS.get(key, key))

    def set(self, value) -> None:
        w = self.widget
        if isinstance(w, QComboBox):
            w.setCurrentText(str(value))
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QSpinBox):
            w.setValue(int(value))
        elif self.kind is float:
            w.setText(repr(float(value)))
        elif self.kind is str:
            w.setText(str(value))
        else:
            w.setText(toml_literal(value))

    def changed_signal(self):
        w = self.widget
        if isinstance(w, QComboBox):
            return w.currentTextChanged
        if isinstance(w, QCheckBox):
            return w.toggled
        if isinstance(w, QSpinBox):
            return w.valueChanged
        return w.textChanged

    def value(self):
        """The widget's value (ConfigError when a number field holds no number)."""
        w = self.widget
        if isinstance(w, QComboBox):
            return w.currentText()
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QSpinBox):
            return w.value()
        text = w.text().strip()
        if self.kind is float:
            try:
                return float(text)
            except ValueError:
                raise ConfigError(f"{self.key}: not a number: {text!r}") from None
        return text

    def literal(self) -> str | None:
        """The widget's value as a TOML literal, or None when it equals the preset's."""
        w = self.widget
        if isinstance(w, QComboBox):
            value = w.currentText()
            return None if value == str(self.initial) else json.dumps(value)
        if isinstance(w, QCheckBox):
            return None if w.isChecked() == bool(self.initial) else toml_literal(w.isChecked())
        if isinstance(w, QSpinBox):
            return None if w.value() == self.initial else str(w.value())
        text = w.text().strip()
        if self.kind is float:
            value = self.value()
            return None if value == self.initial else toml_literal(value)
        if self.kind is str:
            return None if text == self.initial else json.dumps(text)
        if text == ("" if self.initial is None else toml_literal(self.initial)):
            return None
        return text


class ConfigForm(QWidget):
    """Fields for a resolved config; :meth:`overrides` lists what the user changed."""

    changed = Signal(str)  # a field's key, whenever its widget changes (a load emits "")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self.fields: dict[str, Field] = {}
        self._boxes: list[QGroupBox] = []

    def load(self, config: dict, tweaks: dict | None = None, sections=FIT_SECTIONS) -> None:
        """Show ``config``'s settings; ``tweaks`` ({key: value}) pre-set some fields differently
        (they then count as overrides, visibly). ``sections``: (config section, title) pairs."""
        for box in self._boxes:
            box.setParent(None)
            box.deleteLater()
        self._boxes.clear()
        self.fields.clear()
        cls = get_registry().get("target_networks", config["target"]["name"]).obj
        signature = config_mod.target_signature(cls)
        for section, title in sections:
            if section == "target.params":
                values = {**signature, **config["target"]["params"]}
                kinds = {k: _kind(signature.get(k), v) for k, v in values.items()}
            else:
                values = config.get(section) or dict(config_mod.DEFAULTS[section])
                kinds = {k: _kind(config_mod.DEFAULTS[section][k], v) for k, v in values.items()}
            if not values:
                continue
            box = QGroupBox(f"{title} ({config['target']['name']})" if section == "target.params" else title)
            form = QFormLayout(box)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            for key, value in values.items():
                name = f"{section}.{key}"
                field = Field(name, value, kinds[key])
                self.fields[name] = field
                field.changed_signal().connect(lambda *_a, k=name: self.changed.emit(k))
                form.addRow(key, field.widget)
            self._layout.addWidget(box)
            self._boxes.append(box)
        for key, value in (tweaks or {}).items():
            if key in self.fields:
                self.fields[key].set(value)
        self.changed.emit("")

    def set_value(self, key: str, value) -> None:
        self.fields[key].set(value)

    def value(self, key: str, default=None):
        """The current value of ``key``'s field, ``default`` when the form has no such field."""
        field = self.fields.get(key)
        return default if field is None else field.value()

    def overrides(self) -> list[str]:
        out = []
        for key, field in self.fields.items():
            literal = field.literal()
            if literal is not None:
                out.append(f"{key}={literal}")
        return out


def _kind(default, value):
    sample = default if default is not None else value
    if isinstance(sample, bool):
        return bool
    if isinstance(sample, int):
        # An int default with a float value (a preset's 1e-3 for a keyword defaulting to 0) is a float.
        return float if isinstance(value, float) else int
    if isinstance(sample, float):
        return float
    if isinstance(sample, str):
        return str
    return None
