"""How ``storage-shim run`` hands its settings to every Python process it starts."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from .install import install

ROOTS = "STORAGE_SHIM_RUN_ROOTS"
"""The roots, separated by ``os.pathsep``."""
BACKEND = "STORAGE_SHIM_RUN_BACKEND"
DURABILITY = "STORAGE_SHIM_RUN_DURABILITY"
BOOTSTRAP = str(Path(__file__).resolve().parent / "bootstrap")
"""Holds the ``sitecustomize`` that installs the shim at interpreter start-up."""


def child_environment(
    roots: list[str], backend: str, durability: str, base: Mapping[str, str]
) -> dict[str, str]:
    env = dict(base)
    env[ROOTS] = os.pathsep.join(os.path.abspath(root) for root in roots)
    env[BACKEND] = backend
    env[DURABILITY] = durability
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOTSTRAP]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP, *paths])
    return env


def install_from_environment(environ: Mapping[str, str] = os.environ) -> int:
    """Install every root named in the environment; returns how many."""
    roots = [root for root in environ.get(ROOTS, "").split(os.pathsep) if root]
    backend = environ.get(BACKEND) or "atomic"
    durability = environ.get(DURABILITY) or "fsync"
    for root in roots:
        install(root, backend, durability=durability)  # type: ignore[arg-type]  # checked there
    return len(roots)


def run_shadowed_sitecustomize(bootstrap: str = BOOTSTRAP) -> None:
    """Run the ``sitecustomize`` that the bootstrap's own shadows, if the path has one."""
    own = os.path.normcase(os.path.abspath(bootstrap))
    later = [
        p
        for p in sys.path
        if isinstance(p, str) and os.path.normcase(os.path.abspath(p or ".")) != own
    ]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", later)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["_storage_shim_shadowed_sitecustomize"] = module
    spec.loader.exec_module(module)
