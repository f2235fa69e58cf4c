"""Backup data files: exact round trips, crash-safe resume, and loud failure on every kind of damage."""

from __future__ import annotations

import gzip
import math
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncmig.core import jsoncodec
from asyncmig.core.files import jsonl as files
from asyncmig.core.files.jsonl import AsyncJsonlGzReader, AsyncJsonlGzWriter, JsonlGzReader, JsonlGzWriter
from asyncmig.errors import BackupCorrupt

Document = dict[str, Any]


def _tricky_documents() -> list[Document]:
    nested: Any = "bottom"
    for level in range(300):  # deeper than orjson's 255 levels: the standard-library path
        nested = {"level": level, "inner": [nested]}
    return [
        {
            "id": "numbers",
            "above_2_53": 2**53 + 1,
            "u64_max": 2**64 - 1,
            "i64_min": -(2**63),
            "shortest": 2100.607537417505,
            "neg_zero": -0.0,
            "tiny": 1e-7,
            "subnormal": 5e-324,
            "max": 1.7976931348623157e308,
            "one_ulp": [0.1, 0.1000000000000001],
            "int_and_float": [1, 1.0, 0, 0.0],
            "nulls": [None, True, False],
            "_rid": "AAAA==",
            "_ts": 1722850000,
            "_ttl": 3600,
        },
        {
            "id": "text",
            "devanagari": "कर्मण्येवाधिकारस्ते मा फलेषु कदाचन",
            "emoji": "🙏🕉️👩🏽‍💻",
            "controls": 'tab\tnewline\nnul\x00 line-sep\u2028 quote" backslash\\',
            "keys": {"": "empty key", "ü": 1, "🙏": 2},
        },
        jsoncodec.loads(
            b'{"id":"surrogates","lone_high":"\\ud800","lone_low":"x\\udfffy","pair":"\\ud83d\\ude4f"}'
        ),
        {"id": "deep", "tree": nested},
        {"id": "vector", "embedding": [random.Random(3).gauss(0, 0.05) for _ in range(768)]},
    ]


def _big_integer_documents() -> list[Document]:
    return [
        {"id": "big", "u64_plus_1": 2**64 + 1, "huge": 10**40 + 7, "negative": -(2**63) - 1},
        # alone on its line: no wider run of digits sends the line to the exact parser by luck
        {"id": "negative-19-digits", "n": -9999999999999999999},
    ]


def _write(path: Path, pages: list[list[Document]], **kwargs: Any) -> int:
    with JsonlGzWriter.open(path, **kwargs) as writer:
        for page in pages:
            writer.write(page)
            writer.commit()
    return path.stat().st_size


def _read_all(path: Path) -> list[Document]:
    with JsonlGzReader(path) as reader:
        return list(reader)


def _raw_gz(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))
    return path


def _docs(n: int, start: int = 0) -> list[Document]:
    return [{"id": f"doc-{i}", "n": i, "v": [i / 3, -i / 7]} for i in range(start, start + n)]


def _same_json(left: list[Document], right: list[Document]) -> bool:
    """Equal byte for byte, which also tells -0.0 from 0.0 and 1 from 1.0 (== does not)."""
    return [jsoncodec.dumps(d) for d in left] == [jsoncodec.dumps(d) for d in right]


# --- round trips -----------------------------------------------------------------------------


def test_tricky_documents_round_trip_exactly(tmp_path: Path) -> None:
    documents = _tricky_documents()
    path = tmp_path / "c.jsonl.gz"
    _write(path, [documents[:2], documents[2:]])
    back = _read_all(path)
    assert back == documents
    assert _same_json(back, documents)
    assert math.copysign(1.0, back[0]["neg_zero"]) == -1.0
    assert [type(x) for x in back[0]["int_and_float"]] == [int, float, int, float]
    assert back[2]["lone_high"] == "\ud800"
    # the file holds one exact JSON line per document
    assert gzip.decompress(path.read_bytes()).split(b"\n") == [jsoncodec.dumps(d) for d in documents] + [b""]


def test_integers_beyond_64_bits_are_written_exactly(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl.gz"
    _write(path, [_big_integer_documents()])
    line = gzip.decompress(path.read_bytes())
    assert b'"u64_plus_1":18446744073709551617' in line
    assert b'"huge":10000000000000000000000000000000000000007' in line


def test_integers_beyond_64_bits_read_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl.gz"
    _write(path, [_big_integer_documents()])
    assert _same_json(_read_all(path), _big_integer_documents())


def test_pages_and_positions(tmp_path: Path) -> None:
    documents = _docs(10)
    path = tmp_path / "c.jsonl.gz"
    _write(path, [documents[:4], documents[4:]])
    with JsonlGzReader(path) as reader:
        pages = list(reader.pages(3))
        assert [len(p) for p in pages] == [3, 3, 3, 1]
        assert [d for p in pages for d in p] == documents
        assert reader.position == 10
    with pytest.raises(ValueError):
        next(JsonlGzReader(path).pages(0))


def test_skip_resumes_after_the_documents_already_consumed(tmp_path: Path) -> None:
    documents = _docs(10)
    path = tmp_path / "c.jsonl.gz"
    _write(path, [documents[:3], documents[3:7], documents[7:]])  # skip crosses member boundaries
    with JsonlGzReader(path) as reader:
        reader.skip(5)
        assert reader.position == 5
        assert list(reader) == documents[5:]
    with JsonlGzReader(path) as reader:
        reader.skip(2)
        first = next(reader.pages(2))
        reader.skip(3)
        assert first == documents[2:4]
        assert list(reader) == documents[7:]
    with JsonlGzReader(path) as reader, pytest.raises(BackupCorrupt, match="holds only 10 documents"):
        reader.skip(11)


def test_reads_every_member_including_ones_from_other_gzip_writers(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    size = _write(path, [_docs(2), _docs(3, 2), _docs(1, 5)])
    # three commits, three members: gzip itself reads it as one stream
    assert gzip.decompress(path.read_bytes()).count(b"\n") == 6
    with open(path, "ab") as file:  # a member made by the standard library, with a file name
        file.write(gzip.compress(jsoncodec.dumps(_docs(1, 6)[0]) + b"\n", mtime=0))
    assert path.stat().st_size > size
    assert _read_all(path) == _docs(7)


def test_a_file_without_documents_is_still_valid_gzip(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl.gz"
    with JsonlGzWriter.open(path) as writer:
        assert writer.commit() == 0
    assert path.stat().st_size > 0
    assert gzip.decompress(path.read_bytes()) == b""
    assert _read_all(path) == []
    path.write_bytes(b"")  # a zero-byte file holds no documents either
    assert _read_all(path) == []


def test_commit_without_new_documents_adds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    writer = JsonlGzWriter.open(path)
    writer.write(_docs(2))
    offset = writer.commit()
    writer.write([])
    assert writer.commit() == offset == writer.committed_offset
    assert writer.close() == offset
    assert writer.close() == offset  # closing twice is harmless
    with pytest.raises(ValueError, match="closed"):
        writer.write(_docs(1))


# --- what the writer refuses -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("with_big_integer", [False, True])
def test_writer_refuses_nan_and_infinity(tmp_path: Path, bad: float, with_big_integer: bool) -> None:
    document: Document = {"id": "bad-doc", "meta": {"score": [1.0, bad]}, "note": None}
    if with_big_integer:  # the standard-library encoding path
        document["big"] = 2**70
    path = tmp_path / "c.jsonl.gz"
    with JsonlGzWriter.open(path) as writer:
        writer.write(_docs(1))
        with pytest.raises(jsoncodec.NonFiniteNumber, match=r"'bad-doc'.*/meta/score/1"):
            writer.write([{"id": "fine", "x": None}, document])
    assert _read_all(path) == _docs(1)  # nothing of the refused page was written


def test_writer_refuses_a_document_that_is_not_an_object(tmp_path: Path) -> None:
    with JsonlGzWriter.open(tmp_path / "c.jsonl.gz") as writer, pytest.raises(TypeError, match="object"):
        writer.write([["not", "an", "object"]])  # type: ignore[list-item]


def test_nulls_and_the_word_null_are_fine(tmp_path: Path) -> None:
    documents = [{"id": "u1", "source": None, "text": "null and void", "n": [None]}]
    path = tmp_path / "c.jsonl.gz"
    _write(path, [documents])
    assert _read_all(path) == documents


# --- crash and resume --------------------------------------------------------------------------


def test_resume_after_a_crash_keeps_committed_documents_only_once(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    writer = JsonlGzWriter.open(path)
    writer.write(_docs(3))
    writer.commit()
    writer.write(_docs(4, 3))
    committed = writer.commit()
    writer.write(_docs(5, 7))  # never committed
    writer.abort()  # what a crash leaves: an unfinished member after the committed offset
    assert path.stat().st_size > committed
    with pytest.raises(BackupCorrupt, match="truncated"):
        _read_all(path)

    # the checkpoint recorded (committed, 7 documents): the source resumes after document 7
    with JsonlGzWriter.open(path, resume_offset=committed) as writer:
        assert writer.committed_offset == committed
        writer.write(_docs(5, 7))
    documents = _read_all(path)
    assert documents == _docs(12)
    assert len({d["id"] for d in documents}) == 12


def test_resume_survives_kill_9(tmp_path: Path) -> None:
    """A real SIGKILL after a commit and more (partly flushed) writes."""
    path = tmp_path / "c.jsonl.gz"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from asyncmig.core.files.jsonl import JsonlGzWriter
        writer = JsonlGzWriter.open(Path({str(path)!r}))
        writer.write([{{"id": f"doc-{{i}}", "n": i}} for i in range(100)])
        print(writer.commit(), flush=True)
        noise = [{{"id": f"junk-{{i}}", "blob": os.urandom(32768).hex()}} for i in range(64)]
        writer.write(noise)  # ~4 MB of JSON: more than the 1 MiB buffer reaches the file
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    committed = int(result.stdout)
    assert path.stat().st_size > committed
    with JsonlGzWriter.open(path, resume_offset=committed) as writer:
        writer.write([{"id": f"doc-{i}", "n": i} for i in range(100, 150)])
    assert _read_all(path) == [{"id": f"doc-{i}", "n": i} for i in range(150)]


def test_resume_refuses_a_missing_or_shortened_file(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    with pytest.raises(BackupCorrupt, match="missing"):
        JsonlGzWriter.open(path, resume_offset=100)
    size = _write(path, [_docs(3)])
    with pytest.raises(BackupCorrupt, match=f"{size} bytes, shorter than the {size + 1}"):
        JsonlGzWriter.open(path, resume_offset=size + 1)
    with pytest.raises(ValueError):
        JsonlGzWriter.open(path, resume_offset=-1)


def test_resume_offset_zero_or_none_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    _write(path, [_docs(3)])
    _write(path, [_docs(1, 10)], resume_offset=0)
    assert _read_all(path) == _docs(1, 10)
    _write(path, [_docs(1, 20)])
    assert _read_all(path) == _docs(1, 20)


# --- damage the reader must report -------------------------------------------------------------


def _good_file(tmp_path: Path, n: int = 6) -> Path:
    path = tmp_path / "c.jsonl.gz"
    _write(path, [_docs(n)])
    return path


def test_truncated_file(tmp_path: Path) -> None:
    path = _good_file(tmp_path)
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) - 8, len(data) // 2, 5):
        path.write_bytes(data[:cut])
        with pytest.raises(BackupCorrupt, match=rf"{path} is truncated: .* after line \d+"):
            _read_all(path)


def test_no_flipped_bit_after_the_header_goes_unnoticed(tmp_path: Path) -> None:
    """Every single-bit flip in the deflate data or the trailer is reported, except in padding
    bits that do not change the content at all. The gzip header's mtime/flags bytes are not
    checksummed by gzip; the manifest's SHA-256 covers those (and the padding)."""
    path = _good_file(tmp_path)
    data = path.read_bytes()
    reported = unchanged = 0
    for index in range(10, len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[index] ^= 1 << bit
            path.write_bytes(bytes(damaged))
            try:
                documents = _read_all(path)
            except BackupCorrupt as exc:
                assert str(path) in str(exc) and "line " in str(exc)
                reported += 1
            else:
                assert _same_json(documents, _docs(6)), f"byte {index} bit {bit} changed the content silently"
                unchanged += 1
    assert reported > 0.95 * (reported + unchanged)


def test_checksum_mismatch_names_the_member(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    _write(path, [_docs(3), _docs(3, 3)])
    data = bytearray(path.read_bytes())
    data[-8] ^= 0x01  # the last member's CRC-32
    path.write_bytes(bytes(data))
    with pytest.raises(BackupCorrupt, match=r"checksum of the member starting at line 4 does not match"):
        _read_all(path)


def test_edited_line_is_not_valid_json(tmp_path: Path) -> None:
    lines = [jsoncodec.dumps(d) for d in _docs(5)]
    lines[2] = lines[2][:-3]  # an edit that cut the end of a document
    path = _raw_gz(tmp_path / "c.jsonl.gz", lines)
    with JsonlGzReader(path) as reader:
        assert next(reader.pages(2)) == _docs(2)
        with pytest.raises(BackupCorrupt, match=rf"{path} line 3 is not valid JSON"):
            list(reader)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1E309"])
def test_nan_line(tmp_path: Path, constant: bytes) -> None:
    path = _raw_gz(tmp_path / "c.jsonl.gz", [b'{"id":"a"}', b'{"id":"b","v":[1,' + constant + b"]}"])
    with pytest.raises(
        BackupCorrupt, match=rf"{path} line 2: NaN/Infinity is not valid JSON and Cosmos DB cannot store it"
    ):
        _read_all(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"[1,2]", "is a JSON list, not an object"),
        (b'"text"', "is a JSON str, not an object"),
        (b"null", "is a JSON NoneType, not an object"),
        (b"", "is not valid JSON"),
        (b'{"id":"a"} {"id":"b"}', "is not valid JSON"),
        (b'{"id":"\xff\xfe"}', "is not valid JSON"),  # not UTF-8
    ],
)
def test_a_line_that_is_not_one_json_object(tmp_path: Path, line: bytes, message: str) -> None:
    path = _raw_gz(tmp_path / "c.jsonl.gz", [b'{"id":"a"}', line])
    with pytest.raises(BackupCorrupt, match=rf"{path} line 2 {message}"):
        _read_all(path)


def test_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"id":"a"}\n{"id":"b"}'))
    with pytest.raises(BackupCorrupt, match=rf"{path} line 2 has no terminating newline"):
        _read_all(path)


def test_garbage_after_the_last_member(tmp_path: Path) -> None:
    path = _good_file(tmp_path)
    with open(path, "ab") as file:
        file.write(b"\x00\x00garbage")
    with pytest.raises(BackupCorrupt, match=rf"{path}: the gzip data is corrupt at line 7"):
        _read_all(path)


def test_not_a_gzip_file(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(b'{"id":"plain json"}\n')
    with pytest.raises(BackupCorrupt, match="gzip data is corrupt at line 1.*incorrect header check"):
        _read_all(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BackupCorrupt, match="missing"):
        JsonlGzReader(tmp_path / "nope.jsonl.gz")


def test_an_endless_line_is_refused_without_filling_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "MAX_LINE_BYTES", 4 << 20)
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"id":"a"}\n' + b"7" * (6 << 20)))
    with pytest.raises(BackupCorrupt, match=rf"{path} line 2 is longer than"):
        _read_all(path)


def test_a_compression_bomb_is_inflated_in_bounded_pieces(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    line = b'{"id":"a","pad":"' + b" " * (3 << 20) + b'"}\n'
    path.write_bytes(gzip.compress(line * 8))  # 24 MiB from a few tens of KB
    sizes: list[int] = []
    original = files.JsonlGzReader._inflate

    def spy(self: JsonlGzReader) -> Iterator[bytes]:
        for piece in original(self):
            sizes.append(len(piece))
            yield piece

    files.JsonlGzReader._inflate = spy  # type: ignore[method-assign]
    try:
        assert len(_read_all(path)) == 8
    finally:
        files.JsonlGzReader._inflate = original  # type: ignore[method-assign]
    assert max(sizes) <= 1 << 20


# --- permissions, memory, async ----------------------------------------------------------------


def test_file_0600_in_a_new_0700_directory(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "backup" / "c.jsonl.gz"
        _write(path, [_docs(1)])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        path.chmod(0o644)
        _write(path, [_docs(1)])  # starting over tightens an existing file
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


_EMBEDDING = [random.Random(5).gauss(0, 0.05) for _ in range(768)]


def _vector_page(page: int, size: int) -> list[Document]:
    """~330 KB of JSON; the shared embedding keeps the page's own objects small, so the peak
    measured is the writer's."""
    return [{"id": f"p{page}-{i}", "embedding": _EMBEDDING} for i in range(size)]


def _peak_while(action: Any) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_a_page_not_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    page_size = 20  # ~330 KB of JSON per page

    def write(pages: int) -> None:
        with JsonlGzWriter.open(path) as writer:
            for page in range(pages):
                writer.write(_vector_page(page, page_size))
                if page % 5 == 4:
                    writer.commit()

    def read() -> None:
        with JsonlGzReader(path) as reader:
            for _ in reader.pages(page_size):
                pass

    write_small = _peak_while(lambda: write(5))
    write_large = _peak_while(lambda: write(40))  # 13 MB of JSON, 60 MB as Python objects
    read_large = _peak_while(read)
    write(5)
    read_small = _peak_while(read)
    # eight times the data, the same peak: the page's JSON and compressed bytes, zlib's state
    # and a 1 MiB file buffer for the writer; one page of parsed documents (~1.6 MB of floats)
    # and a 1 MiB inflated piece for the reader
    assert write_large < write_small * 1.2
    assert write_large < 3 << 20
    assert read_large < read_small * 1.2
    assert read_large < 5 << 20


async def test_async_wrappers(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    async with await AsyncJsonlGzWriter.open(path) as writer:
        assert writer.path == path
        await writer.write(_docs(4))
        committed = await writer.commit()
        assert writer.committed_offset == committed
        await writer.write(_docs(3, 4))
    async with await AsyncJsonlGzWriter.open(path, resume_offset=committed) as writer:
        await writer.write(_docs(6, 4))
    async with await AsyncJsonlGzReader.open(path) as reader:
        await reader.skip(2)
        pages = [page async for page in reader.pages(3)]
        assert reader.position == 10
    assert [d for p in pages for d in p] == _docs(8, 2)


async def test_async_writer_aborts_on_error(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    with pytest.raises(RuntimeError):
        async with await AsyncJsonlGzWriter.open(path) as writer:
            await writer.write(_docs(2))
            await writer.commit()
            await writer.write(_docs(2, 2))
            raise RuntimeError("source failed")
    with JsonlGzReader(path) as reader:
        pages = reader.pages(2)
        assert next(pages) == _docs(2)  # what was committed is complete
        with pytest.raises(BackupCorrupt, match="truncated"):
            next(pages)


def test_level_zero_still_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    _write(path, [_docs(3)], level=0)
    assert zlib.decompress(path.read_bytes(), 31).count(b"\n") == 3
    assert _read_all(path) == _docs(3)
