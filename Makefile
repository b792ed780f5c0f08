# `make test` and `make demo` each set up .venv on a fresh machine (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo bench image-test clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q tests

# ruff (pinned in the test extra): lint rules and formatting, both configured in pyproject.toml.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

demo: $(STAMP)
	$(PY) -m executor.demo --dir demo-workspace

# Build the real image with podman and run it as the platform does (skips where podman cannot run).
image-test: $(STAMP)
	bash docker/image-test.sh

bench: $(STAMP)
	$(PY) bench/infer.py

clean:
	rm -rf $(VENV) .pytest_cache
