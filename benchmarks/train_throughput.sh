#!/usr/bin/env bash
# GPU training throughput in one command on the lent GPU machine (Python 3.12 and torch, no deepspeed,
# no network):
#   bash benchmarks/train_throughput.sh [ARGS for train_throughput.py]
# It installs the wheels carried in build/train-wheels (DeepSpeed, transformers and their pure-Python
# dependencies; fetch them here first with `bash benchmarks/train_throughput.sh --fetch`, and name
# build/train-wheels in the run's `carry`), then runs benchmarks/train_throughput.py on every GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=build/train-wheels
PYTHON=${PYTHON:-python3}

if [[ "${1:-}" == "--fetch" ]]; then
    # On a machine with PyPI: wheels for CPython 3.12 on x86-64 Linux, without torch and its CUDA
    # libraries (the GPU image has them). DeepSpeed ships only a source archive: build its wheel here
    # (pure Python; ops compile on first use).
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    "$PYTHON" -m pip wheel --no-deps --no-build-isolation -w "$WHEELS" "deepspeed==0.19.8"
    # The dependency closure of deepspeed, transformers and accelerate in this project's .venv, less
    # torch and what torch itself requires.
    "$PYTHON" -m pip download -d "$WHEELS" --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        --implementation cp --no-deps \
        "accelerate==1.15.0" "annotated-doc==0.0.7" "annotated-types==0.8.0" "anyio==4.16.0" \
        "click==8.5.1" "colorama==0.4.6" "einops==0.8.2" "h11==0.16.0" "hf-xet==1.8.0" \
        "hjson==3.1.0" "httpcore2==2.16.2" "httpx2==2.16.2" "huggingface-hub==2.4.0" "idna==3.20" \
        "markdown-it-py==4.3.0" "mdurl==0.1.2" "msgpack==1.2.4" "ninja==1.13.2" "numpy==2.4.6" \
        "packaging==26.4" "psutil==7.2.2" "py-cpuinfo==9.0.0" "pydantic==2.14.4" \
        "pydantic-core==2.50.5" "pygments==2.21.0" "pyyaml==6.0.4" "regex==2026.11.19" \
        "rich==15.0.0" "safetensors==0.8.0" "shellingham==1.5.4" "tokenizers==0.23.3" "tomli==2.5.0" \
        "tqdm==4.70.1" "transformers==5.24.0" "truststore==0.10.5" "typer==0.29.2" \
        "typing-inspection==0.4.5"
    du -sh "$WHEELS"
    exit 0
fi

if ! "$PYTHON" -c "import deepspeed, transformers" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" deepspeed transformers accelerate pyyaml
fi
GPUS=$("$PYTHON" -c "import torch; print(max(1, torch.cuda.device_count()))")
exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$GPUS" benchmarks/train_throughput.py "$@"
