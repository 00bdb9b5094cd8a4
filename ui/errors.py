"""Error dialogs, and the exception hook that turns any uncaught exception into one.

Every error the app reports goes through :func:`show_error`, so a bad file, a NaN, a missing audio
device or a failed job is a dialog and never a crash (tests replace ``QMessageBox.exec`` to record
the dialogs instead of blocking on them).
"""

from __future__ import annotations

import sys
import traceback

from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from hyperaudio.errors import HyperaudioError


def describe(exc: BaseException) -> str:
    """One line for the user: our own errors already say what is wrong; others name their type."""
    if isinstance(exc, HyperaudioError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def show_error(parent: QWidget | None, title: str, message: str, details: str | None = None) -> None:
    box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, parent)
    if details:
        box.setDetailedText(details)
    box.exec()


def show_exception(parent: QWidget | None, title: str, exc: BaseException) -> None:
    details = None
    if not isinstance(exc, HyperaudioError):  # a traceback helps with bugs, not with bad input
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    show_error(parent, title, describe(exc), details)


_in_hook = False


def _hook(kind, value, tb) -> None:
    global _in_hook
    traceback.print_exception(kind, value, tb)
    if issubclass(kind, KeyboardInterrupt) or QApplication.instance() is None or _in_hook:
        return
    _in_hook = True  # an error raised while the dialog is up must not stack dialogs forever
    try:
        show_error(QApplication.activeWindow(), "Unexpected error",
                   f"{describe(value)}\n\nThe app keeps running; the action that failed was abandoned.",
                   "".join(traceback.format_exception(kind, value, tb)))
    finally:
        _in_hook = False


def install_excepthook() -> None:
    """Uncaught exceptions in slots and event handlers show a dialog instead of ending the app."""
    sys.excepthook = _hook
