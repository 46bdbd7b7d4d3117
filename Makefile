# hepflow: the two quickstart commands are `make demo` and `make test`.
# Both create .venv on first use. TORCH selects the torch build installed before hepflow:
# the default takes the CPU 2.13.0 wheel on machines that have it locally, the registry build
# otherwise (with CUDA on Linux); see README "CPU or GPU torch".
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
EXTRAS ?= all
PYTEST_ARGS ?=

BIN := $(VENV)/bin

.PHONY: setup demo test lint clean gpu-check pretrained

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: setup
	$(BIN)/hepflow demo

test: setup
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) hepflow-demo

# GPU check (issue: training and sampling on CUDA against the CPU, peers side by side); under
# five minutes on a GPU, also runs (slowly) on a CPU
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py

# the pretrained neutrino model shipped as package data (docs/training.md): generate with every
# core, process, train, test on a held-out sample, write the model card, install; resumable
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
pretrained: setup
	$(BIN)/python tools/build_pretrained.py --jobs $(JOBS)
