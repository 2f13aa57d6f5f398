"""The parts of the ``journal`` backend: record format, writer lock, group commit.

The backend itself is :mod:`storage_shim.backends.journal`; ``docs/journal.md``
describes the format and the commit, checkpoint and recovery protocols.
"""
