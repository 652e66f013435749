#!/usr/bin/env bash
# Install mosaicist with its test extras and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
# PyTorch for the GPU path's tests, on the CPU: this exact version is the CPU
# build kept on the machine (a bare "torch" would pull a multi-GB CUDA build).
python3 -m pip install -q torch==2.13.0
python3 -m ruff check src tests benchmarks
python3 -m pytest -q
