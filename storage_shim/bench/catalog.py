"""Every contender of a run, in the order of the table."""

from __future__ import annotations

from .baselines import library_subjects
from .subjects import Options, Subject, backend_subjects, raw_subjects


def all_subjects(options: Options) -> list[Subject]:
    """The installed backends, then the raw protocols, then the other libraries."""
    return [*backend_subjects(options), *raw_subjects(), *library_subjects()]
