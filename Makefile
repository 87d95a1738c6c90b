# Waypoint — everything starts here. `make train` and `make test` set up .venv on first use.
PY_SYS ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN    ?=

.PHONY: install lint train test test-all test-faults bench bench-io results analyze clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install waypoint (editable) with dev extras

lint: $(STAMP)  ## ruff check and ruff format --check (run by CI before the tests)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

train: $(STAMP)  ## real DINO training on the embedded digits (80 epochs on the CPU; ends with its result line)
	$(PY) train.py trainer.max_epochs=80 trainer.val_every_n_epochs=10

# two pytest workers (one per core); a file's tests stay on one worker, so module fixtures run once
XDIST ?= -n 2 --dist loadfile

test: $(STAMP)  ## the default (fast) test suite
	$(PY) -m pytest -q $(XDIST)

test-all: $(STAMP)  ## every test, slow ones included
	$(PY) -m pytest -q -m '' $(XDIST)

SIZE_MIB ?= 1024
bench: $(STAMP)  ## every benchmark: checkpoint I/O and parity (SIZE_MIB=1024), compression, training overhead, object store
	$(PY) bench/checkpoint_io.py --size-mib $(SIZE_MIB)
	$(PY) bench/compression.py
	$(PY) bench/overhead.py
	$(PY) bench/object_store_io.py --train
	$(PY) bench/targets.py

bench-io: $(STAMP)  ## checkpoint I/O and parity cost only (table + bench/results/checkpoint_io.json; SIZE_MIB=1024)
	$(PY) bench/checkpoint_io.py --size-mib $(SIZE_MIB)
	$(PY) bench/targets.py

# runs side by side, the cores split between them: a run on 1 of 2 cores trains nearly as fast as on both
RESULTS_JOBS ?= 2
results: $(STAMP)  ## every family's default run, 3 seeds, beside its baselines (bench/results/results.{json,md})
	$(PY) bench/results.py --jobs $(RESULTS_JOBS)

# RUN reaches analyze.py through the environment, quoted by the shell: any path works ('=', commas, spaces, quotes)
analyze: export RUN := $(RUN)
analyze: $(STAMP)  ## report on the newest run, or on RUN=<run or sweep dir> (a sweep: its jobs compared)
	$(PY) analyze.py $${RUN:+"$$RUN"}

clean:  ## remove generated files (not .venv)
	rm -rf outputs multirun .pytest_cache bench/results
