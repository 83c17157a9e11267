# syntax=docker/dockerfile:1
# Two images from one file:
#   web     the FastAPI app (and migrations); CPU-only torch, because the app imports the worker's presets.
#   worker  the GPU generation worker on a CUDA build of torch.
# `docker compose build` builds both (see docker-compose.yml).

FROM python:3.11-slim AS web
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# The CPU wheel first: an unpinned torch from PyPI would pull a multi-GB CUDA build into the web image.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY . .
# Editable install: templates, static files and migrations are read from /app.
RUN pip install -e . && useradd --create-home --uid 1000 blindpair && mkdir -p /data && chown blindpair /data
USER blindpair
ENV BLINDPAIR_DATA_DIR=/data BLINDPAIR_HOST=0.0.0.0
EXPOSE 8000
CMD ["sh", "-c", "blindpair db upgrade && exec blindpair serve --host 0.0.0.0 --port 8000"]

# PyTorch's CUDA runtime image already has torch (>= 2.4 satisfies pyproject.toml), so pip keeps it.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime AS worker
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HOME=/models
WORKDIR /app
# gifsicle: worker.gif's lossy LZW, which keeps a 512x512 clip under the pair page's size budget.
RUN apt-get update && apt-get install -y --no-install-recommends gifsicle && rm -rf /var/lib/apt/lists/*
COPY . .
RUN pip install -e . && useradd --create-home --uid 1000 blindpair && mkdir -p /data /models \
    && chown blindpair /data /models
USER blindpair
ENV BLINDPAIR_DATA_DIR=/data
CMD ["blindpair", "worker", "--device", "cuda", "--name", "blindpair"]
