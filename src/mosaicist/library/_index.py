"""The tile library: an on-disk index of tile thumbnails.

Layout of one index (one per source, ``match_px``, aspect, crop and colour
profiles), under the cache::

    indexes/<name>-<hash of source key>/px<match_px>[-<W>x<H>-<crop>[-<profiles>]]/
        manifest.sqlite     tile manifest (SQLite, WAL)
        tiles-<G>.u8        packed uint8 pixels, N x match_height x match_px x 3
        write.lock          held by the one process updating the index (its PID inside)
        duplicates/         near-duplicate leaders per threshold (a cache)
        dedupe-t<T>/        the library without near-duplicates at threshold T: its
                            packed tiles and its features (a cache; ``dedupe-v<V>-t<T>``
                            for a grouping rule of version V above 1)

Square centre-cropped indexes keep the folder ``px<match_px>`` they always
had; every other aspect or crop has its own (``px32-3x2-subject``). The crop
in the name is what the crop does here (:func:`mosaicist.crop.crop_method`):
``subject`` with a face detector, ``detail`` without one.

Tiles decoded with embedded ICC profiles applied (``colour_profiles``
``convert``) and ignored are never in one index. Each crop keeps its folder
for the value its presets use (:func:`mosaicist._profiles.usual_colour_profiles`:
``ignore`` for ``centre``, the seed's; ``convert`` for the subject crops, the
default preset's), and the other value has a folder of its own, named by it
(``px32-1x1-centre-convert``, ``px32-1x1-subject-ignore``). A source whose
pictures carry no profiles (datasets, arrays) has one index for both. The
manifest records the value its tiles were decoded with (meta
``colour_profiles``; none: ``ignore``, as indexes were made before the
setting). An index of the other value, an older one's, is brought to this one
by decoding again only the tiles of pictures that carry a profile that
changes them, found from the files' headers.

The manifest's ``tiles`` table is the *published* library: each tile's source
id, library position, slot in the packed file, size, modification time and
content hash (see :mod:`mosaicist.library._manifest`). Readers only ever see
a published state, read in one SQLite transaction, so they never see a
half-written index.

Updating (``TileLibrary.open``) decodes only new or changed entries. Their
pixels are appended to the current packed file and recorded in a ``staged``
table in batches, each batch flushed to disk before its rows commit; an
interrupted update therefore keeps every committed batch and the next update
resumes from there. Publishing then writes a new packed file in library order
when the order changed (so the published array is one contiguous memory map)
and swaps the manifest in a single transaction (see
:mod:`mosaicist.library._update`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, overload

import numpy as np

from .._choices import IDENTICAL_PHOTO_MODES
from .._profiles import COLOUR_PROFILE_MODES, check_colour_profiles, usual_colour_profiles
from ..aspect import SQUARE, aspect_pair, format_aspect, height_for
from ..crop import CROP_MODES, Window, crop_method, window_size
from ..dedupe import (
    DEDUPE_VERSION,
    duplicate_groups,
    duplicate_leaders,
    identical_leaders,
    mirrored_tile_signatures,
)
from ..errors import (
    MosaicistError,
    OptionError,
    alternatives,
    as_flag,
    check_range,
    counted,
    shown_type,
)
from ..options import TILE_PX_RANGE
from ..paths import (
    STORED_ARRAY_ERRORS,
    atomic_path,
    first_missing,
    mark_used,
    remove_older_generations,
)
from ..paths import cache_dir as default_cache_dir
from ..sources import TileSource, open_source
from ._manifest import (
    connect,
    get_meta,
    has_added_columns,
    has_mirror_column,
    manifest_errors,
    meta_count,
    order_stamp,
    read_order,
    write_order,
)
from ._shards import SlotSpace, read_shards, unreadable_file
from ._update import (
    COPY_CHUNK,
    Decoder,
    TileFormat,
    UpdateStats,
    index_profiles,
    is_not_writable,
    not_writable,
    sign_mirrors,
    update_index,
)


def _index_dir(cache: Path, source_key: str, match_px: int,
               aspect: tuple[int, int] = SQUARE, crop: str = "centre",
               colour_profiles: str | None = None) -> Path:
    """The folder of the index of ``source_key`` at ``match_px``, ``aspect``, crop method
    and ``colour_profiles`` (None: the crop's usual, see the module docstring)."""
    digest = hashlib.sha1(source_key.encode()).hexdigest()[:12]
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", source_key.rstrip("/").split("/")[-1])[:40]
    name = f"px{match_px}"
    usual = usual_colour_profiles(crop)
    if colour_profiles not in (None, usual):
        name += f"-{aspect[0]}x{aspect[1]}-{crop}-{colour_profiles}"
    elif aspect != SQUARE or crop != "centre":
        name += f"-{aspect[0]}x{aspect[1]}-{crop}"
    return cache / "indexes" / f"{tail or 'source'}-{digest}" / name


class MissingIndexError(MosaicistError):
    """An index that :meth:`TileLibrary.open` was to read as it is, and that is not there.

    Attributes
    ----------
    directory : pathlib.Path
        The index's folder.
    name : str
        The source's name.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.directory, self.name = directory, name
        super().__init__(f"{directory}: the tile index of {name} is not there (deleted, or "
                         "in a cache this process cannot see); index the tiles again")

    def __reduce__(self) -> tuple:
        # Pickled by worker processes: the exception's args are its message, not these.
        return (type(self), (self.directory, self.name))


def _aspect_pair(aspect: tuple[int, int] | str) -> tuple[int, int]:
    """``aspect`` checked and reduced (``"3:2"`` or ``(6, 4)`` -> ``(3, 2)``).

    Anything else (``5``, ``(1, 2, 3)``) is an :class:`OptionError` naming
    ``aspect``, not a pair made of its first two items.
    """
    return aspect_pair(aspect)


class TileLibrary:
    """A published tile index: tiles in library order, memory-mapped.

    Use :meth:`TileLibrary.open` to index (or update) a source and open it.

    Attributes
    ----------
    source : TileSource
        Where the tiles come from.
    match_px : int
        Width of the tiles in pixels.
    match_height : int
        Their height: ``height_for(match_px, aspect)``.
    aspect : (int, int)
        Their aspect, ``(width, height)``.
    crop : str
        How their crop windows were placed: ``centre`` or ``subject``.
    colour_profiles : str
        Whether their pictures' embedded ICC profiles were applied: ``ignore``
        or ``convert`` (for a source whose pictures carry none, the crop's usual).
    source_ids : list of str
        Each tile's source id, in library order.
    tiles : numpy.ndarray
        ``(N, match_height, match_px, 3)`` uint8, memory-mapped, in library order
        (for an index a cluster made, a :class:`~mosaicist.library._shards.ShardedTiles`
        over its shard files, which behaves as that array).
    directory : pathlib.Path
        The index's folder in the cache.
    generation : int
        Generation of the packed file. With the number of tiles, it names
        the library's pixels (the caches derived from them are named by
        both): photos removed from the end of the library keep it. Whether
        the index still publishes this library is :meth:`is_current`.
    stats : UpdateStats or None
        What the update that opened this library did.
    positions : numpy.ndarray or None
        Each tile's position in the published index, for a library that
        leaves some out (:meth:`without_duplicates`); None: all, in order.
    duplicates_dropped : int
        Tiles :meth:`without_duplicates` left out to make this library.
    identical_dropped : int
        Tiles :meth:`without_identical` left out to make this library.

    Examples
    --------
    >>> library = TileLibrary.open("photos/", match_px=32, aspect="3:2")  # doctest: +SKIP
    >>> library.tiles.shape  # doctest: +SKIP
    (1234, 21, 32, 3)
    """

    def __init__(
        self,
        source: TileSource,
        match_px: int,
        directory: Path,
        source_ids: list[str],
        tiles: np.ndarray,
        generation: int,
        stats: UpdateStats | None = None,
        *,
        aspect: tuple[int, int] = SQUARE,
        crop: str = "centre",
        positions: np.ndarray | None = None,
        duplicates_dropped: int = 0,
        identical_dropped: int = 0,
        work_dir: Path | None = None,
        colour_profiles: str = "ignore",
        published: str | None = None,
    ) -> None:
        self.source = source
        self.match_px = match_px
        self.aspect = aspect
        self.match_height = height_for(match_px, aspect)
        self.crop = crop
        self.colour_profiles = colour_profiles
        self.directory = directory
        self.source_ids = source_ids
        self.tiles = tiles
        self.generation = generation
        self.stats = stats
        self.positions = positions
        self.duplicates_dropped = duplicates_dropped
        self.identical_dropped = identical_dropped
        # Where this library's derived files go: the index folder, or for a
        # library that leaves tiles out, a folder of its own.
        self._work_dir = work_dir or directory
        # The manifest's state of the published rows this library was read from
        # (:func:`~._manifest.order_stamp`); None: not read from a manifest.
        self._published = published
        # How the first grouping signs an older index's mirrors (see _sign_mirrors):
        # with a progress bar where the library was opened with one, and once only.
        self._show_progress = False
        self._quiet = True
        self._mirrors_signed = False

    def __len__(self) -> int:
        return len(self.source_ids)

    def __repr__(self) -> str:
        shape = "" if self.aspect == SQUARE else f", aspect={format_aspect(self.aspect)!r}"
        return (f"TileLibrary({self.source.name!r}, tiles={len(self)}, "
                f"match_px={self.match_px}{shape})")

    @property
    def features_dir(self) -> Path:
        """Folder for cached derived features of this library."""
        path = self._work_dir / "features"
        # A read-only cache: the derived features are then made in memory by their users.
        with contextlib.suppress(OSError):
            path.mkdir(parents=True, exist_ok=True)
        return path

    def is_current(self) -> bool:
        """Whether the index still publishes the tiles this library was read from.

        False once an update (of this process or another) has published
        other tiles: photos added, edited or removed, even where the
        :attr:`generation` stayed (photos removed from the end); or when
        the index is gone. A reader that keeps a library open (the studio's
        previews) reads it again then. Only reads: a deleted index is not
        made again by asking.

        Returns
        -------
        bool
            True while the manifest's published rows are those of this library.
        """
        if self._published is None or not (self.directory / "manifest.sqlite").is_file():
            return False
        with manifest_errors(self.directory):
            return _published_state(self.directory) == self._published

    def _with(self, source_ids: list[str], tiles: np.ndarray, positions: np.ndarray | None,
              **changes: object) -> TileLibrary:
        """A library over some of these tiles, with the same index and settings."""
        settings: dict[str, object] = {
            "aspect": self.aspect, "crop": self.crop, "positions": positions,
            "duplicates_dropped": self.duplicates_dropped,
            "identical_dropped": self.identical_dropped, "work_dir": self._work_dir,
            "colour_profiles": self.colour_profiles, "published": self._published,
        }
        settings.update(changes)
        library = TileLibrary(self.source, self.match_px, self.directory, source_ids, tiles,
                              self.generation, self.stats, **settings)  # type: ignore[arg-type]
        library._show_progress, library._quiet = self._show_progress, self._quiet
        library._mirrors_signed = self._mirrors_signed
        return library

    def limit(self, count: int | None) -> TileLibrary:
        """Return a library of the first ``count`` tiles (all when None).

        Parameters
        ----------
        count : int or None
            How many tiles to keep, from the start of library order.

        Returns
        -------
        TileLibrary
            The same index seen through fewer tiles (this one when all are kept).

        Raises
        ------
        OptionError
            Naming ``limit``, when ``count`` is not a whole number of at least 1.
        """
        if count is None:
            return self
        # Checked before it is compared or sliced with: "3" or 1.5 would fail there, raw.
        count = check_range("limit", count, 1, whole=True)
        if count >= len(self):
            return self
        positions = None if self.positions is None else self.positions[:count]
        return self._with(self.source_ids[:count], self.tiles[:count], positions)

    # -- what the manifest holds beside the pixels -------------------------------------

    def windows_for(self, source_ids: Sequence[str]) -> dict[str, Window]:
        """The crop windows of the given tiles, as the index stored them.

        Parameters
        ----------
        source_ids : sequence of str
            Tile ids (repeats are fine).

        Returns
        -------
        dict
            Each id's :class:`~mosaicist.crop.Window`, in its original's
            full-size pixels. Ids without a stored window (indexes made
            before windows were stored, all centre crops) are left out.
        """
        return _read_windows(self.directory, source_ids)

    def content_hashes(self, source_ids: Sequence[str]) -> dict[str, str]:
        """The content hash of each given tile's file, as the index stored it.

        Saved with placements, so that a later render can tell a file that
        changed since (:func:`mosaicist.render.changed_tiles`).

        Parameters
        ----------
        source_ids : sequence of str
            Tile ids (repeats are fine).

        Returns
        -------
        dict
            Each id's hex digest (:func:`mosaicist.imaging.content_hash`), as
            it was when this library was read.

        Raises
        ------
        MosaicistError
            When the index no longer publishes this library (:meth:`is_current`):
            another run updated it since, and the hashes it holds now may be
            those of photos edited since, not of the photos this library holds.
        """
        rows = _read_rows(self.directory, source_ids, "size, mtime_ns, content_hash",
                          published=self._published)
        if rows is None:
            raise MosaicistError(
                f"{self.directory}: the tile index changed since this library was read "
                "(another run updated it): the content hashes of its photos as they were "
                "then are not known")
        return {row[0]: row[3] for row in rows}

    def signatures(self) -> tuple[np.ndarray, np.ndarray]:
        """Every tile's near-duplicate signature (:func:`mosaicist.dedupe.tile_signatures`).

        Read from the manifest, where the update stored them; a tile
        without one there (an index opened without updating since before
        they were stored) is signed from its pixels now.

        Returns
        -------
        hashes : numpy.ndarray
            ``(N,)`` uint64 perceptual hashes.
        colours : numpy.ndarray
            ``(N, 3)`` uint8 mean colours.
        """
        hashes, _, colours = self._stored_signatures()
        return hashes, colours

    def mirrored_signatures(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`signatures`, with the hashes of the tiles' photos mirrored left-right.

        As :func:`mosaicist.dedupe.mirrored_tile_signatures` gives them, read
        from the manifest. An index of an older version, whose rows lack
        them, is given them first, once (:meth:`_sign_mirrors`). A tile whose
        mirror's hash is still not stored (its photo could not be read again,
        or the index cannot be written) has its own hash in its place: its
        mirrored copies are then grouped with it from their side only.

        Returns
        -------
        hashes : numpy.ndarray
            ``(N,)`` uint64 perceptual hashes.
        mirrors : numpy.ndarray
            ``(N,)`` uint64 hashes of the mirror images.
        colours : numpy.ndarray
            ``(N, 3)`` uint8 mean colours.
        """
        self._sign_mirrors()
        return self._stored_signatures()

    def _sign_mirrors(self) -> None:
        """Give an older index's rows their mirrors' hashes, for the first grouping.

        An index made before the mirrors' hashes were stored is not signed
        anew by its updates (:func:`~mosaicist.library._update.sign_mirrors`):
        only the grouping of near-duplicates needs them, so it asks for them,
        once per library. Where that moves the index to a new generation (a
        signature changed), this library goes on from it: its rows and
        pixels are the same, and the caches named by the old generation,
        made from the old signatures, are not served.
        """
        if self._mirrors_signed or self._published is None:
            return
        self._mirrors_signed = True
        moved = sign_mirrors(self.source, self._format(), self.directory, self._published,
                             self._show_progress, self._quiet)
        if moved is not None:
            self._published, self.generation = moved

    def _format(self) -> TileFormat:
        """The index's :class:`~mosaicist.library._update.TileFormat`."""
        return TileFormat(self.match_px, self.aspect, self.crop, crop_method(self.crop),
                          self.colour_profiles)

    def _stored_signatures(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`mirrored_signatures` as the manifest stores them now (nothing signed)."""
        count = len(self)
        hashes = np.zeros(count, np.uint64)
        mirrors = np.zeros(count, np.uint64)
        colours = np.zeros((count, 3), np.uint8)
        found = np.zeros(count, bool)
        rows = []
        with manifest_errors(self.directory):
            connection = connect(self.directory)
            try:
                # The state and the rows in one read: rows another process published
                # since this library was read may be of other pictures under the same
                # ids (a photo edited), whose signatures are not of these tiles.
                connection.execute("BEGIN")
                if ((self._published is None or order_stamp(connection) == self._published)
                        and has_added_columns(connection)):
                    # A manifest not updated since before the mirrors: none stored.
                    mirror = "phash_mirror" if has_mirror_column(connection) else "NULL"
                    rows = connection.execute(
                        f"SELECT source_id, phash, mean_rgb, {mirror} FROM tiles "
                        f"ORDER BY position"
                    ).fetchall()
                connection.execute("COMMIT")
            finally:
                connection.close()
        if self.positions is None and len(rows) >= count and all(
            row[0] == source_id for row, source_id in zip(rows, self.source_ids, strict=False)
        ):
            stored = rows[:count]
        else:
            # The manifest has changed since this library was read, or this library
            # leaves tiles out: match by id.
            by_id = {row[0]: row for row in rows}
            stored = [by_id.get(source_id, (source_id, None, None, None))
                      for source_id in self.source_ids]
        for position, (_, phash, colour, mirror) in enumerate(stored):
            if phash is not None and colour is not None:
                hashes[position] = phash & 0xFFFF_FFFF_FFFF_FFFF
                mirrors[position] = (phash if mirror is None else mirror) & 0xFFFF_FFFF_FFFF_FFFF
                colours[position] = (colour >> 16 & 255, colour >> 8 & 255, colour & 255)
                found[position] = True
        missing = np.flatnonzero(~found)
        for start in range(0, len(missing), COPY_CHUNK):
            part = missing[start:start + COPY_CHUNK]
            hashes[part], mirrors[part], colours[part] = mirrored_tile_signatures(
                self.tiles[part])
        return hashes, mirrors, colours

    # -- near-duplicates -----------------------------------------------------------------

    def duplicate_leaders(self, threshold: int) -> np.ndarray:
        """Each tile's leader at ``threshold`` (see :mod:`mosaicist.dedupe`).

        Kept in the index folder per threshold and library state, so a warm
        run reads them back. An index of an older version is first given its
        photos' mirrors' hashes, once (:meth:`mirrored_signatures`): the index
        then moves to its next :attr:`generation` where a signature changed,
        and this library with it.

        Parameters
        ----------
        threshold : int
            Most bits in which near-identical tiles' hashes differ (0 to 64).

        Returns
        -------
        numpy.ndarray
            ``(N,)`` int64 positions in this library: a tile's own when it
            is kept, else the first kept tile it duplicates.
        """
        threshold = check_range("dedupe", threshold, 0, 64, "bits", whole=True)
        # Before the cache is named: signing an older index's mirrors moves its generation.
        self._sign_mirrors()

        def grouped() -> np.ndarray:
            hashes, mirrors, colours = self._stored_signatures()
            return duplicate_leaders(hashes, colours, threshold, mirrors)

        # Named by the hashing's version too: leaders cached by a version that hashed or
        # grouped otherwise are not served for this one's.
        return self._cached_leaders(
            f"leaders-v{DEDUPE_VERSION}-g{self.generation}-n{len(self)}-t{threshold}.npy",
            _LEADERS, grouped)

    def _cached_leaders(self, name: str, kind: re.Pattern[str],
                        grouped: Callable[[], np.ndarray]) -> np.ndarray:
        """Leaders kept as ``duplicates/<name>`` in the work folder, else ``grouped()``, kept."""
        cache = self._work_dir / "duplicates" / name
        with contextlib.suppress(*STORED_ARRAY_ERRORS):
            stored = np.load(cache, allow_pickle=False)
            # With its checksum: a damaged file dropped real photos as copies of others,
            # on every run (an entry set to another kept tile's position is still a
            # well-formed leader).
            if (stored.shape == (len(self) + 1,) and stored.dtype == np.int64
                    and stored[-1] == _leaders_checksum(stored[:-1])):
                mark_used(cache)
                return stored[:-1]
        leaders = grouped()
        with contextlib.suppress(OSError):  # a cache: a read-only folder costs time only
            _save_replacing(cache, np.append(leaders, _leaders_checksum(leaders)), kind,
                            self.generation)
        return leaders

    def cuts_as_opened(self, crop: str) -> bool:
        """Whether ``crop`` cuts this library's photos as the crop it was opened with did.

        Parameters
        ----------
        crop : str
            A crop setting (``centre`` or ``subject``).

        Returns
        -------
        bool
            True where both do the same here: the same method, or photos of one
            size that are their own windows.
        """
        def method(value: str) -> str:
            return crop_method(_source_crop(self.source, self.aspect, value))

        return method(crop) == method(self.crop)

    def duplicate_groups(self, threshold: int) -> list[np.ndarray]:
        """The groups of near-identical tiles: each its first tile's position, then its copies'.

        Only groups of two or more, in library order of their first tiles.

        Parameters
        ----------
        threshold : int
            Most bits in which near-identical tiles' hashes differ (0 to 64).

        Returns
        -------
        list of numpy.ndarray
            One array of library positions per group.
        """
        return duplicate_groups(self.duplicate_leaders(threshold))

    def without_duplicates(self, threshold: int) -> TileLibrary:
        """A library without the tiles near-identical to an earlier kept one.

        The kept tiles keep their order. Their pixels are copied, a chunk at
        a time, to a packed file of their own in the index folder (kept for
        the next run), so memory stays bounded for libraries of millions.

        Parameters
        ----------
        threshold : int
            Most bits in which near-identical tiles' hashes differ (0 to 64).

        Returns
        -------
        TileLibrary
            This library when nothing is dropped; else one whose
            ``duplicates_dropped`` says how many were.

        Raises
        ------
        OptionError
            Naming ``dedupe`` (the setting that asks for this), when
            ``threshold`` is not a whole number from 0 to 64.
        """
        # Checked here too: it names the folder below.
        threshold = check_range("dedupe", threshold, 0, 64, "bits", whole=True)
        leaders = self.duplicate_leaders(threshold)
        # Named by the grouping rule's version too, as the cached leaders are: what is
        # cached in it (the kept tiles' pixels, their features) is named by the library's
        # generation and size, which another rule keeping as many tiles, but other ones,
        # shares. Version 1's folder keeps the name it had.
        version = "" if DEDUPE_VERSION == 1 else f"v{DEDUPE_VERSION}-"
        return self._leaders_only(leaders, f"dedupe-{version}t{threshold}",
                                  "duplicates_dropped")

    def identical_leaders(self) -> np.ndarray:
        """Each tile's leader among identical tiles (:func:`mosaicist.dedupe.identical_leaders`).

        Kept in the index folder per library state, as :meth:`duplicate_leaders`
        keeps its own, so a warm run reads them back.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` int64 positions in this library: a tile's own when no
            earlier tile has its pixels, else the first one that has them.
        """
        def grouped() -> np.ndarray:
            hashes, _, colours = self._stored_signatures()
            return identical_leaders(hashes, colours, self.tiles)

        return self._cached_leaders(f"identical-g{self.generation}-n{len(self)}.npy",
                                    _IDENTICAL, grouped)

    def without_identical(self) -> TileLibrary:
        """A library without the tiles identical, pixel for pixel, to an earlier one.

        The same picture twice in a library (a photo copied into two
        folders) is one photo: kept twice, use limits would let it fill
        twice its share and spacing would put the copies side by side. The
        kept tiles keep their order; their pixels are copied to a packed
        file as :meth:`without_duplicates` copies its own.

        Returns
        -------
        TileLibrary
            This library when no two tiles are identical; else one whose
            ``identical_dropped`` says how many were left out.
        """
        return self._leaders_only(self.identical_leaders(), "identical", "identical_dropped")

    def without_copies(self, dedupe: int | None, identical_photos: str = "keep"
                       ) -> TileLibrary:
        """The library as the ``dedupe`` and ``identical_photos`` settings ask for it.

        Near-duplicates at ``dedupe`` bits (:meth:`without_duplicates`) take
        the identical tiles with them: those share their signature. Else, with
        ``identical_photos="drop"``, the identical tiles go
        (:meth:`without_identical`).

        Parameters
        ----------
        dedupe : int or None
            Threshold of near-duplicates, or None to keep them.
        identical_photos : {"keep", "drop"}
            Whether to leave out the tiles identical to an earlier one.

        Returns
        -------
        TileLibrary
            This library, or one without those tiles.

        Raises
        ------
        OptionError
            Naming ``identical_photos`` when it is neither value.
        """
        if identical_photos not in IDENTICAL_PHOTO_MODES:
            raise OptionError("unknown {identical_photos} {value}; use {known}",
                              value=repr(identical_photos),
                              known=" or ".join(IDENTICAL_PHOTO_MODES))
        if dedupe is not None:
            return self.without_duplicates(dedupe)
        return self.without_identical() if identical_photos == "drop" else self

    def _leaders_only(self, leaders: np.ndarray, folder: str, count_name: str) -> TileLibrary:
        """The library of the tiles that lead themselves in ``leaders``, in a work
        folder ``folder``, the tiles left out added to the count ``count_name``."""
        kept = np.flatnonzero(leaders == np.arange(len(self)))
        if len(kept) == len(self):
            return self
        work = self._work_dir / folder
        store = work / f"tiles-g{self.generation}-n{len(self)}.u8"
        tiles = _packed_subset(self.tiles, kept, store, self.generation)
        positions = kept if self.positions is None else self.positions[kept]
        dropped = getattr(self, count_name) + len(self) - len(kept)
        return self._with([self.source_ids[index] for index in kept.tolist()], tiles, positions,
                          work_dir=work, **{count_name: dropped})

    # -- construction ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        source: str | os.PathLike[str] | TileSource = "cifar10",
        match_px: int = 32,
        cache_dir: str | os.PathLike[str] | None = None,
        show_progress: bool = False,
        update: bool = True,
        quiet: bool = True,
        *,
        aspect: tuple[int, int] | str = SQUARE,
        crop: str = "centre",
        decoder: Decoder | None = None,
        require_index: bool = False,
        colour_profiles: str | None = None,
    ) -> TileLibrary:
        """Index ``source`` at ``match_px`` and ``aspect`` (incrementally) and open the result.

        Parameters
        ----------
        source : str, path-like or TileSource
            A source spec (see :func:`mosaicist.sources.open_source`) or source.
        match_px : int
            Width of the tiles, in pixels.
        cache_dir : path-like, optional
            Cache directory (default: ``MOSAICIST_CACHE_DIR`` or the user cache).
        show_progress : bool
            Draw progress bars on stderr.
        update : bool
            Bring the index up to date with the source first (default). With
            False, open the last published index as it is.
        quiet : bool
            Suppress warnings about skipped files and about what the folder's
            scan left out (links to folders, pipes).
        aspect : (int, int) or str
            The tiles' aspect (``(3, 2)`` or ``"3:2"``); the height follows.
        crop : {"centre", "subject"}
            How each photo's crop window is placed (:mod:`mosaicist.crop`).
            A source whose images all have one size, already of the aspect,
            is indexed once for both.
        decoder : callable, optional
            Decode what the update needs elsewhere, into shards of the index
            (a Dask cluster: :func:`mosaicist.distributed.index_library`); the
            library is then published in those shards.
        require_index : bool
            With ``update`` False: an index that is not there is an error
            (:class:`MissingIndexError`), and no empty one is made in its place
            (else it reads as a source without tiles).
        colour_profiles : {"ignore", "convert"}, optional
            Whether the pictures' embedded ICC profiles are applied
            (:mod:`mosaicist._profiles`); default: as the presets that use
            ``crop`` do (``ignore`` for ``centre``, ``convert`` for ``subject``).
            Each value has its own index (see the module docstring).

        Raises
        ------
        OptionError
            For a source, size, aspect, crop or colour profiles that cannot be used (a
            ``match_px`` that is no whole number included: it names the
            index's folder), before anything is written to the cache.
        MissingIndexError
            With ``require_index`` and without ``update``, when the index is not there.
        MosaicistError
            When the source has no usable tile.
        """
        if not isinstance(source, str | os.PathLike | TileSource):
            raise OptionError("{source} must be a source spec (a text), a path or a "
                              "TileSource, got {value}", value=shown_type(source))
        match_px = check_range("match_px", match_px, *TILE_PX_RANGE, "pixels", whole=True)
        # Else Python's truth: update="no" indexed, require_index="no" required the index.
        show_progress, update, quiet, require_index = (
            as_flag(name, value) for name, value in (
                ("show_progress", show_progress), ("update", update), ("quiet", quiet),
                ("require_index", require_index)))
        pair = _aspect_pair(aspect)
        if not isinstance(crop, str) or crop not in CROP_MODES:
            raise OptionError("unknown {crop} {value!r}; use {known}", value=crop,
                              known=alternatives(CROP_MODES))
        if colour_profiles is not None:
            check_colour_profiles(colour_profiles)
        cache = default_cache_dir(cache_dir, create=False)
        # The folders this call makes: removed again where the source turns out to hold no
        # tile, so that a refused run leaves the disk as it was (the cache's own folder
        # where it is left empty: a download in it stays).
        cache_made = first_missing(cache)
        cache = default_cache_dir(cache_dir)
        if not isinstance(source, TileSource):
            source = open_source(source, cache_dir=cache, show_progress=show_progress)
        if colour_profiles is None:
            colour_profiles = usual_colour_profiles(crop)
        crop = _source_crop(source, pair, crop)
        method = crop_method(crop)
        if not source.reads_profiles:
            colour_profiles = usual_colour_profiles(method)  # no profiles: the same tiles
        tile = TileFormat(match_px, pair, crop, method, colour_profiles)
        directory = _index_dir(cache, source.key, match_px, pair, tile.method, colour_profiles)
        manifest = directory / "manifest.sqlite"
        if require_index and not update and not manifest.is_file():
            # Opened, it would be made empty, and the source's photos blamed for it.
            raise MissingIndexError(directory, source.name)
        if not update and source.reads_profiles and manifest.is_file():
            _check_profiles(directory, tile, source.name, require_index)
        index_made = first_missing(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as error:
            # Said raw, "File exists" did not say that a file is where a folder must be.
            raise MosaicistError(
                f"{directory}: cannot make the tile index's folder: a file is in its way "
                f"({(error.strerror or str(error)).lower()}); move it or give another cache "
                f"(--cache-dir)") from None
        except OSError as error:
            if not is_not_writable(error):
                raise
            raise not_writable(directory, error) from None
        stats = None
        if update:
            stats = update_index(source, tile, directory, show_progress, quiet,
                                 decoder=decoder)
        with manifest_errors(directory):
            library = cls._read(source, tile, directory, stats)
        library._show_progress, library._quiet = show_progress, quiet
        if len(library) == 0:
            # Said with what was tried: the warnings before it may have scrolled away (or
            # not been shown, under -q).
            failed = len(stats.failed) if stats is not None and stats.failed else 0
            notes = [f"{counted(failed, 'file')} could not be read"] if failed else []
            # A folder of camera RAW files, say, is not a folder without pictures.
            left_out = source.left_out_note() if stats is not None else None
            if left_out:
                notes.append(left_out)
            tried = f" ({'; '.join(notes)})" if notes else ""
            _remove_made(index_made, cache_made)
            raise MosaicistError(f"{source.name}: no usable tile images found{tried}")
        return library

    @classmethod
    def _read(
        cls, source: TileSource, tile: TileFormat, directory: Path, stats: UpdateStats | None
    ) -> TileLibrary:
        shape = (tile.height, tile.width, 3)
        settings = {"aspect": tile.aspect, "crop": tile.crop,
                    "colour_profiles": tile.colour_profiles}
        for _attempt in range(5):
            connection = connect(directory)
            try:
                connection.execute("BEGIN")
                generation = meta_count(connection, "generation")
                publication = get_meta(connection, "publication")
                stamp = order_stamp(connection)
                order = (None if publication is None
                         else read_order(directory, publication, stamp))
                if order is None:
                    rows = connection.execute(
                        "SELECT source_id, slot FROM tiles ORDER BY position"
                    ).fetchall()
                shards = read_shards(connection)
                connection.execute("COMMIT")
            finally:
                connection.close()
            space = SlotSpace(directory, generation, shards, shape)
            if order is not None:
                source_ids, slots = order
            else:
                source_ids = [row[0] for row in rows]
                slots = space.slot_array((row[1] for row in rows), len(rows))
                if publication is not None:
                    write_order(directory, publication, stamp, source_ids, slots)
            if not source_ids:
                empty = np.zeros((0, *shape), np.uint8)
                return cls(source, tile.width, directory, [], empty, generation, stats,
                           published=stamp, **settings)  # type: ignore[arg-type]
            try:
                # One packed file in order is one memory map; shards are runs of maps.
                tiles = space.library_tiles(slots)
            except FileNotFoundError as error:
                if _current_generation(directory) == generation:
                    # Not a writer swapping files: the packed file is gone.
                    raise MosaicistError(
                        f"{error.filename or space.store}: index is damaged (packed file "
                        f"missing); delete {directory} to rebuild it"
                    ) from None
                # A writer replaced the packed file between our two reads: read again.
                time.sleep(0.05)
                continue
            except ValueError:
                space.check(slots)  # says which file is short
                raise
            except OSError as error:
                # A folder, or a file this user may not read, where a packed file must
                # be: said raw, IsADirectoryError reached API callers as a traceback.
                raise unreadable_file(error, space.store, directory) from None
            return cls(source, tile.width, directory, source_ids,
                       tiles,  # type: ignore[arg-type]  # ShardedTiles serves as the array
                       generation, stats, published=stamp,
                       **settings)  # type: ignore[arg-type]
        # Five reads each found another run's new generation: it is still writing.
        raise MosaicistError(f"{directory}: the index changed every time it was read (another "
                             "mosaicist run is updating it); try again when that run is done")


def _check_profiles(directory: Path, tile: TileFormat, name: str, require_index: bool) -> None:
    """Refuse an index read without updating whose tiles were decoded with the other
    ``colour_profiles`` (an older index, before an update has brought it to this value).

    Raises
    ------
    MissingIndexError
        With ``require_index``: the index at these settings is not there yet.
    MosaicistError
        Otherwise, saying so.
    """
    with manifest_errors(directory):
        connection = connect(directory)
        try:
            decoded = index_profiles(connection)
            empty = meta_count(connection, "generation") == 0 and not connection.execute(
                "SELECT 1 FROM tiles LIMIT 1").fetchone()
        finally:
            connection.close()
    if decoded == tile.colour_profiles or empty:
        return
    if require_index:
        raise MissingIndexError(directory, name)
    raise MosaicistError(f"{directory}: the tile index of {name} was decoded with colour "
                         f"profiles {'converted' if decoded == 'convert' else 'ignored'}; "
                         "index the tiles again to read it with them "
                         f"{'converted' if tile.colour_profiles == 'convert' else 'ignored'}")


def _read_windows(directory: Path, source_ids: Sequence[str]) -> dict[str, Window]:
    """The crop windows the manifest in ``directory`` holds for ``source_ids``."""
    rows = _read_rows(directory, source_ids,
                      "crop_left, crop_top, crop_width, crop_height", "crop_left IS NOT NULL",
                      added=True)
    return {row[0]: Window(*row[1:]) for row in rows}


def _read_stamps(directory: Path, source_ids: Sequence[str]) -> dict[str, TileStamp]:
    """What the manifest in ``directory`` holds of the files of ``source_ids``."""
    rows = _read_rows(directory, source_ids, "size, mtime_ns, content_hash")
    return {row[0]: TileStamp(*row[1:]) for row in rows}


@overload
def _read_rows(directory: Path, source_ids: Sequence[str], columns: str, condition: str = "",
               *, added: bool = False, published: None = None) -> list[tuple]: ...


@overload
def _read_rows(directory: Path, source_ids: Sequence[str], columns: str, condition: str = "",
               *, added: bool = False, published: str) -> list[tuple] | None: ...


def _read_rows(directory: Path, source_ids: Sequence[str], columns: str, condition: str = "",
               *, added: bool = False, published: str | None = None) -> list[tuple] | None:
    """``source_id`` and ``columns`` of the manifest's tiles among ``source_ids``.

    ``added``: the columns are among those later versions added (none from
    an older manifest). ``published``: the state of the published rows the
    caller read (:func:`~._manifest.order_stamp`); the rows are read in the
    same transaction as the state, and None is returned where it is another.
    """
    wanted = list(dict.fromkeys(source_ids))
    if not wanted:
        return []
    with manifest_errors(directory):
        connection = connect(directory)
        try:
            if added and not has_added_columns(connection):
                return []
            connection.execute("CREATE TEMP TABLE IF NOT EXISTS wanted("
                               "source_id TEXT PRIMARY KEY)")
            connection.execute("DELETE FROM wanted")
            connection.executemany("INSERT OR IGNORE INTO wanted VALUES (?)",
                                   [(source_id,) for source_id in wanted])
            # One read transaction: the rows are those of the state checked.
            connection.execute("BEGIN")
            try:
                if published is not None and order_stamp(connection) != published:
                    return None
                return connection.execute(
                    f"SELECT source_id, {columns} FROM tiles JOIN wanted USING (source_id)"
                    + (f" WHERE {condition}" if condition else "")
                ).fetchall()
            finally:
                connection.execute("COMMIT")
        finally:
            connection.close()


class TileStamp(NamedTuple):
    """What the index saw of a tile's file: its size, change stamp and content hash.

    ``mtime_ns`` is :func:`mosaicist.sources.base.change_stamp` and
    ``content_hash`` :func:`mosaicist.imaging.content_hash` of the file's
    bytes, as the index stored them.
    """

    size: int
    mtime_ns: int
    content_hash: str


def stored_stamps(
    source: TileSource, source_ids: Sequence[str], match_px: int,
    aspect: tuple[int, int] | str = SQUARE, crop: str = "centre",
    cache_dir: str | os.PathLike[str] | None = None, colour_profiles: str | None = None,
) -> dict[str, TileStamp]:
    """What the index of ``source`` last saw of the files of ``source_ids``, if it exists.

    For rendering saved placements: a file whose size and change stamp are
    still those the index saw holds the content it hashed then, and need
    not be read to be compared with the placements' hashes. Read without
    updating the index; empty where there is none.

    Parameters
    ----------
    source : TileSource
        The tile source.
    source_ids : sequence of str
        The tiles wanted.
    match_px : int
        The width the tiles were indexed at.
    aspect : (int, int) or str
        Their aspect.
    crop : {"centre", "subject"}
        How their windows were placed.
    cache_dir : path-like, optional
        The cache.
    colour_profiles : {"ignore", "convert"}, optional
        How they were decoded (default: as ``crop``'s presets do); the index of
        the other value answers for files the first has not (a file's stamp
        is the same in both).
    """
    methods = ("subject", "detail") if crop == "subject" else ("centre",)
    return _stored(source, source_ids, match_px, _aspect_pair(aspect), methods, cache_dir,
                   _read_stamps, colour_profiles)


def _stored(
    source: TileSource, source_ids: Sequence[str], match_px: int, pair: tuple[int, int],
    methods: Sequence[str], cache_dir: str | os.PathLike[str] | None,
    read: Callable[[Path, Sequence[str]], dict[str, Any]],
    colour_profiles: str | None = None,
) -> dict[str, Any]:
    """What ``read`` finds of ``source_ids`` in the indexes of ``source`` made by ``methods``.

    The first index that has an id answers for it: those of ``colour_profiles``
    (None: each method's usual) first, then those of the other value; indexes
    that are not there are skipped.
    """
    cache = default_cache_dir(cache_dir, create=False)  # only read
    found: dict[str, Any] = {}
    if colour_profiles is None:
        colour_profiles = usual_colour_profiles(methods[0])
    other = next(value for value in COLOUR_PROFILE_MODES if value != colour_profiles)
    for profiles in (colour_profiles, other):
        for method in methods:
            directory = _index_dir(cache, source.key, match_px, pair, method, profiles)
            if (directory / "manifest.sqlite").is_file():
                missing = [source_id for source_id in source_ids if source_id not in found]
                found.update(read(directory, missing))
    return found


def stored_windows(
    source: TileSource, source_ids: Sequence[str], match_px: int,
    aspect: tuple[int, int] | str = SQUARE, crop: str = "centre",
    cache_dir: str | os.PathLike[str] | None = None, colour_profiles: str | None = None,
) -> dict[str, Window]:
    """The crop windows that the index of ``source`` stored for ``source_ids``, if it exists.

    For rendering saved placements from the originals: the windows they were
    matched with, read without updating (or even opening) the index. A
    subject crop looks in the face-aware index first, then in the one made
    without a face detector.

    Parameters
    ----------
    source : TileSource
        The tile source.
    source_ids : sequence of str
        The tiles wanted.
    match_px : int
        The width the tiles were indexed at.
    aspect : (int, int) or str
        Their aspect.
    crop : {"centre", "subject"}
        How their windows were placed.
    cache_dir : path-like, optional
        The cache.
    colour_profiles : {"ignore", "convert"}, optional
        How they were decoded (default: as ``crop``'s presets do); the index of
        the other value answers for tiles the first has not (a window differs
        only for a picture whose profile changes it, by little).

    Returns
    -------
    dict
        Each id's window; empty for centre crops (the centred window is
        found again exactly) and where no index has them.
    """
    pair = _aspect_pair(aspect)
    if _source_crop(source, pair, crop) != "subject":
        return {}
    return _stored(source, source_ids, match_px, pair, ("subject", "detail"), cache_dir,
                   _read_windows, colour_profiles)


def _source_crop(source: TileSource, pair: tuple[int, int], crop: str) -> str:
    """``crop`` as it cuts ``source``'s photos at ``pair``: ``centre`` where every photo is
    of one size that is its own window (any crop cuts it whole)."""
    size = source.image_size()
    return "centre" if size is not None and window_size(*size, pair) == size else crop


#: Cached leaders of near-duplicates (``duplicates/``), with their library generation.
_LEADERS = re.compile(r"leaders-(?:v\d+-)?g(?P<generation>\d+)-n\d+-t\d+\.npy")
#: Cached leaders of identical tiles (``duplicates/``), likewise.
_IDENTICAL = re.compile(r"identical-g(?P<generation>\d+)-n\d+\.npy")
#: Packed tiles of a library without near-duplicates (``dedupe-t<T>/``), likewise.
_PACKED_SUBSET = re.compile(r"tiles-g(?P<generation>\d+)-n\d+\.u8")


def _leaders_checksum(leaders: np.ndarray) -> int:
    """A checksum of a leaders array (its entries' bytes), kept after them in its cache file."""
    digest = hashlib.blake2b(leaders.astype(np.int64, copy=False).tobytes(), digest_size=7)
    return int.from_bytes(digest.digest(), "little")


def _save_replacing(path: Path, array: np.ndarray, kind: re.Pattern[str],
                    generation: int) -> None:
    """Save ``array`` to ``path`` atomically, then remove files of ``kind`` of older generations.

    Written with :func:`~mosaicist.paths.atomic_path`, so that a killed
    writer's temporary is known by its PID and removed later. Files of this
    or later generations (other thresholds, or a process that already reads
    a newer library) are kept.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial, open(partial, "wb") as handle:
        np.save(handle, array)
    remove_older_generations(path.parent, kind, generation)


#: Tiles of a packed subset compared with the index before it is used again.
SUBSET_SAMPLE = 64


def _packed_subset(tiles: np.ndarray, kept: np.ndarray, store: Path,
                   generation: int) -> np.ndarray:
    """``tiles[kept]`` as a memory map of ``store``, written a chunk at a time when missing.

    The file is written under a temporary name and renamed
    (:func:`~mosaicist.paths.atomic_path`), so a reader never maps half of
    it and a killed writer's temporary is removed later; the packed files
    of earlier library generations in its folder are removed (a process
    still mapping one keeps its map). Where the folder cannot be written,
    the tiles are copied into memory instead.
    """
    shape = (len(kept), *tiles.shape[1:])
    tile_bytes = int(np.prod(tiles.shape[1:]))
    with contextlib.suppress(OSError, ValueError):
        if store.stat().st_size == len(kept) * tile_bytes:
            packed = np.memmap(store, dtype=np.uint8, mode="r", shape=shape)
            # A sample checked against the index, as the prepared tiles are: a copy
            # zero-filled or otherwise damaged was used as it was (447 of 450 cells
            # other than a fresh make's, exit 0).
            sample = np.unique(np.linspace(0, len(kept) - 1, min(len(kept), SUBSET_SAMPLE))
                               .astype(np.int64))
            if np.array_equal(packed[sample], tiles[kept[sample]]):
                mark_used(store)
                return packed
            del packed
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(store) as partial:
            with open(partial, "wb") as handle:
                step = max(1, min(COPY_CHUNK, (64 << 20) // max(1, tile_bytes)))
                for start in range(0, len(kept), step):
                    handle.write(np.ascontiguousarray(tiles[kept[start:start + step]]).tobytes())
            # Mapped before it is published: a newer generation may remove it at once.
            packed = np.memmap(partial, dtype=np.uint8, mode="r", shape=shape)
    except OSError:
        return np.asarray(tiles[kept])
    # Named as published: a cluster's workers open the tiles by the map's file name,
    # and the temporary's was gone ("the index is not on this worker").
    packed.filename = os.path.abspath(store)
    remove_older_generations(store.parent, _PACKED_SUBSET, generation)
    return packed


def _published_state(directory: Path) -> str:
    """The state of the published rows of the index in ``directory``
    (:func:`~._manifest.order_stamp`, read in one transaction)."""
    connection = connect(directory)
    try:
        connection.execute("BEGIN")
        try:
            return order_stamp(connection)
        finally:
            connection.execute("COMMIT")
    finally:
        connection.close()


def _current_generation(directory: Path) -> int:
    connection = connect(directory)
    try:
        return meta_count(connection, "generation")
    finally:
        connection.close()


def _remove_made(index_made: Path | None, cache_made: Path | None) -> None:
    """Remove the index's folders made by this run, and the cache's where left empty."""
    if index_made is None:
        return
    shutil.rmtree(index_made, ignore_errors=True)
    if cache_made is None:
        return
    folder = index_made.parent
    while folder == cache_made or cache_made in folder.parents:
        try:
            folder.rmdir()  # only if empty
        except OSError:
            return
        folder = folder.parent

