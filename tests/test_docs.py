"""The documentation tells the truth: hook signatures, runnable examples, links.

A ```` ```python ```` block (the fence line exactly that) is an example a
reader may run, unless it contains ``# not run``. A page's runnable blocks run
in order, in one module namespace, in a fresh temporary directory: a page reads
as one script. Failures point at the Markdown file and line.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import storage_shim as ss
from storage_shim import hookspecs
from storage_shim.markers import PROJECT
from storage_shim.plugins import get_plugin_manager

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))
EXPECTED_PAGES = [
    "asyncio.md",
    "getting-started.md",
    "guarantees.md",
    "hooks.md",
    "host-integration.md",
    "index.md",
    "journal.md",
    "many-machines.md",
    "one-file.md",
    "performance.md",
    "plugins.md",
    "shim.md",
]
NOT_RUN = "# not run"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})(?P<info>[^`]*)$")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    """The page's line number of the block's first line of code."""
    info: str
    source: str

    @property
    def runnable(self) -> bool:
        return self.info == "python" and NOT_RUN not in self.source


def code_blocks(page: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if not opening:
            continue
        indent, ticks = opening["indent"], opening["ticks"]
        start, body = index, []
        while index < len(lines) and lines[index].strip() != ticks:
            body.append(lines[index].removeprefix(indent))
            index += 1
        if index == len(lines):
            pytest.fail(f"{page.name}:{start}: the code block opened here is never closed")
        index += 1
        blocks.append(Block(page, start + 1, opening["info"].strip(), "\n".join(body) + "\n"))
    return blocks


def prose(page: Path) -> str:
    """The page without its code blocks, which may contain look-alike links."""
    text = page.read_text(encoding="utf-8")
    for block in code_blocks(page):
        text = text.replace(block.source.rstrip("\n"), "")
    return re.sub(r"`[^`\n]*`", "", text)


def test_the_docs_have_every_page() -> None:
    assert [p.name for p in PAGES] == EXPECTED_PAGES


# -- (a) every hook, with its exact signature --------------------------------------------
def hook_specs() -> dict[str, Callable[..., object]]:
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, f"{PROJECT}_spec")
    }


def signature_line(fn: Callable[..., object]) -> str:
    """``def name(param: Annotation, ...) -> Return:`` with the annotations as written."""
    signature = inspect.signature(fn)
    params = []
    for param in signature.parameters.values():
        assert isinstance(param.annotation, str), "hookspecs is expected to postpone annotations"
        params.append(f"{param.name}: {param.annotation}")
    assert isinstance(signature.return_annotation, str)
    return f"def {fn.__name__}({', '.join(params)}) -> {signature.return_annotation}:"


HOOKS_PAGE = DOCS / "hooks.md"


def hook_sections() -> dict[str, str]:
    """``## storage_shim_x`` heading -> the section's text up to the next such heading."""
    text = HOOKS_PAGE.read_text(encoding="utf-8")
    parts = re.split(r"^## `?(storage_shim_\w+)`?\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_there_are_hooks_to_document() -> None:
    assert len(hook_specs()) >= 8
    assert "storage_shim_route" in hook_specs()


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_is_documented_with_its_exact_signature(name: str) -> None:
    spec = hook_specs()[name]
    section = hook_sections().get(name)
    assert section is not None, f"docs/hooks.md has no '## {name}' section"
    expected = signature_line(spec)
    python_blocks = [b.source for b in code_blocks(HOOKS_PAGE) if b.info == "python"]
    in_section = [source for source in python_blocks if source.strip() in section]
    assert any(expected in source.splitlines() for source in in_section), (
        f"the '## {name}' section of docs/hooks.md needs a ```python block with the line\n"
        f"    {expected}"
    )
    options = getattr(spec, f"{PROJECT}_spec")
    if options.get("firstresult"):
        assert "firstresult" in section


def test_hooks_md_documents_no_hook_that_does_not_exist() -> None:
    documented = set(hook_sections())
    mentioned = set(re.findall(r"\bdef (storage_shim_\w+)\(", HOOKS_PAGE.read_text("utf-8")))
    assert documented | mentioned <= set(hook_specs())


# -- (b) runnable examples --------------------------------------------------------------
RUNNABLE_PAGES = [p for p in PAGES if any(b.runnable for b in code_blocks(p))]


def test_the_pages_with_examples_have_runnable_ones() -> None:
    names = {p.name for p in RUNNABLE_PAGES}
    assert {"index.md", "getting-started.md", "plugins.md", "hooks.md"} <= names


def run_page(page: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType(f"storage_shim_docs_{page.stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in code_blocks(page):
        if not block.runnable:
            continue
        # Padding keeps the line numbers of a traceback those of the Markdown file.
        code = compile("\n" * (block.line - 1) + block.source, str(page), "exec")
        try:
            exec(code, module.__dict__)
        except BaseException as exc:
            exc.add_note(f"in the python block at docs/{page.name}:{block.line}")
            raise
    return module


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda p: p.name)
def test_the_python_examples_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run_page(page, monkeypatch)


def test_the_hook_examples_are_valid_implementations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pluggy accepts each example as an implementation of the hook of its name."""
    monkeypatch.chdir(tmp_path)
    module = run_page(HOOKS_PAGE, monkeypatch)
    implemented = {
        name
        for name, value in vars(module).items()
        if name.startswith("storage_shim_") and hasattr(value, f"{PROJECT}_impl")
    }
    assert implemented == set(hook_specs())
    pm = get_plugin_manager([module], entry_points=False)  # validates names and arguments
    assert pm.is_registered(module)
    with ss.open_store(tmp_path / "store", plugins=[module]) as store:
        store.write("doc", 1)
        assert store.read("doc") == 1


# -- (c) links -------------------------------------------------------------------------
def slug(title: str) -> str:
    """The anchor GitHub and MkDocs give a heading."""
    title = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", title).strip().lower()
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    for block in code_blocks(page):
        text = text.replace(block.source.rstrip("\n"), "")
    return {slug(m["title"]) for line in text.splitlines() if (m := _HEADING.match(line))}


def relative_links() -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for page in PAGES:
        for match in _LINK.finditer(prose(page)):
            target = match["target"]
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto: ...
                found.append((page, target))
    return list(dict.fromkeys(found))


def test_there_are_links_between_the_pages() -> None:
    linked = {target.partition("#")[0] for _, target in relative_links()}
    assert set(EXPECTED_PAGES) - {"index.md"} <= linked


@pytest.mark.parametrize(
    ("page", "target"), relative_links(), ids=lambda v: v.name if isinstance(v, Path) else v
)
def test_every_relative_link_resolves(page: Path, target: str) -> None:
    path, _, fragment = target.partition("#")
    destination = (page.parent / path).resolve() if path else page
    assert destination.is_file(), f"{page.name} links to {target!r}, which does not exist"
    if fragment:
        assert destination.suffix == ".md"
        assert fragment in anchors(destination), (
            f"{page.name} links to {target!r}, but {destination.name} has no such heading"
        )


# -- (d) the tests the docs cite as proof exist ------------------------------------------
ROOT = DOCS.parent
CONTRACT = Path(ss.__file__).resolve().parent / "testing" / "contract.py"
_TEST_REFERENCE = re.compile(
    r"`(?P<file>(?:plugins/[\w.-]+/)?tests/[\w/]+\.py)::(?P<name>\w+(?:::\w+)?)(?:\[[^\]`]*\])?`"
)


def definitions(path: Path) -> tuple[set[str], dict[str, tuple[set[str], set[str]]]]:
    """Functions anywhere in ``path``, and classes with their methods and base names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    classes = {
        n.name: (
            {m.name for m in n.body if isinstance(m, ast.FunctionDef)},
            {b.id for b in n.bases if isinstance(b, ast.Name)},
        )
        for n in ast.walk(tree)
        if isinstance(n, ast.ClassDef)
    }
    return functions, classes


def cited_tests() -> list[tuple[str, str, str]]:
    return list(
        dict.fromkeys(
            (page.name, m["file"], m["name"])
            for page in PAGES
            for m in _TEST_REFERENCE.finditer(page.read_text(encoding="utf-8"))
        )
    )


def test_the_guarantees_cite_tests() -> None:
    cited = [c for c in cited_tests() if c[0] == "guarantees.md"]
    assert len(cited) >= 10
    assert {file for _, file, _ in cited} >= {
        "tests/test_contract.py",
        "tests/test_multiprocess.py",
    }


@pytest.mark.parametrize(("page", "file", "name"), cited_tests())
def test_every_cited_test_exists(page: str, file: str, name: str) -> None:
    path = ROOT / file
    assert path.is_file(), f"{page} cites {file}, which does not exist"
    functions, classes = definitions(path)
    test_class, _, method = name.rpartition("::")
    if not test_class:
        assert method in functions, f"{page} cites {file}::{name}, which does not exist"
        return
    assert test_class in classes, f"{page} cites the class {test_class}, not in {file}"
    methods, bases = classes[test_class]
    if "BackendContract" in bases:
        methods = methods | definitions(CONTRACT)[1]["BackendContract"][0]
    assert method in methods, f"{page} cites {file}::{name}, which does not exist"


# -- the example backend passes the conformance suite ------------------------------------
def test_the_example_backend_passes_the_conformance_suite(pytester: pytest.Pytester) -> None:
    """plugins.md's blocks, as one test module, run the contract on its ``DictBackend``."""
    page = DOCS / "plugins.md"
    source = "\n".join(b.source for b in code_blocks(page) if b.runnable)
    assert "class TestDictBackend(BackendContract):" in source
    pytester.makepyfile(test_plugins_page=source)
    recorder = pytester.inline_run(
        "--assert=plain",
        "-p",
        "no:storage_shim",
        "-p",
        "storage_shim.testing.fixtures",
        "-p",
        "no:cacheprovider",
    )
    passed, skipped, failed = recorder.listoutcomes()
    assert [r.nodeid for r in failed] == []
    assert len(passed) >= 40
    reasons = {r.nodeid.rpartition("::")[2]: str(r.longrepr) for r in skipped}
    assert sorted(reasons) == [
        "test_a_corrupt_document_can_be_quarantined_by_a_hook",
        "test_a_transaction_commits_all_its_changes_at_once",
        "test_a_transaction_refuses_what_would_escape_it",
        "test_an_exception_discards_the_whole_transaction",
        "test_documents_outlive_the_store",
        "test_processes_never_lose_updates",
        "test_processes_never_see_half_a_transaction",
        "test_quarantine_moves_nothing_once_the_document_changed",
        "test_readers_in_other_processes_never_see_a_torn_document",
        "test_transactions_from_threads_serialise",
    ]
    assert "capabilities.persistent" in reasons["test_documents_outlive_the_store"]
    assert "capabilities.cross_process" in reasons["test_processes_never_lose_updates"]
