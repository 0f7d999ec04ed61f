# hear-gram: `make demo` runs the main job, `make test` the test suite, each from scratch.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: setup test lint docs demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml scripts/setup.sh
	scripts/setup.sh $(VENV) $(PYTHON)
	touch $@

lint: setup
	$(PY) -m ruff check .

docs: setup
	$(VENV)/bin/mkdocs build --strict --quiet

test: lint docs
	$(PY) -m pytest

demo: setup
	$(PY) -m natheear_tasks demo --out work/demo

bench: setup
	$(PY) bench/embed_throughput.py
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) work build .pytest_cache .ruff_cache
