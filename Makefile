# darkml — the README's two commands are `make demo` and `make test`.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.darkml-installed
RUN_DIR ?= runs/astrometry-quick

.PHONY: venv demo test test-slow bench docs-check clean-runs

# Create .venv and install darkml (torch from the pinned wheels first, then the package).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

## Quick astrometric-lensing reproduction with report (CPU, ~15 min): runs/astrometry-quick/report.html
demo: $(STAMP)
	$(VENV)/bin/darkml astrometry run --preset quick --run-dir $(RUN_DIR)
	@echo "report: $(RUN_DIR)/report.html"

## Test suite (fast tests; slow ones are marked and run by `make test-slow`)
test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	for b in benchmarks/*.py; do case $$b in *reference*) ;; *) $(PY) $$b || exit 1;; esac; done

clean-runs:
	rm -rf runs
