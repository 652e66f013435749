"""The process's shared pools and BLAS thread limits."""

import os
import subprocess
import sys

import pytest

from mosaicist._runtime import thread_pool, worker_count


def test_one_blas_thread_limits_and_restores():
    # In a fresh interpreter: the limit covers the BLAS libraries loaded at its first
    # use, and this test process may have loaded others since (FAISS's, PyTorch's).
    script = """
from threadpoolctl import threadpool_info
import numpy, scipy.linalg
from mosaicist._runtime import one_blas_thread

def threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

before = threads()
if not before:
    print("none")
    raise SystemExit
with one_blas_thread():
    assert set(threads()) == {1}, threads()
    with one_blas_thread():  # nested: still one, and the outer limit survives
        assert set(threads()) == {1}, threads()
    assert set(threads()) == {1}, threads()
assert threads() == before, (threads(), before)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="2"), timeout=120)
    assert done.returncode == 0, done.stderr
    if done.stdout.strip() == "none":
        pytest.skip("no BLAS library that threadpoolctl can see")
    assert done.stdout.strip() == "ok"


def test_thread_pools_are_kept_per_size_and_process():
    assert thread_pool(2) is thread_pool(2)
    assert thread_pool(2) is not thread_pool(3)
    assert sorted(thread_pool(2).map(lambda value: value * value, range(5))) == [0, 1, 4, 9, 16]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_pool():
    pool = thread_pool(2)
    list(pool.map(abs, range(4)))  # the parent's threads exist
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            mine = thread_pool(2)
            result = sum(mine.map(abs, range(-3, 1)))
            os.write(write, b"ok" if mine is not pool and result == 6 else b"no")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    assert os.read(read, 2) == b"ok" and status == 0
    os.close(read)


def test_worker_count_follows_the_environment(monkeypatch):
    monkeypatch.setenv("MOSAICIST_THREADS", "3")
    assert worker_count() == 3 and worker_count(most=2) == 2
    monkeypatch.setenv("MOSAICIST_THREADS", "0")
    assert worker_count() == 1
