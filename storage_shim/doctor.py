"""``storage-shim doctor``: what crashes and outside writers left in a store, and the repair.

:func:`diagnose` only reads: it never opens the store (opening recovers), so
the report shows the state a crash left. :func:`repair` opens the store with
each backend that has something to recover, which sweeps temporary files,
restores interrupted ``lockfile`` rewrites and checkpoints the journal, then
quarantines the documents that still do not parse. Run it while the
application is stopped: a write in flight looks like a leftover.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import codec
from ._types import Key
from .backend import Backend
from .backends.atomic import AtomicBackend
from .backends.files import QUARANTINE_AREA, STATE_DIR, FileBackend
from .backends.journal import JournalBackend, JournalState
from .backends.lockfile import LockfileBackend, backup_of
from .errors import CorruptJournalError, NotFoundError, StorageError, StorageIOError
from .fs import FileSystem
from .keys import format_key
from .locations import redact, uri_scheme
from .progress import Progress
from .store import backend_specs, open_store

FindingKind = Literal[
    "corrupt_document",
    "unreadable_document",
    "temporary_file",
    "interrupted_write",
    "journal",
    "locks",
    "quarantine",
]


@dataclass(frozen=True)
class Finding:
    """One thing doctor noticed; ``problem`` is False for information only."""

    kind: FindingKind
    path: str
    detail: str
    key: Key | None = None
    problem: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "key": format_key(self.key) if self.key is not None else None,
            "detail": self.detail,
            "problem": self.problem,
        }


@dataclass
class Diagnosis:
    location: str
    documents: int = 0
    findings: list[Finding] = field(default_factory=list)
    journal: JournalState | None = None
    repairs: list[str] = field(default_factory=list)
    """What :func:`repair` did, in order."""

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]

    def as_json(self) -> dict[str, Any]:
        journal = self.journal
        return {
            "location": self.location,
            "documents": self.documents,
            "problems": len(self.problems),
            "findings": [f.as_json() for f in self.findings],
            "journal": None
            if journal is None
            else {
                "pointer": journal.pointer,
                "segments": list(journal.segments),
                "commits_since_checkpoint": journal.commits,
                "log_bytes": journal.log_bytes,
                "torn_tail": journal.torn,
                "needs_recovery": journal.needs_recovery,
            },
            "repairs": self.repairs,
        }


def _quiet(what: str, fraction: float) -> None:
    """The default progress: none."""


def diagnose(
    location: str | os.PathLike[str],
    backend: str | None = None,
    *,
    progress: Progress = _quiet,
    **options: Any,
) -> Diagnosis:
    """Read every document and the library's own files; change nothing.

    A directory is examined whatever backends wrote it (their files are
    recognisable). A URI, or a ``backend`` that keeps no files, is examined
    through the store: every document is read and parsed.
    """
    if uri_scheme(location) is not None or not _keeps_files(backend, options):
        return _diagnose_store(location, backend, progress, options)
    root = os.path.abspath(os.fspath(location))
    if not os.path.isdir(root):
        raise StorageIOError(errno.ENOENT, "no store directory here", root)
    fs = options.get("fs") or FileSystem()
    files = AtomicBackend(root, fs=fs)
    diagnosis = Diagnosis(root)
    journal = _inspect_journal(root, fs, diagnosis)
    interrupted = dict(LockfileBackend(root, fs=fs).interrupted_writes())
    logged = journal.documents if journal is not None else {}
    keys = sorted({*files.list(()), *(k for k, v in logged.items() if v is not None)})
    diagnosis.documents = len(keys)
    for done, key in enumerate(keys, 1):
        progress(f"reading {len(keys):,} documents", done / len(keys))
        data = logged.get(key)
        if key in logged and data is None:
            continue  # removed by a commit the log still holds
        _check_document(files, key, data, diagnosis, interrupted)
    for key, backup in sorted(interrupted.items()):
        diagnosis.findings.append(
            Finding(
                "interrupted_write",
                backup,
                "a lockfile rewrite was interrupted; --repair puts back the previous version",
                key,
            )
        )
    for key, _, path in sorted(files.temporary_files()):
        diagnosis.findings.append(
            Finding("temporary_file", path, "left by a writer that died; --repair deletes it", key)
        )
    diagnosis.findings.extend(_locks(root))
    diagnosis.findings.extend(_quarantine(root))
    return diagnosis


def _keeps_files(backend: str | None, options: dict[str, Any]) -> bool:
    if backend is None:
        return True
    spec = backend_specs(options.get("plugins", ())).get(backend)
    factory = spec.factory if spec is not None else None
    return isinstance(factory, type) and issubclass(factory, FileBackend)


def _check_document(
    backend: Backend,
    key: Key,
    data: bytes | None,
    diagnosis: Diagnosis,
    interrupted: Mapping[Key, str] | None = None,
) -> None:
    """Read (unless ``data`` came from a log) and parse one document; note what is wrong."""
    path = backend.location_of(key)
    if data is None:
        try:
            data = backend.read(key)
        except NotFoundError:
            return  # removed since it was listed
        except (OSError, StorageError) as exc:
            diagnosis.findings.append(Finding("unreadable_document", path, str(exc), key))
            return
    try:
        codec.decode(data)
    except ValueError as exc:
        if interrupted is None or key not in interrupted:  # repair restores a torn rewrite
            reason = codec.describe_invalid(data, exc)
            diagnosis.findings.append(Finding("corrupt_document", path, reason, key))


def _inspect_journal(root: str, fs: FileSystem, diagnosis: Diagnosis) -> JournalState | None:
    backend = JournalBackend(root, fs=fs, publish_delay=None)
    try:
        journal = backend.inspect()
    except (CorruptJournalError, OSError) as exc:
        diagnosis.findings.append(Finding("journal", backend.directory, f"unreadable: {exc}"))
        return None
    diagnosis.journal = journal
    if journal is None:
        return None
    if journal.needs_recovery:
        parts = [f"{journal.commits} commits ({journal.log_bytes:,} bytes) since the checkpoint"]
        if journal.torn:
            parts.append("a torn tail")
        if len(journal.segments) > 1:
            parts.append(f"{len(journal.segments)} segments")
        if journal.temporary_files:
            parts.append(f"{len(journal.temporary_files)} temporary files")
        detail = ", ".join(parts) + "; the next opening (or --repair) recovers them"
        diagnosis.findings.append(Finding("journal", journal.directory, detail))
    else:
        detail = f"clean: checkpointed at segment {journal.pointer}"
        diagnosis.findings.append(Finding("journal", journal.directory, detail, problem=False))
    return journal


def _locks(root: str) -> Iterator[Finding]:
    area = os.path.join(root, STATE_DIR, "locks")
    count = sum(len(files) for _, _, files in os.walk(area))
    if count:
        yield Finding(
            "locks",
            area,
            f"{count:,} lock files; kernel locks end with their holder, so none can be stale",
            problem=False,
        )


def _quarantine(root: str) -> Iterator[Finding]:
    area = os.path.join(root, STATE_DIR, QUARANTINE_AREA)
    count = sum(len(files) for _, _, files in os.walk(area))
    if count:
        detail = f"{count:,} corrupt documents kept from earlier repairs, for you to look at"
        yield Finding("quarantine", area, detail, problem=False)


def _diagnose_store(
    location: str | os.PathLike[str],
    backend: str | None,
    progress: Progress,
    options: dict[str, Any],
) -> Diagnosis:
    diagnosis = Diagnosis(redact(location))
    with open_store(location, backend, read_retries=0, **options) as store:
        name = store.default_backend
        instance = store.backend(name)
        keys = store.list()
        diagnosis.documents = len(keys)
        for done, key in enumerate(keys, 1):
            progress(f"reading {len(keys):,} documents", done / len(keys))
            _check_document(instance, key, None, diagnosis)
    return diagnosis


def _keep_what_backups_would_replace(
    location: str | os.PathLike[str], options: dict[str, Any]
) -> list[str]:
    """Copy each valid document a ``lockfile`` backup is about to replace into the quarantine.

    A backup is the version before an interrupted rewrite; but the key may have
    been written since by another backend, and that newer document must survive.
    """
    fs = options.get("fs") or FileSystem()
    lockfile = LockfileBackend(os.fspath(location), fs=fs)
    kept = []
    for key, backup in lockfile.interrupted_writes():
        try:
            current = fs.read_file(lockfile.path(key))
            saved = fs.read_file(backup)
        except OSError:
            continue
        if saved == backup_of(current):
            continue
        try:
            codec.decode(current)
        except ValueError:
            continue  # the torn rewrite itself: the backup is what it was
        moved = lockfile.keep_in_quarantine(key, current)
        kept.append(f"kept {lockfile.path(key)}, newer than its lockfile backup, as {moved}")
    return kept


def repair(
    location: str | os.PathLike[str],
    backend: str | None = None,
    *,
    progress: Progress = _quiet,
    **options: Any,
) -> Diagnosis:
    """Recover, sweep and quarantine; returns the diagnosis after the repair.

    Corrupt documents are moved to ``<location>/.storage_shim/quarantine/``,
    never overwritten. The returned diagnosis lists what was done in ``repairs``.
    """
    before = diagnose(location, backend, progress=progress, **options)
    repairs: list[str] = []
    kinds = {f.kind for f in before.problems}
    recoverers = []
    if kinds & {"interrupted_write", "temporary_file"}:
        recoverers.append("lockfile")
    if before.journal is not None and before.journal.needs_recovery:
        recoverers.append("journal")
    if uri_scheme(location) is None and _keeps_files(backend, options):
        if "lockfile" in recoverers:
            repairs += _keep_what_backups_would_replace(location, options)
        for name in recoverers:
            open_store(location, name, **options).close()
            repairs.append(f"opened the store with {name!r}, which recovered it")
    middle = diagnose(location, backend, progress=progress, **options) if repairs else before
    corrupt = [f for f in middle.problems if f.kind == "corrupt_document" and f.key is not None]
    if corrupt:
        quarantiner = backend or ("journal" if middle.journal is not None else None)
        with open_store(location, quarantiner, read_retries=0, **options) as store:
            instance = store.backend(store.default_backend)
            for finding in corrupt:
                assert finding.key is not None
                try:
                    data = instance.read(finding.key)
                    codec.decode(data)
                except NotFoundError:
                    continue  # removed meanwhile
                except ValueError:
                    pass
                else:
                    continue  # repaired meanwhile
                moved = instance.quarantine(finding.key, data)
                if moved is not None:
                    repairs.append(f"quarantined {finding.path} to {moved}")
    after = diagnose(location, backend, progress=progress, **options)
    after.repairs = repairs
    return after
