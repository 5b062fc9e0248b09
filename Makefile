# The README quotes these targets. PYTHON is the interpreter hostctl is installed into: by default python3, or,
# when python3 is "externally managed" (PEP 668: Debian's and Ubuntu's system Python, whose pip refuses to install
# outside a virtualenv), a project virtualenv in .venv that make creates from it. `make PYTHON=...` wins over both.
BASE_PYTHON ?= python3
VENV := .venv
EXTERNALLY_MANAGED := $(shell $(BASE_PYTHON) -c 'import os, sys, sysconfig; print(int(sys.prefix == sys.base_prefix and os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))' 2>/dev/null)
ifeq ($(EXTERNALLY_MANAGED),1)
PYTHON ?= $(VENV)/bin/python
else
PYTHON ?= $(BASE_PYTHON)
endif
# A CPU build of torch, installed before the project so that pip keeps it (an unpinned torch is a multi-GB
# CUDA build). Override for another machine, e.g. `make setup TORCH_SPEC='torch==2.5.1 --index-url ...'`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test test-fast test-golden lint bench

setup: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/bin/python)
	@$(PYTHON) -c 'import torch' 2>/dev/null || $(PYTHON) -m pip install $(TORCH_SPEC)
	$(PYTHON) -m pip install -q -e '.[dev]'

demo: setup
	$(PYTHON) -m hostctl demo --runtime local

# Everything: lint, the Python 3.8 check of the payload, unit, end-to-end and Docker tests (starts an engine and
# builds the stand-in image when needed).
test: setup
	PYTHON=$(PYTHON) scripts/test.sh

# Unit tests only: no Docker, no golden references, a few seconds.
test-fast: setup
	$(PYTHON) -m pytest -m 'not slow and not docker and not golden' -q

# The golden tier alone: the portable backend against vai_q_pytorch's references (tests/golden).
test-golden: setup
	HOSTCTL_GOLDEN_PYTHON="$$(scripts/golden-env.sh | tail -n1)" HOSTCTL_REQUIRE_GOLDEN=1 $(PYTHON) -m pytest -m golden tests/golden tests/inspect_golden -q

lint:
	PYTHON=$(PYTHON) scripts/lint.sh

$(VENV)/bin/python:
	@echo "make: $(BASE_PYTHON) is externally managed (PEP 668): installing into a virtualenv in $(VENV)"
	$(BASE_PYTHON) -m venv $(VENV) || { echo "make: cannot create $(VENV): install the venv module (sudo apt-get install python3-venv) or pass PYTHON=/path/to/a/venv/python" >&2; rm -rf $(VENV); exit 1; }

bench: setup
	$(PYTHON) scripts/bench.py all
