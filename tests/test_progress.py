"""Progress bars: drawn on a terminal, reported to a listener, and free when neither."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from mosaicist.progress import progress_bar, progress_listener


def test_a_quiet_bar_without_a_listener_does_not_import_tqdm():
    # tqdm's import is 0.013 s of every quiet command's start.
    code = textwrap.dedent("""
        import sys
        from mosaicist.progress import progress_bar
        with progress_bar(5, "work", enabled=False, initial=1) as bar:
            bar.update(2)
            bar.update(None)
            bar.set_postfix(k=1)
            bar.total = 9
        bar.close()
        assert (bar.n, bar.total) == (4, 9), (bar.n, bar.total)
        assert "tqdm" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_listener_hears_quiet_bars_too():
    heard = []
    with progress_listener(lambda *report: heard.append(report)):
        with progress_bar(3, "decoding", enabled=False) as bar:
            bar.update(2)
    assert heard == [("decoding", 0.0, 3), ("decoding", 2.0, 3)]


def test_a_drawn_bar_writes_to_stderr(capsys):
    with progress_bar(2, "drawing", enabled=True) as bar:
        bar.update(2)
    assert "drawing" in capsys.readouterr().err
