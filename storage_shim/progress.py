"""The progress bar of the long commands (torture, doctor, migrate), on standard error."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from tqdm import tqdm

Progress = Callable[[str, float], None]
"""``progress(what, fraction)``: the work in hand and the fraction of it done."""

_STEPS = 1000


@contextlib.contextmanager
def progress_bar(force: bool | None = None) -> Iterator[Progress]:
    """A :data:`Progress` drawing a bar; ``force=None`` draws it only when stderr is a terminal."""
    with tqdm(
        total=_STEPS,
        file=sys.stderr,
        disable=None if force is None else not force,
        leave=False,
        bar_format="{desc:<34} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
        dynamic_ncols=True,
    ) as bar:

        def show(what: str, fraction: float) -> None:
            bar.set_description_str(what, refresh=False)
            bar.update(max(int(fraction * _STEPS) - bar.n, 0))

        yield show
