"""Hand-assembled GGUF bytes, so tests can write any corruption a real file might have."""

from __future__ import annotations

import struct


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_bytes(tensors, kv=None, *, magic=b"GGUF", version=3, alignment=32, data=None):
    """tensors: (name, ne tuple, type id, offset, nbytes) rows; kv: key -> (type id, packed bytes).
    The data section is `data`, or zeros sized to the tensors."""
    kv = dict(kv or {})
    out = bytearray(magic + struct.pack("<IQQ", version, len(tensors), len(kv)))
    for key, (vtype, payload) in kv.items():
        out += _str(key) + struct.pack("<I", vtype) + payload
    for name, ne, type_id, offset, _ in tensors:
        out += _str(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
        out += struct.pack("<IQ", type_id, offset)
    out += b"\0" * (-len(out) % alignment)
    if data is None:
        end = max((off + n for _, _, _, off, n in tensors), default=0)
        data = b"\0" * end
    return bytes(out) + data


def f32_tensor(name, n, offset):
    return (name, (n,), 0, offset, 4 * n)
