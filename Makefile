# corral: every target installs what it needs into .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
WORKERS ?= 3

.PHONY: demo test check bench screenshots install clean bytecode

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || true
	@# A venv made where ensurepip is missing has no pip, and every later make
	@# would fail on it: remove it and say what to install instead.
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV); \
	  echo "make: '$(PY) -m venv' made no working venv with pip; install python3-venv" \
	       "(Debian/Ubuntu: apt-get install python3-venv), then run make again" >&2; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@# The editable install's import finder costs every corral command about 13 ms
	@# (it loads pathlib, importlib.util, urllib.parse at interpreter start); a plain
	@# path entry to a directory holding only a `corral` link imports the same
	@# source tree for nothing, and new modules still appear without a reinstall.
	@sp=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') && \
	  rm -f "$$sp"/__editable__.corral-*.pth && mkdir -p $(VENV)/src && \
	  ln -sfn "$(CURDIR)/corral" $(VENV)/src/corral && \
	  echo "$(CURDIR)/$(VENV)/src" > "$$sp/corral-src.pth"
	touch $(STAMP)

install: $(STAMP)

# Every corral process (the CLI, each worker and master a test starts) imports
# the source tree. Where PYTHONDONTWRITEBYTECODE is set (CI images often set
# it), Python never caches what it compiles, and each start compiled every
# module again: `corral nodes` 57 ms instead of 45, a worker 60 ms more. This
# writes the caches for what changed since the last run (about 60 ms when
# nothing did).
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q corral bench

demo: bytecode
	$(BIN)/corral demo --workers $(WORKERS)

test: bytecode
	$(BIN)/python -m pytest -q

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy corral
	$(BIN)/lint-imports

bench: bytecode
	$(BIN)/python -m bench

screenshots: bytecode
	$(BIN)/python -m corral.tui.screenshots screenshots

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
