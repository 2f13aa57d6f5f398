"""The journal's on-disk format: segment headers, framed records, transaction payloads.

A segment is a header followed by records; the space after the last record
is zeros (segments are preallocated). Every record is framed as::

    length u32 | type u8 | seq u64 | crc32 u32 | payload (length bytes)

The CRC covers the segment's random salt, the first three fields and the
payload, so a torn record, a record left over from another segment and plain
garbage all fail it (the salts of SQLite's WAL, the checksummed records of
LevelDB's log). A transaction larger than :data:`MAX_FRAGMENT` is split into
FIRST, MIDDLE... and LAST fragments sharing one sequence number; it counts
only when every fragment is valid. Sequence numbers rise by one per
transaction across segments, so a reader also notices a missing record.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from .._types import Key

MAGIC = b"SSJRNL01"
HEADER = struct.Struct("<8sQ8sQ")  # magic, segment number, salt, base sequence number
HEADER_SIZE = HEADER.size + 4  # and the CRC of those fields
RECORD = struct.Struct("<IBQ")  # payload length, type, sequence number
RECORD_HEADER_SIZE = RECORD.size + 4  # and the CRC
FULL, FIRST, MIDDLE, LAST, ROTATE = 1, 2, 3, 4, 5
BATCH_END = 0x80
"""Set in the type of a group commit's last record: strict recovery tells batches apart by it."""
MAX_FRAGMENT = 1 << 20
"""Largest payload of one record; bigger transactions are fragmented."""

_CHANGE = struct.Struct("<BH")  # kind, key length
_LENGTH = struct.Struct("<I")
_COUNT = struct.Struct("<I")
_NEXT_SEGMENT = struct.Struct("<Q")
_WRITE, _REMOVE = 1, 2

Change = tuple[Key, bytes | None]
"""One operation of a transaction: the document's new bytes, or None to remove it."""


@dataclass(frozen=True)
class SegmentHeader:
    segment: int
    salt: bytes
    base_seq: int
    """The sequence number of the last transaction before this segment."""

    @classmethod
    def fresh(cls, segment: int, base_seq: int) -> SegmentHeader:
        return cls(segment, os.urandom(8), base_seq)

    def encode(self) -> bytes:
        fields = HEADER.pack(MAGIC, self.segment, self.salt, self.base_seq)
        return fields + _LENGTH.pack(zlib.crc32(fields))

    @classmethod
    def decode(cls, data: bytes) -> SegmentHeader | None:
        """The header, or None when ``data`` does not start with a valid one."""
        if len(data) < HEADER_SIZE:
            return None
        fields = data[: HEADER.size]
        (crc,) = _LENGTH.unpack_from(data, HEADER.size)
        magic, segment, salt, base_seq = HEADER.unpack(fields)
        if magic != MAGIC or crc != zlib.crc32(fields):
            return None
        return cls(segment, salt, base_seq)


def _checksum(salt: bytes, prefix: bytes, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(prefix, zlib.crc32(salt)))


def frame(salt: bytes, seq: int, kind: int, payload: bytes, *, batch_end: bool = False) -> bytes:
    """One record (or, for a long payload, its fragments) ready to append."""
    if kind == FULL and len(payload) > MAX_FRAGMENT:
        pieces = [payload[i : i + MAX_FRAGMENT] for i in range(0, len(payload), MAX_FRAGMENT)]
        kinds = [FIRST] + [MIDDLE] * (len(pieces) - 2) + [LAST]
    else:
        pieces, kinds = [payload], [kind]
    if batch_end:
        kinds[-1] |= BATCH_END
    out = bytearray()
    for piece_kind, piece in zip(kinds, pieces, strict=True):
        prefix = RECORD.pack(len(piece), piece_kind, seq)
        out += prefix
        out += _LENGTH.pack(_checksum(salt, prefix, piece))
        out += piece
    return bytes(out)


def encode_changes(changes: Iterable[Change]) -> bytes:
    items = list(changes)
    out = bytearray(_COUNT.pack(len(items)))
    for key, data in items:
        name = "/".join(key).encode()
        out += _CHANGE.pack(_REMOVE if data is None else _WRITE, len(name))
        out += name
        if data is not None:
            out += _LENGTH.pack(len(data))
            out += data
    return bytes(out)


def decode_changes(payload: bytes) -> list[Change]:
    """The inverse of :func:`encode_changes`; a payload that passed its CRC is trusted."""
    (count,) = _COUNT.unpack_from(payload, 0)
    position = _COUNT.size
    changes: list[Change] = []
    for _ in range(count):
        kind, name_length = _CHANGE.unpack_from(payload, position)
        position += _CHANGE.size
        key = tuple(payload[position : position + name_length].decode().split("/"))
        position += name_length
        data: bytes | None = None
        if kind == _WRITE:
            (length,) = _LENGTH.unpack_from(payload, position)
            position += _LENGTH.size
            data = payload[position : position + length]
            position += length
        changes.append((key, data))
    return changes


def encode_rotation(next_segment: int) -> bytes:
    return _NEXT_SEGMENT.pack(next_segment)


def decode_rotation(payload: bytes) -> int:
    (segment,) = _NEXT_SEGMENT.unpack(payload)
    return int(segment)


StepKind = Literal["commit", "rotate", "end", "torn"]


@dataclass(frozen=True)
class Step:
    """What :func:`read_step` found at an offset.

    ``end``: zeros or the end of the file (nothing written yet). ``torn``:
    bytes that are not a valid record with the expected sequence number (a
    torn tail, or a record another process is writing right now).
    """

    kind: StepKind
    offset: int
    """Where the next record starts (unchanged for ``end`` and ``torn``)."""
    seq: int = 0
    payload: bytes = b""


Pread = Callable[[int, int], bytes]
"""``pread(size, offset)``: bytes of the segment, fewer at its end."""


def read_step(  # noqa: PLR0911
    pread: Pread, salt: bytes, offset: int, seq: int, *, verify: bool = True
) -> Step:
    """Read the transaction (all its fragments) or rotation with sequence number ``seq``.

    ``verify=False`` skips the checksums: only the crash harness's negative
    control uses it, to show what they protect against.
    """
    pieces: list[bytes] = []
    position = offset
    while True:
        head = pread(RECORD_HEADER_SIZE, position)
        if not any(head) and not pieces:
            return Step("end", offset)
        if len(head) < RECORD_HEADER_SIZE:
            return Step("torn", offset)
        length, flagged_kind, record_seq = RECORD.unpack_from(head)
        kind = flagged_kind & ~BATCH_END
        (crc,) = _LENGTH.unpack_from(head, RECORD.size)
        if record_seq != seq or length > MAX_FRAGMENT or not FULL <= kind <= ROTATE:
            return Step("torn", offset)
        payload = pread(length, position + RECORD_HEADER_SIZE)
        if len(payload) < length or (
            verify and crc != _checksum(salt, head[: RECORD.size], payload)
        ):
            return Step("torn", offset)
        position += RECORD_HEADER_SIZE + length
        expected = (MIDDLE, LAST) if pieces else (FULL, FIRST, ROTATE)
        if kind not in expected:
            return Step("torn", offset)
        pieces.append(payload)
        if kind == ROTATE:
            return Step("rotate", position, seq, payload)
        if kind in (FULL, LAST):
            return Step("commit", position, seq, b"".join(pieces))


def find_later_batch(pread: Pread, salt: bytes, start: int, end: int, seq: int) -> int | None:
    """The offset of a valid record of a batch written after the one torn at ``start``, if any.

    A group commit's records reach the disk in any order until its flush, so
    valid records of the torn batch itself may follow the damage. A record of a
    *later* batch (a higher sequence number than a valid batch end at or after
    ``seq``) was written only after that flush returned: the damaged bytes had
    been durable, so this is media corruption, not a torn write. The damaged
    record's own batch mark is unreadable, so proof needs a valid batch end
    after the damage and a record after that. It holds only for logs whose
    writers flush each commit (``durability`` other than none).
    """
    data = pread(end - start, start)
    batch_end: int | None = None
    for position in range(1, max(0, len(data) - RECORD_HEADER_SIZE) + 1):
        length, flagged_kind, record_seq = RECORD.unpack_from(data, position)
        kind = flagged_kind & ~BATCH_END
        if not (FULL <= kind <= ROTATE and seq <= record_seq <= seq + (1 << 32)):
            continue
        body = position + RECORD_HEADER_SIZE
        if length > MAX_FRAGMENT or body + length > len(data):
            continue
        (crc,) = _LENGTH.unpack_from(data, position + RECORD.size)
        if crc != _checksum(
            salt, data[position : position + RECORD.size], data[body : body + length]
        ):
            continue
        if batch_end is not None and record_seq > batch_end:
            return start + position
        if flagged_kind & BATCH_END:
            batch_end = record_seq if batch_end is None else min(batch_end, record_seq)
    return None
