"""Modules that only some work needs are not imported by the checks and names that need none.

Each check runs a fresh interpreter and reads ``sys.modules``: no timing is asserted.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest


def _loaded_after(code: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after running ``code``."""
    run = subprocess.run([sys.executable, "-c", code + "\nimport sys\n"
                          "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split())


def test_checking_numbers_and_aspects_imports_no_numpy():
    loaded = _loaded_after("from mosaicist.errors import check_range\n"
                           "from mosaicist.aspect import aspect_pair\n"
                           "assert check_range('cell_px', 8, 1, 16, whole=True) == 8\n"
                           "assert aspect_pair((6, 4)) == (3, 2)")
    assert "numpy" not in loaded


def test_numpy_scalars_are_still_numbers_and_sides():
    from mosaicist.aspect import aspect_pair
    from mosaicist.errors import OptionError, as_number

    assert as_number("cell_px", np.int64(8), whole=True) == 8
    assert as_number("tint", np.float32(0.5)) == 0.5
    with pytest.raises(OptionError, match="must be a whole number"):
        as_number("cell_px", np.bool_(True), whole=True)
    assert aspect_pair((np.int64(6), np.int32(4))) == (3, 2)


def test_naming_the_crop_method_imports_no_opencv():
    # Every index and mosaic with the subject crop imported OpenCV (a tenth of a second)
    # only to name its index folder.
    run = subprocess.run([sys.executable, "-c", "import sys\nfrom mosaicist.crop import "
                          "crop_method\nprint(crop_method('subject'), 'cv2' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    method, imported = run.stdout.split()
    assert imported == "False"
    # The same answer as loading the detector gives.
    from mosaicist import crop

    assert method == ("subject" if crop._load_detector() is not None else "detail")


def test_without_opencv_the_subject_crop_is_detail(monkeypatch):
    from mosaicist import crop

    monkeypatch.delitem(sys.modules, "cv2", raising=False)
    monkeypatch.setattr(crop, "_detector", {})
    monkeypatch.setattr(crop.importlib.util, "find_spec", lambda name: None)
    assert crop.crop_method("subject") == "detail"


def test_the_viewer_page_needs_no_web_server():
    # Writing a viewer (every Deep Zoom output) and finding one imported uvicorn and
    # Starlette with the package's server.
    loaded = _loaded_after("import mosaicist.viewer as viewer\nviewer.find_viewer")
    assert not loaded & {"uvicorn", "starlette"}
    from mosaicist.viewer import make_server, serve_viewer

    assert callable(make_server) and callable(serve_viewer)


def test_viewing_a_missing_mosaic_is_refused_before_the_web_server_loads(tmp_path):
    # `mosaicist view missing.dzi` imported uvicorn and Starlette (about 500 modules) first.
    code = ("import sys\nfrom mosaicist.cli import main\n"
            f"try:\n    main(['view', {str(tmp_path / 'missing.dzi')!r}])\n"
            "except SystemExit as stop:\n    assert stop.code == 1, stop.code\n")
    run = subprocess.run([sys.executable, "-c", code + "print(' '.join(sorted("
                          "{name.split('.')[0] for name in sys.modules})))"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "missing.dzi: no such file or folder" in run.stderr
    assert "uvicorn" not in run.stdout.split() and "starlette" not in run.stdout.split()
