"""The plugin system: registration, routing, observer hooks, options and entry points."""

from __future__ import annotations

import errno
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import storage_shim as ss
from storage_shim.backends import MemoryBackend
from storage_shim.fs import FileSystem
from storage_shim.locations import redact, uri_scheme
from storage_shim.plugins import collect_backend_specs, get_plugin_manager

BUILTINS = ["atomic", "journal", "lockfile", "memory", "naive"]
FIXTURES = Path(__file__).parent / "plugin_fixtures"


def memory_spec(name: str) -> ss.BackendSpec:
    return ss.BackendSpec(name, MemoryBackend, f"{name}, in memory")


class ExtraBackends:
    """A host's plugin passed as a class: pluggy names it ``ExtraBackends``."""

    @staticmethod
    @ss.hookimpl
    def storage_shim_backends() -> Iterable[ss.BackendSpec]:
        return [memory_spec("extra")]


class TwinA:
    @staticmethod
    @ss.hookimpl
    def storage_shim_backends() -> Iterable[ss.BackendSpec]:
        return [memory_spec("twin"), memory_spec("only_a")]


class TwinB:
    @staticmethod
    @ss.hookimpl
    def storage_shim_backends() -> Iterable[ss.BackendSpec]:
        return [memory_spec("twin")]


class RouteTo:
    """Routes keys whose first segment is in ``table`` and abstains for the rest."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table

    @ss.hookimpl
    def storage_shim_route(self, key: ss.Key) -> str | None:
        return self.table.get(key[0])

    @ss.hookimpl
    def storage_shim_route_targets(self) -> Iterable[str]:
        return self.table.values()


# -- registration -----------------------------------------------------------------------
def test_every_manager_is_new_and_holds_only_its_own_plugins(tmp_path: Path) -> None:
    assert get_plugin_manager() is not get_plugin_manager()
    with ss.open_store(tmp_path, backend="extra", plugins=[ExtraBackends]) as store:
        store.write("doc", 1)
        assert store.backend_for("doc") == "extra"
    with pytest.raises(ss.UnknownBackendError):
        ss.open_store(tmp_path, backend="extra")
    assert "extra" not in ss.backend_specs()
    assert "extra" in ss.backend_specs(plugins=[ExtraBackends])


def test_builtins_register_through_the_hook_like_any_plugin() -> None:
    pm = get_plugin_manager(entry_points=False)
    providers = {impl.plugin_name for impl in pm.hook.storage_shim_backends.get_hookimpls()}
    assert providers == {f"storage_shim.backends.{name}" for name in BUILTINS}
    registered = [spec.name for specs in pm.hook.storage_shim_backends() for spec in specs]
    assert sorted(registered) == BUILTINS

    pm.unregister(name="storage_shim.backends.naive")
    assert list(collect_backend_specs(pm)) == ["atomic", "journal", "lockfile", "memory"]


def test_backend_specs_describe_the_builtins() -> None:
    specs = ss.backend_specs()
    assert list(specs) == BUILTINS
    atomic = specs["atomic"]
    assert atomic.capabilities is not None
    assert atomic.capabilities.crash_safe
    assert atomic.description
    naive = specs["naive"].capabilities
    assert naive is not None
    assert not naive.crash_safe


def test_a_host_plugin_adds_a_backend_and_routes_keys(tmp_path: Path) -> None:
    plugins: list[object] = [ExtraBackends, RouteTo({"cache": "extra"})]
    with ss.open_store(tmp_path, plugins=plugins) as store:
        assert store.backend_for("cache/page") == "extra"
        assert store.backend_for("doc") == "atomic"
        store.write("cache/page", {"html": "<p>"})
        store.write("doc", {"v": 1})
        assert store.read("cache/page") == {"html": "<p>"}
        assert isinstance(store.backend("extra"), MemoryBackend)
    assert (tmp_path / "doc.json").exists()
    assert not (tmp_path / "cache").exists()


def test_the_same_plugin_passed_twice_is_registered_once(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, backend="extra", plugins=[ExtraBackends, ExtraBackends]) as store:
        assert store.backend_for("doc") == "extra"


# -- routing ------------------------------------------------------------------------------
def test_a_plugin_route_overrides_the_host_routes(tmp_path: Path) -> None:
    with ss.open_store(
        tmp_path,
        routes={"a": "naive", "b": "lockfile"},
        plugins=[RouteTo({"a": "memory"})],
    ) as store:
        assert store.backend_for("a/x") == "memory"
        assert store.backend_for("b/x") == "lockfile"  # the plugin abstains
        assert store.backend_for("c/x") == "atomic"


def test_host_routes_beat_the_fallback_backend(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, backend="atomic", routes={"cache": "memory"}) as store:
        store.write("cache/x", 1)
        store.write("other", 2)
        assert store.backend_for("cache/x") == "memory"
        assert store.backend_for("other") == "atomic"
        assert store.read("cache/x") == 1
    assert not (tmp_path / "cache").exists()
    assert (tmp_path / "other.json").read_bytes() == b"2"


def test_the_most_specific_prefix_wins(tmp_path: Path) -> None:
    routes: dict[ss.KeyLike, str] = {"": "memory", "a": "naive", ("a", "b"): "lockfile"}
    with ss.open_store(tmp_path, backend="atomic", routes=routes) as store:
        chosen = {k: store.backend_for(k) for k in ["x", "a", "a/x", "a/b", "a/b/c", "ab/c", "b/a"]}
    assert chosen == {
        "x": "memory",
        "a": "naive",
        "a/x": "naive",
        "a/b": "lockfile",
        "a/b/c": "lockfile",
        "ab/c": "memory",  # prefixes match whole segments, not characters
        "b/a": "memory",
    }


def test_a_plugin_routing_to_an_unknown_backend_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ss.UnknownBackendError) as info:
        ss.open_store(tmp_path, plugins=[RouteTo({"lost": "nowhere"})])
    error = info.value
    assert error.name == "nowhere"
    assert error.known == tuple(BUILTINS)
    assert "'nowhere'" in str(error)
    assert "atomic, journal, lockfile, memory, naive" in str(error)
    assert isinstance(error, LookupError)
    assert not (tmp_path / "lost").exists()


@pytest.mark.parametrize(
    ("backend", "routes"),
    [("nowhere", None), ("atomic", {"a": "nowhere"})],
    ids=["fallback", "host-route"],
)
def test_an_unknown_backend_in_the_configuration_fails_at_open(
    tmp_path: Path, backend: str, routes: dict[ss.KeyLike, str] | None
) -> None:
    with pytest.raises(
        ss.UnknownBackendError, match="registered backends: atomic, journal, lockfile"
    ):
        ss.open_store(tmp_path, backend=backend, routes=routes)


# -- broken plugins ---------------------------------------------------------------------
def test_two_plugins_registering_one_name_raise_one_error_naming_both(tmp_path: Path) -> None:
    with pytest.raises(ss.DuplicateBackendError) as info:
        ss.open_store(tmp_path, plugins=[TwinA, TwinB])
    assert set(info.value.clashes) == {"twin"}
    assert sorted(info.value.clashes["twin"]) == ["TwinA", "TwinB"]
    assert "'twin' from Twin" in str(info.value)
    assert "TwinA" in str(info.value)
    assert "TwinB" in str(info.value)
    assert isinstance(info.value, ss.PluginError)


def test_a_plugin_cannot_take_over_a_builtin_name(tmp_path: Path) -> None:
    class HostAtomic:
        @staticmethod
        @ss.hookimpl
        def storage_shim_backends() -> Iterable[ss.BackendSpec]:
            return [memory_spec("atomic")]

    with pytest.raises(ss.DuplicateBackendError) as info:
        ss.open_store(tmp_path, plugins=[HostAtomic])
    assert set(info.value.clashes) == {"atomic"}
    assert sorted(info.value.clashes["atomic"]) == ["HostAtomic", "storage_shim.backends.atomic"]


def test_a_misspelt_hook_name_is_refused(tmp_path: Path) -> None:
    class Misspelt:
        @staticmethod
        @ss.hookimpl
        def storage_shim_bakends() -> Iterable[ss.BackendSpec]:
            return [memory_spec("never")]

    with pytest.raises(ss.PluginError, match="storage_shim_bakends") as info:
        ss.open_store(tmp_path, plugins=[Misspelt])
    assert "misspelt" in str(info.value)


@pytest.mark.parametrize("returned", [["not a spec"], [MemoryBackend], [("name", MemoryBackend)]])
def test_a_plugin_returning_something_else_than_backend_specs(
    tmp_path: Path, returned: list[object]
) -> None:
    class Sloppy:
        @staticmethod
        @ss.hookimpl
        def storage_shim_backends() -> Iterable[object]:
            return returned

    with pytest.raises(ss.PluginError, match=r"'Sloppy' returned .* expected BackendSpec"):
        ss.open_store(tmp_path, plugins=[Sloppy])
    with pytest.raises(ss.PluginError):
        ss.backend_specs(plugins=[Sloppy])


def test_a_plugin_whose_backend_hook_raises(tmp_path: Path) -> None:
    class Failing:
        @staticmethod
        @ss.hookimpl
        def storage_shim_backends() -> Iterable[ss.BackendSpec]:
            raise RuntimeError("cannot reach the license server")

    with pytest.raises(ss.PluginError, match="license server") as info:
        ss.open_store(tmp_path, plugins=[Failing])
    assert isinstance(info.value.__cause__, RuntimeError)


# -- observer hooks ---------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    @ss.hookimpl
    def storage_shim_store_opened(self, store: ss.Store) -> None:
        self.events.append(("opened", (store, store.closed)))

    @ss.hookimpl
    def storage_shim_store_closing(self, store: ss.Store) -> None:
        self.events.append(("closing", (store, store.closed)))

    @ss.hookimpl
    def storage_shim_after_write(self, key: ss.Key, receipt: ss.Receipt) -> None:
        self.events.append(("after_write", (key, receipt)))

    @ss.hookimpl
    def storage_shim_after_remove(self, key: ss.Key, existed: bool) -> None:
        self.events.append(("after_remove", (key, existed)))

    @ss.hookimpl
    def storage_shim_read_error(self, key: ss.Key, error: ss.StorageError) -> None:
        self.events.append(("read_error", (key, error)))

    @ss.hookimpl
    def storage_shim_write_error(self, key: ss.Key, error: ss.StorageError) -> None:
        self.events.append(("write_error", (key, error)))


def test_life_cycle_hooks_see_an_open_store(tmp_path: Path) -> None:
    recorder = Recorder()
    store = ss.open_store(tmp_path, plugins=[recorder])
    assert recorder.events == [("opened", (store, False))]
    store.close()
    store.close()
    assert recorder.events == [("opened", (store, False)), ("closing", (store, False))]


def test_write_and_remove_hooks_get_the_receipt_and_the_outcome(tmp_path: Path) -> None:
    recorder = Recorder()
    with ss.open_store(tmp_path, backend="lockfile", plugins=[recorder]) as store:
        receipt = store.write("a/b", {"v": 1})
        updated = store.update("a/b", lambda d: {"v": d["v"] + 1})
        assert store.remove("a/b")
        assert not store.remove("a/b")
        assert store.get("missing") is None
    writes = [payload for name, payload in recorder.events if name == "after_write"]
    assert writes[0] == (("a", "b"), receipt)
    assert receipt.backend == "lockfile"
    assert receipt.bytes == len(b'{"v":1}')
    assert writes[1][1].key == ("a", "b")
    assert updated == {"v": 2}
    removes = [payload for name, payload in recorder.events if name == "after_remove"]
    assert removes == [(("a", "b"), True), (("a", "b"), False)]
    assert "read_error" not in recorder.names()  # a missing document is not an error


def test_the_read_error_hook_gets_the_raised_error(tmp_path: Path) -> None:
    (tmp_path / "cfg.json").write_bytes(b'{"half": ')
    recorder = Recorder()
    with ss.open_store(tmp_path, plugins=[recorder], read_retries=0) as store:
        with pytest.raises(ss.CorruptDocumentError) as info:
            store.read("cfg")
    reads = [payload for name, payload in recorder.events if name == "read_error"]
    assert reads == [(("cfg",), info.value)]


class FailingFS(FileSystem):
    def replace(self, src: str, dst: str) -> None:
        raise OSError(errno.EIO, "injected", dst)

    def unlink(self, path: str) -> None:
        if path.endswith(".ss-tmp"):
            super().unlink(path)
        else:
            raise OSError(errno.EIO, "injected", path)


def test_the_write_error_hook_gets_write_and_remove_failures(tmp_path: Path) -> None:
    (tmp_path / "doc.json").write_bytes(b"1")
    recorder = Recorder()
    with ss.open_store(tmp_path, plugins=[recorder], fs=FailingFS()) as store:
        with pytest.raises(ss.StorageIOError) as on_write:
            store.write("doc", 2)
        with pytest.raises(ss.StorageIOError) as on_remove:
            store.remove("doc")
    errors = [payload for name, payload in recorder.events if name == "write_error"]
    assert errors == [(("doc",), on_write.value), (("doc",), on_remove.value)]
    assert "after_write" not in recorder.names()
    assert "after_remove" not in recorder.names()
    assert (tmp_path / "doc.json").read_bytes() == b"1"


class Raising:
    def __init__(self, hook: str) -> None:
        self.hook = hook

    def _maybe_raise(self, hook: str) -> None:
        if hook == self.hook:
            raise RuntimeError(f"observer {hook} broke")

    @ss.hookimpl
    def storage_shim_after_write(self) -> None:
        self._maybe_raise("after_write")

    @ss.hookimpl
    def storage_shim_store_opened(self) -> None:
        self._maybe_raise("store_opened")


def test_an_observer_that_raises_gives_a_plugin_error_after_the_fact(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, plugins=[Raising("after_write")]) as store:
        with pytest.raises(ss.PluginError, match="after_write") as info:
            store.write("doc", {"v": 1})
        assert isinstance(info.value.__cause__, RuntimeError)
        assert store.read("doc") == {"v": 1}  # the write it observed has happened


def test_an_observer_failing_at_open_closes_the_store(tmp_path: Path) -> None:
    recorder = Recorder()
    with pytest.raises(ss.PluginError, match="store_opened"):
        ss.open_store(tmp_path, plugins=[Raising("store_opened"), recorder])
    closing = [payload for name, payload in recorder.events if name == "closing"]
    assert len(closing) == 1


# -- options ------------------------------------------------------------------------------
def test_an_option_no_backend_accepts_is_a_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="lock_timout") as info:
        ss.open_store(tmp_path, backend="atomic", lock_timout=5)
    assert "atomic" in str(info.value)
    with pytest.raises(TypeError, match="replace_timeout"):
        ss.open_store(tmp_path, backend="lockfile", replace_timeout=5)


def test_each_option_goes_only_to_the_backends_that_accept_it(tmp_path: Path) -> None:
    with ss.open_store(
        tmp_path,
        backend="atomic",
        routes={"legacy": "lockfile"},
        replace_timeout=7.5,
        lock_timeout=3,
    ) as store:
        atomic, lockfile = store.backend("atomic"), store.backend("lockfile")
    assert isinstance(atomic, ss.backends.AtomicBackend)
    assert isinstance(lockfile, ss.backends.LockfileBackend)
    assert atomic.replace_timeout == 7.5
    assert lockfile.replace_timeout == ss.backends.FileBackend.replace_timeout != 7.5
    assert (atomic.lock_timeout, lockfile.lock_timeout) == (3, 3)


def recording_plugin(received: dict[str, dict[str, Any]]) -> object:
    def painted(location: object, *, colour: str, durability: str = "fsync") -> ss.Backend:
        received["painted"] = {"colour": colour, "durability": durability}
        return MemoryBackend(location)

    def plain(location: object) -> ss.Backend:
        received["plain"] = {}
        return MemoryBackend(location)

    def anything(location: object, **options: Any) -> ss.Backend:
        received["anything"] = options
        return MemoryBackend(location)

    factories: list[tuple[str, Callable[..., ss.Backend]]] = [
        ("painted", painted),
        ("plain", plain),
        ("anything", anything),
    ]

    class Recording:
        @staticmethod
        @ss.hookimpl
        def storage_shim_backends() -> Iterable[ss.BackendSpec]:
            return [ss.BackendSpec(name, factory) for name, factory in factories]

    return Recording


def test_factories_receive_exactly_the_options_their_signature_names(tmp_path: Path) -> None:
    received: dict[str, dict[str, Any]] = {}
    with ss.open_store(
        tmp_path,
        backend="plain",
        routes={"p": "painted", "any": "anything"},
        durability="none",
        plugins=[recording_plugin(received)],
        colour="teal",
    ):
        pass
    assert received == {
        "painted": {"colour": "teal", "durability": "none"},
        "plain": {},
        "anything": {"durability": "none", "colour": "teal"},
    }


# -- installed plugins (entry points) ---------------------------------------------------
@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Puts the fake ``ss-fixture-ephemeral`` distribution on ``sys.path``."""
    monkeypatch.syspath_prepend(str(FIXTURES / "installed"))
    yield
    sys.modules.pop("ss_fixture_ephemeral", None)


@pytest.mark.usefixtures("installed")
def test_an_installed_plugin_adds_a_backend_and_routes_keys(tmp_path: Path) -> None:
    with ss.open_store(tmp_path) as store:  # the host names no plugin
        assert store.backend_for("scratch/draft") == "ephemeral"
        assert store.backend_for("doc") == "atomic"
        store.write("scratch/draft", {"text": "wip"})
        store.write("doc", {"v": 1})
        assert store.read("scratch/draft") == {"text": "wip"}
        assert type(store.backend("ephemeral")).__name__ == "EphemeralBackend"
        plugin = store.plugin_manager.get_plugin("ephemeral")
        assert plugin is sys.modules["ss_fixture_ephemeral"]
    assert not (tmp_path / "scratch").exists()
    assert (tmp_path / "doc.json").exists()


@pytest.mark.usefixtures("installed")
def test_backend_specs_lists_installed_backends() -> None:
    specs = ss.backend_specs()
    assert list(specs) == ["atomic", "ephemeral", "journal", "lockfile", "memory", "naive"]
    assert specs["ephemeral"].description == "scratch documents, in memory"
    assert specs["ephemeral"].capabilities == MemoryBackend.capabilities


@pytest.mark.usefixtures("installed")
def test_host_routes_still_apply_below_an_installed_router(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, routes={"scratch": "lockfile", "logs": "naive"}) as store:
        assert store.backend_for("scratch/x") == "ephemeral"
        assert store.backend_for("logs/x") == "naive"


@pytest.mark.usefixtures("installed")
def test_a_host_plugin_clashing_with_an_installed_one_names_both(tmp_path: Path) -> None:
    class HostEphemeral:
        @staticmethod
        @ss.hookimpl
        def storage_shim_backends() -> Iterable[ss.BackendSpec]:
            return [memory_spec("ephemeral")]

    with pytest.raises(ss.DuplicateBackendError) as info:
        ss.open_store(tmp_path, plugins=[HostEphemeral])
    assert set(info.value.clashes) == {"ephemeral"}
    assert sorted(info.value.clashes["ephemeral"]) == ["HostEphemeral", "ephemeral"]


@pytest.mark.usefixtures("installed")
def test_entry_points_can_be_left_out() -> None:
    pm = get_plugin_manager(entry_points=False)
    assert "ephemeral" not in collect_backend_specs(pm)
    assert "ss_fixture_ephemeral" not in sys.modules


def test_a_plugin_that_fails_to_import_stops_the_store_from_opening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(FIXTURES / "broken"))
    with pytest.raises(ss.PluginError) as info:
        ss.open_store(tmp_path)
    message = str(info.value)
    assert "'broken-router'" in message
    assert "ss_fixture_broken:plugin" in message
    assert "ss-fixture-broken 0.1" in message
    assert isinstance(info.value.__cause__, ImportError)
    with pytest.raises(ss.PluginError, match="broken-router"):
        ss.backend_specs()
    assert not (tmp_path / ".storage_shim").exists()


def test_duplicates_from_plugin_instances_are_named_by_class(tmp_path: Path) -> None:
    class Twin:
        @ss.hookimpl
        def storage_shim_backends(self) -> Iterable[ss.BackendSpec]:
            return [memory_spec("twin")]

    with pytest.raises(ss.DuplicateBackendError) as info:
        ss.open_store(tmp_path, plugins=[Twin(), Twin()])
    providers = info.value.clashes["twin"]
    assert len(providers) == 2
    assert all(".Twin@" in name for name in providers)


class UndeclaredRoute:
    """Routes to a registered backend without naming it in storage_shim_route_targets."""

    @ss.hookimpl
    def storage_shim_route(self, key: ss.Key) -> str | None:
        return "memory" if key[0] == "tmp" else None


def test_a_route_to_an_undeclared_backend_is_refused(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, plugins=[UndeclaredRoute()]) as store:
        with pytest.raises(ss.PluginError, match="storage_shim_route_targets"):
            store.write("tmp/doc", 1)
        store.write("kept/doc", 1)
    assert not (tmp_path / "tmp").exists()


def test_declared_targets_open_with_the_store_and_are_listed(tmp_path: Path) -> None:
    """A key on a plugin-routed backend is listed before anything touched that backend."""
    shared = MemoryBackend()
    spec = ss.BackendSpec("shared", lambda location: shared)

    class Plugin:
        @ss.hookimpl
        def storage_shim_backends(self) -> Iterable[ss.BackendSpec]:
            return [spec]

    route = RouteTo({"s": "shared"})
    with ss.open_store(tmp_path, plugins=[Plugin(), route]) as store:
        store.write("s/x", 1)
        store.write("f/y", 2)
    shared.documents[("s", "x")] = b"1"  # closing cleared it; a real backend would persist
    with ss.open_store(tmp_path, plugins=[Plugin(), route]) as store:
        assert set(store.targets) == {"atomic", "shared"}
        assert store.list() == [("f", "y"), ("s", "x")]


@pytest.mark.parametrize(
    ("answer", "error"),
    [(RuntimeError("boom"), "raised RuntimeError"), (42, "returned 42"), (["memory"], "returned")],
)
def test_a_broken_route_hook_gives_a_plugin_error(
    tmp_path: Path, answer: object, error: str
) -> None:
    class Broken:
        @ss.hookimpl
        def storage_shim_route(self, key: ss.Key) -> object:
            if isinstance(answer, Exception):
                raise answer
            return answer

    with ss.open_store(tmp_path, plugins=[Broken()]) as store:
        for call in (store.read, store.exists, store.backend_for, store.remove):
            with pytest.raises(ss.PluginError, match=error):
                call("doc")


def test_two_host_plugin_classes_with_one_name_both_register(tmp_path: Path) -> None:
    def make() -> type:
        class Plugin:
            @staticmethod
            @ss.hookimpl
            def storage_shim_after_write(key: ss.Key) -> None:
                seen.append(key)

        return Plugin

    seen: list[ss.Key] = []
    with ss.open_store(tmp_path, plugins=[make(), make()]) as store:
        store.write("doc", 1)
    assert seen == [("doc",), ("doc",)]


def test_an_implementation_asking_for_an_unknown_argument_is_refused(tmp_path: Path) -> None:
    class Greedy:
        @ss.hookimpl
        def storage_shim_after_write(self, key: ss.Key, when: float) -> None:
            raise AssertionError("never called")

    with pytest.raises(ss.PluginError, match="when"):
        ss.open_store(tmp_path, plugins=[Greedy()])


# -- URI schemes ----------------------------------------------------------------------------
class SchemeBackends:
    """Two in-memory backends serving URI schemes, as a database plugin would."""

    def __init__(self, *specs: ss.BackendSpec) -> None:
        self.specs = specs

    @ss.hookimpl
    def storage_shim_backends(self) -> Iterable[ss.BackendSpec]:
        return self.specs


def scheme_spec(name: str, *schemes: str) -> ss.BackendSpec:
    return ss.BackendSpec(name, MemoryBackend, f"{name}, in memory", schemes=schemes)


def test_a_uri_location_picks_the_backend_declaring_its_scheme() -> None:
    plugin = SchemeBackends(scheme_spec("db", "fakedb", "FakeDB2"), scheme_spec("other", "oth"))
    with ss.open_store("fakedb://user@host/name", plugins=[plugin]) as store:
        assert store.default_backend == "db"
    with ss.open_store("FAKEDB2://host/name", plugins=[plugin]) as store:
        assert store.default_backend == "db"  # schemes are case-insensitive
    with ss.open_store("oth://x", plugins=[plugin]) as store:
        assert store.default_backend == "other"


def test_a_path_still_defaults_to_atomic(tmp_path: Path) -> None:
    plugin = SchemeBackends(scheme_spec("db", "fakedb"))
    with ss.open_store(str(tmp_path / "fakedb"), plugins=[plugin]) as store:
        assert store.default_backend == "atomic"


def test_an_unknown_scheme_names_the_known_ones(tmp_path: Path) -> None:
    plugin = SchemeBackends(scheme_spec("db", "fakedb"))
    with pytest.raises(ss.UnknownBackendError, match=r"URI scheme 'nosuch'.*fakedb"):
        ss.open_store("nosuch://host/x", plugins=[plugin])
    assert not (tmp_path / "nosuch:").exists()


def test_a_uri_for_another_backend_is_refused_without_leaking_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    plugin = SchemeBackends(scheme_spec("db", "fakedb"))
    with pytest.raises(ss.InvalidLocationError, match=r"in a directory, not at 'fakedb://") as info:
        ss.open_store("fakedb://bob:hunter2@host/x", "atomic", plugins=[plugin])
    assert "hunter2" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no directory named after the URI
    other = SchemeBackends(scheme_spec("db", "fakedb"), scheme_spec("other", "oth"))
    with pytest.raises(ss.InvalidLocationError, match=r"serves oth:// locations, not 'fakedb"):
        ss.open_store("fakedb://bob:hunter2@host/x", "other", plugins=[other])
    with ss.open_store("fakedb://host/x", "memory", plugins=[plugin]) as store:
        assert store.default_backend == "memory"  # a backend without schemes takes any location


def test_two_backends_claiming_one_scheme_are_refused_naming_both() -> None:
    plugin = SchemeBackends(scheme_spec("db", "fakedb"), scheme_spec("db2", "fakedb"))
    with pytest.raises(ss.PluginError, match="db, db2 all declare the scheme 'fakedb'"):
        ss.open_store("fakedb://host/x", plugins=[plugin])


@pytest.mark.parametrize("scheme", ["", "1db", "has space", "a/b"])
def test_a_malformed_scheme_is_refused_at_registration(scheme: str) -> None:
    with pytest.raises(ValueError, match="not a URI scheme"):
        scheme_spec("db", scheme)


def test_the_store_repr_hides_passwords() -> None:
    plugin = SchemeBackends(scheme_spec("db", "fakedb"))
    location = "fakedb://bob:hunter2@host/x?sslmode=require&password=alsosecret"
    with ss.open_store(location, plugins=[plugin]) as store:
        shown = repr(store)
    assert "hunter2" not in shown
    assert "alsosecret" not in shown
    assert "bob:***@host" in shown


def test_receipts_time_the_backend_write(tmp_path: Path) -> None:
    class SlowFS(FileSystem):
        def fsync(self, fd: int, *, full: bool = False, data_only: bool = False) -> None:
            time.sleep(0.05)
            super().fsync(fd, full=full, data_only=data_only)

    with ss.open_store(tmp_path, fs=SlowFS()) as store:
        receipt = store.write("a", 1)
    assert receipt.seconds >= 0.05


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("host=db password=hunter2 dbname=app", "host=db password=*** dbname=app"),
        ("postgresql://u@h/d?sslpassword=hunter2", "postgresql://u@h/d?sslpassword=***"),
        ("postgresql://u:hunter2@[::1/x", "postgresql://***"),
        ("postgresql:///db?password=hunter2", "postgresql:///db?password=***"),
    ],
)
def test_passwords_are_hidden_in_every_form(location: str, shown: str) -> None:
    assert redact(location) == shown


def test_a_windows_drive_is_not_a_uri_scheme() -> None:
    assert uri_scheme("C://data") is None
    assert uri_scheme("sqlite:///data") == "sqlite"


def test_an_explicit_backend_settles_a_scheme_two_backends_declare() -> None:
    plugin = SchemeBackends(scheme_spec("db", "fakedb"), scheme_spec("db2", "fakedb"))
    with ss.open_store("fakedb://host/x", "db2", plugins=[plugin]) as store:
        assert store.default_backend == "db2"
