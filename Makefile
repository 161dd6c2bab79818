# Every target creates .venv when it is missing, so a fresh clone needs only `make demo` / `make test`.
# GPU machines: `make install GPU=1` (tensorflow[and-cuda] and Horovod with NCCL).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
GPU    ?= 0

ifeq ($(GPU),1)
TF_EXTRA           := gpu
HOROVOD_FLAG_FILES := cluster/horovod_build.env cluster/horovod_build_gpu.env
else
TF_EXTRA           := cpu
HOROVOD_FLAG_FILES := cluster/horovod_build.env
endif

# Horovod is compiled against the TensorFlow already in the venv; build isolation would hide it and
# yield a Horovod without TensorFlow ops. pip caches the built wheel, so only the first build is slow.
# The flags' one list is cluster/horovod_build*.env (NAME=VALUE lines), which shipyard reads too.
HOROVOD_ENV := $(shell cat $(HOROVOD_FLAG_FILES) | grep -E '^[A-Z][A-Z0-9_]*=')
ifeq ($(filter HOROVOD_WITH_TENSORFLOW=1,$(HOROVOD_ENV)),)
$(error no Horovod build flags in $(HOROVOD_FLAG_FILES))
endif
STAMP := $(VENV)/.installed-$(TF_EXTRA)

.PHONY: install demo test test-fast bench lint format docs clean

install: $(STAMP)
# The playground's browser test (tests/serving/test_playground.py) drives a headless Chromium; it
# skips without one. Installed here only as root with apt; elsewhere a note, and the test skips.
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
	    || command -v google-chrome >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium \
	    || { apt-get update && DEBIAN_FRONTEND=noninteractive \
	         apt-get install -y --no-install-recommends chromium; } \
	    || echo "note: could not install chromium; the playground browser test will skip"; \
	else echo "note: no Chromium (install Debian's chromium as root); the playground browser test will skip"; fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip "setuptools>=69,<82" wheel
	$(BIN)/pip install -e ".[$(TF_EXTRA),dev]"
	$(HOROVOD_ENV) $(BIN)/pip install --no-build-isolation -e ".[$(TF_EXTRA),horovod,dev]"
# The `text` extra (TensorFlow Text) without its dependencies, which would pull in the full
# tensorflow beside tensorflow-cpu: see pyproject.toml. Then check that it imports.
	$(BIN)/python -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb")); \
	  print(*t["project"]["optional-dependencies"]["text"], sep="\n")' | xargs $(BIN)/pip install --no-deps
	$(BIN)/python -W ignore -c 'import tensorflow_text'
	$(BIN)/shipyard doctor
	touch $@

# The whole life on an embedded Ray in a fresh .shipyard-demo/<time> (shipyard/demo.py). It needs
# the venv only, not the playground test's Chromium.
demo: $(STAMP)
	$(BIN)/shipyard demo examples/demo.yaml

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest --durations=15

test-fast: install
	$(BIN)/pytest -m "not slow and not multinode"

bench: install
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y --no-install-recommends wrk; } \
	  || echo "note: no wrk; bench/serving.py falls back to its Python load generator"
	$(BIN)/python bench/corpus.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/tuning.py
	$(BIN)/python bench/serving.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# README's reference tables (commands, project-file fields) from the CLI parser and the project
# models; tests/test_reference_doc.py fails when they are stale.
docs: install
	$(BIN)/python -m shipyard.reference_doc README.md

clean:
	rm -rf .shipyard .shipyard-demo outputs .pytest_cache .ruff_cache
