# The README's commands: `make test` (set-up + the test suite) and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
FAIRSEQ_SPEC ?= fairseq-fixed==0.12.3.1
STAMP := $(VENV)/.fairseq-mixer-installed

.PHONY: setup test demo lint format clean-venv

setup: $(STAMP)

# An interpreter that already has torch (a CUDA build, say) lends it to the venv
# through --system-site-packages; otherwise the venv gets $(TORCH_SPEC).
$(STAMP): pyproject.toml requirements.txt requirements-dev.txt
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "setup: reusing the torch installed for $(PYTHON)"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -r requirements.txt -r requirements-dev.txt
	$(PY) -c "import fairseq" 2>/dev/null || \
	  $(PIP) install --no-deps --no-build-isolation "$(FAIRSEQ_SPEC)"
	$(PIP) install --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, fairseq, fairseq_mixer; print('setup: torch', torch.__version__, 'fairseq', fairseq.__version__)"
	touch $(STAMP)

# Two workers: most of the suite's time is single-threaded (fairseq subprocesses, tiny models).
TEST_WORKERS ?= 2
test: setup
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile tests

demo: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) scripts/demo.py

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
