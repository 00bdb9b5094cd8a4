"""Entry point: ``hyperaudio gui`` and the ``hyperaudio-gui`` launcher.

``--smoke-test`` starts the app as a user would, prints ``hyperaudio-gui: ready`` once the window is
up and its event loop runs, then quits (tests and CI check the installation with it).
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperaudio-gui", description="hyperaudio's desktop app.")
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", help="sounds or .hya files to open")
    parser.add_argument("--demo", action="store_true", help="open the bundled demo sound")
    parser.add_argument("--smoke-test", action="store_true",
                        help="start, print 'hyperaudio-gui: ready' once the window is up, and quit")
    parser.add_argument("--screenshot", metavar="PNG", help="with --smoke-test: save the window to this PNG")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from hyperaudio.runtime import keep_freed_memory

    keep_freed_memory()  # as the hyperaudio CLI does: the playback renderer allocates every block
    return run(args)


def no_display() -> bool:
    """Linux/BSD without a display server to talk to (and no platform chosen): Qt would abort."""
    if not sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return False
    return not any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def run(args) -> int:
    if no_display():
        print("hyperaudio-gui: error: no display (DISPLAY and WAYLAND_DISPLAY are unset); run it in a desktop "
              "session, or set QT_QPA_PLATFORM=offscreen for a window nobody sees", file=sys.stderr)
        return 2
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from .errors import install_excepthook
    from .main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("hyperaudio")
    app.setOrganizationName("hyperaudio")
    app.setStyle("Fusion")
    install_excepthook()
    window = MainWindow()
    files = list(args.files)
    if args.demo:
        from hyperaudio.demo import demo_sound

        files.insert(0, str(demo_sound()))
    window.show()
    if files:
        window.open_paths(files)
    if args.smoke_test:
        def ready():
            if args.screenshot:
                window.grab().save(args.screenshot, "PNG")
            print("hyperaudio-gui: ready", flush=True)
            window.close()
            app.quit()

        # Ready means the event loop has run and the views have drawn once.
        window.ready.connect(lambda: QTimer.singleShot(300, ready))
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
