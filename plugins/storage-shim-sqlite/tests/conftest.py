from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import storage_shim as ss

Configure = Callable[[sqlite3.Connection], None]


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def database(store_dir: Path) -> Path:
    return store_dir / "storage.sqlite3"


@pytest.fixture
def open_sqlite(store_dir: Path) -> Iterator[Callable[..., ss.Store]]:
    """Opens a sqlite store on ``store_dir`` (keywords go to open_store); closes them all after."""
    opened: list[ss.Store] = []

    def open_one(**options: Any) -> ss.Store:
        store = ss.open_store(options.pop("location", store_dir), backend="sqlite", **options)
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        store.close()


@pytest.fixture
def on_connect(monkeypatch: pytest.MonkeyPatch) -> Callable[[Configure], None]:
    """Run a function on every connection the backend opens from now on."""

    def install(configure: Configure) -> None:
        real = sqlite3.connect

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn: sqlite3.Connection = real(*args, **kwargs)
            configure(conn)
            return conn

        monkeypatch.setattr(sqlite3, "connect", connect)

    return install
