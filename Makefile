# The two commands a new user needs: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.segkit-installed

.PHONY: setup run test test-all faults lint bench gpu-check docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,dali,tensorboard,export,docs,bench]'
	touch $(STAMP)

# Train, evaluate and report on the embedded synthetic dataset (a few minutes on 2 CPU cores).
run: setup
	$(BIN)/segkit run --model resnet34_unet --recipe type1 --image-size 64 --epochs 10 --batch-size 8 \
		--schedule cosine --warmup-epochs 0.5 --name make-run

# Tests run in JOBS processes (pytest-xdist; `make test JOBS=8` on a bigger machine). Two
# suit CI's 2-core machine: the suite spends much of its time starting processes and waiting
# on them, so two workers measured 1.6x faster than one there.
JOBS ?= 2
XDIST := -n $(JOBS) --dist worksteal

# The fast tier: everything that neither trains nor spawns processes (about 2 minutes on 2 cores).
test: setup
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

# Both tiers: the fast one and the slow one (training runs, resume, torchrun, fault cases,
# the plugin package installed into a venv). This is what CI runs; it ends with the 25
# slowest tests, so a CI log shows where its time went.
test-all: setup
	$(BIN)/python -m pytest -q $(XDIST) --durations=25

# The fault campaign alone (part of test-all): kills, dead ranks, fuzzed files, concurrent
# runs, memory; it prints its table (kills, trials, fuzzed files, outcomes).
faults: setup
	$(BIN)/python -m pytest -q tests/test_faults.py

lint: setup
	$(BIN)/ruff check segkit plugins tests benchmarks

bench: setup
	$(BIN)/python -m pytest benchmarks/ --benchmark-only

# On a GPU machine: prove and measure the GPU path in stages of under 150 s each
# (benchmarks/gpu_check.py; one stage per device call: ARGS="--stage 1 --out DIR", and
# benchmarks/GPU_PLAN.md for the calls). Without --stage it runs stages 1-5 and merges them.
# It uses the machine's own Python where there is no .venv (see the README, Benchmarks).
# `make gpu-check ARGS=--dry-run` runs every stage at tiny sizes on the CPU (as CI does).
GPU_PY := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
gpu-check:
	NO_ALBUMENTATIONS_UPDATE=1 $(GPU_PY) benchmarks/gpu_check.py $(ARGS)

# The documentation site into site/ (mkdocs.yml; the CLI reference is generated from the parser).
# The slow tier builds it too (tests/test_docs.py), so CI fails on a broken link or page.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build *.egg-info runs .pytest_cache .benchmarks gpu-check gpu-check-data gpu-check-work site
