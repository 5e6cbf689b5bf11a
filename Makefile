# Two commands do all the set-up on a fresh machine:
#   make demo   - a simulated fleet's last month and its chargeback report (paths printed),
#                 then a simulated 8-GPU node served at http://127.0.0.1:9835/metrics
#   make test   - lint, type-check and the whole test suite (installs what it needs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

FOCUS_PY ?= $(shell command -v pyenv >/dev/null 2>&1 && ls -d "$$(pyenv root)"/versions/3.1[2-9]*/bin/python3 2>/dev/null | head -n 1)
FOCUS_VENV := .venv-focus
FOCUS_STAMP := $(FOCUS_VENV)/.installed-stamp

.PHONY: demo test lint typecheck pytest bench soak docs golden podresources-stubs screenshots prometheus system-packages image-packages image-test focus-validator clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,postgres]'
	@touch $(STAMP)

# Debian packages the tests run against: prometheus (the real server + promtool),
# chromium (opens the HTML chargeback report headless), faketime (the soak steps the
# agent's wall clock for real), and slurm-wlm + munge (a private single-node Slurm runs
# real jobs whose processes the agent bills to their accounts; tests/support/slurm_cluster.py).
system-packages:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
	  && command -v chromium >/dev/null 2>&1 && command -v faketime >/dev/null 2>&1 \
	  && command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 \
	  && command -v munged >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus, chromium, faketime, slurm-wlm and munge for the tests"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    prometheus chromium faketime slurm-wlm munge; }

prometheus: system-packages

# The container engine of `make image-test`, from Debian: podman, runc (crun refuses a
# hybrid cgroup v1/v2 host), debootstrap (the local Debian base; no image registry is
# needed). Installed only where apt-get is there; elsewhere the image tests skip and say
# why. docs/deploy.md ("Testing the image") has the podman flags this machine needed.
image-packages:
	@command -v podman >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 \
	  && command -v runc >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's podman, runc and debootstrap for the image tests"; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	      podman runc debootstrap; \
	  else echo "no apt-get: the image tests will skip unless podman and debootstrap are installed"; fi; }

# The official FOCUS validator (focus-validator 2.x, FOCUS 1.2 rules) needs Python >= 3.12
# while the project runs on 3.11: it gets a venv of its own (see docs/chargeback.md).
$(FOCUS_STAMP):
	@py="$(FOCUS_PY)"; [ -n "$$py" ] || py=$$(command -v python3.12 || command -v python3.13 || true); \
	  [ -n "$$py" ] || { echo "focus-validator needs Python >= 3.12 (set FOCUS_PY=...)"; exit 1; }; \
	  test -x $(FOCUS_VENV)/bin/python || "$$py" -m venv $(FOCUS_VENV)
	$(FOCUS_VENV)/bin/python -m pip install -q --upgrade pip
	$(FOCUS_VENV)/bin/python -m pip install -q "focus-validator==2.2.1" "numpy<2" "pyarrow<18"
	@touch $(FOCUS_STAMP)

focus-validator: $(FOCUS_STAMP)

demo: $(STAMP)
	$(BIN)/gpuledger demo

lint: $(STAMP)
	$(BIN)/ruff check gpuledger tests bench
	$(BIN)/ruff format --check gpuledger tests bench

typecheck: $(STAMP)
	$(BIN)/mypy gpuledger

# Not GPULEDGER_-prefixed: the agent refuses unknown GPULEDGER_* variables, and the tests'
# agent subprocesses inherit this environment.
# The image tests (tests/deploy/test_image.py) are part of the suite: they build the
# image with podman when it can run here, and skip with the reason when it cannot. The
# first run builds the Debian base (debootstrap, cached for the week under
# ~/.cache/gpuledger/image-test) and the image (about 3 minutes); later runs reuse the
# cached layers.
pytest: $(STAMP) system-packages image-packages focus-validator
	FOCUS_VALIDATOR_BIN=$(CURDIR)/$(FOCUS_VENV)/bin/focus-validator $(BIN)/pytest

# Only the image: build it with podman against the local Debian base, then run it as
# docs/deploy.md says (user, read-only root, /readyz, HEALTHCHECK on HTTP, TLS and
# mutual TLS, SIGTERM, the reporter target). -s prints the measured sizes and times.
image-test: $(STAMP) image-packages
	$(BIN)/pytest -s -m image tests/deploy/test_image.py

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench

# The fault-injection soak: 5 minutes by default, `make soak SOAK_SECONDS=1800` for longer
# (a 60 s version runs inside `make test`).
SOAK_SECONDS ?= 300
soak: $(STAMP) system-packages
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest -m soak tests/e2e/test_soak.py -s

docs: $(STAMP)
	$(BIN)/python -m gpuledger.schema

# The golden /metrics of a seeded simulated node (tests/support/fixtures/golden/): rewrite
# it after an intended change to the exported surface, then review its diff.
golden: $(STAMP)
	$(BIN)/python -m tests.support.golden

# The kubelet pod-resources v1 stubs, from the vendored upstream api.proto (its header
# names the commit): run after updating the .proto, then review the diff.
PODRES := gpuledger/collectors/workload/podresources
podresources-stubs: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
	  $(PODRES)/api.proto

# The README's pictures (docs/images/report.png, dashboard.png), redrawn from the demo:
# its month's HTML report in headless Chromium, and the GPU fleet dashboard's panels over
# the simulated agent as a real Prometheus recorded it (about two minutes).
screenshots: $(STAMP) system-packages
	$(BIN)/python docs/images/generate.py

clean:
	rm -rf $(VENV) $(FOCUS_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
