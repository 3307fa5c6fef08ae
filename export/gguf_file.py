"""A fast read-only view of a GGUF file (header, metadata, tensor data by memory map).

``gguf.GGUFReader`` builds a numpy view per string, which takes many seconds on a
49k-token vocabulary; this reader decodes the documented layout directly:
magic ``GGUF``, version, tensor count, key-value count, the key-value pairs, the tensor
infos (name, dims, type, offset), then the tensor data aligned to ``general.alignment``.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thau.export.errors import ExportError

if TYPE_CHECKING:
    import numpy as np

# GGUF value types (the spec's numbering) -> struct format of a scalar.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?"}
_SCALARS |= {10: "Q", 11: "q", 12: "d"}
_NUMPY = {0: "u1", 1: "i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?"}
_NUMPY |= {10: "<u8", 11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9


@dataclass
class Field:
    """One metadata pair: its GGUF value type, element type for arrays, and value."""

    type: int
    value: Any
    sub_type: int | None = None


@dataclass
class TensorInfo:
    """Where a tensor lies in the file."""

    name: str
    shape: tuple[int, ...]  # numpy order: (rows, columns) = GGUF ne reversed
    type: int  # GGMLQuantizationType value
    offset: int  # absolute, in bytes


class GGUFFile:
    """Metadata and tensors of a GGUF file; tensors are read lazily from a memory map."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"{self.path} does not exist; pass the path of a GGUF file.")
        with self.path.open("rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse()
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            raise ExportError(f"{self.path} is not a readable GGUF file: {exc}") from exc

    def _parse(self) -> None:
        buf = self._map
        if buf[:4] != b"GGUF":
            raise ValueError("no GGUF magic")
        self.version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        pos = 24
        self.fields: dict[str, Field] = {}
        for _ in range(n_kv):
            key, pos = self._string(pos)
            (kind,) = struct.unpack_from("<I", buf, pos)
            value, sub, pos = self._value(kind, pos + 4)
            self.fields[key] = Field(kind, value, sub)
        infos = []
        for _ in range(n_tensors):
            name, pos = self._string(pos)
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
            kind, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            infos.append((name, tuple(int(d) for d in reversed(dims)), int(kind), int(offset)))
        align = int(self.get("general.alignment", 32))
        start = (pos + align - 1) // align * align
        self.tensors = [TensorInfo(n, s, k, start + o) for n, s, k, o in infos]

    def _string(self, pos: int) -> tuple[str, int]:
        (size,) = struct.unpack_from("<Q", self._map, pos)
        end = pos + 8 + size
        return self._map[pos + 8 : end].decode("utf-8"), end

    def _value(self, kind: int, pos: int) -> tuple[Any, int | None, int]:
        import numpy as np

        if kind == STRING:
            text, pos = self._string(pos)
            return text, None, pos
        if kind in _SCALARS:
            fmt = "<" + _SCALARS[kind]
            return struct.unpack_from(fmt, self._map, pos)[0], None, pos + struct.calcsize(fmt)
        if kind != ARRAY:
            raise ValueError(f"unknown GGUF value type {kind}")
        sub, count = struct.unpack_from("<IQ", self._map, pos)
        pos += 12
        if sub in _NUMPY:
            dtype = np.dtype(_NUMPY[sub])
            items = np.frombuffer(self._map, dtype=dtype, count=count, offset=pos)
            return items.tolist(), sub, pos + count * dtype.itemsize
        values = []
        for _ in range(count):
            item, _sub, pos = self._value(sub, pos)
            values.append(item)
        return values, sub, pos

    def get(self, key: str, default: Any = None) -> Any:
        """The value of metadata ``key``, or ``default``."""
        found = self.fields.get(key)
        return default if found is None else found.value

    def tensor(self, name: str) -> TensorInfo:
        """The tensor called ``name``."""
        for info in self.tensors:
            if info.name == name:
                return info
        raise KeyError(name)

    def raw(self, info: TensorInfo) -> np.ndarray:
        """The stored data: float arrays for F32/F16, bytes per row for quantized types."""
        import gguf
        import numpy as np

        kind = gguf.GGMLQuantizationType(info.type)
        block, size = gguf.GGML_QUANT_SIZES[kind]
        rows = int(np.prod(info.shape[:-1])) if len(info.shape) > 1 else 1
        row_bytes = info.shape[-1] // block * size
        data = np.frombuffer(self._map, np.uint8, rows * row_bytes, info.offset)
        if kind == gguf.GGMLQuantizationType.F32:
            return data.view(np.float32).reshape(info.shape)
        if kind == gguf.GGMLQuantizationType.F16:
            return data.view(np.float16).reshape(info.shape)
        return data.reshape(*info.shape[:-1], row_bytes)

    def f32(self, info: TensorInfo) -> np.ndarray:
        """The tensor dequantized to float32, numpy order."""
        import gguf
        import numpy as np

        kind = gguf.GGMLQuantizationType(info.type)
        raw = self.raw(info)
        if kind in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            return raw.astype(np.float32)
        return gguf.quants.dequantize(raw, kind).astype(np.float32).reshape(info.shape)
