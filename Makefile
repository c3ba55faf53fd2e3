# `make demo` runs the study on the bundled demo data; `make test` runs every test
# (`make test-fast`: the unit layer); `make install` only sets up (for a cluster's login node).
# All three create the virtual environment first (Python 3.11, pinned requirements) and link
# the Slurm profile (`make profile`) so that `snakemake --profile slurm` works here.
# GPU=1 adds TensorFlow's CUDA libraries (requirements-gpu.txt) for NVIDIA GPU nodes.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed
GPU_STAMP := $(VENV)/.installed-gpu
INSTALLED := $(STAMP) $(if $(filter 1,$(GPU)),$(GPU_STAMP))
# Where Snakemake looks up `--profile slurm` besides ./slurm (XDG user config folder).
PROFILE_LINK := $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake/slurm
PROFILE_DIR := $(CURDIR)/profiles/slurm

.PHONY: install demo test test-fast lint benchmark profile

# The version check comes first: an older python3 would otherwise fail minutes later,
# deep inside pip, with an unrelated-looking error.
$(STAMP): requirements.txt requirements-dev.txt
	@version=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
	if [ "$$version" != "3.11" ]; then \
	  found=$${version:+is Python $$version}; \
	  echo "make: '$(PYTHON)' $${found:-was not found}; this project needs Python 3.11." >&2; \
	  echo "  Run 'make PYTHON=python3.11 ...' (on a cluster, first e.g. 'module load python/3.11')." >&2; \
	  exit 1; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

$(GPU_STAMP): $(STAMP) requirements-gpu.txt constraints-gpu.txt
	$(VENV)/bin/pip install --quiet -r requirements-gpu.txt
	touch $@

# Links $(PROFILE_LINK) to this checkout's profiles/slurm; never replaces another profile.
profile:
	@if [ "$$(readlink "$(PROFILE_LINK)" 2>/dev/null)" = "$(PROFILE_DIR)" ]; then \
	  exit 0; \
	elif [ -e "$(PROFILE_LINK)" ]; then \
	  echo "make profile: $(PROFILE_LINK) exists and is not this checkout's profile; left as it is." >&2; \
	  echo "  Run 'snakemake --profile $(PROFILE_DIR)', or move that folder away and run 'make profile'." >&2; \
	else \
	  mkdir -p "$(dir $(PROFILE_LINK))" && ln -sfn "$(PROFILE_DIR)" "$(PROFILE_LINK)" && \
	  echo "make profile: linked $(PROFILE_LINK) -> $(PROFILE_DIR) ('snakemake --profile slurm')"; \
	fi

# Sets up without running anything: on a login node, neither training nor the test suite.
install: $(INSTALLED) profile

# The demo study alone: --replace-workflow-config keeps config/config.yaml (your study) out of it.
DEMO := --configfile config/demo.yaml --replace-workflow-config

demo: $(INSTALLED) profile
	. $(VENV)/bin/activate && snakemake --profile profiles/local $(DEMO)

test: $(INSTALLED) profile
	. $(VENV)/bin/activate && bash tests/run.sh

# The unit layer alone (tests/unit): no Snakemake runs, cluster or browser.
test-fast: $(STAMP)
	. $(VENV)/bin/activate && python -m pytest tests/unit -q

lint: $(STAMP)
	. $(VENV)/bin/activate && ruff check . && snakefmt --check workflow && snakemake --lint $(DEMO)

benchmark: $(STAMP)
	. $(VENV)/bin/activate && python -m benchmarks
