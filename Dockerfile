# syntax=docker/dockerfile:1
#
# The deepwatch image: one image for every part (crawler, stream worker, Ray head and workers).
#
#   docker build -t deepwatch:0.1.0-cpu .                                   # CPU (default)
#   docker build --build-arg VARIANT=cuda -t deepwatch:0.1.0-cuda .         # CUDA, for the GPU worker group
#
# The entry point is the `deepwatch` CLI: `docker run IMAGE crawl`, `... worker`, `... serve`.
# KubeRay replaces the command of Ray pods with its own `ray start`, which finds `ray` on PATH.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# cpu or cuda: which torch build goes in. Both variants share one runtime base because the CUDA
# wheels of torch carry their own CUDA libraries; only the NVIDIA driver comes from the node.
ARG VARIANT=cpu

# --- build: compilers live only here -------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG VARIANT
# The CUDA index matching torch 2.13's default CUDA build; override for older drivers.
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# pdqhash is an sdist and needs a C++ compiler; Debian's package versions move with point
# releases, so pinning them would break the build rather than make it reproducible.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the index of the chosen variant: pyproject's `torch==2.13.0` is then already
# satisfied (the local label +cpu/+cu128 does not count against ==) and pip keeps it.
RUN case "$VARIANT" in \
      cpu) index="$TORCH_CPU_INDEX" ;; \
      cuda) index="$TORCH_CUDA_INDEX" ;; \
      *) echo "VARIANT must be cpu or cuda, not $VARIANT" >&2; exit 1 ;; \
    esac \
    && pip install --no-cache-dir --index-url "$index" torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY deepwatch ./deepwatch
COPY ingest ./ingest
COPY stream ./stream
COPY serve ./serve
COPY storage ./storage
COPY bench ./bench
# facenet-pytorch only for the face-landmark weights it ships (onet.pt); its pins (an old torch and numpy)
# would replace ours, and its code is never imported, so it goes in without its dependencies
RUN pip install --no-cache-dir . \
    && pip install --no-cache-dir --no-deps facenet-pytorch==2.6.0 \
    && python -c "import deepwatch, ingest, stream, serve.app, storage; from deepwatch.media.landmarks import weight_file; weight_file()"

# --- runtime bases, one per variant ----------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-cpu

FROM ${PYTHON_IMAGE} AS runtime-cuda
# Read by the NVIDIA container toolkit on GPU nodes.
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility

# --- final: the venv and a non-root user, no compilers ----------------------------------------
# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS final
ARG VARIANT
LABEL org.opencontainers.image.title="deepwatch" \
      org.opencontainers.image.description="deepwatch: watch social media for deepfakes (${VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
# KubeRay starts Ray through `bash -l`, whose /etc/profile resets PATH; the profile.d line puts the venv
# back, and its $PATH must expand at login, not now (hence the single quotes).
# hadolint ignore=SC2016
RUN groupadd --gid 10001 deepwatch \
    && useradd --uid 10001 --gid 10001 --create-home --shell /bin/bash deepwatch \
    && mkdir -p /var/lib/deepwatch \
    && chown 10001:10001 /var/lib/deepwatch \
    && echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/deepwatch-venv.sh
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    DEEPWATCH_DATA_DIR=/var/lib/deepwatch
WORKDIR /var/lib/deepwatch
USER 10001:10001
ENTRYPOINT ["deepwatch"]
CMD ["--help"]
