"""``python -m mosaicist``, and the ``mosaicist`` command."""

import contextlib
import os
import signal
import sys
import threading
from types import FrameType


def run() -> None:
    """Run the command line (:func:`mosaicist.cli.main`).

    Ctrl+C while the command line loads (its imports take a tenth of a
    second) is reported as any later interrupt is, in one line, not as a
    traceback; SIGTERM then ends it with SIGTERM's status (143), silently,
    as a command that SIGTERM stops does (not by the signal, status -15).
    A standard output or error that was closed
    (``mosaicist make ... 2>&-``) reads as the null device: Python leaves
    it None, and the command failed with a traceback on its first message
    or progress bar, its mosaic unmade.
    """
    _null_if_closed("stdout", 1)
    _null_if_closed("stderr", 2)
    # NumPy asks the kernel for transparent huge pages for every array of 4 MB or
    # more (read when NumPy is imported, here and in this command's children).
    # Where the kernel then compacts memory to find them as each array is first
    # touched (its usual "madvise" defrag setting), every fresh band, temporary and
    # sum of a large mosaic waits on it: the million-tile approximate make took
    # 1.80 s against 1.58 s without (medians of 8; render 0.36 -> 0.23 s), the
    # exact one 17.2 s against 16.2 s; the seed workload the same. A value set by
    # the caller is kept.
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    # Numba builds an error message as one of its modules is imported (the tile
    # assignment's solver loads it), and colours it with colorama, whose start
    # registers an exit hook: every such command wrote an escape sequence (ESC [0m)
    # to a terminal after its last line, with NO_COLOR set too, and while the
    # message was built, swapped sys.stdout and sys.stderr for its wrappers where
    # they were not terminals. The command line shows Numba's messages to nobody.
    os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")
    # SIGTERM and SIGHUP end the process as they would a moment later until a command's
    # unwinding (or a server's stop) takes them over (see cli._Command): where this
    # command owns the process, with their statuses (143, 129), a server with 0. The
    # command line sets its own handlers over this one as over the default.
    serving = _serving_command(sys.argv[1:])
    if _owns_sigterm(sys._getframe(1)):
        for number in _TERMINATING:
            if signal.getsignal(number) is signal.SIG_DFL:
                signal.signal(number, _stop_server_while_loading if serving
                              else _terminate_while_loading)
    try:
        from . import cli
        from .cli import main
    except KeyboardInterrupt:
        if not serving:  # a server's stop says nothing, as once it serves
            sys.stderr.write("mosaicist: error: interrupted\n")
            sys.stderr.flush()
        code = 0 if serving else 130
        if (sys.getprofile() is None and sys.gettrace() is None
                and _outermost(sys._getframe(1))):
            # Out at once: an interrupt caught amid the imports made CPython end the
            # process by SIGINT after finalising (status -2, not 130) in about 1 run in
            # 14, and nothing is open to clean up yet.
            os._exit(code)
        raise SystemExit(code) from None
    cli.OWNS_PROCESS = True  # it may end or signal this process (see cli.OWNS_PROCESS)
    try:
        main()
    except SystemExit as stop:
        # Not under a profiler or tracer (cProfile, trace write their results once this
        # returns), nor with an interactive prompt to follow (python -i), nor inside a
        # program that goes on once this returns (pdb: its next prompt never came).
        if (stop.code in (None, 0) and sys.getprofile() is None and sys.gettrace() is None
                and not sys.flags.inspect and not os.environ.get("PYTHONINSPECT")
                and _outermost(sys._getframe(1))):
            try:
                _end_now()
            except KeyboardInterrupt:
                # Ctrl+C while the threads are joined or atexit runs: said as any
                # interrupt is, not as a traceback chained to the SystemExit.
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write("mosaicist: error: interrupted\n")
                    sys.stderr.flush()
                os._exit(130)
        if stop.code in cli._INTERRUPTED and _outermost(sys._getframe(1)):
            # Stopped and cleaned up: the same signal again found the interpreter's exit,
            # which gives handlers back their default action (status -2, not 130).
            cli.ignore_interrupts()
        raise


def _owns_sigterm(caller: FrameType | None) -> bool:
    """Whether the run may end the process on SIGTERM while the command line loads.

    Only where the command owns the process (:func:`_outermost`: not a
    program that runs it in its own process), in the main thread (the only
    one where a handler can be set), and where SIGTERM has its default
    action: one ignored (``nohup``'s callers, a supervisor) or handled by
    the caller stays as it was, as the command line leaves it.
    """
    return (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
            and _outermost(caller))


#: The signals that end a command (SIGTERM; SIGHUP, a terminal closed), where there are.
_TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                     if hasattr(signal, name))
#: The commands that serve until stopped (``cli._SERVING``: a stop is their end, status 0).
_SERVING = frozenset({"view", "studio", "live"})


def _serving_command(arguments: list[str]) -> bool:
    """Whether ``arguments`` run a serving command (its name comes first)."""
    return bool(arguments) and arguments[0] in _SERVING


def _terminate_while_loading(signum: int, frame: FrameType | None) -> None:
    """End the process as a command that SIGTERM (SIGHUP) stops does: 143 (129), no message.

    At once: nothing is open to clean up yet, and a ``SystemExit`` raised
    amid the imports could land in a module's half-run code.
    """
    os._exit(128 + signum)


def _stop_server_while_loading(signum: int, frame: FrameType | None) -> None:
    """End a server not serving yet as its stop would a moment later: status 0."""
    os._exit(0)


# The command line's handlers replace these as they replace the default action
# (mosaicist._runtime.usual_terminate_handler).
_terminate_while_loading.usual_terminate = True  # type: ignore[attr-defined]
_stop_server_while_loading.usual_terminate = True  # type: ignore[attr-defined]


def _outermost(frame: FrameType | None) -> bool:
    """Whether ``frame`` and its callers are only the program's own top level.

    That is the ``mosaicist`` script's module, or ``python -m mosaicist``'s
    (and :mod:`runpy`, which runs it). A program that runs the command
    inside its own functions has work left once it returns (pdb's next
    prompt, the end of a tool's ``with`` block), and need not have set a
    profile or trace function that says so (pdb with no breakpoint).
    """
    while frame is not None:
        if frame.f_globals.get("__name__") != "runpy" and not (
                frame.f_globals.get("__name__") == "__main__"
                and frame.f_code.co_name == "<module>"):
            return False
        frame = frame.f_back
    return True


def _end_now() -> None:
    """End a command that succeeded, without the interpreter's teardown.

    A command has closed and renamed into place everything it wrote before
    it returns: what the interpreter's exit would add is freeing every
    object and module one by one (0.05 s after a million-tile make). What
    it does first still runs: the thread pools' exit hooks stop and join
    their threads (and every other thread that is not a daemon is waited
    for), then :mod:`atexit`'s functions, then the standard streams are
    flushed.
    """
    import atexit
    import threading

    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter's exit calls
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a reader gone, a closed stream: as at any exit
            pass
    os._exit(0)


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
