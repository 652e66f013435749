"""The process's shared pools and BLAS thread limits."""

import os

import pytest
from threadpoolctl import threadpool_info

from mosaicist._runtime import one_blas_thread, thread_pool, worker_count


def blas_threads():
    return [library["num_threads"] for library in threadpool_info()
            if library["user_api"] == "blas"]


def test_one_blas_thread_limits_and_restores():
    before = blas_threads()
    if not before:
        pytest.skip("no BLAS library that threadpoolctl can see")
    with one_blas_thread():
        assert set(blas_threads()) == {1}
        with one_blas_thread():  # nested: still one, and the outer limit survives
            assert set(blas_threads()) == {1}
        assert set(blas_threads()) == {1}
    assert blas_threads() == before


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
