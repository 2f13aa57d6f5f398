"""Keys are the store's security boundary: validation, containment and symbolic links."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import storage_shim as ss
from storage_shim.backends import AtomicBackend
from storage_shim.backends.files import STATE_DIR, TEMP_MARKER
from storage_shim.keys import MAX_SEGMENT_BYTES, MAX_SEGMENTS, parse_prefix, relative_path

FILE_BACKENDS = ["naive", "lockfile", "atomic"]

VALID = [
    ("a", ("a",)),
    ("session/ses_1", ("session", "ses_1")),
    (("session", "ses_1"), ("session", "ses_1")),
    (["list", "of", "segments"], ("list", "of", "segments")),
    ("a.b", ("a.b",)),
    ("with space inside", ("with space inside",)),
    ("ünïcødé/日本語/😀", ("ünïcødé", "日本語", "😀")),
    ("CONSOLE", ("CONSOLE",)),
    ("COM0", ("COM0",)),
    ("COM10", ("COM10",)),
    ("nul_file", ("nul_file",)),
    ("x" * MAX_SEGMENT_BYTES, ("x" * MAX_SEGMENT_BYTES,)),
    ("é" * (MAX_SEGMENT_BYTES // 2), ("é" * (MAX_SEGMENT_BYTES // 2),)),
    ("/".join(["s"] * MAX_SEGMENTS), ("s",) * MAX_SEGMENTS),
]

INVALID: list[tuple[object, str]] = [
    ("a.json/b", "would clash with a document"),
    (("x", "B.JSON", "c"), "would clash with a document"),
    ("", "empty segment"),
    ((), "empty key"),
    ([], "empty key"),
    ("a//b", "empty segment"),
    ("/etc/passwd", "empty segment"),
    ("a/", "empty segment"),
    (".", "names a directory"),
    ("..", "names a directory"),
    ("../outside", "names a directory"),
    ("a/../../b", "names a directory"),
    (("a", ".."), "names a directory"),
    (".hidden", "starts with '.'"),
    (".storage_shim/locks", "starts with '.'"),
    (".doc.json.0123456789abcdef.ss-tmp", "starts with '.'"),
    ("a\\..\\b", "forbidden character '\\\\'"),
    ("C:", "forbidden character ':'"),
    ("C:\\Windows", "forbidden character"),
    ("a:stream", "forbidden character ':'"),
    ("a*b", "forbidden character '*'"),
    ("a?b", "forbidden character '?'"),
    ('a"b', "forbidden character"),
    ("a<b", "forbidden character '<'"),
    ("a>b", "forbidden character '>'"),
    ("a|b", "forbidden character '|'"),
    ("nul\x00byte", "forbidden character '\\x00'"),
    ("line\nbreak", "forbidden character '\\n'"),
    ("tab\there", "forbidden character '\\t'"),
    ("escape\x1b[31m", "forbidden character '\\x1b'"),
    ("delete\x7f", "forbidden character '\\x7f'"),
    ("trailing.", "ends with a dot or a space"),
    ("trailing ", "ends with a dot or a space"),
    ("a/b.", "ends with a dot or a space"),
    ("CON", "Windows device name"),
    ("con", "Windows device name"),
    ("Con.json", "Windows device name"),
    ("NUL.txt", "Windows device name"),
    ("nul.tar.gz", "Windows device name"),
    ("AUX", "Windows device name"),
    ("PRN.log", "Windows device name"),
    ("COM1", "Windows device name"),
    ("com9.json", "Windows device name"),
    ("LPT1", "Windows device name"),
    ("lpt5.x", "Windows device name"),
    ("COM\u00b9", "Windows device name"),
    ("LPT\u00b3.txt", "Windows device name"),
    ("CON .txt", "Windows device name"),
    ("CONIN$", "Windows device name"),
    ("conout$.log", "Windows device name"),
    ("CLOCK$", "Windows device name"),
    ("docs/NUL", "Windows device name"),
    ("x" * (MAX_SEGMENT_BYTES + 1), "limit is 200"),
    ("é" * (MAX_SEGMENT_BYTES // 2 + 1), "202 bytes long"),
    ("/".join(["s"] * (MAX_SEGMENTS + 1)), f"more than {MAX_SEGMENTS} segments"),
    ("lone\ud800surrogate", "not valid Unicode"),
    ((1,), "not a string"),
    (("a", None), "not a string"),
    (("a", b"b"), "not a string"),
    (("a", ["b"]), "every segment must be a str"),
    (b"a/b", "a key is a str or a sequence of str"),
    (bytearray(b"a"), "a key is a str or a sequence of str"),
    (42, "a key is a str or a sequence of str"),
    (None, "a key is a str or a sequence of str"),
    (Path("a/b"), "a key is a str or a sequence of str"),
]


@pytest.mark.parametrize(("key", "expected"), VALID, ids=[repr(k)[:40] for k, _ in VALID])
def test_valid_keys(key: ss.KeyLike, expected: ss.Key) -> None:
    assert ss.parse_key(key) == expected


@pytest.mark.parametrize(("key", "reason"), INVALID, ids=[repr(k)[:40] for k, _ in INVALID])
def test_invalid_keys(key: object, reason: str) -> None:
    with pytest.raises(ss.InvalidKeyError) as info:
        ss.parse_key(key)  # type: ignore[arg-type]
    assert reason in info.value.reason
    assert isinstance(info.value, ValueError)


def test_the_error_carries_the_key_as_given() -> None:
    with pytest.raises(ss.InvalidKeyError) as info:
        ss.parse_key("a/../b")
    assert info.value.key == "a/../b"
    assert "'a/../b'" in str(info.value)


def test_the_empty_prefix_means_the_whole_store() -> None:
    assert parse_prefix("") == ()
    assert parse_prefix(()) == ()
    assert parse_prefix([]) == ()
    assert parse_prefix("a/b") == ("a", "b")
    with pytest.raises(ss.InvalidKeyError):
        parse_prefix("../a")


@pytest.mark.parametrize("backend", [*FILE_BACKENDS, "memory"])
def test_every_operation_validates_the_key(tmp_path: Path, backend: str) -> None:
    with ss.open_store(tmp_path / "store", backend=backend) as store:
        operations: list[Callable[[], object]] = [
            lambda: store.write("../escaped", 1),
            lambda: store.read("../escaped"),
            lambda: store.get("../escaped"),
            lambda: store.exists("../escaped"),
            lambda: store.remove("../escaped"),
            lambda: store.update("../escaped", lambda v: v, default=0),
            lambda: store.list("../escaped"),
            lambda: store.backend_for("../escaped"),
        ]
        for operation in operations:
            with pytest.raises(ss.InvalidKeyError):
                operation()
    assert set(os.listdir(tmp_path)) <= {"store"}


# -- containment: a property over arbitrary text ---------------------------------------
@pytest.fixture(scope="module")
def containment_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, AtomicBackend]:
    root = tmp_path_factory.mktemp("containment")
    return str(root), AtomicBackend(root)


def assert_inside(root: str, backend: AtomicBackend, key: ss.Key) -> None:
    path = backend.path(key)
    assert path == os.path.join(root, relative_path(key))
    assert os.path.normpath(path) == path  # no '..' or '.' left to collapse
    assert os.path.commonpath([root, path]) == root
    assert path != root
    assert os.path.basename(path) == key[-1] + ".json"
    relative = os.path.relpath(path, root).split(os.sep)
    assert relative[:-1] == list(key[:-1])
    assert not any(part.startswith(".") for part in relative)


ANY_CHARACTER = st.characters(exclude_categories=())  # lone surrogates included
SEGMENTS = st.lists(
    st.one_of(st.text(ANY_CHARACTER, max_size=30), st.sampled_from(["", ".", "..", "CON"])),
    max_size=MAX_SEGMENTS + 2,
)


@given(segments=SEGMENTS)
def test_any_text_segments_are_refused_or_stay_inside_the_store(
    containment_root: tuple[str, AtomicBackend], segments: list[str]
) -> None:
    root, backend = containment_root
    try:
        key = ss.parse_key(segments)
    except ss.InvalidKeyError:
        return
    assert_inside(root, backend, key)


@given(
    text=st.text(
        alphabet=st.sampled_from(["a", "é", ".", "/", "\\", ":", " ", "\x00", "C", "O", "N"]),
        max_size=30,
    )
)
def test_any_key_string_is_refused_or_stays_inside_the_store(
    containment_root: tuple[str, AtomicBackend], text: str
) -> None:
    root, backend = containment_root
    try:
        key = ss.parse_key(text)
    except ss.InvalidKeyError:
        return
    assert_inside(root, backend, key)
    assert "/".join(key) == text


# -- symbolic links ---------------------------------------------------------------------
def files_in(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """A store whose ``evil`` and ``a/evil`` directories are links to a folder outside it."""
    root, outside = tmp_path / "store", tmp_path / "outside"
    outside.mkdir()
    (outside / "doc.json").write_bytes(b'{"secret": true}')
    (root / "a").mkdir(parents=True)
    (root / "evil").symlink_to(outside, target_is_directory=True)
    (root / "a" / "evil").symlink_to(outside, target_is_directory=True)
    return root, outside


@pytest.mark.parametrize("backend", FILE_BACKENDS)
@pytest.mark.parametrize("key", ["evil/doc", "a/evil/doc", "evil/new/doc"])
def test_a_planted_directory_link_is_refused_by_every_operation(
    planted: tuple[Path, Path], backend: str, key: str
) -> None:
    root, outside = planted
    with ss.open_store(root, backend=backend) as store:
        with pytest.raises(ss.UnsafePathError) as info:
            store.read(key)
        assert "is a symbolic link" in info.value.reason
        with pytest.raises(ss.UnsafePathError):
            store.get(key, default=None)
        with pytest.raises(ss.UnsafePathError):
            store.write(key, {"overwritten": True})
        with pytest.raises(ss.UnsafePathError):
            store.update(key, lambda v: {"updated": v}, default={})
        with pytest.raises(ss.UnsafePathError):
            store.remove(key)
        with pytest.raises(ss.UnsafePathError):
            store.exists(key)
        assert store.list() == []
    assert files_in(outside) == {"doc.json": b'{"secret": true}'}
    assert (root / "evil").is_symlink()


@pytest.mark.parametrize("backend", ["lockfile", "atomic"])
def test_a_link_planted_as_the_private_directory_is_refused(tmp_path: Path, backend: str) -> None:
    root, outside = tmp_path / "store", tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (root / STATE_DIR).symlink_to(outside, target_is_directory=True)

    def open_and_update() -> None:
        with ss.open_store(root, backend=backend) as store:
            store.update("doc", lambda v: v + 1, default=0)

    with pytest.raises(ss.UnsafePathError, match=f"{STATE_DIR} is a symbolic link"):
        open_and_update()
    assert list(outside.iterdir()) == []


@pytest.fixture
def linked_document(tmp_path: Path) -> tuple[Path, Path]:
    """A store whose ``a.json`` is a link to a file outside it."""
    root, outside = tmp_path / "store", tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (outside / "file").write_bytes(b'{"secret": true}')
    (root / "a.json").symlink_to(outside / "file")
    return root, outside


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_reading_a_document_that_is_a_link_is_refused(
    linked_document: tuple[Path, Path], backend: str
) -> None:
    root, _ = linked_document
    with ss.open_store(root, backend=backend) as store, pytest.raises(ss.UnsafePathError) as info:
        store.read("a")
    assert "a.json is a symbolic link" in str(info.value)


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_no_operation_follows_a_document_link(
    linked_document: tuple[Path, Path], backend: str
) -> None:
    root, outside = linked_document
    with ss.open_store(root, backend=backend) as store:
        with pytest.raises(ss.UnsafePathError):
            store.get("a", default={})
        assert not store.exists("a")
        assert store.list() == []
        with pytest.raises(ss.UnsafePathError):
            store.update("a", lambda v: {"updated": v}, default={})
        assert (root / "a.json").is_symlink()
    assert files_in(outside) == {"file": b'{"secret": true}'}


@pytest.mark.parametrize("backend", ["naive", "lockfile"])
def test_writing_in_place_through_a_document_link_is_refused(
    linked_document: tuple[Path, Path], backend: str
) -> None:
    root, _ = linked_document
    with ss.open_store(root, backend=backend) as store, pytest.raises(ss.UnsafePathError):
        store.write("a", {"overwritten": True})


def test_atomic_replaces_a_document_link_instead_of_writing_through_it(
    linked_document: tuple[Path, Path],
) -> None:
    root, outside = linked_document
    with ss.open_store(root, backend="atomic") as store:
        store.write("a", {"mine": True})
        assert store.read("a") == {"mine": True}
    assert not (root / "a.json").is_symlink()
    assert (root / "a.json").read_bytes() == b'{"mine":true}'
    assert files_in(outside) == {"file": b'{"secret": true}'}
    assert not [p for p in root.iterdir() if p.name.endswith(TEMP_MARKER)]
