"""Base plus LoRA merged into one model: a GGUF (rewritten from a GGUF base) or a
safetensors folder (through transformers and peft; Ollama imports it directly).

The GGUF path needs no torch: every base tensor is dequantized
(``gguf.quants.dequantize``), ``scale * B @ A`` is added to the adapted projections
in GGUF orientation (rows of Q and K permuted like the base's), and the result is
written as ``f32``, ``f16`` or ``q8_0``. Norms and other 1-D tensors stay F32, as in
llama.cpp's converter. Tokenizer, chat template and hyper-parameters are copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thau.export.errors import ExportError
from thau.export.gguf_adapter import check_fits, in_base_order
from thau.export.gguf_base import base_info, copy_metadata, finish, open_gguf
from thau.export.lora import LoraAdapter, load_adapter

if TYPE_CHECKING:
    import numpy as np

MERGED_OUTTYPES = ("f32", "f16", "q8_0")


@dataclass
class MergedExport:
    """What a merge wrote."""

    path: Path
    outtype: str
    merged_tensors: int
    bytes: int


def _add_converted(writer: Any, name: str, data: np.ndarray, outtype: str) -> None:
    import gguf
    import numpy as np

    if data.ndim < 2 or outtype == "f32":
        writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
    elif outtype == "q8_0" and data.shape[-1] % 32 == 0:
        kind = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
    else:  # f16, and q8_0 rows that do not split into blocks of 32
        writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float16))


def rewrite_gguf(
    base_gguf: str | Path,
    out: str | Path,
    *,
    outtype: str = "f16",
    adapter: LoraAdapter | None = None,
) -> MergedExport:
    """Copy ``base_gguf`` to ``out`` as ``outtype``, with ``adapter`` merged when given."""
    import gguf

    if outtype not in MERGED_OUTTYPES:
        raise ExportError(f"--outtype is one of {', '.join(MERGED_OUTTYPES)}, not {outtype!r}.")
    reader = open_gguf(base_gguf)
    base = base_info(reader)
    pairs = dict(adapter.pairs) if adapter else {}
    for pair in pairs.values():
        check_fits(pair, base)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    writer = gguf.GGUFWriter(tmp, base.arch)
    copy_metadata(reader, writer)
    writer.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        }[outtype]
    )
    if outtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    merged = 0
    for info in reader.tensors:
        data = reader.f32(info)
        pair = pairs.get(info.name.removesuffix(".weight"))
        if pair is not None:
            data = data + in_base_order(pair.delta(), pair.name, base)
            merged += 1
        _add_converted(writer, info.name, data, outtype)
    size = finish(writer, tmp, out)
    return MergedExport(path=out, outtype=outtype, merged_tensors=merged, bytes=size)


def export_merged_gguf(
    adapter_dir: str | Path | None,
    base_gguf: str | Path,
    out: str | Path,
    *,
    outtype: str = "f16",
) -> MergedExport:
    """``thau-export merged``: the base GGUF with the peft adapter merged in (without an
    adapter, a plain conversion, e.g. the Q4_1 SmolLM2 to F32)."""
    adapter = load_adapter(adapter_dir) if adapter_dir else None
    return rewrite_gguf(base_gguf, out, outtype=outtype, adapter=adapter)


def export_merged_safetensors(
    adapter_dir: str | Path, base: str | Path, out: str | Path
) -> MergedExport:
    """A merged Hugging Face folder (config, safetensors, tokenizer, chat template).

    ``base`` is a GGUF file (transformers dequantizes it and undoes the Q/K permutation)
    or a Hugging Face model folder.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = Path(base)
    if base.is_file():
        where: dict[str, Any] = {"pretrained_model_name_or_path": str(base.parent)}
        where["gguf_file"] = base.name
    elif base.is_dir():
        where = {"pretrained_model_name_or_path": str(base)}
    else:
        raise ExportError(f"The base {base} is neither a GGUF file nor a model folder.")
    pairs = load_adapter(adapter_dir).pairs  # the same checks as the GGUF exports
    model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    # a model read from GGUF counts as "quantized" for transformers and refuses to be
    # saved: move its (dequantized, merged) weights into a plain model of that config
    config = merged.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(merged.state_dict())
    out = Path(out)
    plain.save_pretrained(out, safe_serialization=True)
    try:
        AutoTokenizer.from_pretrained(**where).save_pretrained(out)
    except (OSError, ValueError) as exc:
        raise ExportError(f"No tokenizer could be read from {base}: {exc}") from exc
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return MergedExport(path=out, outtype="safetensors", merged_tensors=len(pairs), bytes=size)
