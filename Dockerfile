# gpuledger: the node agent (DaemonSet, the default target) and the reporter (its own
# target, with the HTML report's matplotlib) from one Dockerfile.
#
#   docker build -t REGISTRY/gpuledger:0.1.0 .
#   docker build --target reporter -t REGISTRY/gpuledger:0.1.0-reporter .
#   podman build --format docker ...      # podman: keep the HEALTHCHECK (OCI has none)
#
#   openssl rand -hex 32 > api-token && chmod 644 api-token
#   docker run -d --name gpuledger --gpus all --read-only \
#     -p 127.0.0.1:9835:9835 \
#     -v gpuledger-state:/var/lib/gpuledger \
#     -v "$PWD/api-token:/etc/gpuledger/api-token/token:ro" \
#     -e GPULEDGER_HTTP__API_TOKEN_FILE=/etc/gpuledger/api-token/token \
#     -e GPULEDGER_NODE_NAME="$(hostname)" \
#     REGISTRY/gpuledger:0.1.0
#
# The API is published on the host's loopback only, with a bearer token; /metrics stays
# open to whoever reaches the port (http.metrics_require_token closes it too). The state
# directory (the spool: unflushed hours of the ledger) is a named volume, so an upgrade
# keeps it and --read-only works; GPULEDGER_NODE_NAME keeps the node's name across
# upgrades (the container's hostname is its id). docs/deploy.md has the details.
#
# BASE: every stage starts from it. The default, Debian bookworm slim CPython 3.11, is
# what the lock files (deploy/requirements*.lock, resolved for CPython 3.11 on linux
# x86_64) are made for. `make image-test` passes a base built from Debian packages
# (bookworm's python3 is 3.11 too), since no registry is reachable where it runs. The tag
# is pinned; to pin the digest too, resolve it where a registry is reachable
# (`docker buildx imagetools inspect python:3.11-slim-bookworm`) and pass
# `--build-arg BASE=python:3.11-slim-bookworm@sha256:<digest>`. docs/deploy.md explains.
ARG BASE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
# builder: a venv with the hash-locked dependencies and the project's wheel.
# No compiler is needed: every locked dependency installs from a manylinux wheel
# (--only-binary=:all: makes a missing wheel an error rather than a source build).
# ---------------------------------------------------------------------------------------
FROM ${BASE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# The installer and the build backend live in a throwaway venv of this stage only (pip
# from the interpreter's own ensurepip; the backend at exact versions, the resolution of
# pyproject's build-system.requires, which tests/deploy/test_dockerfile.py checks). The
# image's venv has no pip of its own: this one installs into it (pip --python). Neither
# reaches the final image.
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --no-deps \
        hatchling==1.33.0 \
        packaging==26.4 \
        pathspec==1.1.1 \
        pluggy==1.7.0 \
        tomlkit==0.15.2 \
        trove-classifiers==2026.9.21.13

# Dependencies next, so this layer is rebuilt only when the lock changes.
COPY deploy/requirements.lock deploy/requirements.lock
RUN python -m venv --without-pip /opt/gpuledger/venv \
    && /opt/build/bin/pip --python /opt/gpuledger/venv/bin/python install \
        --no-cache-dir --require-hashes --no-deps --only-binary=:all: \
        -r deploy/requirements.lock

COPY pyproject.toml README.md ./
COPY gpuledger ./gpuledger
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation \
        --wheel-dir /tmp/wheels . \
    && /opt/build/bin/pip --python /opt/gpuledger/venv/bin/python install \
        --no-cache-dir --no-deps /tmp/wheels/gpuledger-*.whl \
    && /opt/build/bin/pip --python /opt/gpuledger/venv/bin/python check \
    && /opt/gpuledger/venv/bin/gpuledger --version

# ---------------------------------------------------------------------------------------
# reporter-builder: the same venv plus the report extra (matplotlib, Jinja2 and numpy),
# from a lock that pins every shared package exactly as deploy/requirements.lock does.
# ---------------------------------------------------------------------------------------
FROM builder AS reporter-builder

COPY deploy/requirements-reporter.lock deploy/requirements-reporter.lock
RUN /opt/build/bin/pip --python /opt/gpuledger/venv/bin/python install \
        --no-cache-dir --require-hashes --no-deps --only-binary=:all: \
        -r deploy/requirements-reporter.lock \
    && /opt/build/bin/pip --python /opt/gpuledger/venv/bin/python check

# ---------------------------------------------------------------------------------------
# runtime: the same base, the agent's venv, a non-root user. No build tools, no pip cache.
# ---------------------------------------------------------------------------------------
FROM ${BASE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="gpuledger" \
      org.opencontainers.image.description="Per-node GPU observability and cost-chargeback agent for self-hosted LLM inference" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# XDG_STATE_HOME=/var/lib makes the non-root default state_dir /var/lib/gpuledger
# (gpuledger/agent/config.py) without overriding a state_dir set in the config file, as a
# GPULEDGER_STATE_DIR variable would.
# NVIDIA_*: read by the NVIDIA container toolkit, when it runs the container, to inject
# the driver's libnvidia-ml.so and the GPU device nodes; "utility" is NVML (and
# nvidia-smi) only, no CUDA compute libraries. A monitoring agent sees every GPU.
ENV PATH=/opt/gpuledger/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_STATE_HOME=/var/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility

COPY --from=builder /opt/gpuledger/venv /opt/gpuledger/venv

# A fixed numeric UID/GID (65532, the distroless "nonroot" convention), so that
# runAsUser/fsGroup in the manifests and the owner of the hostPath state directory agree.
# The default configs, at the path the Kubernetes manifests mount their ConfigMap on,
# listen on all interfaces: inside a container 127.0.0.1 is unreachable from outside
# (publish the port on the host's 127.0.0.1, as the header shows).
RUN groupadd --system --gid 65532 gpuledger \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
        --home-dir /var/lib/gpuledger --shell /usr/sbin/nologin gpuledger \
    && install -d -o 65532 -g 65532 -m 0750 /var/lib/gpuledger \
    && install -d -m 0755 /etc/gpuledger/config \
    && printf '%s\n' \
        '# Container default; mount your own agent.yaml over /etc/gpuledger/config.' \
        'listen: {host: 0.0.0.0, port: 9835}' \
        'state_dir: /var/lib/gpuledger' \
        'log: {format: json}' \
        > /etc/gpuledger/config/agent.yaml \
    && printf '%s\n' \
        '# The reporter target default; mount your own over /etc/gpuledger/config.' \
        'roles: [reporter]' \
        'listen: {host: 0.0.0.0, port: 9835}' \
        'state_dir: /var/lib/gpuledger' \
        'log: {format: json}' \
        > /etc/gpuledger/config/reporter.yaml \
    && gpuledger check-config /etc/gpuledger/config/agent.yaml > /dev/null \
    && gpuledger check-config /etc/gpuledger/config/reporter.yaml > /dev/null

USER 65532:65532
WORKDIR /var/lib/gpuledger
EXPOSE 9835

# The state directory: the spool (the ledger's unflushed hours), the SQLite ledger of a
# single server, the reporter's reports. The one path the agent writes, so the root file
# system can be read-only. Mount a named volume or a host directory owned by 65532 here:
# the anonymous volume docker and podman make without one is left behind by an upgrade.
VOLUME ["/var/lib/gpuledger"]

# Kubernetes ignores HEALTHCHECK and uses the manifests' probes; this one is for docker
# and podman (podman keeps it only with `podman build --format docker`). `gpuledger
# healthcheck` reads the same config as the agent (and its GPULEDGER_* variables): port,
# plain HTTP, TLS (the configured certificate is the trust anchor, so a private CA needs
# nothing more) or mutual TLS. HEALTHCHECK_URL replaces the URL. Mount your own config
# over this path, not elsewhere, so both read the same file.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["gpuledger", "healthcheck", "--config", "/etc/gpuledger/config/agent.yaml"]

ENTRYPOINT ["gpuledger"]
CMD ["agent", "--config", "/etc/gpuledger/config/agent.yaml"]

# ---------------------------------------------------------------------------------------
# reporter (docker build --target reporter): the runtime plus the report extra, running
# the reporter role. MPLCONFIGDIR: matplotlib's cache goes to /tmp (an emptyDir or tmpfs
# under a read-only root), not into the state directory.
# ---------------------------------------------------------------------------------------
FROM runtime AS reporter

ENV MPLCONFIGDIR=/tmp/matplotlib
COPY --from=reporter-builder /opt/gpuledger/venv /opt/gpuledger/venv
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["gpuledger", "healthcheck", "--config", "/etc/gpuledger/config/reporter.yaml"]
CMD ["agent", "--config", "/etc/gpuledger/config/reporter.yaml"]

# ---------------------------------------------------------------------------------------
# agent: the default target, last. The node agent: no matplotlib, no Kubernetes client.
# ---------------------------------------------------------------------------------------
FROM runtime AS agent
