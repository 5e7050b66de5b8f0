# Parley build and test entry points. `make help` lists the targets.
# The interpreter must have tkinter: `python3` first on PATH does here (pyenv 3.11);
# Debian's /usr/bin/python3 does not. Override with `make PYTHON=/path/to/python3`.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-installed
PORT   ?= 5150
SERVER_ARGS ?=
CLIENT_ARGS ?=

# Scripts run by path (bench/, tools/) import the project's packages from the repo root.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.DEFAULT_GOAL := help
.PHONY: help venv xvfb test test-fast run screenshots dist lint bench clean distclean

help:
	@echo "make venv         create .venv and install requirements-dev.txt (PYTHON=$(PYTHON))"
	@echo "make xvfb         install Xvfb and xdotool with apt-get if missing"
	@echo "make test         whole test suite (GUI tests on a private Xvfb)"
	@echo "make test-fast    skip tests marked gui, dist or slow"
	@echo "make run          start server.py, then the client GUI; stops the server after"
	@echo "make screenshots  tools/screenshots.py on a fresh Xvfb, into screenshots/"
	@echo "make dist         PyInstaller executables from build.spec into dist/"
	@echo "make lint         ruff check"
	@echo "make bench        run every bench/*.py"
	@echo "make clean        remove build/, dist/ and caches (distclean: also .venv)"

venv: $(STAMP)

# Re-runs whenever a requirements file changes. tkinter is checked both in the chosen
# interpreter and in an existing .venv (which may have been made by another python).
$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import tkinter' >/dev/null 2>&1 || { \
	  echo "ERROR: '$(PYTHON)' ($$(command -v $(PYTHON) || echo not found)) cannot import tkinter." >&2; \
	  echo "       Parley's client needs Tk. Use a Python built with Tk: make PYTHON=/path/to/python3" >&2; \
	  exit 1; }
	@test -x $(VPY) || { echo "Creating $(VENV) with $$(command -v $(PYTHON))"; $(PYTHON) -m venv $(VENV); }
	@$(VPY) -c 'import tkinter' >/dev/null 2>&1 || { \
	  echo "ERROR: $(VENV) was made by a python without tkinter; run 'make distclean' and retry." >&2; \
	  exit 1; }
	$(VPY) -m pip install -q -r requirements-dev.txt
	@touch $@

xvfb:
	@if command -v Xvfb >/dev/null 2>&1 && command -v xdotool >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "Installing xvfb and xdotool with apt-get"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q xvfb xdotool </dev/null || exit 1; \
	else \
	  echo "ERROR: Xvfb/xdotool missing. Run: sudo apt-get update && sudo apt-get install -y xvfb xdotool" >&2; \
	  exit 1; \
	fi

# The run is also kept in a log file (its path is printed when a run fails): when the
# interpreter itself dies (a signal, status >= 128), the end of the output is a long stack
# dump, so the lines saying which thread and which test crashed are printed again last,
# where the tail of a CI log shows them.
test: venv xvfb
	@log=$$(mktemp -t parley-test.XXXXXX); \
	{ $(VPY) -m pytest -q tests; echo $$? > $$log.rc; } 2>&1 | tee $$log; \
	rc=$$(cat $$log.rc); rm -f $$log.rc; \
	if [ "$$rc" -ge 128 ]; then \
	  echo "---- the crash, again: ----" >&2; \
	  grep -m1 "Fatal Python error" $$log >&2; \
	  grep -A14 "^Current thread" $$log >&2; \
	  grep -E 'File ".*/tests/[^"]*"' $$log | tail -6 >&2; \
	fi; \
	case $$rc in \
	  0) echo "make test: all tests passed" ;; \
	  5) echo "make test: FAILED: pytest collected no tests" >&2 ;; \
	  *) echo "make test: FAILED (pytest exit status $$rc); the whole run is in $$log" >&2 ;; \
	esac; [ "$$rc" = 0 ] && rm -f $$log; exit $$rc

test-fast: venv
	@$(VPY) -m pytest -q -m "not gui and not dist and not slow" tests; rc=$$?; \
	case $$rc in \
	  0) echo "make test-fast: all selected tests passed" ;; \
	  5) echo "make test-fast: FAILED: no tests selected" >&2 ;; \
	  *) echo "make test-fast: FAILED (pytest exit status $$rc)" >&2 ;; \
	esac; exit $$rc

run: venv
	$(VPY) tools/run_dev.py --port $(PORT) --server-args="$(SERVER_ARGS)" --client-args="$(CLIENT_ARGS)"

screenshots: venv xvfb
	@test -f tools/screenshots.py || { echo "ERROR: tools/screenshots.py does not exist yet" >&2; exit 1; }
	@mkdir -p screenshots
	$(VPY) tools/xvfb_run.py -- $(VPY) tools/screenshots.py screenshots

dist: venv
	@test -f build.spec || { echo "ERROR: build.spec does not exist yet" >&2; exit 1; }
	$(VENV)/bin/pyinstaller --noconfirm --clean build.spec

lint: venv
	$(VPY) -m ruff check .

bench: venv
	@set -e; found=0; for script in bench/*.py; do \
	  [ -f "$$script" ] || continue; found=1; \
	  echo "== $$script"; $(VPY) "$$script"; \
	done; [ $$found = 1 ] || echo "no bench/*.py scripts yet"

clean:
	rm -rf build dist .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
