# Two commands do all the set-up on a fresh machine:
#   make demo   - a simulated 8-GPU node served at http://127.0.0.1:9835/metrics
#   make test   - lint, type-check and the whole test suite (installs what it needs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck pytest bench docs prometheus clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,postgres]'
	@touch $(STAMP)

# Debian's prometheus package gives the real prometheus + promtool the tests run against.
prometheus:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus (promtool + server) for the tests"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

demo: $(STAMP)
	$(BIN)/gpuledger demo

lint: $(STAMP)
	$(BIN)/ruff check gpuledger tests bench
	$(BIN)/ruff format --check gpuledger tests bench

typecheck: $(STAMP)
	$(BIN)/mypy gpuledger

pytest: $(STAMP) prometheus
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench

docs: $(STAMP)
	$(BIN)/python -m gpuledger.schema

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
