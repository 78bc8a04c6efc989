PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test lint sim bench demo down clean bench-collective

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

# The README's test command: everything CI runs.
test: dev
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --tb=short

lint: dev
	$(BIN)/ruff check kvraft scheduler agent tests
	$(BIN)/mypy kvraft scheduler agent

sim: dev
	$(BIN)/python -m kvraft.sim --seeds 0-999

bench: dev
	$(BIN)/python -m kvraft.sim --seeds 0-199 --bench

# The README's main command: a local cluster (3 members, 2 schedulers, 4 agents in 2 racks,
# 4 fake GPUs each) runs the data-parallel digits job over MPI; the cluster stays up.
DEMO_DIR ?= .kvraft-local
demo: $(BIN)/python
	$(BIN)/pip install -q -e '.[mpi,train]'
	$(BIN)/kvraft-local demo --dir $(DEMO_DIR)

# Stop every process of the local cluster (members, schedulers, agents, tasks) by PID.
down:
	@if [ -x $(BIN)/kvraft-local ]; then $(BIN)/kvraft-local down --dir $(DEMO_DIR); else echo "no venv: nothing to stop"; fi

clean:
	rm -rf $(VENV) build *.egg-info

# Gradient exchange benchmark (docs/benchmarks.md, "Gradient exchange"): run alone.
bench-collective: dev
	flock -x /tmp/kvraft-cpu.lock $(BIN)/python -m agent.collective.bench --resnet50 --failure

# Every robustness scenario once against real member processes (docs/robustness.md); needs
# root for the network partitions (iptables) and faketime for the clock steps.
robustness: dev
	$(BIN)/python -m kvraft.robustness --scenario all
