# sweeper's front door: `make help` lists every target.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATASET ?= mnist
# Test files run in this many processes: most tests are start-up and tiny fits, not cores
TEST_PROCESSES ?= 2
comma := ,
# The offline copies beside this checkout, when present; otherwise Keras downloads.
SHARED_DATA := $(wildcard ../shared/data)
export SWEEPER_DATA_DIR ?= $(SHARED_DATA)

.PHONY: help install lint test sweep baseline ui bench cluster cluster-stop clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(BIN)/sweeper  ## Make .venv and install sweeper with its dev extras (GPU=1: and CUDA's libraries)

$(BIN)/sweeper: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev$(if $(GPU),$(comma)gpu)]"
	@touch $@

lint: install  ## ruff (lint and format check) and mypy on src/
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

test: install  ## Run the test suite (offline, tiny data; TEST_PROCESSES=1: in one process)
	$(BIN)/pytest -q $(if $(filter-out 1,$(TEST_PROCESSES)),-n $(TEST_PROCESSES) --dist loadfile)

sweep: install  ## Run sweeps/$(DATASET).yaml (DATASET=folder:PATH: your images); TRIALS, ENGINE, TIMEOUT=minutes (TIMEOUT=120 is 2 h), MINUTES, EPOCHS, TARGET, LIMIT, WORKERS pass through
	$(BIN)/sweeper sweep $(if $(filter folder:% csv:%,$(DATASET)),$(DATASET),sweeps/$(DATASET).yaml) \
		$(if $(MINUTES),--minutes $(MINUTES)) \
		$(if $(TRIALS),--trials $(TRIALS)) $(if $(ENGINE),--engine $(ENGINE)) \
		$(if $(TIMEOUT),--timeout $(TIMEOUT)) $(if $(EPOCHS),--epochs $(EPOCHS)) \
		$(if $(TARGET),--target $(TARGET)) $(if $(LIMIT),--limit $(LIMIT)) \
		$(if $(WORKERS),--workers $(WORKERS))

baseline: install  ## Run one documented recipe: make baseline NAME=cnn-mnist
	$(BIN)/sweeper baseline $(NAME)

ui: install  ## The MLflow UI on ./mlruns, bound to 127.0.0.1
	$(BIN)/sweeper ui

bench: install  ## Benchmarks; prints a table and writes bench/results/
	$(BIN)/python bench/run.py

cluster: install  ## Local PostgreSQL + MLflow server on 127.0.0.1 (prints the env to use)
	scripts/cluster.sh start

cluster-stop:  ## Stop what `make cluster` started
	scripts/cluster.sh stop

clean:  ## Remove the virtual environment
	rm -rf $(VENV)
