# Two entry points for a fresh machine:
#   make train   set up .venv and pre-train the tiny SwitchLoRA config on 2 CPU processes
#   make test    set up .venv, lint, and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
# A CPU machine pins the torch build; on GPU nodes use e.g. TORCH_SPEC="torch>=2.11".
TORCH_SPEC ?= torch==2.13.0
NPROC ?= 2
CONFIG ?= configs/tiny_switch.toml
BIN := $(VENV)/bin

.PHONY: setup train test lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

train: setup
	OMP_NUM_THREADS=1 $(BIN)/torchrun --nproc_per_node=$(NPROC) scripts/train.py --config $(CONFIG) $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
