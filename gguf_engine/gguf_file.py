"""Open a GGUF file: memory-map it, parse the header leanly, validate it, and give zero-copy
views of its tensors.

gguf-py's `GGUFReader` builds a NumPy object per vocabulary string (8 s and +720 MB on Gemma 3
270M), so this parser keeps string arrays as offsets into the map and decodes them on demand.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 8  # arrays of arrays nest this deep at most (real files use 1 or 2 levels)

# GGUF metadata value types: id -> (name, struct format or None for variable size)
_SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_NUMPY_DTYPES = {
    0: np.uint8,
    1: np.int8,
    2: np.uint16,
    3: np.int16,
    4: np.uint32,
    5: np.int32,
    6: np.float32,
    7: np.bool_,
    10: np.uint64,
    11: np.int64,
    12: np.float64,
}
_STRING, _ARRAY = 8, 9


_ESCAPED_BYTE = re.compile("[\udc80-\udcfe]")  # surrogateescape's invalid bytes, not 0xFF


class GGUFError(ValueError):
    """A GGUF file is malformed or uses something this engine does not support."""


class StringArray:
    """A GGUF array of strings left in the memory map; decoded in bulk on first use."""

    def __init__(self, buf: np.ndarray, start: int, count: int):
        self._buf = buf  # (file_bytes,) uint8 memory map
        self._start = start
        self._count = count
        self._items: list[str] | None = None

    def __len__(self) -> int:
        return self._count

    def to_list(self) -> list[str]:
        if self._items is None:
            self._items = self._decode_all()
        return self._items

    def _decode_all(self) -> list[str]:
        """All strings decoded at once: their bytes are joined with 0xFF (never a byte of UTF-8)
        between them, decoded in one call and split, several times faster than a decode each."""
        mv = memoryview(self._buf)
        unpack = struct.Struct("<Q").unpack_from
        starts = np.empty(self._count, dtype=np.int64)  # (count,) offset of each string's bytes
        lengths = np.empty(self._count, dtype=np.int64)  # (count,)
        pos = self._start
        for i in range(self._count):
            (n,) = unpack(mv, pos)
            starts[i], lengths[i] = pos + 8, n
            pos += 8 + n
        if self._count == 0:
            return []
        span = np.array(self._buf[self._start : pos])  # (span,) a copy we may write separators into
        rel = starts - self._start
        edges = np.zeros(len(span) + 1, dtype=np.int64)
        np.add.at(edges, rel, 1)
        np.add.at(edges, rel + lengths, -1)
        keep = np.cumsum(edges[:-1]) > 0  # (span,) True on string bytes
        seps = rel[1:] - 1  # the last byte of each later string's length prefix
        # 0xFE and 0xFF are both invalid in UTF-8 and decode to one U+FFFD each, so a string's
        # own 0xFF bytes can become 0xFE and 0xFF is left to mark the boundaries
        span[span == 0xFF] = 0xFE
        span[seps] = 0xFF
        keep[seps] = True
        text = span[keep].tobytes().decode("utf-8", errors="surrogateescape")
        items = text.split("\udcff")
        if _ESCAPED_BYTE.search(text) is not None:
            # invalid UTF-8 inside a string decodes as U+FFFD, as a per-string decode would
            items = [t.encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")
                     if _ESCAPED_BYTE.search(t) else t for t in items]
        return items

    def __getitem__(self, i):
        return self.to_list()[i]

    def __iter__(self):
        return iter(self.to_list())


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: its metadata and a zero-copy view of its bytes."""

    name: str
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]  # NumPy order: (rows, cols) for a matrix (GGUF's ne reversed)
    offset: int  # absolute byte offset in the file
    nbytes: int
    data: (
        np.ndarray
    )  # (rows, row_bytes) uint8 view into the memory map; (1, row_bytes) for a vector

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


class _Cursor:
    """Bounds-checked reads from the header; every overrun names the file."""

    def __init__(self, path: Path, buf: np.ndarray):
        self.path = path
        self.buf = buf
        self.mv = memoryview(buf)
        self.size = len(buf)
        self.pos = 0

    def fail(self, what: str) -> GGUFError:
        return GGUFError(f"{self.path}: {what}")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(
                f"truncated header: {what} at offset {self.pos} needs {n} bytes, "
                f"file has {self.size}"
            )

    def scalar(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.mv, self.pos)
        self.pos += n
        return v

    def string(self, what: str) -> str:
        n = self.scalar("<Q", what)
        self.need(n, what)
        s = bytes(self.mv[self.pos : self.pos + n])
        self.pos += n
        try:
            return s.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not valid UTF-8") from e

    def value(self, vtype: int, what: str, depth: int = 0):
        if vtype in _SCALAR_FORMATS:
            return self.scalar(_SCALAR_FORMATS[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            itype = self.scalar("<I", what)
            count = self.scalar("<Q", what)
            if itype in _NUMPY_DTYPES:
                dt = np.dtype(_NUMPY_DTYPES[itype])
                self.need(count * dt.itemsize, what)
                arr = np.frombuffer(self.buf, dtype=dt, count=count, offset=self.pos)
                self.pos += count * dt.itemsize
                return arr
            if itype == _STRING:
                self.need(count * 8, what)  # each string has at least its 8-byte length
                start = self.pos
                unpack = struct.Struct("<Q").unpack_from
                mv, size, pos = self.mv, self.size, self.pos
                for _ in range(count):
                    if pos + 8 > size:
                        break
                    pos += 8 + unpack(mv, pos)[0]
                self.pos = pos
                self.need(0, what)
                if pos > size:
                    raise self.fail(f"truncated header: {what} runs past the end of the file")
                return StringArray(self.buf, start, count)
            if itype == _ARRAY:
                if depth >= MAX_ARRAY_DEPTH:
                    raise self.fail(f"{what}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels")
                self.need(count * 12, what)
                return [self.value(_ARRAY, what, depth + 1) for _ in range(count)]
            raise self.fail(f"{what}: unknown array item type {itype}")
        raise self.fail(f"{what}: unknown metadata value type {vtype}")


class GGUFFile:
    """A memory-mapped GGUF file: `metadata` (key -> value) and `tensors` (name -> TensorInfo)."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
        except OSError as e:
            raise GGUFError(f"{self.path}: cannot open: {e.strerror}") from e
        if size < 24:
            raise GGUFError(f"{self.path}: not a GGUF file (only {size} bytes)")
        try:
            self._buf = np.memmap(self.path, dtype=np.uint8, mode="r")
        except OSError as e:
            raise GGUFError(f"{self.path}: cannot map: {e}") from e
        cur = _Cursor(self.path, self._buf)
        magic = bytes(self._buf[:4])
        if magic != GGUF_MAGIC:
            raise GGUFError(
                f"{self.path}: not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})"
            )
        cur.pos = 4
        self.version = cur.scalar("<I", "version")
        if self.version not in SUPPORTED_VERSIONS:
            raise GGUFError(
                f"{self.path}: unsupported GGUF version {self.version} "
                f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})"
            )
        n_tensors = cur.scalar("<Q", "tensor count")
        n_kv = cur.scalar("<Q", "metadata count")
        # Each key/value takes at least 8 + 4 bytes, each tensor info at least 8 + 4 + 4 + 8.
        if n_kv * 12 > size or n_tensors * 24 > size:
            raise GGUFError(
                f"{self.path}: corrupt header: {n_kv} metadata entries and "
                f"{n_tensors} tensors cannot fit in {size} bytes"
            )
        self.metadata: dict[str, object] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            if key in self.metadata:
                raise GGUFError(f"{self.path}: duplicate metadata key {key!r} (entry #{i})")
            vtype = cur.scalar("<I", f"type of metadata {key!r}")
            self.metadata[key] = cur.value(vtype, f"metadata {key!r}")

        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0
                or alignment & (alignment - 1)):
            raise GGUFError(f"{self.path}: bad alignment {alignment!r} (must be a power of two)")
        self.alignment = alignment

        raw = []
        for i in range(n_tensors):
            name = cur.string(f"tensor name #{i}")
            n_dims = cur.scalar("<I", f"dimension count of tensor {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise GGUFError(
                    f"{self.path}: tensor {name!r} has {n_dims} dimensions "
                    f"(1 to {MAX_DIMS} allowed)"
                )
            ne = tuple(cur.scalar("<Q", f"shape of tensor {name!r}") for _ in range(n_dims))
            type_id = cur.scalar("<I", f"type of tensor {name!r}")
            offset = cur.scalar("<Q", f"offset of tensor {name!r}")
            raw.append((name, ne, type_id, offset))

        data_start = -(-cur.pos // alignment) * alignment
        self.data_offset = data_start
        self.tensors: dict[str, TensorInfo] = {}
        for name, ne, type_id, offset in raw:
            self.tensors[name] = self._tensor(name, ne, type_id, offset, data_start, size)

    def _tensor(self, name, ne, type_id, offset, data_start, size) -> TensorInfo:
        where = f"{self.path}: tensor {name!r}"
        if name in self.tensors:
            raise GGUFError(f"{where}: duplicate tensor name")
        try:
            qtype = GGMLQuantizationType(type_id)
        except ValueError:
            raise GGUFError(f"{where}: unknown GGML type {type_id}") from None
        if qtype not in GGML_QUANT_SIZES:
            raise GGUFError(f"{where}: GGML type {qtype.name} has no known block size")
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        if any(d <= 0 for d in ne) or any(d >= 2**40 for d in ne):
            raise GGUFError(f"{where}: bad shape {list(ne)}")
        if ne[0] % block_size:
            raise GGUFError(
                f"{where}: row length {ne[0]} is not a multiple of the "
                f"{qtype.name} block size {block_size}"
            )
        if offset % self.alignment:
            raise GGUFError(
                f"{where}: data offset {offset} is not a multiple of the alignment {self.alignment}"
            )
        rows = math.prod(ne[1:])  # Python integers: a product that overflows int64 stays exact
        row_bytes = ne[0] // block_size * type_size
        nbytes = rows * row_bytes
        start = data_start + offset
        if start >= size:
            raise GGUFError(
                f"{where}: tensor data at offset {start} lies outside the file ({size} bytes)"
            )
        if start + nbytes > size:
            raise GGUFError(
                f"{where}: truncated tensor data: needs bytes {start}..{start + nbytes}, "
                f"file has {size}"
            )
        view = self._buf[start : start + nbytes].reshape(rows, row_bytes)
        return TensorInfo(name, qtype, tuple(reversed(ne)), start, nbytes, view)

    # -- metadata helpers ---------------------------------------------------------------
    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "?"))

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)

    def require(self, key: str):
        if key not in self.metadata:
            raise GGUFError(f"{self.path}: missing metadata key {key!r}")
        return self.metadata[key]

    # Typed reads: a value of the wrong kind is an error that names the key, never a value that
    # is silently misread later (an eos_token_id stored as a string would never match a token).
    def _bad(self, key: str, value, expected: str) -> GGUFError:
        shown = f"an array of {len(value)}" if hasattr(value, "__len__") and not isinstance(
            value, str) else repr(value)
        return GGUFError(f"{self.path}: metadata {key!r} should be {expected}, got {shown}")

    def get_int(self, key: str, default=None, *, min_value: int | None = None,
                max_value: int | None = None):
        """An integer-typed value (bool excluded) in [min_value, max_value], or `default`."""
        v = self.metadata.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._bad(key, v, "an integer")
        if (min_value is not None and v < min_value) or (max_value is not None and v > max_value):
            lo = "" if min_value is None else f"{min_value}"
            hi = "" if max_value is None else f"{max_value}"
            raise GGUFError(f"{self.path}: metadata {key!r} = {v} is out of range [{lo}, {hi}]")
        return v

    def get_float(self, key: str, default=None, *, positive: bool = False):
        """A finite number (integer or float typed), or `default`."""
        v = self.metadata.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self._bad(key, v, "a finite number")
        if positive and not v > 0:
            raise GGUFError(f"{self.path}: metadata {key!r} = {v} must be > 0")
        return float(v)

    def get_bool(self, key: str, default=None):
        v = self.metadata.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self._bad(key, v, "a boolean")
        return v

    def get_str(self, key: str, default=None):
        v = self.metadata.get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self._bad(key, v, "a string")
        return v

    def get_strings(self, key: str) -> StringArray | None:
        """An array of strings, or None when absent."""
        v = self.metadata.get(key)
        if v is not None and not isinstance(v, StringArray):
            raise self._bad(key, v, "an array of strings")
        return v

    def get_numbers(self, key: str, n: int | None = None) -> np.ndarray | None:
        """A flat numeric array of `n` values (when given), or None when absent."""
        v = self.metadata.get(key)
        if v is None:
            return None
        if not isinstance(v, np.ndarray) or v.dtype == np.bool_:
            raise self._bad(key, v, "an array of numbers")
        if n is not None and len(v) != n:
            raise GGUFError(f"{self.path}: metadata {key!r} has {len(v)} entries, expected {n}")
        return v

    def tensor(self, name: str) -> TensorInfo:
        if name not in self.tensors:
            raise GGUFError(f"{self.path}: missing tensor {name!r}")
        return self.tensors[name]

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors.values())

    @property
    def size(self) -> int:
        return len(self._buf)


def drop_pages(view: np.ndarray) -> None:
    """Take the pages under `view`, a view of a file mapped by `GGUFFile`, out of this
    process's memory (they stay in the page cache and come back when read): for a matrix
    whose kernels read a packed copy, so that it is not held twice. Anything else is left."""
    base = view
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    m = getattr(base, "_mmap", None)
    if m is None or not hasattr(m, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the view only
    end = (start + view.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if 0 <= first < end <= len(m):
        m.madvise(mmap.MADV_DONTNEED, first, end - first)
