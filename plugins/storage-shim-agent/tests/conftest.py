"""Every test starts from the default settings: no configure(), no STORAGE_SHIM_AGENT* variables."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import storage_shim_agent


@pytest.fixture(autouse=True)
def default_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("STORAGE_SHIM_AGENT"):
            monkeypatch.delenv(name)
    storage_shim_agent.configure(None)
    yield
    storage_shim_agent.configure(None)
