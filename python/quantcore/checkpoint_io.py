"""Reading and writing safetensors checkpoints tensor by tensor, without
memory maps and without holding a shard in memory.

Reading parses each file's header itself (every offset, shape and dtype
checked against the file size, so a truncated or hostile file gives a clear
error) and reads one tensor at a time into ordinary memory, which is freed
when the tensor is: converting a checkpoint never keeps the whole of it
resident. Writing appends each tensor's bytes to a spill file as it comes and
assembles the shard (header, then data) when it is full.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

CONFIG_NAME = "config.json"

__all__ = ["TensorSource", "ShardWriter", "SafetensorsFile", "read_config", "state_mismatch",
           "WEIGHTS_NAME", "INDEX_NAME", "CONFIG_NAME"]


def read_config(model_dir: Path) -> Dict:
    """``config.json`` of a checkpoint directory, with one-line errors for a missing,
    unreadable or non-object file."""
    cfg_file = Path(model_dir) / CONFIG_NAME
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_file} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_file} does not hold a JSON object")
    return cfg


def state_mismatch(e: RuntimeError) -> str:
    """The first line of ``load_state_dict``'s error that names what does not fit."""
    lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
    return lines[0] if lines else str(e).splitlines()[0]

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 << 20  # safetensors' own limit


class SafetensorsFile:
    """One safetensors file: header parsed and checked, tensors read on demand."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{self.path} is not a safetensors file (shorter than its header length)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise ValueError(f"{self.path}: header length {n} exceeds the file ({size} bytes): truncated or "
                                 "not a safetensors file")
            try:
                header = json.loads(f.read(n))
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"{self.path}: the safetensors header is not valid JSON: {e}") from None
        if not isinstance(header, dict):
            raise ValueError(f"{self.path}: the safetensors header is not a JSON object")
        self.metadata: Dict[str, str] = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        data_size = size - self.data_start
        self.entries: Dict[str, Tuple[torch.dtype, List[int], int, int]] = {}
        for key, e in header.items():
            try:
                dtype = _DTYPES[e["dtype"]]
                shape = [int(d) for d in e["shape"]]
                begin, end = (int(v) for v in e["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{self.path}: tensor {key!r} has a malformed header entry {e!r}") from None
            numel = 1
            for d in shape:
                if d < 0:
                    raise ValueError(f"{self.path}: tensor {key!r} has a negative dimension")
                numel *= d
            nbytes = numel * torch.empty((), dtype=dtype).element_size()
            if not 0 <= begin <= end <= data_size or end - begin != nbytes:
                raise ValueError(f"{self.path}: tensor {key!r} lies outside the file or its size does not match "
                                 f"its shape (truncated or corrupt file)")
            self.entries[key] = (dtype, shape, begin, end)

    def get(self, key: str) -> torch.Tensor:
        dtype, shape, begin, end = self.entries[key]
        buf = torch.empty(end - begin, dtype=torch.uint8)
        if end > begin:
            with open(self.path, "rb") as f:
                f.seek(self.data_start + begin)
                got = f.readinto(memoryview(buf.numpy()))
            if got != end - begin:
                raise ValueError(f"{self.path}: tensor {key!r} is cut short (truncated file)")
        return buf.view(dtype).reshape(shape)


class TensorSource:
    """The tensors of a checkpoint directory: ``model.safetensors`` or the shards
    listed in ``model.safetensors.index.json``, read one at a time."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        index = path / INDEX_NAME
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                files = sorted(set(weight_map.values()))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{index} is not a valid safetensors index: {e}") from None
        elif (path / WEIGHTS_NAME).is_file():
            files = [WEIGHTS_NAME]
        else:
            raise FileNotFoundError(f"{path} has neither {WEIGHTS_NAME} nor {INDEX_NAME}")
        self._files: Dict[str, SafetensorsFile] = {}
        self._where: Dict[str, str] = {}
        for fname in files:
            if not isinstance(fname, str) or Path(fname).name != fname:
                raise ValueError(f"{index}: shard name {fname!r} is not a file name in the directory")
            file = path / fname
            if not file.is_file():
                raise FileNotFoundError(f"{file} (listed in the index) not found")
            self._files[fname] = SafetensorsFile(file)
            for key in self._files[fname].entries:
                if key in self._where:
                    raise ValueError(f"tensor {key!r} is stored in both {self._where[key]} and {fname}")
                self._where[key] = fname

    def keys(self):
        return self._where.keys()

    def metadata(self) -> Dict[str, str]:
        """The files' safetensors metadata, merged."""
        out: Dict[str, str] = {}
        for f in self._files.values():
            out.update(f.metadata)
        return out

    def get(self, key: str) -> Optional[torch.Tensor]:
        fname = self._where.get(key)
        return None if fname is None else self._files[fname].get(key)

    def shape(self, key: str) -> List[int]:
        """A tensor's shape from the file header (nothing read)."""
        return list(self._files[self._where[key]].entries[key][1])

    def prefix_keys(self, prefix: str) -> List[str]:
        return [k for k in self._where if k.startswith(prefix)]


class ShardWriter:
    """Writes tensors into shards of at most ``max_shard_bytes`` (a larger tensor
    gets a shard of its own). Each tensor's bytes go to disk as it is added;
    ``close()`` names the shards ``model-0000i-of-0000n.safetensors`` and writes
    the index (a single shard is ``model.safetensors``)."""

    def __init__(self, out_dir: Path, max_shard_bytes: int = 1 << 30, metadata: Optional[Dict[str, str]] = None):
        if max_shard_bytes <= 0:
            raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
        self.out_dir = Path(out_dir)
        self.max_shard_bytes = max_shard_bytes
        self.metadata = dict(metadata or {"format": "pt"})
        self._header: Dict[str, dict] = {}
        self._spill = None
        self._spill_bytes = 0
        self._shards: List[List[str]] = []
        self._seen = set()
        self.total_bytes = 0

    def add(self, tensors: Dict[str, torch.Tensor]) -> None:
        for key, t in tensors.items():
            if key in self._seen:
                raise ValueError(f"tensor {key!r} written twice")
            self._seen.add(key)
            t = t.detach().cpu().contiguous()
            size = t.numel() * t.element_size()
            if self._header and self._spill_bytes + size > self.max_shard_bytes:
                self._flush()
            if self._spill is None:
                self._spill = open(self.out_dir / f".shard-{len(self._shards):05d}.data", "wb")
            if size:
                self._spill.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
            self._header[key] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                                 "data_offsets": [self._spill_bytes, self._spill_bytes + size]}
            self._spill_bytes += size
            self.total_bytes += size

    def _flush(self) -> None:
        if self._spill is None:
            return
        self._spill.close()
        i = len(self._shards)
        data = self.out_dir / f".shard-{i:05d}.data"
        header = json.dumps({"__metadata__": self.metadata, **self._header}, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)  # data starts 8-byte aligned, as safetensors writes it
        with open(self.out_dir / f".shard-{i:05d}.safetensors", "wb") as out, open(data, "rb") as src:
            out.write(struct.pack("<Q", len(header)))
            out.write(header)
            shutil.copyfileobj(src, out, 16 << 20)
        os.remove(data)
        self._shards.append(list(self._header))
        self._header, self._spill, self._spill_bytes = {}, None, 0

    def close(self) -> List[str]:
        """Writes the last shard and the index; returns the file names."""
        self._flush()
        n = len(self._shards)
        if n == 0:
            raise ValueError("no tensors were written")
        if n == 1:
            (self.out_dir / ".shard-00000.safetensors").rename(self.out_dir / WEIGHTS_NAME)
            return [WEIGHTS_NAME]
        names, weight_map = [], {}
        for i, keys in enumerate(self._shards):
            name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            (self.out_dir / f".shard-{i:05d}.safetensors").rename(self.out_dir / name)
            names.append(name)
            weight_map.update({k: name for k in keys})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return names
