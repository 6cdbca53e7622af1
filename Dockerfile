# canopy-operator image: `docker build -t canopy-operator:0.1.0 .` (the last stage, the default target).
# Also the default image of the evaluation Jobs (the operator sets CANOPY_OPERATOR_IMAGE to it).
# The dev-only Canopy backend simulator (devkit/) is a separate target that the operator's stages never copy:
# `docker build --target simulator -t canopy-simulator:0.1.0 .`

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: wheels for the project and its pinned dependencies, installed into a venv ---------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels canopy-operator \
 && /opt/venv/bin/pip uninstall -y setuptools pip \
 && rm -f /opt/venv/bin/activate* /opt/venv/bin/Activate.ps1

# --- simulator-builder: the devkit's wheel on the operator's wheels, in a venv of its own --------------
FROM builder AS simulator-builder
COPY devkit ./devkit
# The devkit wheel is installed by path and canopy-operator from /wheels only, so no index can substitute either.
RUN pip wheel --no-deps --wheel-dir /devkit-wheel ./devkit \
 && python -m venv /opt/simulator \
 && /opt/simulator/bin/pip install --no-index --find-links /wheels canopy-operator \
 && /opt/simulator/bin/pip install /devkit-wheel/canopy_devkit-*.whl \
 && /opt/simulator/bin/pip uninstall -y setuptools pip \
 && rm -f /opt/simulator/bin/activate* /opt/simulator/bin/Activate.ps1

# --- simulator: the simulated Canopy backend for kind e2e and demos (dev/test only, never the product) ---
FROM ${PYTHON_IMAGE} AS simulator
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="canopy-simulator" \
      org.opencontainers.image.description="Simulated Canopy backend (Generation 1) from canopy-devkit, for tests and demos only" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
RUN python -m pip uninstall -y pip setuptools wheel \
 && rm -rf /root/.cache \
 && useradd --uid 65532 --gid 0 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin canopy
COPY --from=simulator-builder /opt/simulator /opt/simulator
ENV PATH=/opt/simulator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    CANOPY_CONFIG_PATH=/canopy/canopy-config.yaml
WORKDIR /tmp
USER 65532:0
EXPOSE 8000
# Kubernetes probes GET /feature-flags; no Docker health check.
HEALTHCHECK NONE
ENTRYPOINT ["canopy-devkit", "simulate"]
CMD ["--host", "0.0.0.0", "--port", "8000"]

# --- final: runtime only (git for GitOps delivery), non-root, no pip, no build tools ------------------
# Runs as any UID: USER is numeric and non-root (so Kubernetes can check runAsNonRoot) with group 0, and what
# the operator writes belongs to group 0 with the owner's rights (OpenShift's restricted-v2 runs the pod as an
# arbitrary UID of the namespace's range, always in group 0). The manifests pin no UID, GID or fsGroup.
FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="canopy-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs A/B prompt experiments on the Canopy LLM backend, decides with an always-valid sequential test and promotes the winner" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/* \
 && python -m pip uninstall -y pip setuptools wheel \
 && rm -rf /root/.cache \
 && useradd --uid 65532 --gid 0 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin canopy \
 && mkdir -p /var/cache/canopy-operator \
 && chown 65532:0 /var/cache/canopy-operator \
 && chmod 2775 /var/cache/canopy-operator

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /tmp
USER 65532:0
EXPOSE 8080 9090
# Kubernetes probes Kopf's /healthz (manifests/base/deployment.yaml); no Docker health check.
HEALTHCHECK NONE
ENTRYPOINT ["canopy-operator"]
CMD ["run"]
