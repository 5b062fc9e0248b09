# The README quotes these targets. PYTHON is the interpreter hostctl is installed into (your venv's python3).
PYTHON ?= python3
# A CPU build of torch, installed before the project so that pip keeps it (an unpinned torch is a multi-GB
# CUDA build). Override for another machine, e.g. `make setup TORCH_SPEC='torch==2.5.1 --index-url ...'`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test test-fast test-golden lint bench

setup:
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

bench: setup
	$(PYTHON) scripts/bench.py all
