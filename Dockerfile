# onnxopt on CPU. Build:  docker build -t onnxopt .
# Run:    docker run --rm -v "$PWD/runs:/runs" onnxopt evaluate /runs/model.onnx --data digits
FROM python:3.11-slim

# torch's CPU wheel comes from PyTorch's CPU index: a plain 'pip install torch' would pull
# gigabytes of CUDA packages. Same pin as pyproject.toml.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0

WORKDIR /opt/onnxopt
COPY pyproject.toml README.md Makefile ./
COPY onnxopt ./onnxopt
COPY configs ./configs
# the same install step as the README's commands (make demo / make test both run it)
RUN make install

RUN useradd --create-home --uid 10001 onnxopt && mkdir -p /runs && chown onnxopt /runs
USER onnxopt
VOLUME ["/runs"]
WORKDIR /runs
ENTRYPOINT ["onnxopt"]
CMD ["--help"]
