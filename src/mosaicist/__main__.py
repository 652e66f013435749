"""``python -m mosaicist``, and the ``mosaicist`` command."""

import os
import sys


def run() -> None:
    """Run the command line (:func:`mosaicist.cli.main`).

    Ctrl+C while the command line loads (its imports take a tenth of a
    second) is reported as any later interrupt is, in one line, not as a
    traceback. A standard output or error that was closed
    (``mosaicist make ... 2>&-``) reads as the null device: Python leaves
    it None, and the command failed with a traceback on its first message
    or progress bar, its mosaic unmade.
    """
    _null_if_closed("stdout", 1)
    _null_if_closed("stderr", 2)
    try:
        from . import cli
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("mosaicist: error: interrupted\n")
        raise SystemExit(130) from None
    cli.OWNS_PROCESS = True  # it may end or signal this process (see cli.OWNS_PROCESS)
    main()


def _null_if_closed(name: str, descriptor: int) -> None:
    """Put the null device behind ``sys.<name>`` where its ``descriptor`` was closed.

    Python leaves such a stream None; where something reopened the free
    descriptor for reading before Python started (pyenv's shim script, with
    ``2>&-``), a stream whose every write fails. The descriptor itself gets
    the null device too, for child processes.
    """
    try:
        os.fstat(descriptor)
        usable = _writable(descriptor)
    except OSError:
        usable = False
    if usable and getattr(sys, name) is not None:
        return
    if not usable:
        null = os.open(os.devnull, os.O_WRONLY)
        if null != descriptor:
            os.dup2(null, descriptor)  # in place of a read-only file there, if any
            os.close(null)
    setattr(sys, name, open(descriptor, "w", closefd=False))  # noqa: SIM115 - for the run


def _writable(descriptor: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: no such check
        return True
    return fcntl.fcntl(descriptor, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY


if __name__ == "__main__":
    run()
