# Two entry points (see README): `make demo` and `make test`. Both create .venv and install the
# project with the versions pinned in constraints.txt, so a fresh machine needs only Python 3.10+.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgecls-installed

.PHONY: setup demo test test-fast clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-onnx2tf.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "edgecls needs Python >= 3.10")'
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian/Ubuntu install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[train,micro,dev]"
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-onnx2tf.txt
	touch $(STAMP)

demo: setup
	$(BIN)/edgecls pipeline --out runs/demo

test: setup
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
