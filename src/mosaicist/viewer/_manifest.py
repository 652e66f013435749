"""The viewer manifest: what ``mosaicist view`` may serve beside a page.

``NAME.viewer.json`` is written with ``NAME.html`` and names the page, the
``.dzi`` descriptor, the tile folder, the folder of the originals and the
original of each source index (or null where the source id does not name a
file inside that folder): its path relative to that folder, with the escapes
of :func:`~mosaicist.sources.base.name_to_text` undone, since a backslash or
a byte that is not UTF-8 is part of a POSIX file name. The page's own
embedded JSON drives its scripts only: the server reads the manifest and
never the page.

A manifest sits beside the page, so whoever can edit or hand over one can do
the same with the other. Being written next to the pyramid is therefore not
what makes it trusted: it is signed (HMAC-SHA256) with a key kept in the
user's cache folder (:func:`mosaicist.paths.cache_dir`, which follows
``MOSAICIST_CACHE_DIR``) and readable only by its owner. A manifest copied
from elsewhere, edited, or signed before the key was removed does not verify,
and the server then serves the page and its tiles but no originals.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..errors import MosaicistError
from ..paths import CACHE_ENV, atomic_path, cache_dir
from ..sources.base import text_to_name

MANIFEST_FORMAT = "mosaicist-viewer-manifest"
MANIFEST_VERSION = 1
#: ``NAME.html`` -> ``NAME.viewer.json``.
MANIFEST_SUFFIX = ".viewer.json"
#: The signing key's file in the cache folder, and its length in bytes.
KEY_NAME = "viewer-key"
KEY_BYTES = 32


@dataclass(frozen=True)
class ViewerManifest:
    """What one viewer page may be served with; every name is relative to the page's folder.

    Attributes
    ----------
    page, descriptor, tiles : str
        File names of ``NAME.html`` and ``NAME.dzi``, and of the ``NAME_files``
        folder.
    source_root : pathlib.Path or None
        Absolute folder of the originals; None when there are none.
    sources : tuple of (str or None)
        Per source index of the page, the original's path relative to
        ``source_root`` (POSIX separators; names as :func:`os.fsdecode` gives
        them, which may hold a backslash, a control character or a lone
        surrogate for a byte that is not UTF-8), or None when it has no
        servable original.
    """

    page: str
    descriptor: str
    tiles: str
    source_root: Path | None
    sources: tuple[str | None, ...]


def manifest_path(page: str | os.PathLike[str]) -> Path:
    """Return the manifest of a viewer page: ``NAME.html`` -> ``NAME.viewer.json``."""
    page = Path(page)
    return page.with_name(page.stem + MANIFEST_SUFFIX)


#: What a part of a servable path may not hold: NUL, or a separator of this
#: system other than ``/`` (a backslash is an ordinary character on POSIX).
_NOT_IN_PART = "\0" + "".join(sep for sep in (os.sep, os.altsep) if sep and sep != "/")


def servable_source(source: str) -> str | None:
    """Return ``source`` when it is a relative path that stays in its folder, else None.

    Only plain relative POSIX paths are listed: no empty, ``.`` or ``..``
    part, no NUL and no separator but ``/``, so that joining one to the
    source folder can only name something under it (the server still checks
    where it leads after resolving symlinks).

    Parameters
    ----------
    source : str
        A path relative to the source folder as file names (what
        :func:`original_path` gives), not a tile id.

    Returns
    -------
    str or None
    """
    parts = source.split("/")
    if any(part in ("", ".", "..") or any(c in part for c in _NOT_IN_PART) for part in parts):
        return None
    return source


def original_path(source_id: str) -> str | None:
    r"""The original's path relative to the source folder, from a folder source's tile id.

    A folder's ids are relative paths as text: a backslash in a file name is
    written ``\\`` and a byte that is not UTF-8 ``\xHH``
    (:func:`~mosaicist.sources.base.name_to_text`), so such an id is not the
    file's path. Checked after unescaping, since ``\x2e\x2e`` is ``..`` too.

    Parameters
    ----------
    source_id : str
        A tile id of the page's placements.

    Returns
    -------
    str or None
        The path (:func:`servable_source`), or None when it would not stay
        inside the folder.
    """
    return servable_source(text_to_name(source_id))


def _plain_name(value: object) -> bool:
    return (isinstance(value, str) and value not in ("", ".", "..")
            and not any(character in value for character in "/\\\0"))


def _signing_key(create: bool) -> bytes | None:
    """The user's key (made on first use when ``create``); None when there is none."""
    path = cache_dir() / KEY_NAME
    with contextlib.suppress(OSError):
        key = path.read_bytes()
        if len(key) == KEY_BYTES:
            return key
    if not create:
        return None
    # Made under a private name, then linked into place: of two processes
    # making the key at once, both end up using the first one linked.
    temporary = path.with_name(f".{KEY_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
        try:
            os.link(temporary, path)
        except FileExistsError:  # another process's key, or a damaged one
            key = path.read_bytes()
            if len(key) == KEY_BYTES:
                return key
            os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return path.read_bytes()


def signing_key() -> bytes:
    """The user's signing key, made on first use (see the module's description).

    Called before a pyramid is written too (:meth:`DeepZoomFormat.check
    <mosaicist.render.DeepZoomFormat.check>`): a cache folder that cannot
    take the key otherwise failed the run after hours of tiles, naming the
    manifest's folder, which was writable, for the cache's problem.

    Raises
    ------
    MosaicistError
        When the key can be neither read nor made, naming its file.
    """
    try:
        key = _signing_key(create=True)
    except OSError as error:
        path = cache_dir() / KEY_NAME
        raise MosaicistError(
            f"{path}: cannot make the key that signs viewer manifests: "
            f"{error.strerror or error} (set {CACHE_ENV} to a folder that can take it)"
        ) from None
    except MosaicistError as error:
        # The user's cache folder itself cannot be made (a read-only home): --cache-dir
        # does not move the key, which `mosaicist view` reads from that folder, so the
        # message said only that the cache folder could not be made, named one the
        # command was never given, and not how to give another.
        folder = cache_dir(create=False)
        raise MosaicistError(
            f"{folder / KEY_NAME}: cannot make the key that signs viewer manifests: "
            f"{_reason_of(error, folder)} (the key is the user's, not the --cache-dir's: "
            f"set {CACHE_ENV} to a folder that can take it, for `mosaicist view` too)"
        ) from None
    assert key is not None
    return key


def _reason_of(error: MosaicistError, folder: Path) -> str:
    """The reason of a cache folder's error (``"<folder>: cannot make ...: why"``), lower-cased."""
    text = str(error).removeprefix(f"{folder}: ")
    return text[:1].lower() + text[1:]


def _signature(key: bytes, body: dict) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, text.encode("ascii"), hashlib.sha256).hexdigest()


def write_manifest(
    page: Path, descriptor: Path, tiles: Path, source_root: Path | None, sources: list[str]
) -> Path:
    """Write and sign ``NAME.viewer.json`` beside ``page``; return its path.

    Parameters
    ----------
    page, descriptor, tiles : pathlib.Path
        ``NAME.html``, ``NAME.dzi`` and ``NAME_files``, in one folder.
    source_root : pathlib.Path or None
        Absolute folder of the originals; None: no originals are served.
    sources : list of str
        The page's source ids, in its index order (a folder source's tile
        ids: see :func:`original_path`).

    Raises
    ------
    MosaicistError
        When the key or the manifest cannot be written, naming the file.
    """
    path = manifest_path(page)
    body = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "page": page.name,
        "descriptor": descriptor.name,
        "tiles": tiles.name,
        "source_root": None if source_root is None else str(source_root),
        "sources": [] if source_root is None else [original_path(s) for s in sources],
    }
    key = signing_key()
    try:
        text = json.dumps({**body, "signature": _signature(key, body)}, ensure_ascii=True)
        with atomic_path(path) as temporary:
            temporary.write_text(text + "\n", encoding="ascii")
    except OSError as error:
        raise MosaicistError(
            f"{path}: cannot write the viewer manifest: {error.strerror or error}"
        ) from None
    return path


def read_manifest(page: Path) -> tuple[ViewerManifest | None, str | None]:
    """Read and verify the manifest of ``page``.

    Returns
    -------
    manifest : ViewerManifest or None
        The manifest, or None when it is missing or not to be trusted.
    problem : str or None
        Why there is none, as one line naming the file; None when there is one.
    """
    path = manifest_path(page)
    try:
        body = json.loads(path.read_text(encoding="ascii"))
    except FileNotFoundError:
        return None, f"{page}: no manifest {path.name} beside it (made before mosaicist wrote one)"
    except (OSError, ValueError) as error:
        return None, f"{path}: not a readable viewer manifest ({error})"
    if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
        return None, f"{path}: not a mosaicist viewer manifest"
    signature = body.pop("signature", None)
    try:
        key = _signing_key(create=False)
    except OSError:  # no cache folder: nothing was signed here
        key = None
    if (
        key is None or not isinstance(signature, str)
        or not hmac.compare_digest(signature, _signature(key, body))
    ):
        return None, (f"{path}: not signed by this user's mosaicist (copied from elsewhere, "
                      f"edited, or the key {KEY_NAME} in the cache folder was removed)")
    root, sources = body.get("source_root"), body.get("sources")
    if (
        body.get("version") != MANIFEST_VERSION or body.get("page") != page.name
        or not all(_plain_name(body.get(name)) for name in ("descriptor", "tiles"))
        or not (root is None or isinstance(root, str) and os.path.isabs(root))
        or not isinstance(sources, list)
        or not all(s is None or isinstance(s, str) and servable_source(s) for s in sources)
    ):
        return None, f"{path}: not a valid viewer manifest for {page.name}"
    return ViewerManifest(
        page=page.name, descriptor=body["descriptor"], tiles=body["tiles"],
        source_root=None if root is None else Path(root), sources=tuple(sources),
    ), None
