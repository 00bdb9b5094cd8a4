"""The Plugins dialog: every plugin with what it registered, and broken ones with their error."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHeaderView, QLabel, QPushButton, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout)

from hyperaudio.plugins import KIND_LABELS, get_registry, reset_registry


class PluginsDialog(QDialog):
    reloaded = Signal()  # the registry was loaded afresh: choices elsewhere should follow

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Plugins")
        self.resize(720, 480)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(3)
        self.tree.setHeaderLabels(["plugin / component", "version / kind", "status / description"])
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setStretchLastSection(True)
        note = QLabel("Components come from the plugin registry: install a plugin (hyperaudio plugin install ...) "
                      "and press Reload to see it here and in the job forms.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        self.reload_button = QPushButton("Reload plugins")
        buttons.addButton(self.reload_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.reload_button.clicked.connect(self.reload)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.tree)
        layout.addWidget(buttons)
        self.populate()

    def reload(self) -> None:
        reset_registry()
        get_registry()
        self.populate()
        self.reloaded.emit()

    def populate(self) -> None:
        registry = get_registry()
        self.tree.clear()
        for info in sorted(registry.plugins.values(), key=lambda p: (p.status != "broken", p.name)):
            status = "broken" if info.status == "broken" else "ok"
            item = QTreeWidgetItem([info.name, info.version, status if not info.error else f"broken: {info.error}"])
            item.setToolTip(2, info.error or "")
            if info.status == "broken":
                for col in range(3):
                    item.setForeground(col, Qt.GlobalColor.red)
            for kind, name in info.registered:
                entry = registry.entries[kind].get(name)
                desc = entry.description if entry is not None else ""
                item.addChild(QTreeWidgetItem([name, KIND_LABELS[kind], desc]))
            for message in info.messages:
                item.addChild(QTreeWidgetItem(["note", "", message]))
            self.tree.addTopLevelItem(item)
            item.setExpanded(info.status == "broken" or info.name != "hyperaudio")

    def broken_rows(self) -> list[str]:
        return [self.tree.topLevelItem(i).text(0) for i in range(self.tree.topLevelItemCount())
                if self.tree.topLevelItem(i).text(2).startswith("broken")]
