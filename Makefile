# pfdm: two commands set everything up (see README.md).
#   make run   - create .venv, install, execute every notebook with papermill: the tour (its measured time: README)
#                (01-04 at cpu, 02 with fewer metric samples, 04 PFDM vs local on one seed; 05-10 at smoke;
#                scripts/rerun.py TOUR, run in two one-thread lanes side by side: LANES) -> runs/default/;
#                a second call reuses the models trained there
#   make test  - create .venv if needed, unit tests + every notebook under nbval (smoke preset)
#   make rerun PRESET=cpu - every notebook at one preset into runs/<preset>/ with a summary.json
#   make frontier - privacy-utility frontier on digits (scripts/frontier.py: seeds 0-4 x eps 1..200, hours at cpu;
#                   JOBS=N seeds at once, one process and one thread each, default: every core)
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_DIR ?= runs/default
PRESET ?= cpu
JOBS   ?= $(shell nproc 2>/dev/null || echo 1)
export PYTHONHASHSEED := 0
# the tested torch (pyproject.toml asks for a range, so that a Colab install keeps Colab's torch)
PINS   := "torch==2.14.1" "torchvision==0.29.1"

.PHONY: install run rerun frontier test unit nbtest clean bench e2e

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]" $(PINS)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (pfdm)" >/dev/null
	touch $(STAMP)

# models, results and figures of the tour stay under $(RUN_DIR) unless PFDM_RUNS says otherwise
# (the committed figures/ and runs/cpu/ are untouched)
run: $(STAMP)
	$(PY) scripts/rerun.py --tour --out $(RUN_DIR)

rerun: $(STAMP)
	$(PY) scripts/rerun.py --preset $(PRESET)

frontier: $(STAMP)
	$(PY) scripts/frontier.py --preset $(PRESET) --jobs $(JOBS) --membership --rivals
	$(PY) scripts/frontier.py --preset $(PRESET) --jobs $(JOBS) --ambient --eps 10 200
	$(PY) scripts/frontier.py --preset $(PRESET) --jobs $(JOBS) --ambient --eps 50 --seeds 0 1 2
	$(PY) scripts/frontier.py --preset $(PRESET) --jobs $(JOBS) --ambient --ambient-kind ambient_scaled --eps 10 --publish

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# browser end-to-end test (issue 11): installs Debian's chromium + playwright (needs root/sudo for apt)
e2e: $(STAMP)
	scripts/install_browser.sh $(VENV)
	$(PY) -m pytest -q -m e2e tests/e2e

unit: $(STAMP)
	$(PY) -m pytest -q tests

# smoke preset; figures and checkpoints go to runs/smoke so the committed figures/ stay untouched
nbtest: $(STAMP)
	PFDM_PRESET=smoke PFDM_FIGURES=$(CURDIR)/runs/smoke/figures PFDM_RUNS=$(CURDIR)/runs/smoke \
	  $(PY) -m pytest -q --nbval-lax --nbval-current-env notebooks/

test: unit nbtest

clean:
	rm -rf $(VENV) runs
