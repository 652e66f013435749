"""Errors that are reported to the user as one clear line."""


class MosaicistError(Exception):
    """A problem with the user's input or environment.

    The command line prints ``str(error)`` as one line on stderr and exits
    with a non-zero status, without a traceback.
    """


class SourceError(MosaicistError):
    """A tile source that cannot be resolved or read at all."""


class DownloadError(MosaicistError):
    """A download failed or its checksum did not match."""
