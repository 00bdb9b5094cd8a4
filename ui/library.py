"""The library: loaded sounds and the INRs made from them, with their metrics.

A :class:`Sound` is an original (``audio`` ``[C, N]``); a ``.hya`` opened on its own becomes a sound
without an original (``audio is None``) holding that one INR. Each :class:`InrItem` keeps its
rendering at the sound's rate (``reconstruction``), which the views and metrics use.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTreeWidget, QTreeWidgetItem

from hyperaudio.functional import count_parameters
from hyperaudio.hya import INR

_ids = itertools.count(1)
METRIC_COLUMNS = ("si-snr", "psnr", "lsd")


@dataclass(eq=False)
class Sound:
    name: str
    audio: np.ndarray | None  # [C, N] float32; None for a .hya opened without its original
    sample_rate: float
    path: Path | None = None
    inrs: list["InrItem"] = field(default_factory=list)
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def num_samples(self) -> int:
        if self.audio is not None:
            return self.audio.shape[1]
        return self.inrs[0].inr.num_samples if self.inrs else 0

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate if self.sample_rate else 0.0

    @property
    def channels(self) -> int:
        if self.audio is not None:
            return self.audio.shape[0]
        return self.inrs[0].inr.channels if self.inrs else 1


@dataclass(eq=False)
class InrItem:
    name: str
    inr: INR
    sound: Sound
    origin: str  # "fit", "encode" or "file"
    path: Path | None = None  # the .hya it lives in (the job's output, or the file opened)
    reconstruction: np.ndarray | None = None  # [C, N] at the sound's rate, once rendered
    metrics: dict[str, float] = field(default_factory=dict)
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def parameters(self) -> int:
        return count_parameters(self.inr.module) * len(self.inr.chunks) * self.inr.channels


def _fmt_metric(name: str, value: float | None) -> str:
    if value is None:
        return ""
    if not np.isfinite(value):
        return str(value)
    return f"{value:.2f} dB" if name in ("si-snr", "psnr") else f"{value:.3g}"


class LibraryPanel(QTreeWidget):
    """Sounds (top level) and their INRs (children). Emits ``selected(sound, inr_or_None)``."""

    selected = Signal(object, object)

    COLUMNS = ("name", "length", "rate", "SI-SNR", "PSNR", "LSD", "params")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setColumnCount(len(self.COLUMNS))
        self.setHeaderLabels(list(self.COLUMNS))
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setRootIsDecorated(True)
        self.setUniformRowHeights(True)
        header = self.header()
        header.setStretchLastSection(False)
        # The name gets a readable width; metrics scroll sideways in a narrow panel.
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(0, 150)
        for col in range(1, len(self.COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.sounds: list[Sound] = []
        self._items: dict[int, QTreeWidgetItem] = {}
        self._objects: dict[int, Sound | InrItem] = {}
        self.itemSelectionChanged.connect(self._emit_selection)

    # -- contents ----------------------------------------------------------------------------------
    def add_sound(self, sound: Sound) -> QTreeWidgetItem:
        self.sounds.append(sound)
        item = QTreeWidgetItem([sound.name, f"{sound.duration:.2f} s", f"{sound.sample_rate:g} Hz"])
        if sound.audio is None:
            item.setToolTip(0, "opened from a .hya file: no original")
        elif sound.path is not None:
            item.setToolTip(0, str(sound.path))
        item.setData(0, Qt.ItemDataRole.UserRole, sound.id)
        self.addTopLevelItem(item)
        self._items[sound.id], self._objects[sound.id] = item, sound
        return item

    def add_inr(self, entry: InrItem, select: bool = True) -> QTreeWidgetItem:
        parent = self._items[entry.sound.id]
        entry.sound.inrs.append(entry)
        item = QTreeWidgetItem([entry.name])
        item.setData(0, Qt.ItemDataRole.UserRole, entry.id)
        item.setToolTip(0, f"{entry.origin}: {entry.inr.config.get('target', {}).get('name', '?')}"
                        + (f"\n{entry.path}" if entry.path else ""))
        parent.addChild(item)
        parent.setExpanded(True)
        parent.setText(1, f"{entry.sound.duration:.2f} s")  # a .hya's sound knows its length only now
        self._items[entry.id], self._objects[entry.id] = item, entry
        self.update_inr(entry)
        if select:
            self.setCurrentItem(item)
        return item

    def update_inr(self, entry: InrItem) -> None:
        item = self._items.get(entry.id)
        if item is None:
            return
        item.setText(1, f"{entry.inr.duration:.2f} s")
        item.setText(2, f"{entry.inr.sample_rate:g} Hz")
        for col, name in enumerate(METRIC_COLUMNS, start=3):
            item.setText(col, _fmt_metric(name, entry.metrics.get(name)))
        item.setText(6, f"{entry.parameters:,}")
        if entry.metrics:
            item.setToolTip(3, "\n".join(f"{k}: {_fmt_metric(k, v)}" for k, v in entry.metrics.items()))

    def select(self, obj: Sound | InrItem) -> None:
        item = self._items.get(obj.id)
        if item is not None:
            self.setCurrentItem(item)

    # -- selection ---------------------------------------------------------------------------------
    def current(self) -> tuple[Sound | None, InrItem | None]:
        items = self.selectedItems()
        if not items:
            return None, None
        obj = self._objects.get(items[0].data(0, Qt.ItemDataRole.UserRole))
        if isinstance(obj, InrItem):
            return obj.sound, obj
        if isinstance(obj, Sound):
            return obj, (obj.inrs[-1] if obj.inrs else None)
        return None, None

    def _emit_selection(self) -> None:
        sound, inr = self.current()
        self.selected.emit(sound, inr)
