# Every target creates or reuses .venv and installs what it needs, so a fresh clone needs only
# Python >= 3.11 and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
EMULATOR_PORT ?= 8081
EMULATOR_DATA ?= .emulator-data

.PHONY: help install test faults migrate emulator bench bench-quick lint clean

help:
	@echo "make migrate      full Vimarsh migration (local emulator + demo data unless .env says otherwise)"
	@echo "make test         the test suite (starts its own emulator processes)"
	@echo "make faults       the full fault and bad-input matrix"
	@echo "make emulator     run the local Cosmos-compatible emulator on port $(EMULATOR_PORT)"
	@echo "make bench        throughput benchmark (all scenarios, 6-15 min); make bench-quick (~1 min)"
	@echo "make lint         ruff, mypy and a dependency vulnerability audit"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,fast,ray]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

# The JavaScript SDK for tests/emulator/test_js_sdk.py, reinstalled when its lock file changes;
# without npm the step is skipped and those tests skip themselves.
JS_STAMP := tests/js/node_modules/.installed-$(shell cat tests/js/package-lock.json 2>/dev/null | cksum | cut -d' ' -f1)

$(JS_STAMP): tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		if npm ci --prefix tests/js --no-audit --no-fund --loglevel=error; then \
			rm -f tests/js/node_modules/.installed-* && touch $(JS_STAMP); \
		else echo "npm ci failed: the JavaScript SDK tests will be skipped"; fi; \
	else echo "npm not found: the JavaScript SDK tests will be skipped"; fi

test: $(STAMP) $(JS_STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

faults: $(STAMP)
	@mkdir -p bench/results && rm -f bench/results/faults.jsonl
	ASYNCMIG_FAULT_RESULTS=bench/results/faults.jsonl $(PY) -m pytest -q tests/faults tests/test_bad_input.py $(PYTEST_ARGS)
	$(PY) -m tests.faults.summary bench/results/faults.jsonl

migrate: $(STAMP)
	$(PY) -m asyncmig.demo_run

emulator: $(STAMP)
	$(PY) -m asyncmig.emulator --host 127.0.0.1 --port $(EMULATOR_PORT) --data-dir $(EMULATOR_DATA)

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench --quick

lint: $(STAMP)
	$(PY) -m pip install --quiet -e '.[lint]'
	$(PY) -m ruff check asyncmig bench tests
	$(PY) -m mypy asyncmig
	$(PY) -m pip_audit --skip-editable --progress-spinner off || echo "pip-audit could not reach the vulnerability service; audit skipped"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
