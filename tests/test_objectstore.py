"""The S3-compatible store that keeps tansu's data: what tansu's client relies on, over real HTTP.

Compare-and-swap (``If-None-Match: *``, ``If-Match``), conditional reads, listings with a
delimiter and paging, batch deletes, and objects that survive a SIGKILL of the store.
"""

from __future__ import annotations

import http.client
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from framework.infra import ObjectStoreServer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStoreServer]:
    server = ObjectStoreServer(tmp_path, durable=False).start()
    try:
        yield server
    finally:
        server.stop()


def _request(
    store: ObjectStoreServer, method: str, path: str, body: bytes = b"", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(store.host, store.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _put(store: ObjectStoreServer, key: str, body: bytes, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return _request(store, "PUT", f"/tansu/{quote(key)}", body, **headers)


def _list(store: ObjectStoreServer, **query: str) -> tuple[list[str], list[str], str | None]:
    status, _, body = _request(store, "GET", "/tansu?" + urlencode({"list-type": "2", **query}))
    assert status == 200, body
    root = ET.fromstring(body)
    keys = [e.text or "" for e in root.iterfind("{*}Contents/{*}Key")]
    prefixes = [e.text or "" for e in root.iterfind("{*}CommonPrefixes/{*}Prefix")]
    return keys, prefixes, root.findtext("{*}NextContinuationToken")


def test_create_only_and_compare_and_swap(store: ObjectStoreServer) -> None:
    status, headers, _ = _put(store, "meta.json", b"v1", If_None_Match="*")
    assert status == 200
    first = headers["ETag"]
    assert _put(store, "meta.json", b"other", If_None_Match="*")[0] == 412

    status, headers, _ = _put(store, "meta.json", b"v2", If_Match=first)
    assert status == 200 and headers["ETag"] != first
    assert _put(store, "meta.json", b"lost update", If_Match=first)[0] == 412
    assert _put(store, "missing.json", b"x", If_Match=first)[0] == 412

    status, headers, body = _request(store, "GET", "/tansu/meta.json")
    assert (status, body) == (200, b"v2")
    assert {"ETag", "Last-Modified", "Content-Length"} <= set(headers)
    assert _request(store, "GET", "/tansu/meta.json", If_None_Match=headers["ETag"])[0] == 304
    assert _request(store, "GET", "/tansu/meta.json", If_None_Match=first)[2] == b"v2"
    assert _request(store, "GET", "/tansu/meta.json", Range="bytes=1-")[:3:2] == (206, b"2")
    assert _request(store, "GET", "/tansu/nothing")[0] == 404


def test_listing_with_prefix_delimiter_and_paging(store: ObjectStoreServer) -> None:
    keys = [f"clusters/c/topics/t/partitions/{p}/records/{o:020}.batch" for p in range(2) for o in range(3)]
    keys += ["clusters/c/meta.json", "clusters/c/topics/t", "clusters/c/topics/t2/x"]
    for key in keys:
        assert _put(store, key, key.encode())[0] == 200

    found, prefixes, token = _list(store, prefix="clusters/c/topics/t/partitions/1/")
    assert found == sorted(k for k in keys if "/partitions/1/" in k) and not prefixes and token is None

    found, prefixes, _ = _list(store, prefix="clusters/c/topics/", delimiter="/")
    assert found == ["clusters/c/topics/t"] and prefixes == ["clusters/c/topics/t/", "clusters/c/topics/t2/"]
    found, prefixes, _ = _list(store, prefix="clusters/c/topics/t", delimiter="/")
    assert found == ["clusters/c/topics/t"] and prefixes == ["clusters/c/topics/t/", "clusters/c/topics/t2/"]

    pages, token = [], ""
    while token is not None:
        found, _, token = _list(store, prefix="clusters/", **{"max-keys": "4"}, **({"continuation-token": token} if token else {}))
        pages.append(found)
    assert [len(p) for p in pages] == [4, 4, 1] and sum(pages, []) == sorted(keys)
    assert _list(store, prefix="clusters/c/topics/t/", **{"start-after": keys[4]})[0] == keys[5:6]


def test_deletes_one_and_many(store: ObjectStoreServer) -> None:
    for key in ("a/1", "a/2", "a/b/3", "c"):
        _put(store, key, b"x")
    assert _request(store, "DELETE", "/tansu/c")[0] == 204
    assert _request(store, "DELETE", "/tansu/c")[0] == 204
    body = b"<Delete><Object><Key>a/1</Key></Object><Object><Key>a/b/3</Key></Object></Delete>"
    status, _, answer = _request(store, "POST", "/tansu?delete", body)
    assert status == 200 and [e.text for e in ET.fromstring(answer).iterfind("{*}Deleted/{*}Key")] == ["a/1", "a/b/3"]
    assert _list(store, prefix="")[0] == ["a/2"]
    assert not (store.data_dir / "buckets" / "tansu" / "da" / "db").exists()


def test_objects_survive_a_kill(store: ObjectStoreServer) -> None:
    _put(store, "records/1.batch", b"kept")
    store.kill()
    store.start()
    assert _request(store, "GET", "/tansu/records/1.batch")[2] == b"kept"


def test_what_it_does_not_serve_is_refused(store: ObjectStoreServer) -> None:
    assert _request(store, "PUT", "/tansu/k?partNumber=1&uploadId=x", b"x")[0] == 501
    assert _request(store, "PUT", "/tansu/k", b"", **{"x-amz-copy-source": "/tansu/j"})[0] == 501
    assert _request(store, "GET", "/tansu/k?tagging")[0] == 501
