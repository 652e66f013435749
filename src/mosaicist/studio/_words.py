"""The studio's refusals in the page's words, for the web app and its job processes.

The command line names settings by their flags and choices by their values
(``--device cuda``); the page names both by their labels on the form
(“run on”, “NVIDIA graphics card”), and never the programs behind them
(PyTorch). :func:`page_message` says a refusal so; the web app refuses
settings with it, and a job that fails (:mod:`mosaicist.studio._worker`,
a process without the web server's packages) says its failure with it too,
so that the same refusal reads the same wherever it is met.

Whether an NVIDIA graphics card can be used is told cheaply where it can be
(:func:`cuda_unusable`, without importing PyTorch), and a device this
computer cannot use is refused before what it cannot do
(:func:`check_device_runs`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from ..errors import MosaicistError, OptionError, alternatives
from ..match import Matcher
from ..match._approximate import APPROXIMATE_UNCORRECTED
from ..match._gpu import CUDA_UNAVAILABLE, GPU_EXACT_ONLY, GpuMatcher
from ..match._registry import (
    NEEDS_REPETITION_LIMITS,
    NOT_ON_DEVICE,
    WITHOUT_REPETITION_LIMITS,
)
from ..match._registry import check_device_runs as registry_check_device_runs
from ..options import MosaicOptions
from ._form import CHOICE_LABELS, NONE_LABELS, quoted

#: The refusals the page says in its own words, by the command line's template: the page's
#: template, and the setting whose choice ``value`` is. Choices are named by their labels
#: on the page (:data:`~mosaicist.studio._form.CHOICE_LABELS`), never as the values sent
#: ("cuda", "cpu"), nor the programs behind them (PyTorch). In the page's templates
#: ``{device_value}`` is the device chosen, ``{known}`` the devices that would do, ``{cpu}``
#: this computer's processor, ``{exact}`` the exact search, ``{no_limit}`` what the page
#: calls no limit and ``{no_gpu}`` why no NVIDIA graphics card can be used
#: (:func:`cuda_unusable`).
_PAGE_WORDS: dict[str, tuple[str, str]] = {
    CUDA_UNAVAILABLE: ("{no_gpu}; choose {cpu} for {device}", "device"),
    GPU_EXACT_ONLY: ("on an {value} only the closest photo is found, without corrections: set "
                     "{tint} and {contrast} to 0 and {tint_max} off, or choose {cpu} for "
                     "{device}", "device"),
    NOT_ON_DEVICE: ("{value} for {search} does not run on {device_value}; choose {known} for "
                    "{device}", "search"),
    WITHOUT_REPETITION_LIMITS: ("{value} for {search} on {device_value} does not combine with "
                                "limits on repeats: set {max_uses} to {no_limit}, {min_uses} "
                                "to 0 and {min_spacing} to 0", "search"),
    NEEDS_REPETITION_LIMITS: ("{value} for {search} on {device_value} needs a limit on "
                              "repeats: {max_uses}, {min_uses} or {min_spacing}", "search"),
    APPROXIMATE_UNCORRECTED: ("{value} for {search} finds photos without corrections: set "
                              "{tint} and {contrast} to 0 and {tint_max} off, or choose "
                              "{exact} for {search}", "search"),
}
#: Why an NVIDIA graphics card cannot be used, in the page's words: PyTorch missing (or a
#: build without CUDA), PyTorch that cannot be loaded, no usable card.
_NO_GPU_SUPPORT = "this copy of mosaicist was installed without NVIDIA graphics card support"
_GPU_SUPPORT_BROKEN = ("the NVIDIA graphics card support of this copy of mosaicist cannot be "
                       "loaded")
_NO_GPU = "no NVIDIA graphics card can be used on this computer"


def _choice(setting: str, value: object) -> str:
    """Choice ``value`` of ``setting`` as the page labels it, quoted (a plugin's by its name)."""
    return f"\u201c{CHOICE_LABELS.get(setting, {}).get(str(value), str(value))}\u201d"


def page_message(error: MosaicistError) -> str:
    """What ``error`` says, in the page's words.

    Settings are named by their labels (``quoted``); the refusals of a search
    or device (:data:`_PAGE_WORDS`) name the choices by their labels too,
    while the command line keeps its flags and values (``--device cuda``).

    Parameters
    ----------
    error : MosaicistError
        A refusal; an :class:`~mosaicist.errors.OptionError` names its settings.

    Returns
    -------
    str
        The sentence to show.
    """
    if not isinstance(error, OptionError):
        return str(error)
    words = _PAGE_WORDS.get(error.template)
    if words is None:
        return error.message(quoted)
    template, setting = words
    given = error.values
    devices = given.get("devices")
    known = (alternatives(_choice("device", device) for device in devices)
             if isinstance(devices, tuple) else given.get("known", ""))
    values = {"value": _choice(setting, given.get("value")),
              "device_value": _choice("device", given.get("device_value")),
              "known": known, "cpu": _choice("device", "cpu"),
              "exact": _choice("search", "exact"),
              "no_limit": f"\u201c{NONE_LABELS['max_uses']}\u201d"}
    if "{no_gpu}" in template:
        # PyTorch without CUDA finds no GPU either, but no card would help there.
        values["no_gpu"] = cuda_unusable() or _NO_GPU
    return OptionError(template, **values).message(quoted)


def check_runs(matcher: Matcher, options: MosaicOptions) -> None:
    """``matcher.check_runs(options)``, PyTorch's absence said in the page's words.

    Parameters
    ----------
    matcher : Matcher
        The matcher that would run.
    options : MosaicOptions
        The settings it would run with.

    Raises
    ------
    MosaicistError
        Where this computer cannot run ``matcher``.
    """
    try:
        matcher.check_runs(options)
    except OptionError:
        raise
    except MosaicistError:
        if not isinstance(matcher, GpuMatcher):
            raise
        # PyTorch missing or broken: what the command line says is a pip command.
        reason = _NO_GPU_SUPPORT if _torch_spec() is None else _GPU_SUPPORT_BROKEN
        raise MosaicistError(f"{reason}; choose {_choice('device', 'cpu')} for "
                             f"{quoted('device')}") from None


def check_device_runs(options: MosaicOptions) -> None:
    """Refuse ``options.device`` where no matcher runs on it on this computer, in the
    page's words (:func:`mosaicist.match._registry.check_device_runs` with :func:`check_runs`).

    Parameters
    ----------
    options : MosaicOptions
        The settings; a device no matcher declares is left to the matchers' refusal.

    Raises
    ------
    MosaicistError
        The first matcher's refusal where none on the device runs here.
    """
    registry_check_device_runs(options, check_runs)


def _torch_spec() -> Any:
    """PyTorch's import spec, found without importing it; None where it is not installed."""
    try:
        return importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None  # a module "torch" without a spec: not PyTorch


def cuda_unusable() -> str | None:
    """Why no NVIDIA graphics card can be used here, where that is known cheaply; else None.

    PyTorch is not imported for this (about 2 s and hundreds of MB for a
    page that may never use a GPU): it is known absent when it is not
    installed or is a build without CUDA (its ``version.py``, read as text:
    under a millisecond), and known to find no card when it was imported
    already (the check of a run on the card imports it) and says so. A CUDA
    build not yet imported is not known: the card is offered, and a run on
    it refused in one sentence where it cannot be used.

    Returns
    -------
    str or None
        The reason, a sentence without its capital and full stop (as the
        studio's refusals are sent); None when the card may be usable.
    """
    spec = _torch_spec()
    if spec is None:
        return _NO_GPU_SUPPORT
    with contextlib.suppress(IndexError, OSError, UnicodeDecodeError):
        folder = Path(list(spec.submodule_search_locations or [])[0])
        version = (folder / "version.py").read_text("utf-8")
        # ``cuda: Optional[str] = None`` (``'12.1'`` in a CUDA build); ``hip`` for ROCm,
        # whose GPUs PyTorch also calls "cuda".
        builds = [re.search(rf"^{name}\b[^=\n]*=\s*(\S+)", version, re.MULTILINE)
                  for name in ("cuda", "hip")]
        if all(found is not None and found.group(1) == "None" for found in builds):
            return _NO_GPU_SUPPORT
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "cuda"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch warns of an old driver, say
                return None if torch.cuda.is_available() else _NO_GPU
        except Exception:  # noqa: BLE001 - a broken install raises several kinds
            return None
    return None
