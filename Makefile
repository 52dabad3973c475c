# Two commands on a fresh machine: `make demo` runs the job system, `make test` runs the tests.
# Each creates .venv and installs everything it needs on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: install demo ask test test-fast docs lint train train-decoder eval clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The whole job system on this machine: embedded Redis, SQLite, one worker per stage.
demo: install
	$(VENV)/bin/cubeqa demo

# The model alone, in one process.
ask: install
	$(VENV)/bin/cubeqa ask "What year did building begin of fort amsterdam on manhattan island?"
	$(VENV)/bin/cubeqa ask "Where is kenya located?"
	$(VENV)/bin/cubeqa eval --data data/squad_sent_val.jsonl

lint: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The full suite (what .ci/run calls): unit, deployment, integration, e2e and reliability tiers, in two
# pytest processes (pytest-xdist; a file's tests stay in one, so its module fixtures start once).
test: lint
	$(PY) -m pytest -n 2 --dist loadfile --durations 25

# The inner loop, with no services running: everything not marked slow (model loads, worker processes,
# training runs) or services (Redis, PostgreSQL).
test-fast: install
	$(PY) -m pytest -m "not slow and not services"

# The documentation site into site/; fails on a broken link or a page missing from the nav.
docs: install
	$(VENV)/bin/mkdocs build --strict

# The shipped default bundle: `make train` rebuilds it with the default configuration.
train: install
	$(VENV)/bin/cubeqa train --out cubeqa/bundles/default

# The shipped generative decoder: 54 minutes of training (held-out evaluations included) on 2 CPU cores, added to the default bundle.
train-decoder: install
	$(VENV)/bin/cubeqa train-decoder --bundle cubeqa/bundles/default --minutes 54 --fragments 2

eval: install
	$(VENV)/bin/cubeqa eval --data data/squad_sent_val.jsonl --json docs/results/eval-val.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info site
