"""The GGUF v3 container: a streaming writer and a reader that checks every
length, count, offset, type and dimension against the file before trusting it.

Layout (little-endian): ``GGUF`` magic, version 3, tensor count, metadata count;
the metadata (key, type, value); one info record per tensor (name, dims with the
innermost first, ggml type, offset); zero padding to ``general.alignment``
(default 32); then the tensors, each padded to the alignment. llama.cpp requires
every offset to equal the padded sum of the sizes before it, in info order.
"""

from __future__ import annotations

import enum
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Tuple, Union

from .types import BLOCK_SIZES, GGMLType

__all__ = ["ValueType", "TensorInfo", "GGUFWriter", "GGUFReader", "GGUFError", "DEFAULT_ALIGNMENT"]

MAGIC = b"GGUF"
VERSION = 3
DEFAULT_ALIGNMENT = 32
MAX_NAME_BYTES = 63          # llama.cpp: names shorter than GGML_MAX_NAME (64)
MAX_DIMS = 4
# Reader limits, far above any real model's needs and far below what would hurt.
MAX_STRING_BYTES = 64 << 20
MAX_ARRAY_ITEMS = 64 << 20
MAX_ALIGNMENT = 1 << 20
MAX_COUNT = 1 << 24          # tensors, metadata entries


class GGUFError(ValueError):
    """A GGUF file (or a value to write) breaks the format."""


class ValueType(enum.IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR = {ValueType.UINT8: "<B", ValueType.INT8: "<b", ValueType.UINT16: "<H", ValueType.INT16: "<h",
           ValueType.UINT32: "<I", ValueType.INT32: "<i", ValueType.FLOAT32: "<f", ValueType.BOOL: "<?",
           ValueType.UINT64: "<Q", ValueType.INT64: "<q", ValueType.FLOAT64: "<d"}


def _pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass
class TensorInfo:
    name: str
    shape: Tuple[int, ...]   # ggml order: shape[0] is the row length (innermost)
    ggml_type: GGMLType
    offset: int = 0          # from the start of the data section

    @property
    def n_elements(self) -> int:
        """Number of elements (the product of the shape)."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int:
        """Bytes the tensor takes in the file (whole blocks)."""
        block, size = BLOCK_SIZES[self.ggml_type]
        return self.n_elements // block * size

    @property
    def torch_shape(self) -> Tuple[int, ...]:
        """The shape in PyTorch order (outermost first)."""
        return tuple(reversed(self.shape))


# ----------------------------------------------------------------------------- writing
def _encode_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _encode_value(value: Any, vtype: ValueType, item_type: Optional[ValueType]) -> bytes:
    if vtype == ValueType.STRING:
        if not isinstance(value, str):
            raise GGUFError(f"a STRING value must be str, got {type(value).__name__}")
        return _encode_string(value)
    if vtype == ValueType.ARRAY:
        if item_type is None or item_type == ValueType.ARRAY:
            raise GGUFError("an ARRAY needs a scalar or STRING item type (nested arrays are not loadable)")
        items = list(value)
        return (struct.pack("<IQ", int(item_type), len(items))
                + b"".join(_encode_value(v, item_type, None) for v in items))
    try:
        return struct.pack(_SCALAR[vtype], value)
    except (struct.error, KeyError) as e:
        raise GGUFError(f"cannot store {value!r} as {vtype.name}: {e}") from None


class GGUFWriter:
    """Writes a GGUF file in one pass with O(one tensor) memory.

    Declare the metadata (``add``) and every tensor (``add_tensor_info``) first;
    ``begin()`` writes the header, then ``write_tensor`` streams each tensor's
    bytes in declaration order. ``close()`` checks that every tensor arrived and
    renames the temporary file onto ``path``; a failure leaves no file there.
    """

    def __init__(self, path: Union[str, os.PathLike], alignment: int = DEFAULT_ALIGNMENT):
        if alignment <= 0 or alignment & (alignment - 1) or alignment > MAX_ALIGNMENT:
            raise GGUFError(f"alignment must be a power of two <= {MAX_ALIGNMENT}, got {alignment}")
        self.path = Path(path)
        self.alignment = alignment
        self.kv: Dict[str, Tuple[Any, ValueType, Optional[ValueType]]] = {}
        self.tensors: List[TensorInfo] = []
        self._names: set = set()
        self._file: Optional[BinaryIO] = None
        self._tmp: Optional[Path] = None
        self._next = 0
        if alignment != DEFAULT_ALIGNMENT:
            self.add("general.alignment", alignment, ValueType.UINT32)

    def add(self, key: str, value: Any, vtype: ValueType, item_type: Optional[ValueType] = None) -> None:
        """Add a metadata key-value pair (``item_type`` for arrays); only before :meth:`begin`."""
        if self._file is not None:
            raise GGUFError("metadata must be added before begin()")
        if not key:
            raise GGUFError("metadata keys must not be empty")
        if vtype == ValueType.ARRAY and not len(value):
            raise GGUFError(f"{key}: llama.cpp's writer never stores empty arrays; leave the key out")
        _encode_value(value, vtype, item_type)  # fail now, not half-way through the file
        self.kv[key] = (value, ValueType(vtype), item_type)

    def add_tensor_info(self, name: str, torch_shape: Sequence[int], ggml_type: GGMLType) -> TensorInfo:
        """Declare a tensor (PyTorch shape order) before :meth:`begin`; its data follows in the same order."""
        if self._file is not None:
            raise GGUFError("tensors must be declared before begin()")
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise GGUFError(f"tensor name {name!r} is longer than {MAX_NAME_BYTES} bytes")
        if name in self._names:
            raise GGUFError(f"duplicate tensor name {name!r}")
        shape = tuple(int(d) for d in reversed(tuple(torch_shape))) or (1,)
        if len(shape) > MAX_DIMS or any(d <= 0 for d in shape):
            raise GGUFError(f"{name}: shape {tuple(torch_shape)} must have 1..{MAX_DIMS} positive dims")
        block = BLOCK_SIZES[GGMLType(ggml_type)][0]
        if shape[0] % block:
            raise GGUFError(f"{name}: row length {shape[0]} is not a multiple of {GGMLType(ggml_type).name}'s "
                            f"block of {block}")
        info = TensorInfo(name, shape, GGMLType(ggml_type))
        info.offset = sum(_pad(t.n_bytes, self.alignment) for t in self.tensors)
        self.tensors.append(info)
        self._names.add(name)
        return info

    def begin(self) -> None:
        """Write the header, metadata and tensor infos to a temporary file; then :meth:`write_tensor` each tensor."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        head = [MAGIC, struct.pack("<IQQ", VERSION, len(self.tensors), len(self.kv))]
        for key, (value, vtype, item_type) in self.kv.items():
            head += [_encode_string(key), struct.pack("<I", int(vtype)), _encode_value(value, vtype, item_type)]
        for t in self.tensors:
            head += [_encode_string(t.name), struct.pack("<I", len(t.shape)),
                     struct.pack(f"<{len(t.shape)}Q", *t.shape), struct.pack("<IQ", int(t.ggml_type), t.offset)]
        blob = b"".join(head)
        self._file.write(blob + b"\0" * (_pad(len(blob), self.alignment) - len(blob)))

    def write_tensor(self, name: str, data: bytes) -> None:
        """The raw bytes of the next declared tensor (``bytes``, ``bytearray`` or a
        uint8 tensor/array's buffer)."""
        if self._file is None:
            raise GGUFError("call begin() before writing tensors")
        if self._next >= len(self.tensors):
            raise GGUFError(f"{name}: more tensors written than declared")
        info = self.tensors[self._next]
        if info.name != name:
            raise GGUFError(f"tensors must be written in declaration order: expected {info.name!r}, got {name!r}")
        view = memoryview(data).cast("B")
        if view.nbytes != info.n_bytes:
            raise GGUFError(f"{name}: {view.nbytes} bytes given, {info.n_bytes} declared "
                            f"({info.ggml_type.name} {info.torch_shape})")
        self._file.write(view)
        self._file.write(b"\0" * (_pad(info.n_bytes, self.alignment) - info.n_bytes))
        self._next += 1

    def close(self) -> Path:
        """Check every declared tensor was written, then rename the file into place (atomic)."""
        if self._file is None:
            raise GGUFError("nothing was written (call begin() first)")
        try:
            if self._next != len(self.tensors):
                missing = [t.name for t in self.tensors[self._next:]][:3]
                raise GGUFError(f"{len(self.tensors) - self._next} declared tensors were not written: {missing}")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.chmod(self._tmp, 0o644)
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._file = None
        return self.path

    def abort(self) -> None:
        """Drop the partial file (on any error)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> "GGUFWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


# ----------------------------------------------------------------------------- reading
class _Cursor:
    """Bounds-checked sequential reads of the file's header part: every length is
    checked against the bytes left in the file before anything is read."""

    def __init__(self, f: BinaryIO, size: int, what: str):
        self.f, self.size, self.pos, self.what = f, size, 0, what
        self.item_type: Optional[ValueType] = None  # of the last array read

    def left(self) -> int:
        return self.size - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.left():
            raise GGUFError(f"{self.what}: truncated (needs {n} more bytes at offset {self.pos}, "
                            f"{self.left()} left)")
        b = self.f.read(n)
        if len(b) != n:
            raise GGUFError(f"{self.what}: truncated at offset {self.pos}")
        self.pos += n
        return b

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self, limit: int = MAX_STRING_BYTES) -> str:
        n = self.unpack("<Q")
        if n > limit or n > self.left():
            raise GGUFError(f"{self.what}: string of {n} bytes at offset {self.pos} is longer than the file or the "
                            f"limit of {limit}")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"{self.what}: a string at offset {self.pos - n} is not UTF-8") from None

    def value(self, vtype: int, depth: int = 0) -> Any:
        try:
            vt = ValueType(vtype)
        except ValueError:
            raise GGUFError(f"{self.what}: unknown metadata type {vtype} at offset {self.pos}") from None
        if vt == ValueType.STRING:
            return self.string()
        if vt == ValueType.ARRAY:
            if depth:
                raise GGUFError(f"{self.what}: nested array at offset {self.pos}")
            item = self.unpack("<I")
            count = self.unpack("<Q")
            try:
                item_t = ValueType(item)
            except ValueError:
                raise GGUFError(f"{self.what}: unknown array item type {item}") from None
            self.item_type = item_t
            min_size = 8 if item_t == ValueType.STRING else struct.calcsize(_SCALAR.get(item_t, "<B"))
            if item_t == ValueType.ARRAY or count > MAX_ARRAY_ITEMS or count * min_size > self.left():
                raise GGUFError(f"{self.what}: array of {count} {item_t.name} items at offset {self.pos} does not "
                                "fit the file")
            if item_t != ValueType.STRING:
                fmt = _SCALAR[item_t]
                raw = self.take(count * struct.calcsize(fmt))
                return list(struct.unpack(f"<{count}{fmt[1]}", raw))
            return [self.value(item, depth + 1) for _ in range(count)]
        return self.unpack(_SCALAR[vt])


class GGUFReader:
    """Metadata and tensor index of a GGUF file; tensor bytes are read on demand.

    Every count, length, type, dimension and offset is checked against the file
    size (Python integers do not overflow) before anything is read or allocated.
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} is not a file")
        self.file_size = self.path.stat().st_size
        self.metadata: Dict[str, Any] = {}
        self.metadata_types: Dict[str, Tuple[ValueType, Optional[ValueType]]] = {}
        self.tensors: List[TensorInfo] = []
        self._names_seen: set = set()
        self.alignment = DEFAULT_ALIGNMENT
        with open(self.path, "rb") as f:
            cur = _Cursor(f, self.file_size, str(self.path))
            n_tensors, n_kv = self._read_preamble(cur)
            for _ in range(n_kv):
                self._read_kv(cur)
            self._read_alignment()
            for _ in range(n_tensors):
                self._read_tensor_info(cur)
        self.data_start = _pad(cur.pos, self.alignment)
        expected = 0
        for t in self.tensors:
            if t.offset != expected:
                raise GGUFError(f"{self.path}: tensor {t.name!r} has offset {t.offset}, expected {expected} "
                                "(offsets must follow one another)")
            if self.data_start + t.offset + t.n_bytes > self.file_size:
                raise GGUFError(f"{self.path}: tensor {t.name!r} ends past the end of the file (truncated?)")
            expected += _pad(t.n_bytes, self.alignment)
        self._by_name = {t.name: t for t in self.tensors}

    def _read_preamble(self, cur: _Cursor) -> Tuple[int, int]:
        if self.file_size < 24 or cur.take(4) != MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (no GGUF magic)")
        self.version, n_tensors, n_kv = struct.unpack("<IQQ", cur.take(20))
        if self.version not in (2, 3):
            raise GGUFError(f"{self.path}: GGUF version {self.version} is not supported (2 and 3 are)")
        if n_tensors > MAX_COUNT or n_kv > MAX_COUNT:
            raise GGUFError(f"{self.path}: {n_tensors} tensors / {n_kv} metadata entries is implausible")
        return n_tensors, n_kv

    def _read_kv(self, cur: _Cursor) -> None:
        key = cur.string(limit=65535)
        if not key or key in self.metadata:
            raise GGUFError(f"{self.path}: empty or duplicate metadata key {key!r}")
        vtype = cur.unpack("<I")
        cur.item_type = None
        self.metadata[key] = cur.value(vtype)
        self.metadata_types[key] = (ValueType(vtype), cur.item_type)

    def _read_alignment(self) -> None:
        if "general.alignment" not in self.metadata:
            return
        a = self.metadata["general.alignment"]
        if self.metadata_types["general.alignment"][0] != ValueType.UINT32 or a <= 0 or a & (a - 1) \
                or a > MAX_ALIGNMENT:
            raise GGUFError(f"{self.path}: general.alignment must be a UINT32 power of two <= {MAX_ALIGNMENT}")
        self.alignment = a

    def _read_tensor_info(self, cur: _Cursor) -> None:
        name = cur.string(limit=MAX_NAME_BYTES)
        if name in self._names_seen:
            raise GGUFError(f"{self.path}: duplicate tensor name {name!r}")
        n_dims = cur.unpack("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"{self.path}: tensor {name!r} has {n_dims} dimensions (1..{MAX_DIMS} allowed)")
        shape = struct.unpack(f"<{n_dims}Q", cur.take(8 * n_dims))
        type_id = cur.unpack("<I")
        offset = cur.unpack("<Q")
        try:
            ggml_type = GGMLType(type_id)
        except ValueError:
            raise GGUFError(f"{self.path}: tensor {name!r} has ggml type {type_id}, which quantcore does not "
                            f"read (supported: {', '.join(t.name for t in GGMLType)})") from None
        if any(d == 0 for d in shape) or shape[0] % BLOCK_SIZES[ggml_type][0]:
            raise GGUFError(f"{self.path}: tensor {name!r} has shape {shape}, invalid for {ggml_type.name}")
        info = TensorInfo(name, tuple(shape), ggml_type, offset)
        if info.n_bytes > self.file_size:
            raise GGUFError(f"{self.path}: tensor {name!r} {shape} would take {info.n_bytes} bytes, more than "
                            "the file holds")
        self.tensors.append(info)
        self._names_seen.add(name)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def info(self, name: str) -> TensorInfo:
        """The tensor's name, shape, type and offset; KeyError when absent."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.path} has no tensor {name!r}") from None

    def raw(self, name: str) -> bytes:
        """The tensor's bytes as stored."""
        t = self.info(name)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + t.offset)
            data = f.read(t.n_bytes)
        if len(data) != t.n_bytes:
            raise GGUFError(f"{self.path}: tensor {name!r} is truncated")
        return data

    def tensor(self, name: str) -> "torch.Tensor":
        """The tensor as float32 in PyTorch order (dequantized when quantized)."""
        import torch

        t = self.info(name)
        data = torch.frombuffer(bytearray(self.raw(name)), dtype=torch.uint8)
        rows = t.n_elements // t.shape[0]
        out = torch.ops.quantcore.gguf_dequantize(data.view(rows, -1), int(t.ggml_type), t.shape[0])
        return out.view(t.torch_shape)
