PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test lint sim bench demo clean bench-collective

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

# The README's test command: everything CI runs.
test: dev
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: dev
	$(BIN)/ruff check kvraft scheduler agent tests
	$(BIN)/mypy kvraft/raft

sim: dev
	$(BIN)/python -m kvraft.sim --seeds 0-999

bench: dev
	$(BIN)/python -m kvraft.sim --seeds 0-199 --bench

# A local 3-member kvraft cluster (processes on free 127.0.0.1 ports) serving the JSON API.
demo: dev
	$(BIN)/python deploy/kvraft_local.py

clean:
	rm -rf $(VENV) build *.egg-info

# Gradient exchange benchmark (docs/benchmarks.md, "Gradient exchange"): run alone.
bench-collective: dev
	flock -x /tmp/kvraft-cpu.lock $(BIN)/python -m agent.collective.bench --resnet50 --failure
