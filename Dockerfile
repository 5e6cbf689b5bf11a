# gpuledger: the node agent (DaemonSet) and the reporter in one image.
#
#   docker build -t REGISTRY/gpuledger:0.1.0 .
#   docker run --rm --gpus all -p 9835:9835 REGISTRY/gpuledger:0.1.0
#
# Both stages start from the same Debian bookworm slim CPython 3.11 image (the lock file
# in deploy/requirements.lock is resolved for CPython 3.11 on linux x86_64). The tag is
# pinned; to pin the digest too, resolve it where a registry is reachable
# (`docker buildx imagetools inspect python:3.11-slim-bookworm`) and write
# `FROM python:3.11-slim-bookworm@sha256:<digest>` in both stages. docs/deploy.md explains.

# ---------------------------------------------------------------------------------------
# builder: a venv with the hash-locked dependencies and the project's wheel.
# No compiler is needed: every locked dependency installs from a manylinux wheel
# (--only-binary=:all: makes a missing wheel an error rather than a source build).
# ---------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# Dependencies first, so this layer is rebuilt only when the lock changes. The venv has no
# pip of its own: the base image's pip installs into it (pip --python), and the final
# image carries no installer in the venv.
COPY deploy/requirements.lock deploy/requirements.lock
RUN python -m venv --without-pip /opt/gpuledger/venv \
    && python -m pip --python /opt/gpuledger/venv/bin/python install \
        --no-cache-dir --require-hashes --no-deps --only-binary=:all: \
        -r deploy/requirements.lock

# The build backend lives in a throwaway venv of this stage only, at exact versions (the
# resolution of pyproject's build-system.requires; tests/deploy/test_dockerfile.py checks they
# satisfy it). It never reaches the final image.
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --no-deps \
        hatchling==1.33.0 \
        packaging==26.4 \
        pathspec==1.1.1 \
        pluggy==1.7.0 \
        tomlkit==0.15.2 \
        trove-classifiers==2026.9.21.13

COPY pyproject.toml README.md ./
COPY gpuledger ./gpuledger
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation \
        --wheel-dir /tmp/wheels . \
    && python -m pip --python /opt/gpuledger/venv/bin/python install \
        --no-cache-dir --no-deps /tmp/wheels/gpuledger-*.whl \
    && python -m pip --python /opt/gpuledger/venv/bin/python check \
    && /opt/gpuledger/venv/bin/gpuledger --version

# ---------------------------------------------------------------------------------------
# final: the same base, the venv, a non-root user. No build tools, no pip cache.
# ---------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

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
# GPULEDGER_STATE_DIR variable would. MPLCONFIGDIR: the reporter's matplotlib cache goes
# to /tmp (an emptyDir under readOnlyRootFilesystem), not into the state directory.
# NVIDIA_*: read by the NVIDIA container toolkit, when it runs the container, to inject
# the driver's libnvidia-ml.so and the GPU device nodes; "utility" is NVML (and
# nvidia-smi) only, no CUDA compute libraries. A monitoring agent sees every GPU.
ENV PATH=/opt/gpuledger/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_STATE_HOME=/var/lib \
    MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility

COPY --from=builder /opt/gpuledger/venv /opt/gpuledger/venv

# A fixed numeric UID/GID (65532, the distroless "nonroot" convention), so that
# runAsUser/fsGroup in the manifests and the owner of the hostPath state directory agree.
# The default config, at the path the Kubernetes manifests mount their ConfigMap on,
# listens on all interfaces: inside a container 127.0.0.1 is unreachable from outside.
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
    && gpuledger check-config /etc/gpuledger/config/agent.yaml > /dev/null

USER 65532:65532
WORKDIR /var/lib/gpuledger
EXPOSE 9835

# /healthz answers 200 while the process serves (never token-protected). Kubernetes
# ignores HEALTHCHECK and uses the manifests' probes; this one is for docker/podman. It
# follows GPULEDGER_LISTEN__PORT; HEALTHCHECK_URL replaces the URL (e.g. https:// with TLS).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('HEALTHCHECK_URL') or 'http://127.0.0.1:%s/healthz' % os.environ.get('GPULEDGER_LISTEN__PORT', '9835'), timeout=4)"]

ENTRYPOINT ["gpuledger"]
CMD ["agent", "--config", "/etc/gpuledger/config/agent.yaml"]
