"""The conformance suite: what every backend must do, as tests a backend author inherits.

::

    from storage_shim.testing import BackendContract

    class TestMyBackend(BackendContract):
        backend = "mine"                      # the registered name

        @pytest.fixture
        def store_options(self):              # optional: extra open_store() arguments
            return {"plugins": [my_plugin], "lock_timeout": 5}

``location`` (default ``tmp_path / "store"``) can be overridden the same way.
Tests tied to a capability skip, naming it, when the backend does not declare
it: ``persistent`` (documents outlive the store), ``cross_process`` (updates
from several processes never get lost) and ``atomic_reads`` (readers in other
processes never see a torn document). ``durable`` is checked only through the
receipts' flags. ``crash_safe``, real durability and ``transactions`` need crash
enumeration and fault injection, and are not proven here.

The cross-process tests run workers from :mod:`storage_shim.testing.workers`
in ``spawn``-ed processes, which receive only the picklable ``store_options``
(see the ``worker_options`` fixture): a backend registered through a plugin
object must also be installed under the ``storage_shim`` entry-point group.
Those two tests carry the ``slow`` marker (registered by the pytest plugin).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

import storage_shim as ss
from storage_shim.backends.files import FileBackend
from storage_shim.fs import CAN_SYNC_DIRECTORIES

from . import workers

StoreFactory = Callable[..., ss.Store]

_FLOATS = [0.1, -0.0, 1.0, 123456.789, 1.5e-300, 5e-324, 1.7976931348623157e308, -2.5e20]
ROUND_TRIP_VALUES: list[tuple[str, Any]] = [
    ("nested", {"a": {"b": {"c": [1, [2, [3, {"d": None, "e": [True, False]}]]]}}}),
    ("scalars", {"t": True, "f": False, "n": None, "zero": 0, "neg": -17, "s": "text"}),
    (
        "unicode",
        {
            "héllo": "wörld",
            "日本": "語",
            "emoji": "🎉👩\u200d👩\u200d👧",
            "escapes": 'quote" back\\ tab\t nl\n cr\r \u2028\u2029 nul\x00 us\x1f',
            "": "an empty key",
        },
    ),
    ("empty_dict", {}),
    ("empty_list", []),
    ("empty_string", ""),
    ("empty_containers", {"d": {}, "l": [], "s": "", "nested": [[], [{}], {"x": []}]}),
    ("int64", [2**63 - 1, -(2**63), 2**64 - 1, 2**53 + 1, 0, -1]),
    ("floats", _FLOATS),
    ("null", None),
    ("true", True),
    ("int", 42),
    ("float", 2.5),
    ("list_of_mixed", [1, 1.0, "1", True, None, [1], {"1": 1}]),
]

SERIALIZATION_ERRORS: list[tuple[str, Any, str]] = [
    ("nan", {"a": float("nan")}, "$.a"),
    ("infinity", {"a": [1, float("inf")]}, "$.a[1]"),
    ("minus_infinity", {"a": {"b": float("-inf")}}, "$.a.b"),
    ("top_level_nan", float("nan"), "$"),
    ("2**64", {"n": 2**64}, "$.n"),
    ("below_int64", [0, -(2**63) - 1], "$[1]"),
    ("int_dict_key", {1: "one"}, "$[1]"),
    ("none_dict_key", {"d": {None: 1}}, "$.d[None]"),
    ("datetime", {"when": datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC)}, "$.when"),
    ("object", {"items": [0, {"o": object()}]}, "$.items[1].o"),
    ("set", {"odd key": {1, 2}}, "$['odd key']"),
    ("bytes", {"b": b"raw"}, "$.b"),
]

INVALID_KEYS: list[Any] = [
    "",
    "a//b",
    "/absolute",
    "a/",
    ".",
    "..",
    ".hidden",
    "a/.hidden",
    "a/../b",
    "a/./b",
    "con",
    "CON",
    "NUL.txt",
    "com1",
    "LPT9.log",
    "a\x00b",
    "tab\tkey",
    "trail.",
    "trail ",
    "x" * 300,
    "é" * 101,
    "back\\slash",
    "c:drive",
    'quo"te',
    "a<b",
    "a>b",
    "a|b",
    "a?b",
    "a*b",
    "/".join(["s"] * 33),
    (),
    ("a", ""),
    ("a/b",),
    ("a", 1),
    ["ok", None],
    ["ok", ["nested"]],
    42,
    None,
    b"bytes",
]

VALID_UNUSUAL_KEYS: list[Any] = [
    "café/ünïcode",
    "with space/and-dash_underscore",
    "dots.in.the.middle",
    "x" * 200,
    "é" * 100,
    "CONSOLE",
    "a/b/c/d/e/f/g/h",
    ("tuple", "key"),
    ["list", "key"],
]


def typed(value: Any) -> Any:
    """``value`` with its scalars tagged by type: ``1``, ``1.0``, ``True`` and ``±0.0`` differ."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [typed(item) for item in value]
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


def large_document() -> dict[str, Any]:
    """About 2.6 MB of JSON: many small objects and one long non-ASCII string."""
    rows = [
        {"id": i, "name": f"row {i} ✓", "ratio": i / 7, "tags": ["a", "b"], "even": i % 2 == 0}
        for i in range(20_000)
    ]
    return {"rows": rows, "text": "ü" * 500_000}


def compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def capabilities_of(store: ss.Store, name: str) -> ss.Capabilities:
    declared = store.specs[name].capabilities or getattr(store.backend(name), "capabilities", None)
    if not isinstance(declared, ss.Capabilities):
        pytest.fail(f"backend {name!r} declares no Capabilities, neither on its spec nor its class")
    return declared


class _Boom(Exception):
    pass


class BackendContract:
    """Subclass it with ``backend = "<registered name>"``; pytest collects the tests."""

    backend: ClassVar[str]
    thread_count: ClassVar[int] = 8
    thread_updates: ClassVar[int] = 50
    process_count: ClassVar[int] = 4
    process_updates: ClassVar[int] = 150
    torn_document_bytes: ClassVar[int] = 1_000_000
    torn_read_seconds: ClassVar[float] = 1.5
    transaction_pad_bytes: ClassVar[int] = 300_000
    state_machine_settings: ClassVar[settings] = settings(
        max_examples=20,
        stateful_step_count=20,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )

    # -- fixtures -------------------------------------------------------------------
    @pytest.fixture
    def location(self, tmp_path: Path) -> Path:
        return tmp_path / "store"

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        """Extra ``open_store`` arguments, e.g. ``{"plugins": [...], "lock_timeout": 5}``."""
        return {}

    @pytest.fixture
    def worker_options(self, store_options: dict[str, Any]) -> dict[str, Any]:
        """What worker processes get: ``store_options`` less ``plugins`` and unpicklable values."""
        return workers.picklable_options(store_options)

    @pytest.fixture
    def store_factory(
        self, location: Path, store_options: dict[str, Any]
    ) -> Iterator[StoreFactory]:
        """Opens another store on ``location``; keywords override ``store_options``."""
        name = getattr(self, "backend", None)
        if not isinstance(name, str):
            pytest.fail(f'{type(self).__name__} must set backend = "<registered backend name>"')
        opened: list[ss.Store] = []

        def open_another(**overrides: Any) -> ss.Store:
            store = ss.open_store(location, **{"backend": name, **store_options, **overrides})
            opened.append(store)
            return store

        yield open_another
        for store in reversed(opened):
            store.close()

    @pytest.fixture
    def store(self, store_factory: StoreFactory) -> ss.Store:
        return store_factory()

    @pytest.fixture
    def capabilities(self, store: ss.Store) -> ss.Capabilities:
        return capabilities_of(store, self.backend)

    def require(self, capabilities: ss.Capabilities, *names: str) -> None:
        for name in names:
            if not getattr(capabilities, name):
                pytest.skip(f"backend {self.backend!r} does not declare capabilities.{name}")

    # -- values ---------------------------------------------------------------------
    @pytest.mark.parametrize(
        "value", [v for _, v in ROUND_TRIP_VALUES], ids=[i for i, _ in ROUND_TRIP_VALUES]
    )
    def test_values_round_trip(self, store: ss.Store, value: Any) -> None:
        store.write("kinds/doc", value)
        assert typed(store.read("kinds/doc")) == typed(value)
        assert typed(store.get("kinds/doc", "a default")) == typed(value)

    def test_a_large_document_round_trips(self, store: ss.Store) -> None:
        document = large_document()
        receipt = store.write("big", document)
        assert receipt.bytes >= 2_500_000
        assert store.read("big") == document

    @pytest.mark.parametrize("key", VALID_UNUSUAL_KEYS, ids=repr)
    def test_unusual_valid_keys_round_trip(self, store: ss.Store, key: Any) -> None:
        store.write(key, {"key": repr(key)})
        assert store.read(key) == {"key": repr(key)}
        assert store.list() == [ss.parse_key(key)]

    def test_overwrite_replaces_longer_and_shorter_documents(self, store: ss.Store) -> None:
        store.write("doc", {"v": 1, "padding": "x" * 10_000})
        store.write("doc", {"v": 2})
        assert store.read("doc") == {"v": 2}
        store.write("doc", [3] * 5000)
        assert store.read("doc") == [3] * 5000
        assert store.list() == [("doc",)]

    # -- missing and corrupt documents ----------------------------------------------
    def test_reading_a_missing_key_raises_not_found(self, store: ss.Store) -> None:
        store.write("a/present", 1)
        for key in ["missing", "a/missing", "a/present/below"]:
            with pytest.raises(ss.NotFoundError) as info:
                store.read(key)
            assert isinstance(info.value, LookupError)
            assert info.value.key == ss.parse_key(key)

    def test_get_returns_the_default_only_when_missing(self, store: ss.Store) -> None:
        sentinel = object()
        assert store.get("missing", sentinel) is sentinel
        assert store.get("missing") is None
        falsy: list[object] = [None, 0, False, "", {}, []]
        for stored in falsy:
            store.write("falsy", stored)
            assert typed(store.get("falsy", sentinel)) == typed(stored)

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"{bad", "invalid JSON"),
            (b'{"cut": [1, 2', "invalid JSON"),
            (b"", "empty"),
            (b"\x00" * 16, "NUL"),
        ],
        ids=["garbage", "truncated", "empty", "nul_bytes"],
    )
    def test_a_corrupt_document_raises_and_stays(
        self, store_factory: StoreFactory, raw: bytes, reason: str
    ) -> None:
        store = store_factory(read_retries=1, read_retry_delay=0)
        backend = store.backend(self.backend)
        key = ss.parse_key("corrupt/doc")
        backend.write(key, raw)
        attempts: list[Callable[[], object]] = [
            lambda: store.read(key),
            lambda: store.get(key, {"a": "default"}),
            lambda: store.update(key, lambda doc: doc, default={}),
        ]
        for attempt in attempts:
            with pytest.raises(ss.CorruptDocumentError) as info:
                attempt()
            assert info.value.key == key
            assert info.value.path == backend.location_of(key)
            assert reason in info.value.reason
        assert backend.read(key) == raw

    def test_a_corrupt_document_can_be_quarantined_by_a_hook(
        self, store_factory: StoreFactory, store_options: dict[str, Any]
    ) -> None:
        quarantined: list[tuple[ss.Key, str | None]] = []

        class Quarantine:
            @ss.hookimpl
            def storage_shim_on_corrupt(self, key: ss.Key) -> str | None:
                return "quarantine" if key[0] == "bad" else None

            @ss.hookimpl
            def storage_shim_quarantined(self, key: ss.Key, error: ss.CorruptDocumentError) -> None:
                quarantined.append((key, error.quarantined_to))

        plugins = [*store_options.get("plugins", ()), Quarantine()]
        store = store_factory(plugins=plugins, read_retries=0)
        backend = store.backend(self.backend)
        kept, moved = ss.parse_key("kept/doc"), ss.parse_key("bad/doc")
        for key in (kept, moved):
            backend.write(key, b'{"cut": ')
        with pytest.raises(ss.CorruptDocumentError):
            store.read(kept)  # the hook answered None: raise, as without it
        try:
            assert store.get(moved, "default") == "default"
        except ss.UnsupportedOperationError:
            pytest.skip(f"backend {self.backend!r} has no quarantine (Backend.quarantine)")
        assert store.update(moved, lambda n: n + 1, default=0) == 1
        assert store.read(moved) == 1
        assert backend.read(kept) == b'{"cut": '
        assert len(quarantined) == 1
        key, where = quarantined[0]
        assert key == moved
        assert where
        if os.path.isfile(where):  # a file backend keeps the bytes as a file
            assert Path(where).read_bytes() == b'{"cut": '

    def test_quarantine_moves_nothing_once_the_document_changed(self, store: ss.Store) -> None:
        backend = store.backend(self.backend)
        key = ss.parse_key("bad/doc")
        backend.write(key, b"{corrupt")
        try:
            assert backend.quarantine(key, b"{other bytes") is None
        except ss.UnsupportedOperationError:
            pytest.skip(f"backend {self.backend!r} has no quarantine (Backend.quarantine)")
        assert backend.read(key) == b"{corrupt"
        assert backend.quarantine(key, b"{corrupt")
        with pytest.raises(ss.NotFoundError):
            backend.read(key)

    # -- refusals -------------------------------------------------------------------
    @pytest.mark.parametrize(
        ("bad", "json_path"),
        [(bad, path) for _, bad, path in SERIALIZATION_ERRORS],
        ids=[i for i, _, _ in SERIALIZATION_ERRORS],
    )
    def test_unserialisable_values_are_refused_and_change_nothing(
        self, store: ss.Store, bad: Any, json_path: str
    ) -> None:
        store.write("doc", {"previous": True})
        before = store.backend(self.backend).read(("doc",))
        attempts: list[Callable[[], object]] = [
            lambda: store.write("doc", bad),
            lambda: store.update("doc", lambda _: bad),
        ]
        for attempt in attempts:
            with pytest.raises(ss.SerializationError) as info:
                attempt()
            assert isinstance(info.value, TypeError)
            assert info.value.json_path == json_path
            assert store.backend(self.backend).read(("doc",)) == before
        with pytest.raises(ss.SerializationError):
            store.write("never", bad)
        assert store.list() == [("doc",)]

    def test_invalid_keys_are_refused_by_every_operation(self, store: ss.Store) -> None:
        operations: dict[str, Callable[[Any], object]] = {
            "write": lambda key: store.write(key, {}),
            "read": store.read,
            "get": store.get,
            "exists": store.exists,
            "remove": store.remove,
            "update": lambda key: store.update(key, lambda doc: doc, default={}),
            "backend_for": store.backend_for,
        }
        accepted = []
        for key in INVALID_KEYS:
            for operation, call in operations.items():
                try:
                    call(key)
                except ss.InvalidKeyError:
                    pass
                else:
                    accepted.append(f"{operation}({key!r})")
            if key not in ("", ()):  # both mean "the whole store" to list()
                try:
                    store.list(key)
                except ss.InvalidKeyError:
                    pass
                else:
                    accepted.append(f"list({key!r})")
        assert accepted == []
        assert store.list() == []

    # -- remove, exists, list -------------------------------------------------------
    def test_remove_says_whether_there_was_a_document(self, store: ss.Store) -> None:
        store.write("a/doc", 1)
        store.write("a/other", 2)
        assert store.remove("a/doc") is True
        assert store.remove("a/doc") is False
        assert store.remove("never/written") is False
        with pytest.raises(ss.NotFoundError):
            store.read("a/doc")
        assert store.list() == [("a", "other")]

    def test_exists(self, store: ss.Store) -> None:
        assert store.exists("a/b") is False
        store.write("a/b", None)
        assert store.exists("a/b") is True
        assert store.exists(("a", "b")) is True
        assert store.exists("a") is False  # a prefix of a key is no document
        assert store.exists("a/b/c") is False
        store.remove("a/b")
        assert store.exists("a/b") is False

    def test_list_is_sorted_and_filters_by_whole_segments(self, store: ss.Store) -> None:
        keys = ["b/2", "a", "ab/y", "a/x", "abc", "a/b/deep", "b/1", "a/x2"]
        for key in keys:
            store.write(key, key)
        everything = sorted(ss.parse_key(k) for k in keys)
        assert store.list() == everything
        assert store.list("") == everything
        assert store.list(()) == everything
        under_a = [("a",), ("a", "b", "deep"), ("a", "x"), ("a", "x2")]
        assert store.list("a") == under_a
        assert store.list(("a",)) == under_a
        assert store.list(["a"]) == under_a
        assert store.list("ab") == [("ab", "y")]
        assert store.list("a/x") == [("a", "x")]
        assert store.list("a/b") == [("a", "b", "deep")]
        assert store.list("zzz") == []
        assert store.list("a/missing") == []

    # -- receipts -------------------------------------------------------------------
    @pytest.mark.parametrize("durability", ["none", "fsync", "full"])
    def test_receipts_tell_what_was_done(
        self, store_factory: StoreFactory, durability: ss.Durability
    ) -> None:
        store = store_factory(durability=durability)
        capabilities = capabilities_of(store, self.backend)
        instance = store.backend(self.backend)
        writes = [("new/deep/doc", {"v": 1, "é": "ü"}), ("new/deep/doc", {"v": 2, "l": [1, 2]})]
        for key, value in writes:
            receipt = store.write(key, value)
            assert receipt.backend == self.backend
            assert receipt.key == ss.parse_key(key)
            assert receipt.bytes == len(compact_json(value))
            assert receipt.bytes == len(instance.read(receipt.key))
            assert receipt.durability == durability
            if capabilities.durable and durability != "none":
                # Windows cannot fsync a directory from Python; its receipts say so.
                synced_dir = CAN_SYNC_DIRECTORIES or not isinstance(instance, FileBackend)
                assert receipt.file_synced
                assert receipt.dir_synced is receipt.durable is synced_dir
            if durability == "none" and isinstance(instance, FileBackend):
                assert (receipt.file_synced, receipt.dir_synced) == (False, False)

    # -- update ---------------------------------------------------------------------
    def test_update_with_a_default(self, store: ss.Store) -> None:
        assert store.update("counter", lambda n: n + 1, default=0) == 1
        assert store.update("counter", lambda n: n + 1, default=100) == 2
        assert store.read("counter") == 2
        default: dict[str, list[str]] = {"items": []}

        def append(doc: dict[str, list[str]]) -> dict[str, list[str]]:
            doc["items"].append("x")
            return doc

        assert store.update("one", append, default=default) == {"items": ["x"]}
        assert store.update("two", append, default=default) == {"items": ["x"]}
        assert default == {"items": []}

    def test_update_sees_the_current_document_and_may_read_it_again(self, store: ss.Store) -> None:
        store.write("doc", {"n": 1})

        def bump(doc: dict[str, int]) -> dict[str, int]:
            assert store.read("doc") == doc
            return {"n": doc["n"] + 1}

        assert store.update("doc", bump) == {"n": 2}
        assert store.read("doc") == {"n": 2}

    def test_update_without_a_default_needs_a_document(self, store: ss.Store) -> None:
        calls: list[object] = []
        with pytest.raises(ss.NotFoundError):
            store.update("missing", calls.append)
        assert calls == []
        assert store.exists("missing") is False

    def test_an_exception_in_update_propagates_and_writes_nothing(self, store: ss.Store) -> None:
        store.write("doc", {"v": 1})
        error = _Boom("from fn")

        def fail(doc: object) -> object:
            raise error

        for key, default in [("doc", None), ("fresh", {"v": 0})]:
            with pytest.raises(_Boom) as info:
                store.update(key, fail, default=default)
            assert info.value is error
        assert store.read("doc") == {"v": 1}
        assert store.exists("fresh") is False
        with ThreadPoolExecutor(1) as pool:  # the lock was released: another thread gets it
            future = pool.submit(store.update, "doc", lambda doc: {"v": doc["v"] + 1})
            assert future.result(timeout=30) == {"v": 2}

    def test_threads_never_lose_updates(self, store: ss.Store) -> None:
        threads, updates = self.thread_count, self.thread_updates
        start = threading.Barrier(threads)

        def slow_increment(n: int) -> int:
            time.sleep(0.0001)  # give up the GIL, so an unlocked update would interleave
            return n + 1

        def work() -> list[int]:
            start.wait(timeout=30)
            return [store.update("counter", slow_increment, default=0) for _ in range(updates)]

        with ThreadPoolExecutor(threads) as pool:
            results = [f.result(timeout=120) for f in [pool.submit(work) for _ in range(threads)]]
        assert store.read("counter") == threads * updates
        assert sorted(v for values in results for v in values) == list(
            range(1, threads * updates + 1)
        )

    @pytest.mark.parametrize("inner", ["write", "remove", "update"])
    def test_changing_a_key_inside_its_own_update_is_refused(
        self, store: ss.Store, inner: str
    ) -> None:
        """The outer update would silently overwrite it; other keys stay usable."""
        store.write("doc", {"v": 1})
        nested: dict[str, Callable[[], object]] = {
            "write": lambda: store.write("doc", {"v": 100}),
            "remove": lambda: store.remove("doc"),
            "update": lambda: store.update("doc", lambda d: d),
        }

        def fn(doc: dict[str, int]) -> dict[str, int]:
            store.write("other", {"nested": True})
            with pytest.raises(ss.UnsupportedOperationError, match="inside update"):
                nested[inner]()
            return {"v": doc["v"] + 1}

        assert store.update("doc", fn) == {"v": 2}
        assert store.read("doc") == {"v": 2}
        assert store.read("other") == {"nested": True}
        store.write("doc", {"v": 3})  # the key is free again once the update returned

    @pytest.mark.parametrize("racer", ["write", "remove"])
    def test_a_write_during_an_update_waits_for_it(self, store: ss.Store, racer: str) -> None:
        """An acknowledged write or remove must never be overwritten by an older update."""
        store.write("doc", 0)
        inside, release = threading.Event(), threading.Event()

        def slow_increment(n: int) -> int:
            inside.set()
            release.wait(timeout=30)
            return n + 1

        with ThreadPoolExecutor(2) as pool:
            updating = pool.submit(store.update, "doc", slow_increment)
            assert inside.wait(timeout=30)
            racing: Future[object] = (
                pool.submit(store.write, "doc", 100)
                if racer == "write"
                else pool.submit(store.remove, "doc")
            )
            with contextlib.suppress(TimeoutError):
                racing.result(timeout=0.2)  # it should be waiting for the update's lock
            release.set()
            assert updating.result(timeout=30) == 1
            racing.result(timeout=30)
        assert store.get("doc") == (100 if racer == "write" else None)

    # -- routing and life cycle -----------------------------------------------------
    def test_backend_for_names_the_backend(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        assert store.backend_for("any/key") == self.backend
        assert store.backend_for(("other",)) == self.backend
        with pytest.raises(ss.InvalidKeyError):
            store.backend_for("../up")
        other = "memory" if self.backend != "memory" else "atomic"
        routed = store_factory(backend=other, routes={"routed": self.backend})
        assert routed.backend_for("routed/doc") == self.backend
        assert routed.backend_for("elsewhere") == other
        routed.write("routed/doc", 1)
        routed.write("elsewhere", 2)
        assert routed.backend(self.backend).read(("routed", "doc")) == b"1"
        assert routed.backend(self.backend).exists(("elsewhere",)) is False
        assert routed.list() == [("elsewhere",), ("routed", "doc")]

    def test_close_is_idempotent_and_final(self, store: ss.Store) -> None:
        store.write("doc", 1)
        store.close()
        store.close()
        assert store.closed is True
        operations: dict[str, Callable[[], object]] = {
            "read": lambda: store.read("doc"),
            "get": lambda: store.get("doc"),
            "write": lambda: store.write("doc", 2),
            "update": lambda: store.update("doc", lambda n: n + 1),
            "remove": lambda: store.remove("doc"),
            "exists": lambda: store.exists("doc"),
            "list": store.list,
            "backend": lambda: store.backend(self.backend),
        }
        still_working = []
        for name, call in operations.items():
            try:
                call()
            except ss.StoreClosedError:
                pass
            else:
                still_working.append(name)
        assert still_working == []

    def test_documents_outlive_the_store(
        self, store: ss.Store, store_factory: StoreFactory, capabilities: ss.Capabilities
    ) -> None:
        self.require(capabilities, "persistent")
        store.write("keep/doc", {"v": [1, 2]})
        store.write("keep/other", "x")
        alongside = store_factory()
        assert alongside.read("keep/doc") == {"v": [1, 2]}
        alongside.write("keep/doc", {"v": 3})
        assert store.read("keep/doc") == {"v": 3}
        store.close()
        alongside.close()
        with store_factory() as reopened:
            assert reopened.read("keep/doc") == {"v": 3}
            assert reopened.list() == [("keep", "doc"), ("keep", "other")]

    # -- a model-based test -----------------------------------------------------------
    def test_behaves_like_a_dict(self, store_options: dict[str, Any]) -> None:
        """Random sequences of operations agree with a plain dict (Hypothesis)."""
        backend = self.backend

        class BackendModel(StoreModel):
            def __init__(self) -> None:
                super().__init__(backend, store_options)

        run_state_machine_as_test(BackendModel, settings=self.state_machine_settings)

    # -- other processes --------------------------------------------------------------
    # -- transactions ------------------------------------------------------------------
    def test_read_many_returns_the_documents_that_exist(self, store: ss.Store) -> None:
        store.write("many/a", {"a": 1})
        store.write("many/b", [2])
        found = store.read_many(["many/a", ("many", "b"), "many/missing", "many/a"])
        assert found == {("many", "a"): {"a": 1}, ("many", "b"): [2]}
        assert store.read_many([]) == {}

    def test_transactions_work_or_are_refused_naming_who_has_them(
        self, store: ss.Store, capabilities: ss.Capabilities
    ) -> None:
        if not capabilities.transactions:
            with pytest.raises(ss.UnsupportedOperationError, match="have them"):
                store.transaction()
            return
        with store.transaction() as tx:
            tx.write("tx/one", 1)
        assert store.read("tx/one") == 1

    def test_a_transaction_commits_all_its_changes_at_once(
        self, store: ss.Store, store_factory: StoreFactory, capabilities: ss.Capabilities
    ) -> None:
        self.require(capabilities, "transactions")
        store.write("tx/a", 1)
        store.write("tx/b", 2)
        other = store_factory()
        with store.transaction() as tx:
            tx.write("tx/a", 10)
            assert tx.remove("tx/b") is True
            assert tx.update("tx/c", lambda n: n + 1, default=0) == 1
            assert (tx.read("tx/a"), tx.get("tx/b", "gone"), tx.read("tx/c")) == (10, "gone", 1)
            assert tx.exists("tx/b") is False
            assert tx.remove("tx/never") is False
            assert other.read_many(["tx/a", "tx/b", "tx/c"]) == {("tx", "a"): 1, ("tx", "b"): 2}
        assert store.read_many(["tx/a", "tx/b", "tx/c"]) == {("tx", "a"): 10, ("tx", "c"): 1}
        assert other.read_many(["tx/a", "tx/b", "tx/c"]) == {("tx", "a"): 10, ("tx", "c"): 1}
        assert sorted(r.key for r in tx.receipts) == [("tx", "a"), ("tx", "c")]
        assert all(r.bytes > 0 and r.backend == self.backend for r in tx.receipts)

    def test_an_exception_discards_the_whole_transaction(
        self, store: ss.Store, capabilities: ss.Capabilities
    ) -> None:
        self.require(capabilities, "transactions")
        store.write("tx/a", 1)
        tx = store.transaction()

        def write_then_fail() -> None:
            with tx:
                tx.write("tx/a", 2)
                tx.write("tx/new", 3)
                raise _Boom

        with pytest.raises(_Boom):
            write_then_fail()
        assert store.read_many(["tx/a", "tx/new"]) == {("tx", "a"): 1}
        with pytest.raises(ss.UnsupportedOperationError, match="discarded"):
            tx.write("tx/a", 4)
        with store.transaction() as tx:  # the lock was released
            tx.write("tx/a", 5)
        assert store.read("tx/a") == 5

    def test_a_transaction_refuses_what_would_escape_it(
        self, store: ss.Store, capabilities: ss.Capabilities
    ) -> None:
        self.require(capabilities, "transactions")
        with store.transaction() as tx:
            tx.write("tx/a", 1)
            for escape in (
                lambda: store.write("tx/b", 1),
                lambda: store.update("tx/b", lambda n: n, default=0),
                lambda: store.remove("tx/b"),
                store.transaction().__enter__,
            ):
                with pytest.raises(ss.UnsupportedOperationError):
                    escape()
            with pytest.raises(ss.SerializationError):
                tx.write("tx/c", {"bad": float("nan")})
            with pytest.raises(ss.InvalidKeyError):
                tx.write("../escape", 1)
        assert store.read_many(["tx/a", "tx/b", "tx/c"]) == {("tx", "a"): 1}
        with pytest.raises(ss.UnsupportedOperationError, match="only once"):
            tx.__enter__()

    def test_transactions_from_threads_serialise(
        self, store: ss.Store, capabilities: ss.Capabilities
    ) -> None:
        self.require(capabilities, "transactions")
        store.write("tx/x", 0)
        store.write("tx/y", 0)

        def move() -> None:
            for _ in range(self.thread_updates):
                with store.transaction() as tx:
                    x = tx.read("tx/x")
                    time.sleep(0)
                    tx.write("tx/x", x + 1)
                    tx.write("tx/y", tx.read("tx/y") - 1)

        with ThreadPoolExecutor(self.thread_count) as pool:
            for future in [pool.submit(move) for _ in range(self.thread_count)]:
                future.result()
        total = self.thread_count * self.thread_updates
        assert store.read_many(["tx/x", "tx/y"]) == {("tx", "x"): total, ("tx", "y"): -total}

    @pytest.mark.slow
    def test_processes_never_see_half_a_transaction(
        self, store: ss.Store, location: Path, capabilities: ss.Capabilities,
        worker_options: dict[str, Any],
    ) -> None:  # fmt: skip
        self.require(capabilities, "transactions", "cross_process")
        self.require_installed_backend()
        balance, pad, times, movers = 1000, self.transaction_pad_bytes, 40, 3
        workers.open_accounts(store, balance)
        start = workers.spawn_context().Barrier(movers + 2)
        common = (os.fspath(location), self.backend, worker_options)
        calls: list[Callable[[], Any]] = [
            functools.partial(
                workers.transfer, *common, times=times, seed=seed, pad=pad, start=start
            )
            for seed in range(movers)
        ]
        calls.append(
            functools.partial(
                workers.audit_accounts,
                *common,
                total=3 * balance,
                expected=movers * times,
                pad=pad,
                start=start,
            )
        )
        calls.append(
            functools.partial(
                workers.update_counter, *common, key="accounts/counter", times=times, start=start
            )
        )
        *_, (audits, problems), counts = workers.run_in_processes(calls)
        assert problems == []
        assert audits > 0
        final = store.read_many([*workers.ACCOUNTS, workers.LEDGER, "accounts/counter"])
        assert workers.audit_problem(final, 3 * balance, pad) is None
        assert final[("accounts", "ledger")]["transfers"] == movers * times
        assert final[("accounts", "counter")] == times == len(counts)

    def require_installed_backend(self) -> None:
        if self.backend not in ss.backend_specs():
            pytest.fail(
                f"backend {self.backend!r} is not installed: worker processes cannot open it "
                "(plugins= objects do not cross processes; register it under the "
                "'storage_shim' entry-point group)"
            )

    @pytest.mark.slow
    def test_processes_never_lose_updates(
        self, location: Path, capabilities: ss.Capabilities, worker_options: dict[str, Any]
    ) -> None:
        self.require(capabilities, "cross_process")
        self.require_installed_backend()
        count, updates = self.process_count, self.process_updates
        start = workers.spawn_context().Barrier(count)
        call = functools.partial(
            workers.update_counter,
            os.fspath(location),
            self.backend,
            worker_options,
            key="counter",
            times=updates,
            start=start,
        )
        results = workers.run_in_processes([call] * count)
        with ss.open_store(location, backend=self.backend, **worker_options) as check:
            assert check.read("counter") == count * updates
        assert sorted(v for values in results for v in values) == list(
            range(1, count * updates + 1)
        )

    @pytest.mark.slow
    def test_readers_in_other_processes_never_see_a_torn_document(
        self,
        store: ss.Store,
        location: Path,
        capabilities: ss.Capabilities,
        worker_options: dict[str, Any],
    ) -> None:
        self.require(capabilities, "atomic_reads", "persistent")
        self.require_installed_backend()
        size, key = self.torn_document_bytes, "torn/doc"
        last, tallies = workers.race_readers_against_a_writer(
            os.fspath(location),
            self.backend,
            worker_options,
            key=key,
            size=size,
            seconds=self.torn_read_seconds,
        )
        assert [t.first_problem for t in tallies if t.torn] == []
        assert last > 1
        assert all(t.reads > 0 for t in tallies)
        assert max(t.versions_seen for t in tallies) > 1, "the readers never saw a rewrite"
        assert workers.document_version(store.read(key), size) == last


_SEGMENTS = ("a", "ab", "b")
_KEYS = st.tuples(st.sampled_from(_SEGMENTS), st.sampled_from(_SEGMENTS))
_PREFIXES = st.one_of(st.just(()), st.tuples(st.sampled_from((*_SEGMENTS, "zz"))), _KEYS)
_TEXT = st.text(  # a fixed alphabet: JSON escapes, multi-byte UTF-8, and no charmap cache on disk
    alphabet='az Z09é日🎉\x00\x1f"\\/\u2028\ud7ff\ue000\U0010ffff', max_size=8
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=8,
)
_MISSING = object()


def _wrap(value: Any) -> dict[str, Any]:
    return {"updated": value}


class StoreModel(RuleBasedStateMachine):
    """A store against a dict, on two-level keys from a small alphabet so that keys collide."""

    def __init__(self, backend: str, options: Mapping[str, Any]) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="storage-shim-model-")
        try:
            self.store = ss.open_store(
                os.path.join(self.directory, "store"), backend=backend, **options
            )
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        self.model: dict[tuple[str, ...], Any] = {}

    @staticmethod
    def _key(key: tuple[str, ...], as_text: bool) -> ss.KeyLike:
        return "/".join(key) if as_text else key

    @rule(key=_KEYS, value=_JSON, as_text=st.booleans())
    def write(self, key: tuple[str, ...], value: Any, as_text: bool) -> None:
        receipt = self.store.write(self._key(key, as_text), value)
        assert receipt.key == key
        self.model[key] = value

    @rule(key=_KEYS)
    def read(self, key: tuple[str, ...]) -> None:
        if key in self.model:
            assert typed(self.store.read(key)) == typed(self.model[key])
        else:
            with pytest.raises(ss.NotFoundError):
                self.store.read(key)
            assert self.store.get(key, _MISSING) is _MISSING

    @rule(key=_KEYS, as_text=st.booleans())
    def remove(self, key: tuple[str, ...], as_text: bool) -> None:
        existed = self.model.pop(key, _MISSING) is not _MISSING
        assert self.store.remove(self._key(key, as_text)) is existed

    @rule(key=_KEYS, with_default=st.booleans())
    def update(self, key: tuple[str, ...], with_default: bool) -> None:
        if key not in self.model and not with_default:
            with pytest.raises(ss.NotFoundError):
                self.store.update(key, _wrap)
            return
        expected = _wrap(self.model.get(key, "default"))
        if with_default:
            result = self.store.update(key, _wrap, default="default")
        else:
            result = self.store.update(key, _wrap)
        assert typed(result) == typed(expected)
        self.model[key] = expected

    @rule(key=_KEYS)
    def exists(self, key: tuple[str, ...]) -> None:
        assert self.store.exists(key) is (key in self.model)

    @rule(prefix=_PREFIXES, as_text=st.booleans())
    def list_keys(self, prefix: tuple[str, ...], as_text: bool) -> None:
        expected = sorted(k for k in self.model if k[: len(prefix)] == prefix)
        assert self.store.list(self._key(prefix, as_text)) == expected

    def teardown(self) -> None:
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
