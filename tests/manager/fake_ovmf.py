"""A small firmware image in OVMF's AmdSev layout (footer GUID table, SEV
metadata with the SNP sections and a kernel-hashes table), enough for
sev-snp-measure to measure a launch through it. Real AmdSev builds are not in
Debian's ovmf package; this stands in for one in tests."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

SIZE = 0x10000  # 64 KiB, ending at 4 GiB
FOOTER = "96b582de-1fb2-45f7-baea-a366c55a082d"
HASH_TABLE = "7255371f-3a3b-4b04-927b-1da6efa8d454"
RESET_BLOCK = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
METADATA = "dc886566-984a-4798-a75e-5585a7bf67cc"
SECTIONS = [  # (gpa, size, type): SEC memory, secrets, CPUID, kernel hashes
    (0x00800000, 0x9000, 1),
    (0x00809000, 0x1000, 2),
    (0x0080A000, 0x1000, 3),
    (0x0080B000, 0x1000, 0x10),
]


def _entry(guid: str, data: bytes) -> bytes:
    return data + struct.pack("<H", len(data) + 18) + uuid.UUID(guid).bytes_le


def write(path: Path) -> Path:
    image = bytearray(b"\xff" * SIZE)
    metadata = b"ASEV" + struct.pack("<III", 16 + 12 * len(SECTIONS), 1, len(SECTIONS))
    metadata += b"".join(struct.pack("<III", *section) for section in SECTIONS)
    metadata_at = 0x1000
    image[metadata_at : metadata_at + len(metadata)] = metadata
    entries = (
        _entry(HASH_TABLE, struct.pack("<II", 0x0080B000, 0x400))
        + _entry(RESET_BLOCK, struct.pack("<I", 0xFFFFF000 + 0x100))
        + _entry(METADATA, struct.pack("<I", SIZE - metadata_at))
    )
    table = entries + struct.pack("<H", len(entries) + 18) + uuid.UUID(FOOTER).bytes_le
    end = SIZE - 32
    image[end - len(table) : end] = table
    path.write_bytes(bytes(image))
    return path
