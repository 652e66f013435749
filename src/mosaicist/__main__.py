"""``python -m mosaicist``, and the ``mosaicist`` command."""

import sys


def run() -> None:
    """Run the command line (:func:`mosaicist.cli.main`).

    Ctrl+C while the command line loads (its imports take a tenth of a
    second) is reported as any later interrupt is, in one line, not as a
    traceback.
    """
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("mosaicist: error: interrupted\n")
        raise SystemExit(130) from None
    main()


if __name__ == "__main__":
    run()
