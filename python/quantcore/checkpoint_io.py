"""Reading and writing checkpoint directories tensor by tensor: the shards of a
Hugging Face checkpoint are memory-mapped and read one tensor at a time, and
output is written in shards of bounded size, so that converting a checkpoint
never needs it whole in memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

__all__ = ["TensorSource", "ShardWriter", "WEIGHTS_NAME", "INDEX_NAME"]


class TensorSource:
    """Lazy access to the tensors of a checkpoint directory: ``model.safetensors``
    or the shards listed in ``model.safetensors.index.json``."""

    def __init__(self, path: Path) -> None:
        index = path / INDEX_NAME
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{index} is not a valid safetensors index: {e}") from None
            files = sorted(set(weight_map.values()))
        elif (path / WEIGHTS_NAME).is_file():
            files = [WEIGHTS_NAME]
        else:
            raise FileNotFoundError(f"{path} has neither {WEIGHTS_NAME} nor model.safetensors.index.json")
        self._handles = {}
        self._where: Dict[str, str] = {}
        for fname in files:
            file = path / fname
            if not file.is_file():
                raise FileNotFoundError(f"{file} (listed in the index) not found")
            try:
                handle = safe_open(str(file), framework="pt")
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise ValueError(f"{file} is not a readable safetensors file: {e}") from None
            self._handles[fname] = handle
            for key in handle.keys():
                self._where[key] = fname

    def keys(self):
        return self._where.keys()

    def metadata(self) -> Dict[str, str]:
        """The files' safetensors metadata, merged."""
        out: Dict[str, str] = {}
        for handle in self._handles.values():
            out.update(handle.metadata() or {})
        return out

    def get(self, key: str) -> Optional[torch.Tensor]:
        fname = self._where.get(key)
        if fname is None:
            return None
        try:
            return self._handles[fname].get_tensor(key)
        except Exception as e:
            raise ValueError(f"{fname}: cannot read tensor {key!r} (truncated or corrupt file?): {e}") from None



    def shape(self, key: str) -> List[int]:
        """A tensor's shape from the file header (nothing read)."""
        return list(self._handles[self._where[key]].get_slice(key).get_shape())

    def prefix_keys(self, prefix: str) -> List[str]:
        return [k for k in self._where if k.startswith(prefix)]


class ShardWriter:
    """Collects tensors and writes a shard whenever ``max_shard_bytes`` is
    reached; ``close()`` names the shards ``model-0000i-of-0000n.safetensors``
    and writes the index (a single shard is ``model.safetensors``)."""

    def __init__(self, out_dir: Path, max_shard_bytes: int = 1 << 30, metadata: Optional[Dict[str, str]] = None):
        if max_shard_bytes <= 0:
            raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
        self.out_dir = Path(out_dir)
        self.max_shard_bytes = max_shard_bytes
        self.metadata = dict(metadata or {"format": "pt"})
        self._pending: Dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: List[List[str]] = []
        self.total_bytes = 0

    def add(self, tensors: Dict[str, torch.Tensor]) -> None:
        for key, t in tensors.items():
            if key in self._pending or any(key in shard for shard in self._shards):
                raise ValueError(f"tensor {key!r} written twice")
            t = t.detach().cpu().contiguous()
            size = t.numel() * t.element_size()
            if self._pending and self._pending_bytes + size > self.max_shard_bytes:
                self._flush()
            self._pending[key] = t
            self._pending_bytes += size
            self.total_bytes += size

    def _flush(self) -> None:
        if not self._pending:
            return
        save_file(self._pending, str(self.out_dir / f".shard-{len(self._shards):05d}.safetensors"),
                  metadata=self.metadata)
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0

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
