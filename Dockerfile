# canopy-operator image: `docker build -t canopy-operator:0.1.0 .`
# Also the default image of the evaluation Jobs (the operator sets CANOPY_OPERATOR_IMAGE to it).

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

# --- final: runtime only (git for GitOps delivery), non-root, no pip, no build tools ------------------
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
 && groupadd --gid 65532 canopy \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin canopy \
 && mkdir -p /var/cache/canopy-operator \
 && chown 65532:65532 /var/cache/canopy-operator

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /tmp
USER 65532:65532
EXPOSE 8080 9090
# Kubernetes probes Kopf's /healthz (manifests/base/deployment.yaml); no Docker health check.
HEALTHCHECK NONE
ENTRYPOINT ["canopy-operator"]
CMD ["run"]
