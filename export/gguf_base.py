"""A base GGUF as the exports see it: architecture, head counts, tensor shapes, the
Q/K row permutation, and copying its metadata into a new file.

llama.cpp's converter stores the Q and K projections of the ``llama`` architecture
with the rows of each head reordered (HF keeps the two rotary halves of a head apart,
llama.cpp interleaves them). Everything written next to such a base (a LoRA ``B``,
a merged delta) must get the same row order: :func:`permute_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from thau.export.errors import ExportError
from thau.export.gguf_file import ARRAY, GGUFFile

if TYPE_CHECKING:
    import gguf
    import numpy as np

# Architectures whose q/k weights llama.cpp's converter stores permuted.
PERMUTED_ARCHS = frozenset({"llama"})

# Keys that a rewritten file sets itself instead of copying.
_OWN_KEYS = frozenset(
    {
        "general.architecture",
        "general.file_type",
        "general.quantization_version",
        "general.alignment",
    }
)


@dataclass
class BaseModelInfo:
    """What an export needs to know about a base GGUF."""

    path: Path
    arch: str
    n_head: int
    n_head_kv: int
    block_count: int
    tensor_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Numpy order (rows, columns): ``(out, in)`` for a weight matrix."""

    @property
    def permutes_qk(self) -> bool:
        return self.arch in PERMUTED_ARCHS


def open_gguf(path: str | Path) -> GGUFFile:
    """A reader on ``path``, with a readable error when it is missing or not GGUF."""
    return GGUFFile(path)


def base_info(reader: GGUFFile) -> BaseModelInfo:
    """Architecture, head counts and tensor shapes of a base model."""
    path = reader.path
    general_type = reader.get("general.type", "model")
    if general_type != "model":
        raise ExportError(f"{path} is a GGUF {general_type!r}, not a base model.")
    arch = reader.get("general.architecture")
    if not arch:
        raise ExportError(f"{path} has no general.architecture.")
    n_head = reader.get(f"{arch}.attention.head_count")
    n_head_kv = reader.get(f"{arch}.attention.head_count_kv", n_head)
    blocks = reader.get(f"{arch}.block_count")
    if n_head is None or blocks is None:
        raise ExportError(f"{path} lacks {arch}.attention.head_count or block_count.")
    return BaseModelInfo(
        path=path,
        arch=str(arch),
        n_head=int(n_head),
        n_head_kv=int(n_head_kv),
        block_count=int(blocks),
        tensor_shapes={t.name: t.shape for t in reader.tensors},
    )


def permute_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of a Q or K projection (or its LoRA ``B``) the way llama.cpp
    stores them: within each head, row ``i`` of the first rotary half and row ``i`` of
    the second half become neighbours ``2i`` and ``2i + 1``."""
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise ExportError(f"{rows} rows cannot be split into {n_head} heads of rotary pairs.")
    half = rows // n_head // 2
    return weight.reshape(n_head, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def unpermute_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of :func:`permute_rows` (llama.cpp row order back to HF's)."""
    half = weight.shape[0] // n_head // 2
    return weight.reshape(n_head, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def copy_metadata(reader: GGUFFile, writer: gguf.GGUFWriter, prefix: str = "") -> None:
    """Copy the key-value pairs starting with ``prefix`` (tokenizer, chat template,
    hyper-parameters) except the ones a rewritten file owns (architecture, file type,
    quantization version, alignment)."""
    import gguf

    for key, found in reader.fields.items():
        if not key.startswith(prefix) or key in _OWN_KEYS:
            continue
        if found.type == ARRAY and not found.value:
            continue
        sub = gguf.GGUFValueType(found.sub_type) if found.sub_type is not None else None
        writer.add_key_value(key, found.value, gguf.GGUFValueType(found.type), sub_type=sub)


def finish(writer: gguf.GGUFWriter, tmp: Path, out: Path) -> int:
    """Write ``writer``'s file at ``tmp``, then move it to ``out``; its size in bytes."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out.stat().st_size
