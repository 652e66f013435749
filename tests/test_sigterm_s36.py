"""Session 36: SIGTERM while the command line loads; the studio's history on a full disk.

The moments are made deterministic: the signal is sent from an import hook in
the middle of the command line's imports, and the full disk is SQLite's error
raised by a wrapped connection (never a sleep, never a real full disk).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import types

import anyio
import httpx
import pytest

from mosaicist.studio import Studio, _history, make_studio_app

# --- SIGTERM amid the command line's imports ----------------------------------------------

# `mosaicist --version` as the console script runs it (mosaicist.__main__.run at the top
# level), SIGTERM sent to itself while mosaicist.cli is being imported. argv[1]: "default"
# or "ignored", SIGTERM's action when the command starts.
TERMINATED_WHILE_LOADING = textwrap.dedent("""
    import os, signal, sys

    if sys.argv[1] == "ignored":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


    class SignalWhileLoading:
        def find_spec(self, name, path=None, target=None):
            if name == "mosaicist.cli":
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # where a Python handler runs
                    pass
            return None


    from mosaicist.__main__ import run

    sys.meta_path.insert(0, SignalWhileLoading())
    sys.argv = ["mosaicist", "--version"]
    run()
""")


def _loading(action: str) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("COV_")}
    return subprocess.run([sys.executable, "-c", TERMINATED_WHILE_LOADING, action],
                          capture_output=True, text=True, timeout=60, env=environment)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_while_the_command_line_loads_exits_143_silently():
    # The process was ended by the signal (status -15), not with SIGTERM's status as
    # the command line promises (143, as any later SIGTERM; no message).
    done = _loading("default")
    assert (done.returncode, done.stdout, done.stderr) == (128 + signal.SIGTERM, "", "")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_an_ignored_sigterm_stays_ignored_while_the_command_line_loads():
    done = _loading("ignored")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("mosaicist") and done.stderr == ""


def test_sigterm_keeps_its_action_when_the_command_runs_inside_another_program(monkeypatch):
    # A program (here a test) that runs the command in its own process is not ended by
    # a SIGTERM during the imports: the handler is set only where the command owns it.
    from mosaicist.__main__ import run as run_command

    seen = []

    class Loading(types.ModuleType):
        def __getattr__(self, name):
            seen.append(signal.getsignal(signal.SIGTERM))
            raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setitem(sys.modules, "mosaicist.cli", Loading("mosaicist.cli"))
    with pytest.raises(SystemExit):
        run_command()
    assert seen == [before] and signal.getsignal(signal.SIGTERM) is before


# --- the studio's history on a full disk --------------------------------------------------


class _FullDisk:
    """A history connection whose statements starting with ``failing`` fail as SQLite
    fails on a full disk (``code``); ``rolled_back``: SQLite rolled the transaction back
    itself first, as it may on ``SQLITE_FULL``."""

    def __init__(self, connection, failing: str, code: int, rolled_back: bool) -> None:
        self.connection, self.failing = connection, failing
        self.code, self.rolled_back = code, rolled_back

    def execute(self, sql: str, *args: object):
        if sql.startswith(self.failing):
            if self.rolled_back:
                self.connection.execute("ROLLBACK")
            error = sqlite3.OperationalError(
                "database or disk is full" if self.code == sqlite3.SQLITE_FULL
                else "disk I/O error")
            error.sqlite_errorcode = self.code
            raise error
        return self.connection.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.connection, name)


@pytest.fixture
def studio(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    made = Studio(cache_dir=tmp_path / "cache", roots=[home], home=home)
    yield made
    made.close()


async def _delete(studio: Studio, run_id: str) -> httpx.Response:
    """``DELETE /api/runs/<run_id>`` answered by the studio's app, in this process."""
    transport = httpx.ASGITransport(app=make_studio_app(studio, host="127.0.0.1", port=8000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        return await client.delete(f"/api/runs/{run_id}",
                                   headers={"X-Mosaicist-Token": studio.token})


@pytest.mark.parametrize(("failing", "code", "rolled_back"), [
    ("DELETE", sqlite3.SQLITE_FULL, True), ("COMMIT", sqlite3.SQLITE_FULL, False),
    ("COMMIT", sqlite3.SQLITE_IOERR_SHMSIZE, False), ("SELECT", sqlite3.SQLITE_IOERR_SHMSIZE,
                                                      False),
], ids=["statement-full-rolled-back", "commit-full", "commit-shm", "read-shm"])
def test_a_full_disk_under_the_studio_history_is_answered_507(studio, monkeypatch, failing,
                                                             code, rolled_back):
    # Answered 503 "the studio's history cannot be used: disk I/O error" (or, where SQLite
    # had rolled back itself, "cannot rollback - no transaction is active"), where the
    # studio answers any other full disk 507.
    run = studio.history.create(target_name="t.png", tiles="photos", settings={},
                                command="mosaicist make t.png")
    studio.history.update(run.id, status="done")
    connect = sqlite3.connect
    monkeypatch.setattr(_history.sqlite3, "connect", lambda *args, **keywords: _FullDisk(
        connect(*args, **keywords), failing, code, rolled_back))
    refused = anyio.run(_delete, studio, run.id)
    assert refused.status_code == 507, refused.text
    assert refused.json()["error"].endswith("the disk is full: the studio's history cannot grow")
    monkeypatch.undo()
    assert studio.history.get(run.id) is not None and studio.history.folder(run.id).is_dir()
