"""Locations: paths, directories and ``sqlite://`` URIs."""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from pathlib import Path

import pytest
import storage_shim as ss

from storage_shim_sqlite import DEFAULT_FILE_NAME, database_path


def stored_keys(database: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return [row[0] for row in conn.execute("SELECT key FROM documents ORDER BY key")]


def test_a_sqlite_uri_picks_the_backend_and_names_the_file(tmp_path: Path) -> None:
    database = tmp_path / "with space" / "app.db"
    uri = f"sqlite://{urllib.parse.quote(str(database))}"
    with ss.open_store(uri) as store:
        assert store.default_backend == "sqlite"
        store.write("users/ada", {"name": "Ada"})
        assert store.backend("sqlite").namespace == f"sqlite:{database}"
    assert stored_keys(database) == ["users/ada"]
    with ss.open_store(f"SQLITE://localhost{database}", backend="sqlite") as store:
        assert store.read("users/ada") == {"name": "Ada"}


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("sqlite://relative.db", "names host"),
        ("sqlite://server/srv/app.db", "names host"),
        ("sqlite:///srv/app.db?mode=ro", "no query"),
        ("sqlite://", "no absolute path"),
    ],
)
def test_uris_that_name_no_local_absolute_path_are_refused(uri: str, problem: str) -> None:
    with pytest.raises(ss.StorageError) as info:
        ss.open_store(uri)
    assert problem in str(info.value.__cause__)


def test_a_path_without_a_suffix_is_a_directory_holding_the_database(tmp_path: Path) -> None:
    with ss.open_store(tmp_path / "deep" / "store", backend="sqlite") as store:
        store.write("doc", 1)
    assert stored_keys(tmp_path / "deep" / "store" / DEFAULT_FILE_NAME) == ["doc"]


def test_a_path_with_a_suffix_is_the_database_itself(tmp_path: Path) -> None:
    with ss.open_store(str(tmp_path / "data" / "app.sqlite"), backend="sqlite") as store:
        store.write("doc", 1)
        assert store.backend("sqlite").location_of(("a", "b")) == f"{tmp_path}/data/app.sqlite#a/b"
    assert stored_keys(tmp_path / "data" / "app.sqlite") == ["doc"]


def test_existing_directories_and_files_are_taken_as_they_are(tmp_path: Path) -> None:
    directory = tmp_path / "store.d"
    directory.mkdir()
    assert database_path(directory) == str(directory / DEFAULT_FILE_NAME)
    plain_file = tmp_path / "database"
    plain_file.touch()
    assert database_path(plain_file) == str(plain_file)
    assert database_path(f"sqlite://{directory}") == str(directory / DEFAULT_FILE_NAME)
