"""The ``mosaicist`` command line.

Every setting of a mosaic is an option of :class:`~mosaicist.options.MosaicOptions`;
the commands build their flags from those declarations (``_setting_options``)
and hand the options object to the pipeline, so defaults, checks and help
are written once. An error whose message names a setting
(:class:`~mosaicist.errors.OptionError`) is shown with the flag that sets it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import re
import select
import shlex
import signal
import string
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import click

from ._choices import BUILT_IN_DEVICES, BUILT_IN_SEARCHES, DEDUPE_THRESHOLD
from .errors import MosaicistError, OptionError, check_range, counted, printable
from .options import DEFAULT_PRESET, PRESETS, MosaicOptions, Setting, setting_named
from .paths import URL_START, expanded
from .progress import progress_enabled

#: Exit status of a command whose output's reader went away: 128 + SIGPIPE, as a shell
#: shows a command that the signal ended (Python ignores SIGPIPE and gets an error instead).
_BROKEN_PIPE_STATUS = 141


#: Words of a message longer than this are shown cut in the middle (a value of thousands
#: of digits echoed whole buries the message); longer than any path a person types.
_LONGEST_WORD = 200


def _shortened(message: str) -> str:
    """``message`` with each word over :data:`_LONGEST_WORD` characters cut in the middle.

    Examples
    --------
    >>> _shortened("got '" + "9" * 5000 + "'")
    "got '9999999999999999999999999999999999999999...(5,000 characters)...99999999999999999999'"
    """
    def cut(match: re.Match[str]) -> str:
        word = match.group()
        return f"{word[:40]}...({counted(len(word), 'character')})...{word[-20:]}"

    # Quotes around a value stay, outside the cut.
    return re.sub(r"[^\s'\"]{" + str(_LONGEST_WORD + 1) + ",}", cut, message)


def _fail(message: str, code: int = 1) -> NoReturn:
    # A name in the message may hold a newline or an escape: the line stays one line.
    click.echo(f"mosaicist: error: {_shortened(printable(message))}", err=True)
    if code in _INTERRUPTED:
        _end_within_grace(code)
    sys.exit(code)


#: Seconds an interrupted command may take to exit after its message (the pools' and
#: threads' clean-up at the interpreter's exit) before it ends at once.
_EXIT_GRACE_SECONDS = 10.0
#: Whether the command line owns the process (``mosaicist``, ``python -m mosaicist``: set
#: by :func:`mosaicist.__main__.run`). Only then may it end the process or signal it; run
#: in another program's process (click's test runner, a script calling ``main``), it
#: must not.
OWNS_PROCESS = False


#: Exit statuses of a command that SIGTERM or SIGHUP stopped (unwound as an interrupt:
#: :data:`mosaicist._runtime.TERMINATING_SIGNALS`, not imported here, as it brings NumPy).
_TERMINATED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                            if hasattr(signal, name))
_TERMINATED = tuple(128 + number for number in _TERMINATED_SIGNALS)
#: Exit statuses of a command that SIGINT, SIGTERM or SIGHUP stopped.
_INTERRUPTED = (128 + signal.SIGINT, *_TERMINATED)


def ignore_interrupts() -> None:
    """Ignore SIGINT, SIGTERM and SIGHUP from now on: a stopped command on its way out.

    The same signal again (Ctrl+C pressed twice, GNU timeout's second
    SIGTERM, to the group) would find their default action, given back as
    the command unwound, and end the process by it (status -2 or -15, not
    130 or 143); the exit's own grace (:func:`_end_within_grace`) still ends
    it in time. Only in the main thread, where handlers can be set.
    """
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, *_TERMINATED_SIGNALS):
            signal.signal(number, signal.SIG_IGN)


def _end_within_grace(status: int) -> None:
    """End the process with ``status`` at the latest :data:`_EXIT_GRACE_SECONDS` from now.

    An interrupt that lands inside ``Thread.start`` (between a lock's acquire
    and the block that releases it) leaves the new thread waiting for that
    lock forever, and the interpreter's exit waits for the thread: an
    interrupted command then never ended. Normal clean-up takes far less.
    """

    if not OWNS_PROCESS:
        return

    def end() -> None:
        time.sleep(_EXIT_GRACE_SECONDS)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(status)

    threading.Thread(target=end, name="mosaicist-exit-grace", daemon=True).start()


#: Commands that serve until stopped: they stop on SIGTERM in their own way (uvicorn's
#: handlers, :func:`mosaicist.web._serve.sigterm_as_interrupt`), so theirs is left alone.
_SERVING = frozenset({"view", "studio", "live"})


#: Stands for a hyphen while help is wrapped: no line break follows it (U+2011).
_UNBROKEN_HYPHEN = "\u2011"


class _HelpFormatter(click.HelpFormatter):
    """Click's help layout, with lines never broken after a hyphen.

    Python's wrapper breaks hyphenated words, flags included: help showed
    ``(--min-`` at the end of a line and ``uses 1)`` on the next, which
    cannot be typed as shown (nor found by searching for ``--min-uses``).
    """

    def _unbroken(self, write: Callable[[], None]) -> None:
        start = len(self.buffer)
        write()
        self.buffer[start:] = [part.replace(_UNBROKEN_HYPHEN, "-")
                               for part in self.buffer[start:]]

    def write_text(self, text: str) -> None:
        self._unbroken(lambda: super(_HelpFormatter, self).write_text(
            text.replace("-", _UNBROKEN_HYPHEN)))

    def write_dl(self, rows: Any, col_max: int = 30, col_spacing: int = 2) -> None:
        kept = [(term, definition.replace("-", _UNBROKEN_HYPHEN)) for term, definition in rows]
        self._unbroken(lambda: super(_HelpFormatter, self).write_dl(kept, col_max, col_spacing))


class _Context(click.Context):
    formatter_class = _HelpFormatter


@functools.cache
def _source_docstrings() -> dict[str, str]:
    """The docstrings of this module's functions, read from its source file.

    ``python -OO`` (``PYTHONOPTIMIZE=2``) drops docstrings, and the commands'
    help is theirs: ``mosaicist --help`` listed the commands without a word,
    and each command's help lost its description.
    """
    import ast

    try:
        tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    # The module's own functions only: methods share their names (_Group.main, main).
    return {node.name: ast.get_docstring(node, clean=False) or ""
            for node in tree.body if isinstance(node, ast.FunctionDef)}


class _HelpFromSource:
    """A command (or group) whose help is its callback's docstring, also under ``-OO``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        callback, given = kwargs.get("callback"), kwargs.get("help")
        if given is None and callback is not None and sys.flags.optimize >= 2:
            kwargs["help"] = _source_docstrings().get(callback.__name__) or None
        super().__init__(*args, **kwargs)


class _Command(_HelpFromSource, click.Command):
    """A command whose setting errors name its own flags (``--max-uses``, not ``max_uses``).

    SIGTERM unwinds the command as an interrupt does (and exits 143): its
    default action would end the process at once, leaving the temporaries
    of the files being written, and a pool's workers, behind.
    """

    context_class = _Context

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            # Click's parser raises some without the context ("Option '--tiles' requires
            # an argument"): the hint then sent to 'mosaicist --help', not this command's.
            if error.ctx is None:
                error.ctx = ctx
            raise

    def invoke(self, ctx: click.Context) -> Any:
        unwinding: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        kept: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        from ._runtime import quiet_picture_warnings

        quiet_picture_warnings()
        if self.name not in _SERVING:
            from ._runtime import unwind_on_terminate

            unwinding = unwind_on_terminate()
            kept = _interrupts_kept()
        else:
            kept = _stopped_as_a_server()
        try:
            try:
                with kept, unwinding:
                    return super().invoke(ctx)
            except Exception as error:
                stop = _stop_behind(error)
                if stop is None:
                    raise
                raise stop from None
        except OptionError as error:
            # A number out of range as it was typed: "--tint 5" said "got 5.0".
            typed = _as_typed(error, ctx.meta.get(_TYPED, {}))
            raise MosaicistError(typed.message(self.flag_for)) from None
        except SystemExit as stop:
            # SIGTERM's or SIGHUP's unwinding (see _runtime.unwind_on_terminate): its exit
            # waits too.
            if isinstance(stop.code, int) and stop.code in _INTERRUPTED:
                if OWNS_PROCESS:
                    # Here, not only in __main__: the unwinding gave the signal its default
                    # action back, and a second one (GNU timeout's, to the group) ended
                    # the process by it (-15, not 143) while the exit's thread started
                    # (once, beside other jobs).
                    ignore_interrupts()
                _end_within_grace(stop.code)
            raise

    def flag_for(self, parameter: str) -> str:
        """Return the flag that sets ``parameter`` in this command (else the parameter).

        ``render`` takes the settings it has no flag for from the placements
        file: a message names them as its (a target over the pixel limit said
        "raise it with max_target_pixels", which ``render`` has no option for).
        """
        for option in self.params:
            if isinstance(option, click.Option) and option.name == parameter:
                return next((flag for flag in option.opts if flag.startswith("--")),
                            option.opts[0])
        if self.name == "render":
            try:
                setting_named(parameter)
            except KeyError:
                return parameter
            return f"the placements file's {parameter}"
        return parameter


#: Seconds after which an interrupt that library code swallowed is delivered again.
_REDELIVER_SECONDS = 0.05
#: The exit status of a swallowed interrupt that was SIGTERM's or SIGHUP's (143, 129):
#: the command then exits with it, silently.
_terminated: list[int] = []


@contextlib.contextmanager
def _stopped_as_a_server() -> Iterator[None]:
    """A serving command stopped by SIGTERM, SIGHUP or Ctrl+C at any moment, starting included.

    Its server takes either as its stop (:func:`mosaicist.web.sigterm_as_interrupt`):
    exit 0. Before, while it loaded its event or history and bound its
    address, SIGTERM had its default action (ended by it, status -15) and
    Ctrl+C said "interrupted" (130); now a stop then is the stop it would
    have been a moment later. Once stopped, the same signals are ignored on
    the way out (see :func:`ignore_interrupts`).
    """
    if not OWNS_PROCESS or threading.current_thread() is not threading.main_thread():
        yield
        return
    from ._runtime import (
        TERMINATING_SIGNALS,
        forget_server_stop,
        server_stop_asked,
        stop_serving,
        usual_interrupt_handler,
        usual_terminate_handler,
    )

    # Set here, not by web.sigterm_as_interrupt: importing the web stack first left
    # SIGTERM its default action a moment longer (-15 in 2 of 90 stops at 0.25 s).
    # SIGHUP (a terminal closed) is a stop too: it ended a serving studio by the signal.
    forget_server_stop()
    for number in TERMINATING_SIGNALS:
        if usual_terminate_handler(signal.getsignal(number)):
            signal.signal(number, stop_serving)
    if usual_interrupt_handler(signal.getsignal(signal.SIGINT)):
        signal.signal(signal.SIGINT, stop_serving)
    try:
        yield
    except KeyboardInterrupt:
        if not server_stop_asked():
            raise
    finally:
        if server_stop_asked():
            ignore_interrupts()


@contextlib.contextmanager
def _interrupts_kept() -> Iterator[None]:
    """Deliver again an interrupt that landed where Python can only drop it.

    Python runs a signal's handler wherever the main thread is; inside a
    callback from C (llvmlite's, while Numba loads its cache), a finalizer
    or a weakref callback, the ``KeyboardInterrupt`` (or SIGTERM's
    ``SystemExit``) cannot propagate: it went to ``sys.unraisablehook``,
    which printed a traceback, and the command ran on as if Ctrl+C had not
    been pressed. Here the hook sends SIGINT again from another thread a
    moment later, when the main thread is back in Python code.
    """
    if not OWNS_PROCESS:
        yield
        return
    from ._runtime import forget_interrupt, repeat_tolerant_interrupt, usual_interrupt_handler

    previous = sys.unraisablehook
    main_pid = os.getpid()
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        # Ctrl+C twice at once is one stop, its clean-up left to finish. Kept to the end
        # of the process, which this command line owns (its exit joins threads too).
        signal.signal(signal.SIGINT, repeat_tolerant_interrupt)

    def again() -> None:
        time.sleep(_REDELIVER_SECONDS)
        if os.getpid() == main_pid and usual_interrupt_handler(signal.getsignal(signal.SIGINT)):
            forget_interrupt()  # the one raised was dropped: this one is delivered
            os.kill(main_pid, signal.SIGINT)

    def hook(unraisable: Any) -> None:
        error = unraisable.exc_value
        terminated = isinstance(error, SystemExit) and error.code in _TERMINATED
        if not (isinstance(error, KeyboardInterrupt) or terminated):
            previous(unraisable)
            return
        if terminated:
            _terminated.append(int(error.code))
        threading.Thread(target=again, name="mosaicist-interrupt", daemon=True).start()

    sys.unraisablehook = hook
    try:
        yield
    finally:
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous


def _stop_behind(error: BaseException) -> BaseException | None:
    """The interrupt or terminating signal's exit that ``error`` was raised while unwinding.

    An interrupt raised at the wrong moment inside the standard library
    becomes another error there: Ctrl+C at the Python call where a
    condition takes its lock back (``threading.Condition.wait``, under
    every pool, queue and event) left the lock released, and the ``with``
    around it raised ``RuntimeError: release unlocked lock`` in its place,
    a traceback and status 1 where the command was stopped. The stop is
    what happened, and what the command reports.
    """
    seen: set[int] = set()
    behind = error.__context__
    while behind is not None and id(behind) not in seen:
        if isinstance(behind, KeyboardInterrupt) or (
                isinstance(behind, SystemExit) and behind.code in _INTERRUPTED):
            return behind
        seen.add(id(behind))
        behind = behind.__context__
    return None


def _escape_what_stdout_cannot_encode() -> None:
    r"""Write what the standard output's encoding lacks as escapes (``\u65e5``), never failing.

    Python's standard error does so already; its standard output refuses such
    text, and names listed there (``index --duplicates``) in an encoding
    other than UTF-8 (``PYTHONIOENCODING=latin-1``, a legacy console) ended
    the command in a ``UnicodeEncodeError`` traceback.
    """
    stream = sys.stdout
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None and getattr(stream, "errors", None) == "strict":
        with contextlib.suppress(Exception):  # a stream that cannot change: left as it is
            reconfigure(errors="backslashreplace")


class _Group(_HelpFromSource, click.Group):
    """Turns expected failures into one line on stderr and a non-zero exit."""

    command_class = _Command
    context_class = _Context

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run as click does, but report a usage error in one line like any other error.

        Click's own report is three or four lines (usage, a hint, the error);
        ours names the problem and where the help is, and exits 2 as click does.
        """
        kwargs["standalone_mode"] = False
        _escape_what_stdout_cannot_encode()
        try:
            result = super().main(*args, **kwargs)
        except click.UsageError as error:
            if type(error).__name__ == "NoArgsIsHelpError":
                # A bare ``mosaicist``: its help is what was asked for.
                try:
                    click.echo(error.format_message())
                except OSError as failure:
                    _output_failed(failure)
                sys.exit(0)
            names: list[str] = []
            context = error.ctx
            while context is not None and context.parent is not None:
                names.insert(0, context.info_name or "")
                context = context.parent
            where = " ".join(["mosaicist", *names])
            problem = error.format_message().rstrip(".")
            if isinstance(error, click.NoSuchOption):
                arguments = kwargs.get("args", args[0] if args else None)
                negative = _negative_value(
                    sys.argv[1:] if arguments is None else list(arguments), error.option_name)
                if isinstance(negative, MosaicistError):
                    _fail(str(negative))  # out of range: said as '--dedupe 65' says it
                if negative is not None:
                    problem = negative.format_message()
            _fail(f"{problem} (see '{where} --help')", error.exit_code)
        except click.ClickException as error:
            _fail(error.format_message(), error.exit_code)
        except click.exceptions.Abort:
            _fail("interrupted", 130)
        try:
            # Here, not at the interpreter's exit, which would report a reader gone noisily.
            if sys.stdout is not None:  # None: the descriptor was closed (``>&-``)
                sys.stdout.flush()
        except OSError as error:
            _output_failed(_on_stdout(error))
        # click returns an Exit's code instead of raising SystemExit when not standalone.
        sys.exit(result if isinstance(result, int) else 0)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except OSError as error:
            # What --help and --version print, here and not in a command: click's own
            # handling of such an error is a traceback (a full disk), or a silent
            # status 1 for a reader gone ('mosaicist --help | true').
            _output_failed(error)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MosaicistError as error:
            _fail(_with_folder_gone(str(error)))
        except KeyboardInterrupt:
            if _terminated:  # SIGTERM's or SIGHUP's, delivered again as SIGINT: exits as it
                _end_within_grace(_terminated[0])
                sys.exit(_terminated[0])
            _fail("interrupted", 130)
        except MemoryError:
            hint = _MEMORY_HINTS.get(ctx.invoked_subcommand or "",
                                     "try a smaller target or library")
            _fail(f"out of memory; {hint}")
        except OSError as error:
            _output_failed(error)
        return None


#: What each command can make smaller when it runs out of memory (options it has).
_MEMORY_HINTS = {
    "make": "try a smaller --limit or target",
    "batch": "try a smaller --limit, fewer --workers or smaller targets",
    "score": "try a smaller --view-px or target",
}


#: How a failure to write the standard output names it (``> /dev/full``, a full disk).
_STDOUT_NAME = "the standard output"


def _on_stdout(error: OSError) -> OSError:
    """``error``, naming the standard output where it names no file (see :func:`_output_failed`)."""
    if not getattr(error, "filename", None) and not isinstance(error, BrokenPipeError):
        error.filename = _STDOUT_NAME
    return error


def _print(text: str) -> None:
    """Print a line of a command's results on the standard output, naming it if that fails.

    Said with no name (``score ... > /dev/full``), "No space left on device"
    read as if the command's own files could not be written.
    """
    try:
        click.echo(text)
    except OSError as error:
        raise _on_stdout(error) from None


def _output_failed(error: OSError) -> NoReturn:
    """Report an ``OSError`` that reached the command line in one line, or end quietly.

    A reader of the standard output gone (``mosaicist ... | head``) ends
    the command quietly (:func:`_end_without_stdout`).
    """
    if isinstance(error, BrokenPipeError) and _stdout_broken():
        _end_without_stdout()
    where = f"{error.filename}: " if getattr(error, "filename", None) else ""
    _fail(_with_folder_gone(f"{where}{error.strerror or error}"))


#: Said of a failure while the current folder no longer exists.
_FOLDER_GONE = ("the current folder no longer exists (deleted or moved while in use); "
                "change to an existing folder and run the command again")


def _with_folder_gone(message: str) -> str:
    """``message``, followed by :data:`_FOLDER_GONE` where the current folder is gone.

    Then every relative name is missing, and whatever needs the folder's
    name (``os.getcwd``: a worker process's start, a path made absolute)
    fails without naming a file: a command run there said only "No such
    file or directory" (``batch``, with every path given absolute), or
    "target.png: target file not found" of a file still in its place.
    """
    try:
        os.getcwd()
    except OSError:
        # os.getcwd's own error names no file: the whole message is that the folder is gone.
        if message == os.strerror(errno.ENOENT):
            return _FOLDER_GONE
        return f"{message}; {_FOLDER_GONE}"
    return message


def _stdout_broken() -> bool:
    """Whether standard output is a pipe whose reader is gone (``mosaicist ... | head``).

    A broken pipe of something else (a socket, a child process) is an error
    to report; so is any broken pipe where poll cannot tell.
    """
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    # A pipe without a reader polls as an error (POLLHUP on some systems).
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _end_without_stdout() -> NoReturn:
    """End quietly, as a reader closing the output pipe early asks: status 141 (SIGPIPE's).

    Standard output goes to the null device first: what is still buffered
    would otherwise fail again, with a traceback, when the interpreter exits.
    """
    with contextlib.suppress(AttributeError, OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    sys.exit(_BROKEN_PIPE_STATUS)


def _negative_value(arguments: list[str], unknown: str
                    ) -> MosaicistError | click.UsageError | None:
    """What is wrong with a negative number given to a flag that may stand alone.

    Click reads ``--dedupe -1`` (and ``--dedupe=-1``) as the flag alone
    followed by an unknown option ``-1``; the value is judged here as it
    would be after the flag's own value: a
    :class:`~mosaicist.errors.MosaicistError` when it is out of range (as
    ``--dedupe 65``: "--dedupe must be between 0 and 64 bits, got -1"),
    a :class:`click.UsageError` when it is no whole number, None when the
    unknown option is no number (``--dedupe -x``).
    """
    for index, token in enumerate(arguments):
        flag, equals, given = token.partition("=")
        name = flag[2:].replace("-", "_")
        if not flag.startswith("--") or name not in _VALUE_WHEN_ALONE:
            continue
        if not equals:
            given = arguments[index + 1] if index + 1 < len(arguments) else ""
        # Click names the first characters of '-2.5' ('-2'), read as short options.
        if not given.startswith(unknown):
            continue
        try:
            float(given)
        except ValueError:
            return None
        try:
            number = _read_number(given, setting_named(name).kind, flag)
            MosaicOptions(**{name: number})
        except click.UsageError as error:
            return error
        except OptionError as error:
            return MosaicistError(_as_typed(error, {name: given}).message(
                lambda parameter: "--" + parameter.replace("_", "-")))
    return None


class _GivenPath(click.Path):
    """A path that is not the empty text (which ``Path`` reads as ``.``, the current folder:
    ``--cache-dir ""`` filled it with indexes, ``-o ""`` named it as the output), nor a URL
    (``Path`` folds its ``//``: ``https://host/a.jpg`` was "https:/host/a.jpg: target file
    not found"); ``~`` expanded, as the shell does not in ``--output=~/a.png`` (an output
    folder "~" did not exist, where inputs were read from the home folder)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if value == "":
            self.fail("the name is empty", param, ctx)
        if isinstance(value, str) and URL_START.match(value):
            self.fail(f"{value} is a URL; mosaicist reads and writes local files only "
                      "(download it first)", param, ctx)
        converted = super().convert(value, param, ctx)
        return _unambiguous(expanded(converted)) if isinstance(converted, Path) else converted


def _unambiguous(path: Path) -> Path:
    """``path``, expanded already, made absolute where it still starts with ``~``.

    A ``~user`` of no user here stays as written (:func:`~mosaicist.paths.expanded`): a
    file or folder of that name in the current folder, as the shell reads it too. The
    code a command runs expands its paths again, where ``Path.expanduser`` raises
    ``RuntimeError``: ``batch``, ``view``, ``studio``, ``live`` and ``--cache-dir`` ended in
    "RuntimeError: Could not determine home directory" with a traceback. Absolute, the
    name means the same file and nothing expands it.
    """
    return path.absolute() if path.parts and path.parts[0].startswith("~") else path


#: A file name each option that writes a file shows as an example (else ``out.png``).
_FILE_EXAMPLES = {"placements_path": "placements.json", "report_path": "report.json",
                  "report": "report.json", "json_path": "out.json"}


class _FilePath(_GivenPath):
    """A path of a file to write: not one that ends with a separator (``Path`` drops it, so
    ``-o out.png/``, a folder meant or a slip, wrote the file ``out.png``)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.endswith(("/", os.sep)) and value.strip("/" + os.sep):
            # An example of the kind that option writes (out.png was refused by --placements).
            example = _FILE_EXAMPLES.get((param.name or "") if param else "", "out.png")
            self.fail(f"{value} ends with {value[-1]}, as a folder does; name the file "
                      f"(for example {example})", param, ctx)
        return super().convert(value, param, ctx)


class _GivenText(click.ParamType):
    """A text that is not empty (``--tiles ""`` indexed the current folder, recursively)."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if value == "":
            self.fail("the name is empty", param, ctx)
        if isinstance(value, str) and value.startswith("~"):
            from .paths import expanded

            # A folder or array file (no dataset's name starts with ~), read as a path is;
            # one that expands is left as typed, for messages to show it so.
            if str(expanded(value)).startswith("~"):
                return str(_unambiguous(expanded(value)))
        return value


#: Where a command's context keeps the text typed for each number option, by parameter.
_TYPED = "mosaicist.typed"


def _flag_of(param: click.Parameter | None) -> str:
    """The flag a parameter is given with (its long one), as messages name it."""
    if param is None:
        return "the value"
    flags = getattr(param, "opts", None) or [param.name or "the value"]
    return next((flag for flag in flags if flag.startswith("--")), flags[0])


def _read_number(text: str, kind: type, flag: str, or_none: bool = False) -> Any:
    """``text`` read as click reads a number (``int(text)``, ``float(text)``), or a usage error
    in the words of the settings' own checks: ``--cell must be a whole number, got 2.5``.

    Examples
    --------
    >>> _read_number("5", float, "--tint"), _read_number("-3", int, "--cell")
    (5.0, -3)
    >>> _read_number("2.5", int, "--cell")
    Traceback (most recent call last):
    ...
    click.exceptions.UsageError: --cell must be a whole number, got 2.5
    >>> _read_number("abc", float, "--tint-max", or_none=True)
    Traceback (most recent call last):
    ...
    click.exceptions.UsageError: --tint-max must be a number or none, got 'abc'
    """
    try:
        return kind(text)
    except ValueError:
        pass
    words = ("a whole number" if kind is int else "a number") + (" or none" if or_none else "")
    shown = text.strip()
    if kind is int and shown.lstrip("+-").replace("_", "").isdecimal():
        # Whole, but longer than Python reads (4,300 digits): "must be a whole number" was wrong.
        words = f"a whole number of at most {sys.get_int_max_str_digits():,} digits"
    else:
        try:
            float(text)
        except ValueError:
            shown = repr(text)  # not a number: quoted, as the settings' checks quote a text
    raise click.UsageError(f"{flag} must be {words}, got {shown}")


def _same_number(text: str, value: object) -> bool:
    """Whether ``text`` reads as ``value`` (``"5"`` as ``5.0``, ``"NaN"`` as ``nan``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    for read in (int, float):
        try:
            given = read(text)
        except ValueError:
            continue
        if given == value or (math.isnan(given) and math.isnan(value)):
            return True
    return False


def _as_typed(error: OptionError, typed: dict[str, str]) -> OptionError:
    """``error``, about to be reported, with the number it shows as typed for its parameter.

    The settings read ``--tint 5`` as 5.0; their check said "got 5.0" of a
    value typed as 5 (and "got 1e+20" of ``--tint 100000000000000000000``).
    Only a ``{value}`` shown as it is, that reads as the text typed, is
    replaced, in place (any subclass keeps its own way of saying the rest).
    """
    fields = [(field, conversion, spec) for _, field, spec, conversion
              in string.Formatter().parse(error.template) if field == "value"]
    if not fields or any(conversion or spec for _, conversion, spec in fields):
        return error
    value = error.values.get("value")
    for parameter in error.parameters:
        text = typed.get(parameter)
        if text is not None and _same_number(text, value):
            error.values = {**error.values, "value": text.strip()}
            break
    return error


class _Number(click.ParamType):
    """A whole number (``kind`` int) or a number (float), read as click reads them.

    A value of the wrong kind is said as the settings' checks say it
    (``--cell must be a whole number, got 2.5``, not click's "'2.5' is not a
    valid integer"); the text typed is kept, for a value out of range to be
    shown as typed (:func:`_as_typed`).
    """

    def __init__(self, kind: type, *, or_none: bool = False) -> None:
        self.kind = kind
        self.name = "integer" if kind is int else "float"  # click's, for metavars
        self.or_none = or_none

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value  # a default, or the value of a flag given alone
        try:
            number = _read_number(value, self.kind, _flag_of(param), self.or_none)
        except click.UsageError as error:
            error.ctx = ctx
            raise
        if ctx is not None and param is not None and param.name:
            ctx.meta.setdefault(_TYPED, {})[param.name] = value
        return number


class _RangeInWords(click.types._NumberRangeBase):
    """A closed range of numbers shown in words: help and errors said ``0<=x<=65535``."""

    def _describe_range(self) -> str:
        low, high = (None if end is None else f"{end:g}" for end in (self.min, self.max))
        if high is None:
            return f"{low} or more"
        return f"up to {high}" if low is None else f"{low} to {high}"


class _Bounded(_RangeInWords):
    """A number from ``low`` to ``high`` (None: no upper limit), shown in help.

    Out of range, it is refused as a setting is, and exits 1 as one does
    (``--port must be between 0 and 65535, got 70000``): click's own words
    were "Invalid value for '--port': 70000 is not in the range 0<=x<=65535",
    with a pointer to the help and status 2, where ``--cell 0`` said
    "--cell must be between 1 and 1024 pixels, got 0" with status 1.
    """

    def __init__(self, kind: type, low: float, high: float | None = None, *,
                 finite: bool = False) -> None:
        super().__init__(low, high)
        self.low = low
        self.reader = _Number(kind)
        self.name = self.reader.name
        self.finite = finite

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return self.reader.kind(value)  # a default
        number = self.reader.convert(value, param, ctx)
        name = param.name if param is not None and param.name else "value"
        try:
            check_range(name, number, self.low, self.max)
            if self.finite and not math.isfinite(number):
                # No comparison with inf fails: '--rate inf' passed "at least 0".
                raise OptionError("{" + name + "} must be a finite number, got {value}",
                                  value=number)
        except OptionError as error:
            flag = _flag_of(param)
            raise MosaicistError(_as_typed(error, {name: value}).message(lambda _: flag)) \
                from None
        return number

    def _clamp(self, bound: float, dir: Any, open: bool) -> float:
        return bound  # never called: out of range is refused, not clamped


#: Photos per minute of ``live --rate``: 0 or more, not NaN (every comparison with it is
#: false: ``--rate nan`` turned the limit off) nor infinite.
_RATE = _Bounded(float, 0, finite=True)
_PORT = _Bounded(int, 0, 65535)
_WHOLE = _Number(int)
_REAL = _Number(float)


_PATH = _GivenPath()
_FILE = _FilePath()
_SOURCE = _GivenText()


class _LazyChoice(click.ParamType):
    """A text whose accepted values come from a registry, listed only when help is shown.

    The values are checked with the other settings (:func:`mosaicist.match.matcher_for`),
    so that matchers registered by plugins are accepted.
    """

    name = "text"

    def __init__(self, choices: Callable[[], Iterable[str]]) -> None:
        self.choices = choices

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(self.choices()) + "]"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        return value


def _registered_matchers() -> list[Any] | None:
    """The matchers registered in this process, or None where none can be but the built-in.

    Help lists the built-in matchers' values (:mod:`mosaicist._choices`) without
    waiting for the matchers' imports (NumPy, Numba): a plugin can register or
    unregister a matcher only once :mod:`mosaicist.match` is imported, and then
    its table is read.
    """
    match = sys.modules.get("mosaicist.match")
    return None if match is None else list(match.MATCHERS.values())


def _searches() -> list[str]:
    matchers = _registered_matchers()
    if matchers is None:
        return list(BUILT_IN_SEARCHES)
    return list(dict.fromkeys(matcher.search for matcher in matchers))


def _devices() -> list[str]:
    matchers = _registered_matchers()
    if matchers is None:
        return list(BUILT_IN_DEVICES)
    return list(dict.fromkeys(device for matcher in matchers for device in matcher.devices))


_REGISTRY_CHOICES = {"search": _searches, "device": _devices}
#: Settings whose flag may be given alone, and the value it then means.
_VALUE_WHEN_ALONE: dict[str, Any] = {"dedupe": DEDUPE_THRESHOLD}


class _Unset:
    """The value of ``--max-uses none`` and the like: the setting given as "no value"."""

    def __repr__(self) -> str:
        return "none"


#: What a flag of an optional setting reads for ``none``.
_NONE = _Unset()


class _OrNone(click.ParamType):
    """A setting's own type, or ``none``: no value (no limit), over any preset's."""

    def __init__(self, kind: click.ParamType) -> None:
        self.kind = kind
        self.name = kind.name

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() == "none":
            return _NONE
        return self.kind.convert(value, param, ctx)


def _note_ignored(written_as: Any, options: MosaicOptions, quiet: bool,
                  given: Iterable[str] | None = None, recorded: bool = False) -> None:
    """Note the output settings given (of ``given`` only, when named) that the output's
    format does not use (``--quality`` with a PNG): else they change nothing without a word.

    ``recorded``: a placements file keeps them, and a later render to another
    format uses them (said so: "ignored" was then applied by the render).
    """
    from .render import ignored_settings

    ignored = [name for name in ignored_settings(written_as, options)
               if given is None or name in given]
    if ignored and not quiet:
        flags = _both([_flag_name(name) for name in ignored])
        verb = "has" if len(ignored) == 1 else "have"
        kept = ("; kept in the placements file, for a render to another format" if recorded
                else "; ignored")
        click.echo(f"mosaicist: note: {flags} {verb} no effect on a {written_as.name} output"
                   f"{kept}", err=True)


def _both(names: list[str]) -> str:
    """``names`` listed with "and": "--quality, --dpi and --dzi-overlap" (as
    errors.alternatives lists with "or")."""
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))


def _note_shadowed(spec: str | None, quiet: bool, flag: str = "--tiles") -> None:
    """Note a folder of the current one that a dataset spec passes over (``--tiles cifar10``
    beside a folder ``cifar10``): else a user's photos were silently left out for the dataset.

    ``flag`` is the option that gave ``spec``, or ``""`` for an argument.
    """
    from .sources import shadowed_folder

    if spec is None or quiet:
        return
    folder = shadowed_folder(spec)
    if folder is None:
        return
    given = f"{flag} {spec}" if flag else spec
    context = click.get_current_context(silent=True)
    if flag and context is not None and context.get_parameter_source(
            flag.lstrip("-").replace("-", "_")) == click.core.ParameterSource.DEFAULT:
        given = f"the default {given}"
    hint = f"{flag} .{os.sep}{folder}" if flag else f".{os.sep}{folder}"
    dataset = spec.split(":", 1)[0].lower()
    click.echo(printable(f"mosaicist: note: {given} names the {dataset} dataset; the folder "
                         f"{folder} here is not used (to use it, give {hint})"), err=True)


def _command_flags() -> Callable[[str], str]:
    """How the running command names a setting: by the flag that sets it (``--max-uses``)."""
    command = click.get_current_context().command
    return command.flag_for if isinstance(command, _Command) else _flag_name


def _flag_name(name: str) -> str:
    declared = setting_named(name)
    return declared.flag or name


def _value_shown(value: Any) -> str:
    """A setting's value as help shows it: ``12``, not ``12.0``; ``1,500,000,000``.

    Examples
    --------
    >>> _value_shown(12.0), _value_shown(1_500_000_000), _value_shown(None)
    ('12', '1,500,000,000', 'none')
    """
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _default_shown(declared: Setting) -> str | None:
    """What a setting is when its flag is left out, as its help shows it (None: nothing).

    That is the default preset's value where it sets one (its declared
    default is the seed's, which ``--preset seed`` gives), else the declared
    default.
    """
    preset = PRESETS[DEFAULT_PRESET]
    seed = declared.default
    if declared.name != "preset" and declared.name in preset.settings:
        value = preset.settings[declared.name]
        if value != seed:
            # A preset's use limit and spacing are wishes (match.fit_limits): a library
            # smaller than the grid raises the one and shortens the other.
            eased = {"max_uses": ", raised for a small library",
                     "min_spacing": ", shortened for a small library"}.get(declared.name, "")
            return (f"{_value_shown(value)} from the {preset.name} preset"
                    f"{eased}; {_value_shown(seed)} with --preset seed")
    return None if seed is None else _value_shown(seed)


def _setting_option(declared: Setting, help: str | None, show_default: bool) -> Callable:
    kind: click.ParamType
    metavar = declared.metavar
    takes_none = declared.optional and declared.name not in _VALUE_WHEN_ALONE
    if declared.name in _REGISTRY_CHOICES:
        kind = _LazyChoice(_REGISTRY_CHOICES[declared.name])
    elif declared.choices is not None:
        kind = click.STRING
        metavar = "[" + "|".join(declared.choices) + "]"
    else:
        kind = _Number(declared.kind, or_none=takes_none) if declared.kind in (int, float) \
            else click.STRING
    if takes_none:
        kind = _OrNone(kind)
    text = help if help is not None else declared.describe(_flag_name)
    shown = _default_shown(declared)
    if show_default and shown is not None and "[default:" not in text:
        text += f"  [default: {shown}]"
    assert declared.flag is not None
    # A flag that may be given without its value (``--dedupe``) takes this one then.
    alone = ({"is_flag": False, "flag_value": _VALUE_WHEN_ALONE[declared.name]}
             if declared.name in _VALUE_WHEN_ALONE else {})
    # None means "not given": the options' own default (or, for render, the recorded value).
    return click.option(declared.flag, declared.name, type=kind, default=None, metavar=metavar,
                        help=text, **alone)


def _setting_options(
    *names: str, help: dict[str, str] | None = None, show_default: bool = True
) -> Callable:
    """Decorate a command with a flag for each named setting, from its declaration."""
    texts = help or {}

    def decorate(command: Callable) -> Callable:
        for name in reversed(names):
            command = _setting_option(setting_named(name), texts.get(name), show_default)(command)
        return command

    return decorate


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The settings given on the command line (flags left out are None; ``none`` is None)."""
    return {name: None if value is _NONE else value for name, value in values.items()
            if value is not None}


#: Settings that only change how a picture is written.
_OUTPUT_SETTINGS = ("jpeg_quality", "dzi_tile_size", "dzi_overlap", "dzi_format")
#: Settings of ``make``: every one with a flag, the preset, grid and matching first.
_MAKE_SETTINGS = ("preset", "cell_px", "tile_px", "match_px", "aspect", "cells", "print_size",
                  "dpi", "limit", "adaptive", "detail", "crop", "dedupe", "identical_photos",
                  "colour_profiles", "max_target_pixels", "metric", "augment",
                  "tint", "tint_max", "contrast", "chroma", "overlay", "max_uses", "min_uses",
                  "min_spacing", "assign", "search", "device", *_OUTPUT_SETTINGS)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mosaicist")
def main() -> None:
    """Make photomosaics: each cell of a target picture becomes a small photo.

    \b
    Examples:
      mosaicist make bear.jpg                       # CIFAR-10 tiles, 16 px cells
      mosaicist make bear.jpg --tiles ~/Photos -o bear-mosaic.jpg
      mosaicist index ~/Photos --tile-px 64         # index (or update) a folder
      mosaicist score bear-mosaic.png bear.jpg      # how faithful is the mosaic?
    """


def _view_hint(output: Path) -> None:
    if output.suffix.lower() == ".dzi":
        # Quoted for the shell, and a name that starts with "-" read as no option.
        text = str(output)
        if text.startswith("-"):
            text = os.path.join(os.curdir, text)
        click.echo(f"mosaicist: explore it with: mosaicist view {printable(shlex.quote(text))}",
                   err=True)


_OUTPUT_HELP = (
    "Output: an image (.png, .jpg, .webp, .tif: tiled pyramidal BigTIFF) written in "
    "streamed bands, or NAME.dzi: a Deep Zoom pyramid (NAME_files/) plus NAME.html, a "
    "zoomable viewer ('mosaicist view NAME.dzi')."
)

_CACHE_HELP = (
    "Cache folder for indexes and downloads [default: $MOSAICIST_CACHE_DIR or user cache]."
)

_SCHEDULER_HELP = (
    "Run on a Dask cluster: tcp://HOST:PORT of a running 'dask scheduler', or local / local:N "
    "to start N worker processes here for the run (extra dask). The workers must see the "
    "tiles, the cache and the output at the same paths (docs/cluster.md)."
)


def _opened_source(spec: str, cache_dir: Path | None, show_progress: bool) -> Any:
    """The tile source ``spec`` names, opened without making the cache folder.

    The cache is made by whoever first writes in it (the index): a source
    that names nothing is refused with no cache folder left behind.
    """
    from .paths import cache_dir as default_cache_dir
    from .sources import open_source

    return open_source(spec, cache_dir=default_cache_dir(cache_dir, create=False),
                       show_progress=show_progress)


def _check_source(spec: str, cache_dir: Path | None) -> None:
    """Refuse a tile source that names nothing, before anything is written.

    A dataset's name is left to the run (its download, if any, too): the
    checks of the outputs that follow take no time, a download minutes.
    """
    from .sources import DATASET_NAMES

    if spec.lower() not in DATASET_NAMES:
        _opened_source(spec, cache_dir, show_progress=False)


def _source_before_cluster(spec: str, scheduler: str | None, cache_dir: Path | None,
                           show_progress: bool) -> Any:
    """``spec`` as the source the cluster will index, resolved before the cluster starts.

    A local cluster takes seconds to start: a source that does not exist was
    said only after them. Without ``--scheduler`` the spec is kept as it is
    (the pipeline resolves it).
    """
    if scheduler is None:
        return spec
    from .distributed import parse_scheduler

    parse_scheduler(scheduler)  # a bad address first, as before any work (a download)
    return _opened_source(spec, cache_dir, show_progress)


@contextlib.contextmanager
def _cluster(scheduler: str | None, quiet: bool) -> Iterator[Any]:
    """A Dask client for ``--scheduler`` for the block (None without it: no Dask import)."""
    if scheduler is None:
        yield None
        return
    from .distributed import client_for, parse_scheduler

    address = parse_scheduler(scheduler)  # a bad address fails before any work
    with contextlib.ExitStack() as stack:
        # A SIGTERM that comes while a local cluster starts is held there (one raised
        # inside its start-up leaves it half made), and unwinds this command after.
        client = stack.enter_context(client_for(address, quiet=quiet))
        yield client


@main.command(
    epilog="""\b
Examples:
  mosaicist make starry_night.jpg
  mosaicist make starry_night.jpg --tiles cifar10 --cell 8 -o night.png
  mosaicist make bear.jpg --tiles ./photos --tile-px 64 -o bear-mosaic.jpg \\
      --placements bear.csv --report bear-report.json
  mosaicist make bear.jpg --tiles galaxy10 --limit 5000
  mosaicist make bear.jpg --tiles ~/Photos --cell 4 --tile-px 256 -o mural.dzi
  mosaicist view mural.dzi
  mosaicist make bear.jpg --tiles /shared/photos --scheduler local:2 -o bear.png
"""
)
@click.argument("target", type=_PATH)
@click.option("--tiles", default="cifar10", show_default=True, type=_SOURCE,
              metavar="SOURCE",
              help="Tile source: a folder, cifar10, cifar100 (or cifar10:PATH, "
                   "cifar100:PATH), galaxy10, galaxy10-sdss, galaxy10-decals, or "
                   "FILE.h5[:KEY] / FILE.npz[:KEY] / FILE.npy.")
@click.option("-o", "--output", type=_FILE, default=None, metavar="OUT",
              help=_OUTPUT_HELP + " [default: <target stem>-mosaic.png]")
@click.option("--placements", "placements_path", type=_FILE, default=None, metavar="FILE",
              help="Write the placements: .csv (row, col, tile, distance, position, "
                   "transform, tint_0..2, ...: one row per cell) or .json (the same plus "
                   "what 'mosaicist render' needs).")
@click.option("--report", "report_path", type=_FILE, default=None, metavar="FILE.json",
              help="Write a JSON report (grid, tiles, settings, objective, metrics, timings).")
@_setting_options(*_MAKE_SETTINGS)
@click.option("--use-all", is_flag=True,
              help="Use every library tile at least once (--min-uses 1).")
@click.option("--scheduler", default=None, metavar="ADDRESS", help=_SCHEDULER_HELP)
@click.option("--cache-dir", type=_PATH, default=None, metavar="DIR", help=_CACHE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, warnings or summary.")
def make(
    target: Path,
    tiles: str,
    output: Path | None,
    placements_path: Path | None,
    report_path: Path | None,
    use_all: bool,
    scheduler: str | None,
    cache_dir: Path | None,
    quiet: bool,
    **settings: Any,
) -> None:
    """Make a photomosaic of TARGET from the tiles of --tiles.

    Each cell of TARGET gets the tile that matches it best under the
    settings of --preset (its default below); a flag given overrides the
    preset's value.
    """
    from .imaging import target_size
    from .paths import check_writable
    from .render import check_output, output_format
    from .sizing import options_plan

    started = time.perf_counter()
    given = _given(settings)
    if use_all:
        if given.get("min_uses", 1) < 1:
            raise MosaicistError("--use-all asks for --min-uses 1 at least")
        given.setdefault("min_uses", 1)
    options = MosaicOptions(**given)
    if output is None:
        output = Path(f"{target.stem}-mosaic.png")
    _check_distinct(output, output_format(output), (target, "target"),
                    (placements_path, "placements file"), (report_path, "report file"))
    if placements_path is not None and placements_path.suffix.lower() not in (".csv", ".json"):
        raise MosaicistError(f"{placements_path}: a placements file is .csv or .json")
    library = _library_folder(tiles)
    _refuse_library_photos(library, [
        (output, "output"), *output_format(output).companions(output),
        (placements_path, "placements file"), (report_path, "report file")])
    for path, what in ((placements_path, "placements file"), (report_path, "report file")):
        if path is not None:
            check_writable(path, what)
    # The output's size is known from the target's header: refuse it before any work.
    width, height = target_size(target, options.max_target_pixels)
    # Before the output's checks, which make what a Deep Zoom output needs (its signing key).
    _check_source(tiles, cache_dir)
    check_output(output, *options_plan(options, (width, height), str(target)).output_size,
                 options)
    _note_ignored(output_format(output), options, quiet,
                  recorded=placements_path is not None
                  and placements_path.suffix.lower() == ".json")
    _note_shadowed(tiles, quiet)
    _note_inside_library(library, output, quiet)

    show = progress_enabled(quiet)
    tiles = _source_before_cluster(tiles, scheduler, cache_dir, show)
    # Imported once the checks above passed: refusing a target that is missing or too
    # large needs none of the matchers.
    from .pipeline import make_mosaic, settings_named_by

    # The pipeline's notes name settings as this command's flags, as its errors do.
    with _cluster(scheduler, quiet) as client, settings_named_by(_command_flags()):
        if client is None:
            unmeasured = quiet and report_path is None
            # Neither a summary nor a report will show the metrics: a third of the
            # writing time of a large mosaic, and their memory in the estimate that
            # refuses a grid too large, for nothing.
            mosaic = make_mosaic(
                target, tiles, options.fitted(compute_metrics=False) if unmeasured else options,
                cache_dir=cache_dir, show_progress=show, quiet=quiet)
            if unmeasured:
                # The placements file records the settings as made: a later
                # 'render --report' measures the metrics.
                mosaic.options = mosaic.options.fitted(compute_metrics=True)
                mosaic.placements.options = mosaic.placements.options.fitted(
                    compute_metrics=True)
            mosaic.write(output, show_progress=show)  # timed as the render phase
        else:
            from .distributed import make_on_cluster, write_on_cluster

            mosaic = make_on_cluster(client, target, tiles, options, cache_dir=cache_dir,
                                     show_progress=show, quiet=quiet)
            write_started = time.perf_counter()
            write_on_cluster(client, mosaic.renderer, output, mosaic.options,
                             cache_dir=cache_dir, show_progress=show)
            mosaic.timings["render"] += time.perf_counter() - write_started
    if placements_path is not None:
        mosaic.placements.write(placements_path, quiet=quiet)
    mosaic.timings["total"] = time.perf_counter() - started
    if report_path is not None:
        mosaic.write_report(report_path, output=str(output), target=str(target))
    if not quiet:
        click.echo(printable(_make_summary(mosaic, output)), err=True)
        _view_hint(output)


def _check_distinct(output: Path, written_as: Any,
                    *others: tuple[Path | None, str]) -> None:
    """Refuse, before any work, a command whose files name the same file twice.

    The output's companions (a pyramid's folder and viewer) count too.
    """
    from .paths import check_distinct

    companions = written_as.companions(output)
    check_distinct([others[0], (output, "output"), *companions, *others[1:]])
    # A pyramid's tile folder is replaced whole: a report written into it was deleted by
    # the next write, or kept every later write out of a folder holding other files.
    for folder, kind in companions:
        if not kind.endswith("folder"):
            continue
        inside = Path(os.path.realpath(folder))
        for path, what in others:
            if path is not None and inside in Path(os.path.realpath(path)).parents:
                raise MosaicistError(f"{path}: the {what} lies in the {kind} of the output "
                                     f"{output}, which each write replaces whole; give it "
                                     "a place outside")


def _library_folder(spec: str) -> Path | None:
    """The folder a ``--tiles`` spec names, symbolic links resolved (None: not a folder).

    Read as :func:`mosaicist.sources.open_source` reads it, without opening
    anything: a dataset name stays the dataset even beside a folder of that
    name.
    """
    from .paths import expanded
    from .sources import shadowed_folder

    if shadowed_folder(spec) is not None:
        return None
    folder = expanded(spec)
    return folder.resolve() if folder.is_dir() else None


def _scanned_in(library: Path, where: Path) -> Path | None:
    """``where`` relative to the tile folder ``library`` where the folder's scan reaches it
    (inside, no hidden folder or name on the way); None elsewhere."""
    try:
        relative = where.relative_to(library)
    except ValueError:  # outside the library (or on another drive)
        return None
    parts = relative.parts
    if not parts or any(part.startswith(".") for part in parts):
        return None
    return relative


def _note_inside_library(library: Path | None, output: Path, quiet: bool) -> None:
    """Warn where a new picture (or pyramid) written into the tile folder ``library`` would
    be indexed as photos.

    ``make -o tiles/mosaic.png`` is allowed (the file is no photo yet), but the
    next index takes the mosaic for one, and later mosaics draw it as a tile.
    Said only for a file the folder's scan would list (an image extension, no
    hidden part), in its folder's real place.
    """
    from .imaging import IMAGE_EXTENSIONS
    from .paths import expanded

    if library is None or quiet:
        return
    given = expanded(output)
    where = Path(os.path.realpath(given.parent)) / given.name
    if _scanned_in(library, where) is None:
        return
    pyramid = where.suffix.lower() == ".dzi"  # its NAME_files folder holds pictures
    if not pyramid and (where.suffix.lower() not in IMAGE_EXTENSIONS or os.path.lexists(where)):
        return
    taken = ("the next index takes its pyramid's tiles for photos" if pyramid
             else "the next index takes it for a photo")
    click.echo(printable(
        f"mosaicist: warning: {output}: the output is inside the tile library {library}: "
        f"{taken}, and later mosaics may draw them as tiles"), err=True)


def _refuse_library_photos(library: Path | None,
                           files: Iterable[tuple[Path | None, str]]) -> None:
    """Refuse, before any work, a file to write that is a photo of the tile folder ``library``.

    ``make -o tiles/a.png`` wrote the mosaic over the user's photo ``a.png``
    without a word (``render`` refused it only for the tiles it places):
    the photo was lost, and the next index took the mosaic for it. A file
    counts when it exists and the folder's scan lists it: an image
    extension, no hidden folder or name on the way (see
    :class:`mosaicist.sources.folder.FolderSource`). A new file is no photo
    yet.
    """
    from .imaging import IMAGE_EXTENSIONS
    from .paths import expanded

    if library is None:
        return
    for path, what in files:
        if path is None:
            continue
        given = expanded(path)
        # The name in its folder's real place, and where a link leads: the output is
        # written through a link to the file it names (paths.atomic_path), so a link
        # outside the library to one of its photos would replace the photo.
        for where in (Path(os.path.realpath(given.parent)) / given.name,
                      Path(os.path.realpath(given))):
            relative = _scanned_in(library, where)
            if (relative is None or where.suffix.lower() not in IMAGE_EXTENSIONS
                    or not os.path.lexists(where) or os.path.isdir(where)):
                continue
            raise MosaicistError(f"{path}: the {what} is also the photo "
                                 f"{relative.as_posix()} of the tile library {library}; "
                                 "give it its own file")


def _make_summary(mosaic: Any, output: Path) -> str:
    """One line: grid, tiles, timings, output and the metrics' headline."""
    stats = mosaic.library.stats
    left_out = []
    if stats and stats.failed:
        left_out.append(f"{len(stats.failed):,} skipped")
    if mosaic.library.duplicates_dropped:
        left_out.append(counted(mosaic.library.duplicates_dropped, "near-duplicate")
                        + " dropped")
    if mosaic.library.identical_dropped:
        left_out.append(f"{mosaic.library.identical_dropped:,} identical dropped")
    skipped = f" ({', '.join(left_out)})" if left_out else ""
    timings = mosaic.timings
    fidelity = ""
    if mosaic.metrics:
        from .metrics import headline

        fidelity = f"; {headline(mosaic.metrics)}"
        options = mosaic.options
        # Each named where it is used: "overlay 0" after a tint only lengthened the line.
        if options.tint:
            fidelity += f", tint {options.tint:g}"
        if options.overlay:
            fidelity += f", overlay {options.overlay:g}"
    split = f" split into {len(mosaic.placements):,}" if mosaic.placements.adaptive else ""
    return (
        f"mosaicist: {mosaic.grid.cols}x{mosaic.grid.rows} cells{split}, "
        f"{counted(len(mosaic.library), 'tile')}{skipped}; index {timings['index']:.2f} s, "
        f"match {timings['match']:.2f} s, render {timings['render']:.2f} s, "
        f"total {timings['total']:.2f} s -> {output} "
        f"({mosaic.renderer.width}x{mosaic.renderer.height}){fidelity}"
    )


#: Settings ``render`` takes only for CSV placements, which do not record how they were made.
_CSV_SETTINGS = ("metric", "crop", "colour_profiles")


def _check_recorded(path: Path, placements: Any, given: dict[str, Any], asked: MosaicOptions,
                    quiet: bool) -> None:
    """Refuse :data:`_CSV_SETTINGS` that contradict a JSON file; warn where a CSV may draw wrongly.

    A JSON file's tints are in its recorded metric's units and its tiles
    were matched cut by its recorded crop: another value would draw a
    different picture than the one matched. A CSV file records neither, nor
    the overlay: it is drawn as a make without options draws, which is said
    of each flag not given. ``asked``: the settings the render draws with
    (an ``--aspect`` other than a JSON file's is noted).
    """
    if placements.settings_recorded:
        for name in _CSV_SETTINGS:
            recorded = getattr(placements.options, name)
            if name in given and given[name] != recorded:
                raise OptionError(f"{{{name}}}: {{path}} records {{recorded}}, the {name} it "
                                  f"was made with; {{{name}}} is for CSV placements, which "
                                  "record none", path=path, recorded=recorded)
        recorded_aspect = placements.options.aspect
        if not quiet and asked.aspect != recorded_aspect:
            # An override, as documented, but not a silent one: the mosaic changed shape.
            click.echo(printable(
                f"mosaicist: note: --aspect {asked.aspect} is not the {recorded_aspect} "
                f"{path} was made at: its photos are cut at a shape they were not matched "
                "at, and the mosaic (and any overlay's target) takes that shape"), err=True)
        return
    # Said of each setting not given (one given left the others unsaid: a 3:2 make's
    # CSV rendered with --crop alone came out square without a word), whatever the
    # tints: a crop other than the default preset's draws other pixels too.
    unsaid = [name for name in (*_CSV_SETTINGS, "aspect") if name not in given]
    if quiet or not unsaid:
        return
    options = placements.options
    assumed = [f"{_flag_name(name)} {getattr(options, name)}"
               for name in _CSV_SETTINGS if name in unsaid]
    assumed.append("no overlay")
    if "tile_px" not in given:
        assumed.append(f"{options.tile_px} px tiles")
    if "aspect" in unsaid:
        assumed.append(f"{options.aspect} tiles")
    click.echo(printable(
        f"mosaicist: warning: {path}: a CSV placements file records no settings, so it is "
        f"drawn as a make without options draws ({', '.join(assumed)}); give "
        + _both([_flag_name(name) for name in unsaid])
        + " if it was made otherwise, or render the JSON placements file "
        "(--placements NAME.json), which records them"),
        err=True)


@main.command(
    epilog="""\b
Examples:
  mosaicist make bear.jpg --placements bear.json -o bear.png
  mosaicist render bear.json -o bear-print.tif --tile-px 128
  mosaicist render bear.csv --tiles ~/Photos -o bear-mosaic.jpg
  mosaicist render bear.json -o mural.dzi --tile-px 512
  mosaicist render bear.json -o /shared/mural.dzi --tile-px 512 --scheduler tcp://10.0.0.5:8786
"""
)
@click.argument("placements_path", metavar="PLACEMENTS", type=_PATH)
@click.option("-o", "--output", type=_FILE, required=True, metavar="OUT",
              help=_OUTPUT_HELP)
@click.option("--tiles", default=None, type=_SOURCE, metavar="SOURCE",
              help="Tile source (needed for CSV placements, which do not record it).")
@click.option("--scheduler", default=None, metavar="ADDRESS", help=_SCHEDULER_HELP)
@_setting_options("tile_px", "aspect", *_CSV_SETTINGS, "dpi", *_OUTPUT_SETTINGS,
                  show_default=False, help={
    "tile_px": "Output pixels per tile across (up to 1024; the height follows the aspect) "
               "[default: as in PLACEMENTS].",
    "aspect": "Shape of the tiles as width:height [default: as in PLACEMENTS; 1:1 for CSV "
              "placements, which do not record it].",
    "metric": "For CSV placements, which do not record it: the metric they were made with, "
              f"whose units their tints are in [default: {MosaicOptions().metric}, as a make "
              "without options].",
    "crop": "For CSV placements, which do not record it: where photos were cut to the "
            f"tiles' shape when they were made [default: {MosaicOptions().crop}, as a make "
            "without options].",
    "colour_profiles": "For CSV placements, which do not record it: whether the photos' "
                       "embedded colour profiles were converted or ignored when they were "
                       f"made [default: {MosaicOptions().colour_profiles}, as a make without "
                       "options; a make with the seed preset ignores them].",
    "dpi": "Resolution recorded in the output file [default: as in PLACEMENTS].",
    "jpeg_quality": "JPEG/WebP quality, also of Deep Zoom tiles [default: as in PLACEMENTS; "
                    "92, 90 for Deep Zoom, where they record none].",
    "dzi_tile_size": "Deep Zoom tile side, without overlap [default: as in PLACEMENTS].",
    "dzi_overlap": "Pixels each Deep Zoom tile shares with its neighbours [default: as in "
                   "PLACEMENTS].",
    "dzi_format": "Deep Zoom tile format [default: as in PLACEMENTS].",
})
@click.option("--cache-dir", type=_PATH, default=None, metavar="DIR", help=_CACHE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, warnings or summary.")
def render(
    placements_path: Path,
    output: Path,
    tiles: str | None,
    scheduler: str | None,
    cache_dir: Path | None,
    quiet: bool,
    **settings: Any,
) -> None:
    """Render saved PLACEMENTS (.json or .csv) again, without matching.

    Tiles are made from the library's original images at --tile-px, with the
    recorded transforms, tint and overlay; the picture is streamed, so any
    size fits in bounded memory. Settings not given are those recorded in
    PLACEMENTS (CSV files record none: those of a make without options; give
    --metric, --crop and --colour-profiles as they were made with).
    """
    from .placements import Placements
    from .render import check_output, output_format, placements_renderer

    started = time.perf_counter()
    if scheduler is not None:
        from .distributed import parse_scheduler

        parse_scheduler(scheduler)  # a bad address before any work (the cache is made for it)
    written_as = output_format(output)
    placements = Placements.read(placements_path)
    if tiles is not None:
        # Before the notes on the file's settings, and before the cache is made.
        _check_source(tiles, cache_dir)
    # The target the placements name is an input too (the overlay's, a later render's).
    _check_distinct(output, written_as,
                    (Path(placements.target) if placements.target else None, "target"),
                    (placements_path, "placements file"))
    given = _given(settings)
    if tiles is None and not placements.source:
        # Said by the renderer, this named neither the file nor why it has no source.
        kind = ("records none" if placements.settings_recorded
                else "is CSV, which records none")
        raise MosaicistError(f"{placements_path}: no tile source: the file {kind}; name the "
                             "library with --tiles")
    # Values checked first: a bad one was refused after the file's warning.
    options = placements.options.replace(**given)
    _check_recorded(placements_path, placements, given, options, quiet)
    if options.overlay > 0 and not placements.target:
        raise MosaicistError(f"{placements_path}: the overlay ({options.overlay:g}) needs the "
                             "target picture, and this file names none")
    check_output(output, placements.cols * options.tile_px,
                 placements.rows * options.tile_height, options)
    # Only what was given here: the make's own output settings were for its output.
    _note_ignored(written_as, options, quiet, given)
    _note_shadowed(tiles, quiet)
    show = progress_enabled(quiet)
    renderer = placements_renderer(placements, options, tiles=tiles, cache_dir=cache_dir,
                                   show_progress=show)
    if renderer.source_root is not None:
        # Written over the original of a placed tile, it would replace a photo of the
        # library that the placements still name.
        library, placed = os.path.realpath(renderer.source_root), set(placements.source_ids)
        for path, what in ((output, "output"), *written_as.companions(output)):
            try:
                tile = Path(os.path.relpath(os.path.realpath(path), library)).as_posix()
            except ValueError:  # another drive (Windows): not in the library
                continue
            if not tile.startswith("../") and tile in placed:
                raise MosaicistError(f"{path}: the {what} is also the original of the placed "
                                     f"tile {tile} of {renderer.source_root}; give it its own "
                                     "file")
        # A photo of the library that no cell holds is lost all the same.
        _refuse_library_photos(Path(library), [(output, "output"),
                                               *written_as.companions(output)])
    changed = renderer.changed_tiles
    if changed and not quiet:
        shown = printable(", ".join(changed[:3]) + (", ..." if len(changed) > 3 else ""))
        click.echo(f"mosaicist: warning: {len(changed):,} of the tiles changed since these "
                   f"placements were made ({shown}); they are drawn as they are now", err=True)
    if renderer.changed_target and not quiet:
        click.echo(printable(f"mosaicist: warning: {renderer.changed_target}"), err=True)
    with _cluster(scheduler, quiet) as client:
        if client is None:
            renderer.write(output, options, show_progress=show)
        else:
            from .distributed import write_on_cluster

            write_on_cluster(client, renderer, output, options, cache_dir=cache_dir,
                             show_progress=show)
    if not quiet:
        seconds = time.perf_counter() - started
        click.echo(printable(
            f"mosaicist: {placements.cols}x{placements.rows} cells at "
            f"{options.tile_px}x{options.tile_height} px "
            f"rendered in {seconds:.2f} s -> {output} ({renderer.width}x{renderer.height})"
        ), err=True)
        _view_hint(output)


@main.command(
    epilog="""\b
Examples:
  mosaicist batch photos/ --tiles ~/Photos -o mosaics/
  mosaicist batch a.jpg b.jpg more.txt --tiles cifar10 -o out/ --format jpg
  mosaicist batch clip.mp4 --tiles ~/Photos -o frames/ --video clip-mosaic.mp4 --stable 0.25
  mosaicist batch photos/ --tiles /shared/photos -o /shared/out --scheduler tcp://10.0.0.5:8786
"""
)
@click.argument("targets", nargs=-1, required=True, type=_PATH)
@click.option("--tiles", default="cifar10", show_default=True, type=_SOURCE,
              metavar="SOURCE",
              help="Tile source, as for 'make'.")
@click.option("-o", "--output-dir", type=_PATH, required=True, metavar="OUTDIR",
              help="Folder of the outputs (made if missing): OUTDIR/<stem>.<format>, a video's "
                   "frames <video stem>-<frame:06d>.<format>.")
@click.option("--format", "format", default="png", show_default=True,
              metavar="[png|jpg|webp|tif|dzi]",
              help="Format of every output (dzi: a Deep Zoom pyramid and its viewer).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help=_SCHEDULER_HELP + " [default: a local process pool]")
@click.option("--workers", type=_WHOLE, default=None, metavar="N",
              help="Processes of the local pool [default: one per core, or "
                   "$MOSAICIST_THREADS].")
@click.option("--video", type=_PATH, default=None, metavar="OUT.mp4",
              help="Also encode the outputs, in order, into this video (.mp4: H.264; .mkv, "
                   ".mov, .webm); needs --format png, jpg or webp.")
@click.option("--fps", type=_REAL, default=None, metavar="N",
              help="Frame rate of --video [default: the video targets' where they share one, "
                   "else 25].")
@click.option("--stable", type=_REAL, default=None, metavar="STRENGTH",
              help="Temporal stability of video frames (0-10): a cell keeps its previous "
                   "frame's tile unless another is closer than its distance / (1 + STRENGTH) "
                   "[default: 0, off: every frame exactly as 'make' makes it].")
@click.option("--overwrite", is_flag=True,
              help="Make every output again (else outputs already in OUTDIR are skipped).")
@click.option("--report", "report", type=_FILE, default=None, metavar="FILE.json",
              help="Write a JSON report: each target's status, seconds and metrics, the "
                   "flicker of videos, the video written.")
@_setting_options(*_MAKE_SETTINGS)
@click.option("--use-all", is_flag=True,
              help="Use every library tile at least once in each mosaic (--min-uses 1).")
@click.option("--cache-dir", type=_PATH, default=None, metavar="DIR", help=_CACHE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, warnings or summary.")
def batch(
    targets: tuple[Path, ...],
    tiles: str,
    output_dir: Path,
    format: str,
    scheduler: str | None,
    workers: int | None,
    video: Path | None,
    fps: float | None,
    stable: float | None,
    overwrite: bool,
    report: Path | None,
    use_all: bool,
    cache_dir: Path | None,
    quiet: bool,
    **settings: Any,
) -> None:
    """Make a mosaic of every TARGET with one library, one output each in OUTDIR.

    TARGET is an image, a video (every frame a target), a folder of them, or
    a list file (.txt, one path per line). Each output is what 'mosaicist
    make' makes of its target, byte for byte. Outputs already in OUTDIR are
    skipped, so an interrupted batch resumes where it stopped. A target that
    fails is reported in one line and skipped; the exit status is then 1.
    """

    from tqdm import tqdm

    from .batch import batch_mosaics

    given = _given(settings)
    if use_all:
        if given.get("min_uses", 1) < 1:
            raise MosaicistError("--use-all asks for --min-uses 1 at least")
        given.setdefault("min_uses", 1)
    options = MosaicOptions(**given)
    from .render import OUTPUT_FORMATS

    suffix = "." + format.lower().lstrip(".")
    if suffix in OUTPUT_FORMATS:  # else the batch says what is wrong with it
        _note_ignored(OUTPUT_FORMATS[suffix], options, quiet)
    _note_shadowed(tiles, quiet)
    if not quiet:
        from .pipeline import note_settings, settings_named_by

        # Once for all the targets, whose makes are quiet (the notes went unsaid).
        with settings_named_by(_command_flags()), contextlib.suppress(MosaicistError):
            note_settings(options)  # a matcher that cannot run: the batch says it alone

    def on_error(name: str, message: str) -> None:
        tqdm.write(f"mosaicist: error: {printable(f'{name}: {message}')}", file=sys.stderr)

    result = batch_mosaics(
        targets, tiles, output_dir, options, format=format, scheduler=scheduler,
        workers=workers, video=video, fps=fps, stable=stable or 0.0, overwrite=overwrite,
        cache_dir=cache_dir, show_progress=progress_enabled(quiet), quiet=quiet,
        on_error=on_error, report=report,
    )
    if not quiet:
        click.echo(printable(result.summary()), err=True)
    if not result.ok:
        sys.exit(1)


@main.command(
    epilog="""\b
Examples:
  mosaicist view mural.dzi
  mosaicist view mural.html --no-browser --port 8000
"""
)
@click.argument("path", type=_PATH)
@click.option("--no-browser", is_flag=True, help="Only serve; do not open a browser.")
@click.option("--port", type=_PORT, default=0, show_default=True,
              metavar="N",
              help="Port on 127.0.0.1 (0: a free one).")
def view(path: Path, no_browser: bool, port: int) -> None:
    """Serve a Deep Zoom mosaic's viewer on localhost and open it in the browser.

    PATH is NAME.dzi, NAME.html or their folder. Stop with Ctrl+C.
    """
    from .viewer import find_viewer

    # A missing or wrong page is said before the web server's modules load (half a second).
    find_viewer(path)
    from .viewer import serve_viewer

    serve_viewer(path, open_browser=not no_browser, port=port,
                 announce=lambda message: click.echo(message, err=True))


@main.command(
    epilog="""\b
Examples:
  mosaicist studio
  mosaicist studio --root /media/photos --no-browser --port 8000
"""
)
@click.option("--port", type=_PORT, default=0, show_default=True,
              metavar="N",
              help="Port to listen on (0: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address to listen on; keep the default unless other machines must reach "
                   "it.")
@click.option("--no-browser", is_flag=True, help="Only serve; do not open a browser.")
@click.option("--root", "roots", multiple=True, type=_PATH, metavar="DIR",
              help="A folder whose photos may be used as tiles, besides your home folder "
                   "(repeatable).")
@click.option("--cache-dir", type=_PATH, default=None, metavar="DIR", help=_CACHE_HELP)
def studio(port: int, host: str, no_browser: bool, roots: tuple[Path, ...],
           cache_dir: Path | None) -> None:
    """Make mosaics in the browser: a local web app with a live preview.

    Serves the studio on this machine and opens it in the browser; photos
    never leave it. Every mosaic made is kept in the history. Stop with
    Ctrl+C.
    """
    from .studio import serve_studio

    serve_studio(host=host, port=port, open_browser=not no_browser, roots=roots,
                 cache_dir=cache_dir, announce=lambda message: click.echo(message, err=True))


@main.command(
    epilog="""\b
Examples:
  mosaicist live couple.jpg --grid 40x30 --event wedding --host 0.0.0.0
  mosaicist live --event wedding --host 0.0.0.0      # resume after a restart
  mosaicist live logo.png --grid 60x40 --final --moderation --fallback ~/Photos
"""
)
@click.argument("target", required=False, type=_PATH)
@click.option("--grid", metavar="COLSxROWS",
              help="Cells across and down (40x30: 1,200 photos); needed for a new event. At "
                   "most 1,000 a side and 40,000 cells, and 250 megapixels at --tile-px.")
@click.option("--event", "event_dir", type=_PATH, default=None, metavar="DIR",
              help="The event's folder: photos, state, exports; start again with it to "
                   "resume [default: <target stem>-live].")
@click.option("--host", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address to listen on; 0.0.0.0 lets guests' phones on the local network "
                   "reach it.")
@click.option("--port", type=_PORT, default=8000, show_default=True,
              metavar="N",
              help="Port to listen on (0: a free one).")
@click.option("--final/--moving", default=None,
              help="--final: a placed photo never moves (printed boards); --moving: photos "
                   "may move to better cells when uploads pause [default: as the event was, "
                   "else --moving].")
@click.option("--moderation/--no-moderation", default=None,
              help="Hold every photo for the host's approval [default: as the event was, "
                   "else off].")
@click.option("--expected", type=_Bounded(int, 1), default=None, metavar="N",
              help="Photos expected in all, for the placement's look-ahead [default: the "
                   "grid's cells].")
@click.option("--fallback", metavar="SOURCE", default=None, type=_SOURCE,
              help="A tile source (folder, cifar10...) to complete empty cells from at the end.")
@click.option("--rate", type=_RATE, default=30, show_default=True, metavar="N",
              help="Photos per minute one guest's device may send (0: no limit).")
@click.option("--url", "guest_url", default=None, metavar="URL",
              help="The guests' link as phones reach this machine (the QR code) [default: "
                   "this server's address].")
@_setting_options("tile_px", "match_px", "aspect", "crop", "colour_profiles", "metric", "tint",
                  *_OUTPUT_SETTINGS,
                  help={"tile_px": "Width of a tile on the display and in exports, in pixels "
                                   "[default: 64].",
                        "match_px": "Width at which photos and cells are compared [default: 16].",
                        "aspect": "Shape of cells and tiles as width:height (e.g. 3:2, 4:3, "
                                  "2:3); --tile-px and --match-px give widths, heights "
                                  "follow [default: 1:1].",
                        "crop": "Where each photo is cut to the tiles' shape: centre, or subject "
                                "(faces with the faces extra, else detail) [default: subject].",
                        "colour_profiles": "Embedded colour profiles of the target and the "
                                           "guests' photos: convert (to sRGB) or ignore "
                                           "[default: convert].",
                        "tint": "Move each photo's mean colour this fraction of the way to its "
                                "cell's (0-1) [default: 0.6]."})
@click.option("--cache-dir", type=_PATH, default=None, metavar="DIR", help=_CACHE_HELP)
def live(target: Path | None, grid: str | None, event_dir: Path | None, host: str, port: int,
         final: bool | None, moderation: bool | None, expected: int | None,
         fallback: str | None, rate: float, guest_url: str | None, cache_dir: Path | None,
         **settings: Any) -> None:
    """Run a photo wall at an event: guests' photos fill in TARGET live.

    Guests open the link (a QR code on the display) on their phones and send
    photos; each lands within a second in the cell it fits best. Open the
    display page full screen on a TV or projector, and the admin page (its
    token is printed here) to moderate, pause, complete and export. Stop
    with Ctrl+C; everything is kept in the event folder.
    """
    from .live import serve_live
    from .live._event import parse_grid

    if event_dir is None:
        if target is None:
            raise MosaicistError("give the TARGET picture of a new event, or --event DIR to "
                                 "resume one")
        event_dir = Path(f"{target.stem}-live")
    if fallback is not None:
        _check_fallback(fallback, cache_dir)
    serve_live(event_dir, target=target, grid=None if grid is None else parse_grid(grid),
               settings=_given(settings), final=final, moderation=moderation,
               expected=expected, host=host, port=port, rate=rate, guest_url=guest_url,
               fallback=fallback, cache_dir=cache_dir, announce=click.echo)


def _check_fallback(spec: str, cache_dir: Path | None) -> None:
    """Refuse a ``live --fallback`` that names no tile source, before the wall opens.

    The wall indexes it only when the host completes the grid from it, at
    the end of the event: a mistyped folder was said then, hours after it
    could be given again. A dataset's name is left to that moment (its
    download, if any, too).
    """
    try:
        _check_source(spec, cache_dir)
    except MosaicistError as error:
        raise MosaicistError(f"{error} (--fallback)") from None


@main.command(
    epilog="""\b
Examples:
  mosaicist index ~/Photos
  mosaicist index ~/Photos --tile-px 64 --aspect 3:2
  mosaicist index ~/Photos --duplicates             # list near-identical photos
  mosaicist index ~/Photos --duplicates --dedupe 10  # ... a looser threshold
  mosaicist index cifar100
  mosaicist index /shared/photos --scheduler tcp://10.0.0.5:8786  # on a Dask cluster
"""
)
@click.argument("source", type=_SOURCE)
@click.option("--tile-px", "match_px", type=_WHOLE, default=32, show_default=True,
              metavar="PX",
              help="Width of the indexed tiles in pixels: the width 'make' compares at "
                   "(its --match-px; by default its --tile-px up to 64, else 32).")
@_setting_options("aspect", "crop", "colour_profiles", "dedupe", help={
    "aspect": "Shape of the indexed tiles as width:height, as 'make --aspect' "
              "[default: 1:1].",
    "crop": "Where each photo is cut to the tiles' shape: centre, or subject (faces with "
            "the faces extra, else detail), as 'make --crop' [default: subject; 'make "
            "--preset seed' uses centre].",
    "colour_profiles": "Embedded ICC colour profiles: convert (to sRGB) or ignore, as "
                       "'make --colour-profiles' [default: convert with --crop subject, "
                       "ignore with --crop centre, as the default and seed presets pair "
                       "them].",
    "dedupe": "Count (and with --duplicates list) the photos near-identical to an earlier "
              "one: perceptual hashes at most T bits apart, mean colours close "
              f"[default: {DEDUPE_THRESHOLD}].",
})
@click.option("--duplicates", is_flag=True,
              help="List the groups of near-identical photos on stdout, one group per "
                   "paragraph: the photo 'make --dedupe' keeps, then those it drops.")
@click.option("--scheduler", default=None, metavar="ADDRESS", help=_SCHEDULER_HELP)
@click.option("--cache-dir", type=_PATH, default=None, metavar="DIR", help=_CACHE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, warnings or summary.")
def index(source: str, match_px: int, duplicates: bool, scheduler: str | None,
          cache_dir: Path | None, quiet: bool, **settings: Any) -> None:
    """Index SOURCE (or bring its index up to date) without making a mosaic.

    Only new or changed files are decoded; removed ones drop out. An
    interrupted run keeps what it indexed and the next run resumes. The
    index is the one that 'make --match-px N' uses, N being this --tile-px,
    with the same --aspect, --crop and --colour-profiles.
    """
    from .library import TileLibrary

    given = _given(settings)
    threshold = given.pop("dedupe", None)
    # Resolved as 'make' resolves them, so that 'make' finds this index.
    options = MosaicOptions(**given)
    # Unsaid, the crop's own: the presets pair subject with convert (the default) and
    # centre with ignore (seed), so that 'index --crop centre' prepares the seed's index.
    profiles = options.colour_profiles if options.given("colour_profiles") else None
    _note_shadowed(source, quiet, flag="")
    tiles = _source_before_cluster(source, scheduler, cache_dir, progress_enabled(quiet))
    with _cluster(scheduler, quiet) as client:
        if client is None:
            library = TileLibrary.open(
                _opened_source(source, cache_dir, progress_enabled(quiet)), match_px,
                cache_dir=cache_dir, show_progress=progress_enabled(quiet),
                quiet=quiet, aspect=options.aspect_ratio, crop=options.crop,
                colour_profiles=profiles,
            )
        else:
            from .distributed import index_library

            library = index_library(client, tiles, match_px, cache_dir,
                                    progress_enabled(quiet), quiet,
                                    aspect=options.aspect_ratio, crop=options.crop,
                                    colour_profiles=profiles)
    stats = library.stats
    groups = None
    if duplicates or threshold is not None:
        threshold = DEDUPE_THRESHOLD if threshold is None else threshold
        groups = library.duplicate_groups(threshold)
    if not quiet and stats is not None:
        size = f"{match_px} px" if library.match_height == match_px else \
            f"{match_px}x{library.match_height} px"
        found = ""
        if groups is not None:
            dropped = sum(len(group) - 1 for group in groups)
            found = (f"; {counted(dropped, 'near-duplicate')} in "
                     f"{counted(len(groups), 'group')}" if groups else "; no near-duplicates")
            found += f" at --dedupe {threshold}"
        # The time first: "0 skipped in 0.86 s" read as the time the skipping took.
        click.echo(printable(
            f"mosaicist: {counted(len(library), 'tile')} of {size} from "
            f"{library.source.name} in {stats.seconds:.2f} s: "
            f"{stats.decoded:,} decoded, {stats.reused:,} unchanged, {stats.removed:,} removed, "
            f"{len(stats.failed):,} skipped{found}; index at {library.directory}"
        ), err=True)
    if duplicates and groups is not None:
        _list_duplicates(library, groups)


def _shown_metric(key: str, value: object) -> str:
    """A metric as score's table shows it (the JSON file keeps the values as they are).

    None is said in words: ``closest_repeat`` is None when no tile is used
    twice, an SSIM when the view is too small for it (the headline's
    "SSIM n/a").

    Examples
    --------
    >>> _shown_metric("closest_repeat", None), _shown_metric("ssim_view", None)
    ('none (no tile repeats)', 'n/a')
    >>> _shown_metric("max_uses", 120000), _shown_metric("psnr_view", 22.5)
    ('120,000', '22.5000')
    """
    if value is None:
        return "none (no tile repeats)" if key == "closest_repeat" else "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    whole = isinstance(value, int) and not isinstance(value, bool)
    return f"{value:,}" if whole else str(value)


def _list_duplicates(library: Any, groups: list) -> None:
    """Print each group: the photo kept, then each near-copy and its distance in bits
    (to the kept photo's mirror image where that is nearer: a mirrored copy)."""
    import numpy as np

    from .dedupe import hamming

    if not groups:
        return
    hashes, mirrors, _ = library.mirrored_signatures()
    ids = library.source_ids
    for number, group in enumerate(groups):
        if number:
            _print("")
        kept, copies = group[0], group[1:]
        _print(printable(ids[kept]))
        direct = hamming(hashes[copies], hashes[kept])
        mirrored = np.minimum(hamming(hashes[copies], mirrors[kept]),
                              hamming(mirrors[copies], hashes[kept]))
        for member, straight, flipped in zip(copies.tolist(), direct.tolist(),
                                             mirrored.tolist(), strict=True):
            said = (counted(straight, "bit") if straight <= flipped
                    else f"{counted(flipped, 'bit')}, mirrored")
            _print(f"    {printable(ids[member])}  ({said})")


@main.command(
    epilog="""\b
Examples:
  mosaicist score bear-mosaic.png bear.jpg
  mosaicist score night.png starry_night.jpg --cell 8 --json night-score.json
  mosaicist score bear-mosaic.jpg bear.jpg --placements bear.csv --view-px 8

\b
Metrics (see mosaicist.metrics):
  psnr_full            PSNR (dB) against the target scaled to the mosaic's size
  psnr_view            PSNR (dB) with every cell reduced to VIEW_PX pixels
  ssim_view            SSIM of the luma at that viewing scale
  ssim_rgb_view        mean SSIM of the R, G and B planes there
  ciede2000_*_view     CIEDE2000 colour difference (mean, 95th percentile)
  colourfulness_view, target_colourfulness_view   of mosaic and target there
  distinct_tiles, max_uses, closest_repeat   with --placements
PSNR is capped at 100 dB (identical images).
"""
)
@click.argument("mosaic", type=_PATH)
@click.argument("target", type=_PATH)
@_setting_options("cell_px", "aspect", "colour_profiles", help={
    "cell_px": "Target pixels per cell side that the mosaic was made with (the cell's width "
               f"when --aspect is not 1:1) [default: what JSON placements record, else "
               f"{MosaicOptions().cell_px}].",
    "aspect": "Shape of its cells and tiles as width:height [default: what JSON placements "
              "record, else 1:1].",
    "colour_profiles": "How the target's embedded colour profile is read, as 'make' read it: "
                       "convert (to sRGB) or ignore [default: what JSON placements record, "
                       "else convert; 'make --preset seed' ignores them]."})
@click.option("--view-px", type=_WHOLE, default=4, show_default=True, metavar="PX",
              help="Pixels per cell side at viewing scale.")
@click.option("--placements", "placements_path", type=_PATH, default=None, metavar="FILE",
              help="Placements (.csv or .json) from 'make --placements': adds tile "
                   "repetition metrics.")
@click.option("--json", "json_path", type=_FILE, default=None, metavar="FILE",
              help="Also write the metrics as JSON.")
def score(
    mosaic: Path,
    target: Path,
    cell_px: int | None,
    aspect: str | None,
    colour_profiles: str | None,
    view_px: int,
    placements_path: Path | None,
    json_path: Path | None,
) -> None:
    """Measure how faithfully MOSAIC reproduces TARGET (any tool's mosaic).

    The target is cut into cells of --cell pixels as 'make' does (centre
    crop); MOSAIC must be a whole number of tile pixels per cell.
    """
    import json

    from .metrics import headline, read_placements, score_mosaic
    from .paths import atomic_path, check_distinct, check_writable

    if json_path is not None:
        check_writable(json_path, "JSON file")
        # The metrics must not replace an input; the mosaic may be its own target.
        for given, what in ((mosaic, "mosaic"), (target, "target"),
                            (placements_path, "placements file")):
            check_distinct([(given, what), (json_path, "JSON file")])
    tile_grid = None if placements_path is None else read_placements(placements_path)
    # What JSON placements record is what the mosaic was made with: a --cell or --aspect
    # not given is theirs (a mosaic of 8 px cells scored at the default 16 was refused as
    # "the placements are for --cell 8, not --cell 16"), as --colour-profiles already is.
    recorded = (tile_grid.options if tile_grid is not None and tile_grid.settings_recorded
                else MosaicOptions())
    cell_px = recorded.cell_px if cell_px is None else cell_px
    try:
        # Only a missing --aspect means the recorded (else square) cells: an empty one is
        # refused by its parser.
        metrics = score_mosaic(mosaic, target, cell_px, view_px=view_px, tile_grid=tile_grid,
                               aspect=recorded.aspect if aspect is None else aspect,
                               colour_profiles=colour_profiles)
    except OptionError as error:
        # score_mosaic is given the placements read, not their file: the file is named here.
        if placements_path is None or not error.template.startswith("the placements are "):
            raise
        raise OptionError("{placements_file}: " + error.template,
                          placements_file=str(placements_path), **error.values) from None
    changed = metrics.pop("target_changed", None)
    if changed is not None:
        click.echo(printable(f"mosaicist: warning: {target}: not the picture "
                             f"{placements_path} was made from ({changed}); scored as it is"),
                   err=True)
    width = max(len(key) for key in metrics)
    for key, value in metrics.items():
        _print(f"{key:<{width}}  {_shown_metric(key, value)}")
    click.echo(f"mosaicist: {headline(metrics)}", err=True)
    if json_path is not None:
        try:
            with atomic_path(json_path) as temporary:
                temporary.write_text(json.dumps(metrics, indent=2) + "\n")
        except OSError as error:
            # A failed write names no file (a full disk said "No space left on device" alone).
            raise MosaicistError(f"{json_path}: cannot write the JSON file: "
                                 f"{error.strerror or error}") from None
