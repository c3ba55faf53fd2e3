# `make demo` runs the study on the bundled demo data; `make test` runs every test.
# Both create the virtual environment first (Python 3.11, pinned requirements).
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test lint benchmark

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

demo: $(STAMP)
	. $(VENV)/bin/activate && snakemake --profile profiles/local

test: $(STAMP)
	. $(VENV)/bin/activate && bash tests/run.sh

lint: $(STAMP)
	. $(VENV)/bin/activate && ruff check . && snakefmt --check workflow && snakemake --lint

benchmark: $(STAMP)
	. $(VENV)/bin/activate && python -m scripts.benchmark
