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


_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
UINT32, INT32, FLOAT32, STRING, ARRAY, UINT64 = 4, 5, 6, 8, 9, 10


def _skip_value(data: bytes, pos: int, vtype: int) -> int:
    if vtype in _SCALAR_SIZE:
        return pos + _SCALAR_SIZE[vtype]
    if vtype == STRING:
        return pos + 8 + struct.unpack_from("<Q", data, pos)[0]
    itype, count = struct.unpack_from("<IQ", data, pos)
    pos += 12
    if itype in _SCALAR_SIZE:
        return pos + count * _SCALAR_SIZE[itype]
    for _ in range(count):
        pos = _skip_value(data, pos, itype)
    return pos


def u32(v: int) -> tuple[int, bytes]:
    return UINT32, struct.pack("<I", v)


def string(s: str) -> tuple[int, bytes]:
    return STRING, _str(s)


def array(item_type: int, items: list[bytes]) -> tuple[int, bytes]:
    return ARRAY, struct.pack("<IQ", item_type, len(items)) + b"".join(items)


def edit_metadata(data: bytes, changes: dict, duplicate: str | None = None) -> bytes:
    """A valid GGUF file's bytes with metadata `changes` applied: key -> (type id, payload)
    replaces or adds an entry, key -> None removes it; `duplicate` repeats that key's entry.
    Tensor infos and data are kept (the data section moves to the new aligned start)."""
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24
    entries = []  # (key, entry bytes)
    for _ in range(n_kv):
        start = pos
        n = struct.unpack_from("<Q", data, pos)[0]
        key = data[pos + 8:pos + 8 + n].decode()
        pos += 8 + n
        vtype = struct.unpack_from("<I", data, pos)[0]
        pos = _skip_value(data, pos + 4, vtype)
        entries.append((key, data[start:pos]))
    infos_start = pos
    for _ in range(n_tensors):
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        n_dims = struct.unpack_from("<I", data, pos)[0]
        pos += 4 + 8 * n_dims + 12
    infos = data[infos_start:pos]
    alignment = 32
    for key, entry in entries:
        if key == "general.alignment":
            alignment = struct.unpack_from("<I", entry, len(entry) - 4)[0]
    old_data = pos + (-pos % alignment)
    out = []
    for key, entry in entries:
        if key in changes:
            if changes[key] is not None:
                out.append(_str(key) + struct.pack("<I", changes[key][0]) + changes[key][1])
        else:
            out.append(entry)
        if key == duplicate:
            out.append(out[-1])
    present = {k for k, _ in entries}
    out += [_str(k) + struct.pack("<I", v[0]) + v[1] for k, v in changes.items()
            if k not in present and v is not None]
    head = data[:16] + struct.pack("<Q", len(out)) + b"".join(out) + infos
    return head + b"\0" * (-len(head) % alignment) + data[old_data:]
