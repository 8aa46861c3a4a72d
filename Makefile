# darkml — the README's two commands are `make demo` and `make test`.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.darkml-installed
RUN_DIR ?= runs/astrometry-quick

.PHONY: venv demo test test-slow bench lock clean-runs

# Create .venv and install the exact versions of requirements.lock (torch from the pinned wheels
# first), then darkml itself without re-resolving its dependencies.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

## Quick astrometric-lensing reproduction with report (CPU, ~5 min): runs/astrometry-quick/report.html
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

## Refresh requirements.lock: resolve pyproject's ranges in a scratch venv and freeze it
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	.lock-venv/bin/python -m pip install -q ".[test]"
	( echo "# Exact versions CI and \`make\` install (Python 3.11, Linux x86-64). Made by \`make lock\` from"; \
	  echo "# pyproject.toml's ranges; darkml itself is installed from the checkout with --no-deps."; \
	  .lock-venv/bin/python -m pip freeze --exclude darkml ) > requirements.lock
	rm -rf .lock-venv

clean-runs:
	rm -rf runs
