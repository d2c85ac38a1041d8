# onnxopt on CPU (README, Docker).
#   docker build -t onnxopt .
#   docker run --rm -v "$PWD/runs:/runs" onnxopt search /configs/search-digits-mlp-quant-tpe.toml --run-dir /runs/demo
#
# BASE_IMAGE: where Python comes from, and nothing else. The default is what users get; any
# Debian image with Python 3.11 and pip first on PATH works the same (.ci/docker.sh builds
# one with debootstrap where no image registry is reachable).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# torch's CPU wheel comes from PyTorch's CPU index: a plain 'pip install torch' would pull
# gigabytes of CUDA packages. Same pin as pyproject.toml. Wheels put in docker/wheels/ before
# the build (empty in the repository) are found there first: .ci/docker.sh puts the host's
# CPU wheel there and passes TORCH_INDEX_URL=https://pypi.org/simple for torch's own deps.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
COPY docker/wheels/ /tmp/wheels/
RUN pip install --index-url "$TORCH_INDEX_URL" --find-links /tmp/wheels torch==2.13.0 \
    && rm -rf /tmp/wheels

WORKDIR /opt/onnxopt
COPY pyproject.toml README.md Makefile ./
COPY onnxopt ./onnxopt
# the same install step as the README's commands (make demo / make test both run it)
RUN make install

# the example configs, where docker-compose.yml mounts ./configs
COPY configs /configs
RUN useradd --create-home --uid 10001 onnxopt && mkdir -p /runs && chown onnxopt /runs
USER onnxopt
VOLUME ["/runs"]
WORKDIR /runs
ENTRYPOINT ["onnxopt"]
CMD ["--help"]
