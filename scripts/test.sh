#!/usr/bin/env bash
# Install mosaicist with its test extras and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's Chromium for the viewer's browser test (Playwright, from the test
# extra, drives it; no `playwright install`). A warning, not a failure, where
# apt is unavailable: the browser test then skips.
if [[ ! -x /usr/bin/chromium ]]; then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then sudo=(sudo -n); fi
    if command -v apt-get >/dev/null && { [[ ${#sudo[@]} -eq 0 ]] || command -v sudo >/dev/null; }
    then
        { "${sudo[@]}" apt-get update -qq \
            && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
            || echo "test.sh: warning: could not install chromium with apt-get" >&2
    else
        echo "test.sh: warning: no apt-get (or sudo) to install chromium" >&2
    fi
fi
python3 -m pip install -q -e ".[test]"
# PyTorch for the GPU path's tests, on the CPU. A torch already installed is kept (on a
# GPU machine, its CUDA build). PyPI's Linux wheel is the multi-GB CUDA build, so the CPU
# build comes from PyTorch's own index, unless pip finds a CPU build of 2.13.0 by itself
# (the project's machines keep 2.13.0+cpu where pip looks for wheels; that index is not
# reachable from them).
if ! python3 -c 'import torch' 2>/dev/null; then
    torch_version=$(python3 -m pip install -q --dry-run --ignore-installed --report - \
        torch==2.13.0 2>/dev/null | python3 -c 'import json, sys
print(next((item["metadata"]["version"] for item in json.load(sys.stdin)["install"]
            if item["metadata"]["name"] == "torch"), ""))' 2>/dev/null) || torch_version=""
    if [[ $torch_version == *+cpu ]]; then
        python3 -m pip install -q torch==2.13.0
    else
        # Where that index cannot be reached either, the pinned version as before.
        python3 -m pip install -q "torch>=2.1" --index-url https://download.pytorch.org/whl/cpu \
            || python3 -m pip install -q torch==2.13.0
    fi
fi
python3 -m ruff check src tests benchmarks
# Type check (configured in pyproject.toml: src/mosaicist).
python3 -m mypy
# With Chromium present, the browser test must run (and fails rather than skips).
if [[ -x /usr/bin/chromium ]]; then export MOSAICIST_REQUIRE_BROWSER=1; fi
# Two test processes, each taking whole files (a file's module fixtures are made once):
# 4 min 52 s against 8 min 35 s in one process on two cores (5 Dec 2026).
python3 -m pytest -q -n 2 --dist loadfile
