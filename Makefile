# Two commands on a fresh Debian/Ubuntu machine: `make run` and `make test`.
# Both create or refresh .venv themselves (torch is pinned and installed first: an unpinned torch
# would pull several GB of CUDA packages).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TORCH  := torch==2.13.0

.PHONY: setup run test bench clean system-deps

$(STAMP): pyproject.toml Makefile
	@bash scripts/system-deps.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[all,test]'
	$(BIN)/python -m pip install -q --disable-pip-version-check -e plugins/snac-encoder -e plugins/whisper-encoder
	@touch $(STAMP)

setup: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

## The main job: the desktop app on the bundled demo sound; with no display, the headless demo
## (fit the demo sound, render it at 8, 22.05 and 48 kHz, write a report).
run: setup
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY$$QT_QPA_PLATFORM" ]; then \
	  echo "opening the desktop app on the bundled demo sound (hyperaudio gui --demo)"; \
	  $(BIN)/hyperaudio gui --demo; \
	else \
	  echo "no display (DISPLAY, WAYLAND_DISPLAY and QT_QPA_PLATFORM are unset): running the headless demo instead"; \
	  $(BIN)/hyperaudio demo -o out/demo && \
	  echo "report: out/demo/report.md (picture: out/demo/report.png)"; \
	fi

test: setup
	$(BIN)/python -m pytest -q

## Benchmarks print figures; pass DATA=folder-of-audio.
bench: setup
	$(BIN)/python bench/fit.py $(DATA)

clean:
	rm -rf out .pytest_cache build *.egg-info plugins/*/build plugins/*/src/*.egg-info
