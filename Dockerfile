# mia-robustness as a SageMaker-contract image: `docker run IMAGE serve` (HTTP on 8080: /ping,
# /invocations) and `docker run IMAGE train` (training job reading /opt/ml).
#
# CPU (default):  docker build -t mia-robustness .
# GPU (CUDA):     docker build -t mia-robustness:cuda \
#                   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   or reuse a CUDA PyTorch base that already has torch 2.13.0 in its system Python:
#                 docker build --build-arg BASE_IMAGE=<pytorch 2.13.0 cuda runtime image> \
#                   --build-arg VENV_OPTIONS=--system-site-packages .
# Offline torch:  put torch-2.13.0*.whl in a folder of the build context and pass
#                 --build-arg TORCH_WHEEL_DIR=that/folder (.docker-test/wheels is let through .dockerignore).
#
# No `# syntax=` line on purpose: it makes BuildKit fetch a frontend image at build time, which fails
# where Docker Hub is unreachable; this file needs nothing beyond the classic Dockerfile syntax.

ARG BASE_IMAGE=python:3.11-slim

# ---- stage 1: the virtual environment with torch and the pinned dependencies ----------------------------
# A separate stage so a torch wheel copied in from the build context never ends up in a layer of the
# final image (a later `rm` would not shrink the layer that COPY made).
FROM ${BASE_IMAGE} AS deps

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Folder in the build context holding a torch wheel; the default "." holds none, so torch comes from
# TORCH_INDEX_URL.
ARG TORCH_WHEEL_DIR=.
# Extra options for `python3 -m venv`, e.g. --system-site-packages to reuse a base image's torch.
ARG VENV_OPTIONS=
# How pip reaches a package index from inside the build, when the default (PyPI) needs help: a mirror,
# a CA bundle that trusts a TLS-intercepting proxy. Unset unless passed; they live in this stage only.
# Never pass credentials this way (build args show in `docker history` of this stage); the standard
# HTTP_PROXY / HTTPS_PROXY / NO_PROXY build args need no declaration and are not recorded.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_CERT

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:${PATH}"

SHELL ["/bin/sh", "-eu", "-c"]

# A venv works the same on python:*-slim and on a Debian base that has only python3 + python3-venv
# (where pip may not install into the system Python, PEP 668).
# hadolint ignore=SC2086
RUN python3 -m venv ${VENV_OPTIONS} /opt/venv

# The glob lets this COPY succeed whether or not TORCH_WHEEL_DIR holds a wheel (requirements.txt always
# matches).
COPY requirements.txt ${TORCH_WHEEL_DIR}/torch-*.whl /tmp/build/

# torch in its own layer: by far the largest dependency and the one that changes least. A wheel from the
# build context is picked by pip (--no-index: only a wheel that fits this Python and TORCH_VERSION), then
# the second install fetches only torch's own dependencies.
# hadolint ignore=SC2012
RUN if python -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '${TORCH_VERSION}')" 2>/dev/null; then \
        echo "torch ${TORCH_VERSION} is provided by the base image"; \
    elif ls /tmp/build/torch-*.whl >/dev/null 2>&1; then \
        echo "installing torch ${TORCH_VERSION} from the wheel in the build context"; \
        pip install --no-cache-dir --no-deps --no-index --find-links /tmp/build "torch==${TORCH_VERSION}"; \
        pip install --no-cache-dir "torch==${TORCH_VERSION}"; \
    else \
        echo "installing torch ${TORCH_VERSION} from ${TORCH_INDEX_URL}"; \
        pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"; \
    fi; \
    python -c "import torch; print('torch', torch.__version__)"

# The pinned runtime dependencies (torch==2.13.0 is already satisfied, so pip leaves it alone).
RUN pip install --no-cache-dir -r /tmp/build/requirements.txt

# ---- stage 2: the image SageMaker runs -------------------------------------------------------------------
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="mia-robustness" \
      org.opencontainers.image.description="Membership-inference robustness audits for scikit-learn classifiers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH="/opt/program:/opt/venv/bin:${PATH}"

SHELL ["/bin/sh", "-eu", "-c"]

# nginx: the front server `serve` starts on port 8080 (it buffers whole requests, so slow clients never
# hold a gunicorn thread; see src/mia_robustness/serving/front.py). serve writes its own configuration
# into a private temporary folder and runs nginx from it (as the container's user), so Debian's
# configuration, log and cache folders go unused.
# libseccomp2: the audit sandbox's system-call filter. libgomp1: LightGBM's OpenMP runtime (its wheel links
# the system's libgomp.so.1; XGBoost's and torch's wheels bring their own, CatBoost needs none).
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx libseccomp2 libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && nginx -v

COPY --from=deps /opt/venv /opt/venv

# The program. README* is a glob so the build works before README.md exists (pyproject names it).
WORKDIR /opt/program
COPY pyproject.toml requirements.txt README* ./
COPY src/ src/
COPY sample_input/ sample_input/
COPY serve train ./

# Non-editable install of the package itself (its dependencies are already in the venv); the in-tree
# build leftovers are removed so /opt/program holds only the sources. `mia` is an unprivileged user for
# those who want one (see below).
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build src/*.egg-info \
    && chmod 0755 serve train \
    && python -c "import mia_robustness, xgboost, lightgbm, catboost" \
    && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mia

# Runs as root on purpose: SageMaker starts containers as root and mounts /opt/ml root-owned, and
# `train` must write /opt/ml/model and /opt/ml/output. For local serving without root use
# `docker run --user mia IMAGE serve`.
EXPOSE 8080
CMD ["serve"]
