# syntax=docker/dockerfile:1
# Two images from one file:
#   web     the FastAPI app (and migrations); CPU-only torch, because the app imports the worker's presets.
#   worker  the GPU generation worker on a CUDA build of torch.
# `docker compose build` builds both (see docker-compose.yml).

FROM python:3.11-slim AS web
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# Exactly the locked versions, hash-checked (requirements/*.lock, `make lock`; README "Upgrading dependencies").
# The CPU torch wheel first and without its dependencies: an unpinned torch from PyPI would pull a multi-GB CUDA
# build into the web image. Then the rest, torch's own dependencies included.
# g++: brisque's libsvm-official (the no-reference image-quality metric) ships only as source.
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
COPY requirements/torch-cpu.lock requirements/runtime.lock requirements/
RUN pip install --require-hashes --no-deps --index-url https://download.pytorch.org/whl/cpu \
        -r requirements/torch-cpu.lock \
    && pip install --require-hashes -r requirements/runtime.lock
COPY . .
# Editable install: templates, static files and migrations are read from /app. The lock has every dependency and
# the build backend, so nothing is resolved or fetched here.
RUN pip install --no-deps --no-build-isolation -e . \
    && useradd --create-home --uid 1000 blindpair && mkdir -p /data && chown blindpair /data
USER blindpair
ENV BLINDPAIR_DATA_DIR=/data BLINDPAIR_HOST=0.0.0.0
EXPOSE 8000
CMD ["sh", "-c", "blindpair db upgrade && exec blindpair serve --host 0.0.0.0 --port 8000"]

# PyTorch's CUDA runtime image already has torch (>= 2.4 satisfies pyproject.toml), triton and the CUDA libraries.
# requirements/worker.lock is resolved against that torch (the version in this tag; a new tag needs `make lock`)
# and leaves those out, so pip keeps them.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime AS worker
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HOME=/models
WORKDIR /app
# gifsicle: worker.gif's lossy LZW, which keeps a 512x512 clip under the pair page's size budget. g++: brisque's
# libsvm-official (the no-reference image-quality metric) ships only as source.
RUN apt-get update && apt-get install -y --no-install-recommends gifsicle g++ && rm -rf /var/lib/apt/lists/*
COPY requirements/worker.lock requirements/
RUN pip install --require-hashes -r requirements/worker.lock
COPY . .
RUN pip install --no-deps --no-build-isolation -e . && useradd --create-home --uid 1000 blindpair \
    && mkdir -p /data /models \
    && chown blindpair /data /models
USER blindpair
ENV BLINDPAIR_DATA_DIR=/data
CMD ["blindpair", "worker", "--device", "cuda", "--name", "blindpair"]
