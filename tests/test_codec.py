"""The JSON codec: what is refused, where the error points, and how corrupt bytes are described."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

import storage_shim as ss
from storage_shim import codec


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Colour(enum.Enum):
    RED = "red"


class Ratio(float):
    """orjson refuses float subclasses; the path must still name the value."""


REFUSED: list[tuple[object, str, str]] = [
    ({"a": {"b": [1, float("nan")]}}, "$.a.b[1]", "nan has no JSON representation"),
    ({"x y": [0.5, float("inf")]}, "$['x y'][1]", "inf has no JSON representation"),
    ([[[-float("inf")]]], "$[0][0][0]", "-inf has no JSON representation"),
    ({"0": float("nan")}, "$['0']", "nan has no JSON representation"),
    ({'say "hi"': float("nan")}, "$['say \"hi\"']", "nan has no JSON representation"),
    ((1, (2, float("nan"))), "$[1][1]", "nan has no JSON representation"),
    ({"n": 2**64}, "$.n", "integer outside the 64-bit range"),
    ({"n": -(2**63) - 1}, "$.n", "integer outside the 64-bit range"),
    ([10**30], "$[0]", "integer outside the 64-bit range"),
    ({1: "one"}, "$[1]", "dict key 1 is not a str"),
    ({"a": {(1, 2): 3}}, "$.a[(1, 2)]", "dict key (1, 2) is not a str"),
    ({None: 1}, "$[None]", "dict key None is not a str"),
    ({"when": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)}, "$.when", "datetime is not"),
    ({"day": datetime.date(2024, 1, 1)}, "$.day", "date is not a JSON type"),
    ({"at": datetime.time(12, 30)}, "$.at", "time is not a JSON type"),
    ({"items": [Point(1, 2)]}, "$.items[0]", "Point is not a JSON type"),
    ({"price": decimal.Decimal("1.10")}, "$.price", "Decimal is not a JSON type"),
    ({"tags": {"a", "b"}}, "$.tags", "set is not a JSON type"),
    ({"raw": b"bytes"}, "$.raw", "bytes is not a JSON type"),
    ({"obj": object()}, "$.obj", "object is not a JSON type"),
    (float("nan"), "$", "nan has no JSON representation"),
    ({"text": ["ok", "lone \ud800"]}, "$.text[1]", "not valid Unicode"),
    ({"ratio": [Ratio(0.5)]}, "$.ratio[0]", "Ratio is not a JSON type"),
    ({"ratio": Ratio(0.5), "none": None}, "$.ratio", "Ratio is not a JSON type"),
]


@pytest.mark.parametrize(("value", "json_path", "reason"), REFUSED, ids=[p for _, p, _ in REFUSED])
def test_refused_values_name_their_json_path(value: object, json_path: str, reason: str) -> None:
    with pytest.raises(ss.SerializationError) as info:
        codec.encode(value)
    error = info.value
    assert error.json_path == json_path
    assert reason in error.reason
    assert str(error) == f"cannot serialise value at {json_path}: {error.reason}"
    assert isinstance(error, TypeError)


def test_the_first_problem_in_document_order_is_reported() -> None:
    value = {"ok": 1, "first": [None, float("nan")], "second": datetime.date(2024, 1, 1)}
    with pytest.raises(ss.SerializationError) as info:
        codec.encode(value)
    assert info.value.json_path == "$.first[1]"


def test_orjson_errors_are_chained() -> None:
    with pytest.raises(ss.SerializationError) as info:
        codec.encode({"n": 2**70})
    assert isinstance(info.value.__cause__, orjson.JSONEncodeError)


ACCEPTED: list[tuple[object, bytes, Any]] = [
    ({"a": None, "b": [None, {"c": None}]}, b'{"a":null,"b":[null,{"c":null}]}', None),
    ({"s": "null", "t": "NaN"}, b'{"s":"null","t":"NaN"}', None),
    (None, b"null", None),
    ({"n": 2**64 - 1, "m": -(2**63)}, b'{"n":18446744073709551615,"m":-9223372036854775808}', None),
    ({"big": 2**53 + 1}, b'{"big":9007199254740993}', None),
    ({"f": 1e308, "g": -0.0}, b'{"f":1e+308,"g":-0.0}', None),
    ((1, [2, (3,)]), b"[1,[2,[3]]]", [1, [2, [3]]]),
    (
        {"id": uuid.UUID(int=1)},
        b'{"id":"00000000-0000-0000-0000-000000000001"}',
        {"id": "00000000-0000-0000-0000-000000000001"},
    ),
    ({"colour": Colour.RED}, b'{"colour":"red"}', {"colour": "red"}),
    ({"text": "ünïcødé 😀\n\x00"}, '{"text":"ünïcødé 😀\\n\\u0000"}'.encode(), None),
]


@pytest.mark.parametrize(
    ("value", "encoded", "decoded"), ACCEPTED, ids=[e.decode()[:30] for _, e, _ in ACCEPTED]
)
def test_accepted_values(value: object, encoded: bytes, decoded: Any) -> None:
    assert codec.encode(value) == encoded
    assert codec.decode(encoded) == (value if decoded is None else decoded)


def test_a_store_keeps_nulls_and_64_bit_integers(tmp_path: Path) -> None:
    value = {"none": None, "max": 2**64 - 1, "min": -(2**63), "list": [None]}
    with ss.open_store(tmp_path, backend="atomic") as store:
        store.write("doc", value)
        assert store.read("doc") == value
        with pytest.raises(ss.SerializationError):
            store.write("doc", {"max": 2**64})
        assert store.read("doc") == value


CYCLE = """
import storage_shim as ss
from storage_shim import codec

loop = []
loop.append(loop)
try:
    codec.encode({"a": loop})
except ss.SerializationError as error:
    print(error.json_path)
"""


def test_a_reference_cycle_is_refused(tmp_path: Path) -> None:
    """In a child process, so that a regression to an endless walk fails instead of hanging."""
    package_parent = os.path.dirname(os.path.dirname(ss.__file__))
    result = subprocess.run(
        [sys.executable, "-c", CYCLE],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": package_parent},
        capture_output=True,
        text=True,
        timeout=3,
        check=True,
    )
    assert result.stdout.strip().startswith("$.a")


def test_very_deep_nesting_is_refused_at_the_root() -> None:
    deep: list[Any] = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(ss.SerializationError) as info:
        codec.encode(deep)
    assert info.value.json_path == "$" + "[0]" * 255
    assert "levels deep" in info.value.reason
    assert len(str(info.value)) < 200


# -- corrupt documents ------------------------------------------------------------------
CORRUPT: list[tuple[bytes, str]] = [
    (b"", "empty file (0 bytes)"),
    (b"\x00", "file of 1 NUL bytes"),
    (b"\x00" * 4096, "file of 4096 NUL bytes"),
    (b'{"a": 1', "invalid JSON ("),
    (b'{"a": 1}\x00\x00', "invalid JSON ("),
    (b'{"a": 1}{"a": 2}', "invalid JSON ("),
    (b'{"a": NaX}', "invalid JSON ("),
    (b"\xff\xfe{}", "invalid JSON ("),
    (b"   \n", "invalid JSON ("),
]


@pytest.mark.parametrize(("data", "reason"), CORRUPT)
def test_corrupt_bytes_are_described(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        codec.decode(data)
    described = codec.describe_invalid(data, info.value)
    assert described.startswith(reason)
    if reason.startswith("invalid JSON"):
        assert described.endswith(f" in {len(data)} bytes")


@pytest.mark.parametrize("backend", ["naive", "lockfile", "atomic"])
@pytest.mark.parametrize(("data", "reason"), CORRUPT[:4])
def test_a_store_reports_why_a_document_is_corrupt(
    tmp_path: Path, backend: str, data: bytes, reason: str
) -> None:
    (tmp_path / "cfg.json").write_bytes(data)
    with ss.open_store(tmp_path, backend=backend, read_retries=0) as store:
        with pytest.raises(ss.CorruptDocumentError) as info:
            store.read("cfg")
    error = info.value
    assert error.key == ("cfg",)
    assert error.path == str(tmp_path / "cfg.json")
    assert error.reason.startswith(reason)
    assert str(error) == f"corrupt document at {error.path}: {error.reason}"
    assert isinstance(error.__cause__, ValueError)
    assert (tmp_path / "cfg.json").read_bytes() == data


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (json.dumps({"x": float("nan")}).encode(), "nan"),
        (json.dumps({"x": float("inf")}).encode(), "inf"),
        (b"\xef\xbb\xbf" + b'{"x": 1}', 1),
        (json.dumps({"x": "\ud800"}).encode(), "\ud800"),
        ('{"x": 2}'.encode("utf-16"), 2),
    ],
    ids=["nan", "infinity", "bom", "lone_surrogate", "utf16"],
)
def test_what_pythons_json_writes_reads_back(written: bytes, expected: object) -> None:
    """orjson refuses these; a file another program wrote with json.dump is not corrupt."""
    value = codec.decode(written)["x"]
    if expected in ("nan", "inf"):
        assert str(value) == expected
    else:
        assert value == expected
