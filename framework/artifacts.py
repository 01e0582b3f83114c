"""Artifacts: blobs (trained models, RL agents, scalers) addressed by their sha256, one metadata row each.

A ``kind: files`` store keeps the bytes: a local directory (``file://`` URL or a plain path),
or, where configured, any fsspec URL (``s3://bucket/prefix``; fsspec is imported only then).
Each blob lives once under ``sha256/<2 hex>/<sha256>`` and is written to a temporary file,
synced, then renamed into place, so a crash never leaves a partial blob under a hash. Every
``put`` adds a row to a declared metadata table (name, version, sha256, kind, size, ts,
service, metadata as JSON); versions count per name, so "the latest xgb-EURUSD-1h" is the
row with the highest version. A load hashes what it read and refuses a blob whose sha256 is
not the one recorded.

Nodes reach it as ``ctx.artifacts``::

    ref = await ctx.artifacts.put("xgb-EURUSD-1h", "/tmp/model.ubj", kind="xgboost",
                                  metadata={"feature_set": "v3", "window": [start_ms, end_ms]})
    await ctx.artifacts.tag(ref, "xgb-EURUSD-1h@promoted")          # promotion: a name, no copy
    path = await ctx.artifacts.path("xgb-EURUSD-1h@promoted", suffix=".ubj")   # verified local file
    blob = await ctx.artifacts.get(ref.sha256)                        # verified bytes
"""

from __future__ import annotations

import abc
import asyncio
import difflib
import hashlib
import io
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import orjson

from framework.errors import FxflowError

if TYPE_CHECKING:
    from framework.clock import Clock
    from framework.stores.base import Store
    from framework.topology.model import StoreConfig, Topology

__all__ = [
    "METADATA_COLUMNS",
    "ArtifactCorrupt",
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactRef",
    "ArtifactStore",
    "BlobStore",
    "FsspecBlobs",
    "LocalBlobs",
    "MetadataTable",
    "StoreTable",
    "files_stores",
    "metadata_table_name",
    "metadata_table_problem",
    "open_blobs",
]

FILES_KIND = "files"
DEFAULT_TABLE = "artifacts"
METADATA_COLUMNS: dict[str, str] = {
    "name": "str",
    "version": "int",
    "sha256": "str",
    "kind": "str",
    "size": "int",
    "ts": "timestamp_ms",
    "service": "str",
    "metadata": "json",
}
"""The columns the metadata table must have (portable types, as in ``tables:``)."""

CHUNK = 1 << 20
STALE_PART_S = 3600.0
"""A temporary ``.part`` file untouched this long belongs to a writer that died; it is removed."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SELECT = f"SELECT {', '.join(METADATA_COLUMNS)} FROM {{table}}"
_LISTED = 8

Data = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO


class ArtifactError(FxflowError):
    """An artifact operation failed; the message is one line."""


class ArtifactNotFound(ArtifactError, LookupError):
    """No artifact (or no blob) for what was asked; the message says what exists."""


class ArtifactCorrupt(ArtifactError):
    """A blob's content does not hash to the sha256 it is stored under; it is never returned."""


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """One metadata row: ``name`` version ``version`` is the blob ``sha256``."""

    name: str
    version: int
    sha256: str
    kind: str
    size: int
    ts: int
    metadata: dict[str, Any] = field(default_factory=dict)
    service: str = ""

    def __str__(self) -> str:
        return f"{self.name!r} v{self.version} (sha256 {self.sha256[:12]}…)"

    def row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in METADATA_COLUMNS}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ArtifactRef:
        metadata = row.get("metadata")
        if isinstance(metadata, (str, bytes)):
            metadata = orjson.loads(metadata) if metadata else {}
        return cls(
            name=str(row["name"]),
            version=int(row["version"]),
            sha256=str(row["sha256"]),
            kind=str(row["kind"]),
            size=int(row["size"]),
            ts=int(row["ts"]),
            metadata=dict(metadata or {}),
            service=str(row.get("service") or ""),
        )


class MetadataTable(Protocol):
    """What the store needs of its metadata table (``framework.context.TableHandle`` has the same shape).

    ``insert`` must have written the rows when it returns: ``put`` is durable when it returns,
    so a "training completed" event may name the artifact. :class:`StoreTable` does that; a
    batched ``TableHandle`` writes later, so use it only for reading.
    """

    async def insert(self, rows: Sequence[Mapping[str, Any]]) -> None: ...

    async def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]: ...


class StoreTable:
    """A table of an opened :class:`~framework.stores.base.Store`, written directly (not batched)."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name

    async def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await self.store.insert(self.name, rows)

    async def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return await self.store.query(sql.replace("{table}", self.name), parameters)


# ---------------------------------------------------------------- blobs


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _chunks(data: Data) -> Iterator[bytes]:
    """The bytes of ``data`` in chunks: content as is, a path or a binary file read ``CHUNK`` at a time."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield bytes(data) if not isinstance(data, bytes) else data
        return
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise ArtifactError(f"no file {str(path)!r} to store (pass bytes to store content)")
        with path.open("rb") as source:
            yield from iter(lambda: source.read(CHUNK), b"")
        return
    if isinstance(data, io.TextIOBase) or not hasattr(data, "read"):
        raise ArtifactError(f"cannot store a {type(data).__name__}: pass bytes, a file path or a binary file")
    yield from iter(lambda: data.read(CHUNK), b"")


class _Differs(Exception):
    """A copy did not hash to the sha256 it was made for (``actual``); nothing was stored."""

    def __init__(self, actual: str) -> None:
        super().__init__(actual)
        self.actual = actual


def _mismatch(label: str, location: str, expected: str, actual: str) -> ArtifactCorrupt:
    return ArtifactCorrupt(
        f"artifact {label}: {location} has sha256 {actual}, expected {expected}; refused "
        "(the blob is corrupt or was changed: delete it and put the artifact again)"
    )


class BlobStore(abc.ABC):
    """Where the bytes live. Methods block (the artifact store runs them on a worker thread);
    ``label`` names the artifact in error messages."""

    url: str

    @abc.abstractmethod
    def write(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store the concatenated ``chunks`` atomically; their sha256 and size."""

    @abc.abstractmethod
    def read(self, sha256: str, label: str) -> bytes:
        """The blob's bytes, verified; :class:`ArtifactCorrupt` if they hash to anything else."""

    @abc.abstractmethod
    def local_path(self, sha256: str, label: str, suffix: str = "") -> Path:
        """A verified local file with the blob's content (named ``…<suffix>`` if one is given)."""


class LocalBlobs(BlobStore):
    """Blobs in a local directory: ``sha256/ab/ab…`` (read-only files), ``tmp/`` for writes in progress."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._sweep()

    def _sweep(self) -> None:
        cutoff = time.time() - STALE_PART_S
        for part in self._tmp.glob("*.part"):
            try:
                if part.stat().st_mtime < cutoff:
                    part.unlink()
            except OSError:
                pass

    def blob(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def write(self, chunks: Iterable[bytes], expected: str | None = None) -> tuple[str, int]:
        """Write to ``tmp/``, sync, then rename to the hash's path: readers see all of a blob or nothing.
        With ``expected``, content hashing to anything else is dropped (:class:`_Differs`)."""
        fd, tmp = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            if expected is not None and sha != expected:
                raise _Differs(sha)
            final = self.blob(sha)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            return sha, size
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _existing(self, sha256: str, label: str) -> Path:
        path = self.blob(sha256)
        if not path.is_file():
            raise ArtifactNotFound(f"artifact {label}: its blob is missing ({path})")
        return path

    def read(self, sha256: str, label: str) -> bytes:
        path = self._existing(sha256, label)
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise _mismatch(label, str(path), sha256, actual)
        return data

    def verify(self, sha256: str, label: str) -> Path:
        """The blob's path once its content is checked, read in chunks (every call: a file can change)."""
        path = self._existing(sha256, label)
        digest = hashlib.sha256()
        with path.open("rb") as source:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                digest.update(chunk)
        if (actual := digest.hexdigest()) != sha256:
            raise _mismatch(label, str(path), sha256, actual)
        return path

    def local_path(self, sha256: str, label: str, suffix: str = "") -> Path:
        path = self.verify(sha256, label)
        if not suffix:
            return path
        named = self.root / "named" / f"{sha256}{suffix}"
        try:
            if os.path.samefile(named, path):
                return named
        except FileNotFoundError:
            named.parent.mkdir(parents=True, exist_ok=True)
        link = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            os.link(path, link)
        except OSError:  # no hard links on this filesystem: a copy of the verified blob
            shutil.copyfile(path, link)
            os.chmod(link, 0o444)
        os.replace(link, named)
        return named


class FsspecBlobs(BlobStore):
    """Blobs under an fsspec URL (``s3://bucket/prefix``), with verified local copies in ``cache_dir``."""

    def __init__(self, url: str, cache_dir: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> None:
        from framework.stores.base import safe_url

        self.url = safe_url(url)
        try:
            import fsspec
        except ImportError:
            raise ArtifactError(
                f"artifact store at {self.url} needs fsspec and its {url.split(':', 1)[0]} backend: "
                "pip install fsspec (e.g. s3fs for s3://), or use a local directory (file://)"
            ) from None
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise ArtifactError(f"artifact store at {self.url}: {str(exc).splitlines()[0]}") from None
        self.root = self.root.rstrip("/")
        self.cache = LocalBlobs(cache_dir)

    def blob(self, sha256: str) -> str:
        return f"{self.root}/sha256/{sha256[:2]}/{sha256}"

    def write(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}.part"
        self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
        digest, size = hashlib.sha256(), 0
        try:
            with self.fs.open(tmp, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            sha = digest.hexdigest()
            final = self.blob(sha)
            self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            self.fs.mv(tmp, final)
            return sha, size
        except BaseException:
            try:
                self.fs.rm(tmp)
            except Exception:
                pass
            raise

    def _where(self, sha256: str) -> str:
        return f"{self.url.rstrip('/')}/sha256/{sha256[:2]}/{sha256}"

    def _missing(self, sha256: str, label: str) -> ArtifactNotFound:
        return ArtifactNotFound(f"artifact {label}: its blob is missing ({self._where(sha256)})")

    def _remote_chunks(self, sha256: str, label: str) -> Iterator[bytes]:
        try:
            source = self.fs.open(self.blob(sha256), "rb")
        except FileNotFoundError:
            raise self._missing(sha256, label) from None
        with source:
            yield from iter(lambda: source.read(CHUNK), b"")

    def read(self, sha256: str, label: str) -> bytes:
        try:
            data = self.fs.cat_file(self.blob(sha256))
        except FileNotFoundError:
            raise self._missing(sha256, label) from None
        if (actual := hashlib.sha256(data).hexdigest()) != sha256:
            raise _mismatch(label, self._where(sha256), sha256, actual)
        return data

    def local_path(self, sha256: str, label: str, suffix: str = "") -> Path:
        """The cached copy, downloaded (in chunks, verified before it is kept) when missing or damaged."""
        try:
            return self.cache.local_path(sha256, label, suffix)
        except (ArtifactNotFound, ArtifactCorrupt):
            self.cache.blob(sha256).unlink(missing_ok=True)
        try:
            self.cache.write(self._remote_chunks(sha256, label), expected=sha256)
        except _Differs as exc:
            raise _mismatch(label, self._where(sha256), sha256, exc.actual) from None
        return self.cache.local_path(sha256, label, suffix)


def _local_root(url: str) -> str | None:
    """The directory of a ``file://`` URL or a plain path; None for another scheme (fsspec)."""
    if url.startswith("file://"):
        return url.removeprefix("file://")
    if url.startswith("file:"):
        return url.removeprefix("file:")
    scheme = url.split("://", 1)[0] if "://" in url else ""
    return url if not scheme else None


def open_blobs(url: str, *, cache_dir: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> BlobStore:
    """Local blobs for a ``file://`` URL or a path, fsspec for any other URL."""
    root = _local_root(url)
    if root is not None:
        return LocalBlobs(root)
    return FsspecBlobs(url, cache_dir, storage_options)


# ---------------------------------------------------------------- the store


def _json(metadata: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ArtifactError(f"metadata of artifact {name!r} must be a mapping, not {type(metadata).__name__}")
    try:
        return dict(orjson.loads(orjson.dumps(metadata)))
    except TypeError as exc:
        raise ArtifactError(f"metadata of artifact {name!r} is not JSON: {exc}") from None


def _check_name(name: Any, what: str = "name") -> str:
    if not isinstance(name, str) or not name.strip() or any(ord(c) < 32 for c in name):
        raise ArtifactError(f"artifact {what} must be a non-empty string without control characters, not {name!r}")
    if _SHA256.match(name):
        raise ArtifactError(f"artifact {what} {name!r} looks like a sha256; choose a name that does not")
    return name


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f" and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def _versions(refs: Sequence[ArtifactRef]) -> str:
    numbers = sorted({r.version for r in refs})
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 2:
        return f"v{numbers[0]}-v{numbers[-1]}"
    return ", ".join(f"v{n}" for n in numbers)


def _latest(refs: Iterable[ArtifactRef]) -> ArtifactRef:
    return max(refs, key=lambda r: (r.version, r.ts, r.sha256))


class ArtifactStore:
    """Content-addressed blobs with a metadata row each; the API behind ``ctx.artifacts``.

    Every method is async; file work runs on a worker thread, so a large model never blocks
    the event loop. ``key`` arguments take an :class:`ArtifactRef`, a sha256 (64 hex digits)
    or a name (its latest version, or ``version=``).
    """

    def __init__(
        self,
        blobs: BlobStore,
        metadata: MetadataTable,
        clock: Clock | None = None,
        *,
        name: str = DEFAULT_TABLE,
        service: str = "",
    ) -> None:
        self.blobs = blobs
        self.table = metadata
        self.clock = clock
        self.name = name
        self.service = service
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(
        cls,
        name: str,
        config: StoreConfig,
        metadata: MetadataTable,
        clock: Clock | None = None,
        *,
        data_dir: str | os.PathLike[str],
        service: str = "",
    ) -> ArtifactStore:
        """The store declared as ``stores.<name>`` (``kind: files``); remote blobs are cached in ``<data_dir>/cache/<name>``."""
        if config.kind != FILES_KIND:
            raise ArtifactError(f"store {name!r} is kind {config.kind!r}; artifacts need a `kind: files` store")
        options = dict(config.options)
        cache_dir = Path(data_dir) / "cache" / name
        blobs = open_blobs(config.url, cache_dir=cache_dir, storage_options=options.get("storage_options"))
        return cls(blobs, metadata, clock, name=name, service=service)

    def for_service(self, service: str) -> ArtifactStore:
        """The same store, recording ``service`` as the writer of what it puts."""
        view = ArtifactStore(self.blobs, self.table, self.clock, name=self.name, service=service)
        view._lock = self._lock
        return view

    def _now_ms(self) -> int:
        return self.clock.now_ms() if self.clock is not None else time.time_ns() // 1_000_000

    async def _rows(self, **filters: str) -> list[ArtifactRef]:
        """Rows matching ``filters`` (equality), once each, newest first."""
        where = " AND ".join(f"{column} = {{{column}:String}}" for column in filters)
        sql = f"{_SELECT} WHERE {where}" if where else _SELECT
        rows = await self.table.query(sql, filters or None)
        unique = {(r.name, r.version, r.sha256): r for r in map(ArtifactRef.from_row, rows)}
        return sorted(unique.values(), key=lambda r: (r.ts, r.version, r.name), reverse=True)

    async def put(self, name: str, data: Data, *, kind: str, metadata: Mapping[str, Any] | None = None) -> ArtifactRef:
        """Store ``data`` (bytes, a file path, or a binary file read in chunks) as the next version of ``name``.

        The blob is written (atomically) before its row, so a crash in between leaves only an
        unnamed blob. Putting the same content, kind and metadata as the latest version returns
        that version (a retried put adds nothing).
        """
        _check_name(name)
        _check_name(kind, "kind")
        meta = _json(metadata, name)
        sha, size = await asyncio.to_thread(self.blobs.write, _chunks(data))
        return await self._record(name, sha, size, kind, meta)

    async def _record(self, name: str, sha: str, size: int, kind: str, meta: dict[str, Any]) -> ArtifactRef:
        async with self._lock:
            existing = await self._rows(name=name)
            if existing:
                latest = _latest(existing)
                if (latest.sha256, latest.kind, latest.metadata) == (sha, kind, meta):
                    return latest
            version = max((r.version for r in existing), default=0) + 1
            ref = ArtifactRef(name, version, sha, kind, size, self._now_ms(), meta, self.service)
            await self.table.insert([ref.row()])
            return ref

    async def tag(self, key: ArtifactRef | str, name: str, *, version: int | None = None, metadata: Mapping[str, Any] | None = None) -> ArtifactRef:
        """Record the blob of ``key`` under ``name`` too (a promotion: ``xgb-EURUSD-1h@promoted``); no bytes are copied.

        The new version keeps the source's kind and metadata, updated with ``metadata``.
        """
        _check_name(name)
        source = await self.resolve(key, version=version)
        meta = {**source.metadata, **_json(metadata, name)}
        return await self._record(name, source.sha256, source.size, source.kind, meta)

    async def resolve(self, key: ArtifactRef | str, *, version: int | None = None) -> ArtifactRef:
        """The metadata row ``key`` names; :class:`ArtifactNotFound` names what exists."""
        if isinstance(key, ArtifactRef):
            return key
        if not isinstance(key, str):
            raise ArtifactError(f"an artifact is named by an ArtifactRef, a sha256 or a name, not {type(key).__name__}")
        if _SHA256.match(key):
            refs = await self._rows(sha256=key)
            if refs:
                return refs[0]
            raise ArtifactNotFound(f"no artifact has sha256 {key} in store {self.name!r} ({await self._holdings()})")
        refs = await self._rows(name=key)
        if not refs:
            raise ArtifactNotFound(f"no artifact named {key!r} in store {self.name!r} ({await self._holdings(key)})")
        if version is None:
            return _latest(refs)
        chosen = [r for r in refs if r.version == version]
        if not chosen:
            raise ArtifactNotFound(f"artifact {key!r} has no version {version} in store {self.name!r} (it has {_versions(refs)})")
        return _latest(chosen)

    async def _holdings(self, asked: str | None = None) -> str:
        refs = await self._rows()
        if not refs:
            return "it holds no artifact yet"
        by_name: dict[str, list[ArtifactRef]] = {}
        for ref in refs:
            by_name.setdefault(ref.name, []).append(ref)
        names = sorted(by_name)
        hint = ""
        if asked is not None and (close := difflib.get_close_matches(asked, names, n=1)):
            hint = f"; did you mean {close[0]!r}?"
        listed = _listing([f"{n} ({_versions(by_name[n])})" for n in names])
        return f"it holds {listed}{hint}"

    async def get(self, key: ArtifactRef | str, *, version: int | None = None) -> bytes:
        """The blob's bytes, verified against its sha256 (use :meth:`path` for large ones)."""
        ref = await self.resolve(key, version=version)
        return await asyncio.to_thread(self.blobs.read, ref.sha256, str(ref))

    async def path(self, key: ArtifactRef | str, *, version: int | None = None, suffix: str = "") -> Path:
        """A verified local file with the blob's content, for libraries that load from a path.

        Read-only; shared by every caller (never modify it). ``suffix`` (``.ubj``, ``.zip``)
        names the file for libraries that pick a format by extension. A remote blob is
        downloaded once, in chunks, into the local cache.
        """
        if suffix and (os.sep in suffix or not suffix.startswith(".")):
            raise ArtifactError(f"suffix must look like '.json', not {suffix!r}")
        ref = await self.resolve(key, version=version)
        return await asyncio.to_thread(self.blobs.local_path, ref.sha256, str(ref), suffix)

    async def list(self, *, kind: str | None = None, name: str | None = None) -> list[ArtifactRef]:
        """Artifacts (every version), newest first, optionally only of one kind or name."""
        filters = {k: v for k, v in (("kind", kind), ("name", name)) if v is not None}
        return await self._rows(**filters)

    async def latest(self, name: str) -> ArtifactRef:
        """The newest version of ``name``."""
        return await self.resolve(_check_name(name))


# ---------------------------------------------------------------- topology


def files_stores(topology: Topology) -> dict[str, StoreConfig]:
    """The topology's ``kind: files`` stores."""
    return {name: config for name, config in topology.stores.items() if config.kind == FILES_KIND}


def metadata_table_name(config: StoreConfig) -> str:
    """The table a files store records its artifacts in (``options.table``, default ``artifacts``)."""
    return str(config.options.get("table", DEFAULT_TABLE))


def metadata_table_problem(topology: Topology, store: str) -> str | None:
    """One line if files store ``store``'s metadata table is not declared as it must be, else None."""
    config = topology.stores[store]
    table_name = metadata_table_name(config)
    table = topology.tables.get(table_name)
    if table is None:
        return f"store {store!r} (files) records artifacts in table {table_name!r}, which is not declared under `tables:`"
    home = topology.stores.get(table.store)
    if home is None or home.kind in (FILES_KIND, "redis", "memory"):
        kind = home.kind if home else "undeclared"
        return f"table {table_name!r} (artifact metadata of store {store!r}) must be in a clickhouse or postgres store, not {table.store!r} ({kind})"
    missing = [c for c in METADATA_COLUMNS if c not in (table.columns or {})]
    if missing:
        wanted = ", ".join(f"{c}: {t}" for c, t in METADATA_COLUMNS.items())
        return f"table {table_name!r} (artifact metadata of store {store!r}) lacks columns {', '.join(missing)}; declare {{{wanted}}}"
    return None
