# `make test` and `make demo` each set up .venv on a fresh machine (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo image-test clean

venv: $(STAMP)

# Every version comes from docker/constraints.txt, the file the image installs from. PyPI's Linux
# torch wheel is the CUDA build (several GB); on a machine without a GPU,
#   make test TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# takes PyTorch's CPU wheel of the same version instead (2.13.0+cpu, about 200 MB).
TORCH_INDEX_URL ?=
$(STAMP): pyproject.toml docker/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c docker/constraints.txt \
		$(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL)) -e ".[test]"
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

clean:
	rm -rf $(VENV) .pytest_cache
