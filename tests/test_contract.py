"""The conformance suite on the built-in backends, and the host fixture plugin.

Only the backends in $STORAGE_SHIM_TEST_BACKENDS get a test class: the others
are not collected at all (tox runs one backend per environment).
"""

from __future__ import annotations

import pytest
from conftest import selected_backends

import storage_shim as ss
from storage_shim.testing import BackendContract

SELECTED = selected_backends()

if "naive" in SELECTED:

    class TestNaive(BackendContract):
        backend = "naive"


if "lockfile" in SELECTED:

    class TestLockfile(BackendContract):
        backend = "lockfile"


if "atomic" in SELECTED:

    class TestAtomic(BackendContract):
        backend = "atomic"


if "journal" in SELECTED:

    class TestJournal(BackendContract):
        backend = "journal"


if "memory" in SELECTED:

    class TestMemory(BackendContract):
        backend = "memory"


def test_the_contract_does_not_promise_what_naive_lacks(pytester: pytest.Pytester) -> None:
    """Naive must skip, naming the capability, the tests of what it does not promise."""
    naive = ss.backend_specs()["naive"].capabilities
    assert naive is not None
    assert (naive.cross_process, naive.atomic_reads) == (False, False)
    pytester.makepyfile(
        test_naive_contract="""
from storage_shim.testing import BackendContract

class TestNaive(BackendContract):
    backend = "naive"
"""
    )
    recorder = pytester.inline_run(
        "-k", "other_processes or processes_never", "-p", "no:cacheprovider"
    )
    passed, skipped, failed = recorder.listoutcomes()
    assert (passed, failed) == ([], [])
    reasons = {r.nodeid.rpartition("::")[2]: str(r.longrepr) for r in skipped}
    assert sorted(reasons) == [
        "test_processes_never_lose_updates",
        "test_processes_never_see_half_a_transaction",
        "test_readers_in_other_processes_never_see_a_torn_document",
    ]
    assert "capabilities.cross_process" in reasons["test_processes_never_lose_updates"]
    assert "capabilities.atomic_reads" in str(reasons)


# -- the storage_shim_store fixture (pytest11 plugin) -----------------------------------
def test_the_fixture_defaults_to_atomic(storage_shim_store: ss.Store) -> None:
    assert storage_shim_store.default_backend == "atomic"
    assert storage_shim_store.list() == []
    storage_shim_store.write("doc", 1)
    assert storage_shim_store.read("doc") == 1


@pytest.mark.storage_shim_backend("memory")
def test_the_marker_picks_the_backend(storage_shim_store: ss.Store) -> None:
    assert storage_shim_store.default_backend == "memory"


@pytest.mark.storage_shim_backend("naive", durability="none")
def test_the_marker_passes_options(storage_shim_store: ss.Store) -> None:
    assert (storage_shim_store.default_backend, storage_shim_store.durability) == ("naive", "none")


def test_a_host_gets_a_fresh_store_per_test_closed_after_it(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\naddopts = --strict-markers\n")
    pytester.makepyfile(
        """
        import pytest

        seen = []

        def test_first(storage_shim_store):
            storage_shim_store.write("doc", 1)
            seen.append(storage_shim_store)

        @pytest.mark.storage_shim_backend("lockfile")
        def test_second(storage_shim_store):
            assert seen[0].closed
            assert storage_shim_store.list() == []
            assert storage_shim_store.default_backend == "lockfile"

        @pytest.mark.storage_shim_backend("no-such-backend")
        def test_unknown(storage_shim_store):
            pass
        """
    )
    # -p no:storage_shim: an installed copy would load through its entry point as well.
    result = pytester.runpytest(
        "--assert=plain", "-p", "no:storage_shim", "-p", "storage_shim.testing.fixtures"
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*UnknownBackendError*no-such-backend*"])
