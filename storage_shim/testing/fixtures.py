"""pytest plugin (entry point ``storage_shim``): a fresh store for a host's own tests.

::

    def test_saves_the_session(storage_shim_store):
        app = App(store=storage_shim_store)         # atomic backend, in tmp_path
        ...

    @pytest.mark.storage_shim_backend("memory")
    def test_fast(storage_shim_store): ...

    @pytest.mark.storage_shim_backend("lockfile", durability="none", lock_timeout=1)
    def test_tuned(storage_shim_store): ...

The marker's first argument is the backend (default ``"atomic"``); its keyword
arguments go to :func:`storage_shim.open_store`. The closest marker wins
(function, then class, then module). The store lives in
``tmp_path / "storage_shim_store"`` and is closed after the test.

The plugin also registers the ``slow`` marker, which
:class:`~storage_shim.testing.BackendContract` puts on its multi-process
tests (deselect them with ``-m "not slow"``).

pytest loads this plugin in every run of every project that installs
storage_shim, so the library itself is imported only when the fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from storage_shim import Store

MARKER = "storage_shim_backend"
DEFAULT_BACKEND = "atomic"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(name='{DEFAULT_BACKEND}', **options): backend and open_store() options "
        "of the storage_shim_store fixture",
    )
    config.addinivalue_line(
        "markers", "slow: multi-process or long-running tests (storage_shim's contract uses it)"
    )


def _marker_arguments(name: str = DEFAULT_BACKEND, **options: Any) -> tuple[str, dict[str, Any]]:
    return name, options


@pytest.fixture
def storage_shim_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A new, empty store in ``tmp_path``, closed after the test; the marker picks its backend."""
    from storage_shim import open_store  # noqa: PLC0415  # see the module docstring

    marker = request.node.get_closest_marker(MARKER)
    backend, options = (
        _marker_arguments(*marker.args, **marker.kwargs) if marker else (DEFAULT_BACKEND, {})
    )
    store = open_store(tmp_path / "storage_shim_store", backend=backend, **options)
    try:
        yield store
    finally:
        store.close()
