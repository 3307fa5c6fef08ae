"""Does an exported adapter compute in llama.cpp what it computes in transformers + peft?

Teacher-forced comparison on rendered conversations: the same token ids go through
llama.cpp (an F32 base GGUF plus the GGUF LoRA) and through transformers + peft (the
same F32 weights), and the top-1 token is compared at every position. The base alone
in llama.cpp is measured too, to show that the adapter really changes the model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thau.export.errors import ExportError
from thau.export.gguf_base import base_info, open_gguf, unpermute_rows
from thau.prompt_format import format_tool_call, format_tool_result, render_chatml

_CPP_TO_HF = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def hf_model_from_gguf(path: str | Path) -> Any:
    """A float32 ``LlamaForCausalLM`` holding the (dequantized) weights of a llama GGUF,
    Q/K rows put back in HF order. Much faster than transformers' GGUF loader, which
    also converts the 49k-token tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    reader = open_gguf(path)
    base = base_info(reader)
    if base.arch != "llama":
        raise ExportError(f"{path} is a {base.arch} model; only llama is rebuilt here.")
    get = reader.get
    tensors = {t.name: t for t in reader.tensors}
    config = LlamaConfig(
        vocab_size=tensors["token_embd.weight"].shape[0],
        hidden_size=get("llama.embedding_length"),
        intermediate_size=get("llama.feed_forward_length"),
        num_hidden_layers=base.block_count,
        num_attention_heads=base.n_head,
        num_key_value_heads=base.n_head_kv,
        max_position_embeddings=get("llama.context_length", 2048),
        rms_norm_eps=get("llama.attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta=get("llama.rope.freq_base", 10000.0),
        tie_word_embeddings="output.weight" not in tensors,
        bos_token_id=get("tokenizer.ggml.bos_token_id"),
        eos_token_id=get("tokenizer.ggml.eos_token_id"),
    )
    state = {}
    for name, info in tensors.items():
        data = reader.f32(info)
        parts = name.split(".")
        if name == "token_embd.weight":
            key = "model.embed_tokens.weight"
        elif name == "output_norm.weight":
            key = "model.norm.weight"
        elif name == "output.weight":
            key = "lm_head.weight"
        elif parts[0] == "blk" and parts[2] in _CPP_TO_HF:
            key = f"model.layers.{parts[1]}.{_CPP_TO_HF[parts[2]]}.weight"
            if parts[2] == "attn_q":
                data = unpermute_rows(data, base.n_head)
            elif parts[2] == "attn_k":
                data = unpermute_rows(data, base.n_head_kv)
        else:
            raise ExportError(f"{path} holds {name}, which a plain llama model has no place for.")
        state[key] = torch.from_numpy(data.copy())
    try:  # skip the random init of weights that are replaced right away
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise ExportError(f"{path}: missing {missing}, unexpected {unexpected}.")
    model.tie_weights()
    return model.eval()


def random_lora(model: Any, *, rank: int = 8, alpha: float = 16.0, std: float = 0.05) -> Any:
    """A peft LoRA on every llama projection with random non-zero ``B`` (a stand-in for
    a trained adapter when checking the export path)."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=LORA_TARGETS, lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(std * torch.randn(param.shape, generator=generator))
    return peft_model.eval()


def conversations(system: str) -> list[list[dict[str, Any]]]:
    """Fixed conversations with every role and all three tools, Spanish and English."""

    def call(name: str, **arguments: Any) -> dict[str, Any]:
        return {"role": "assistant", "content": format_tool_call(name, arguments)}

    def result(name: str, ok: bool = True, value: Any = None, error: str | None = None):
        return {"role": "tool", "content": format_tool_result(name, ok, value, error)}

    def chat(*turns: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"role": "system", "content": system}, *turns]

    def user(text: str) -> dict[str, Any]:
        return {"role": "user", "content": text}

    def reply(text: str) -> dict[str, Any]:
        return {"role": "assistant", "content": text}

    image = {"image_url": "http://localhost:8000/vision/image/cat.png", "path": "/tmp/cat.png"}
    return [
        chat(
            user("Dibuja un gato naranja durmiendo al sol"),
            call("generate_image", prompt="an orange cat sleeping in the sun, warm light"),
            result("generate_image", value=image),
            reply("Aquí tienes tu gato: http://localhost:8000/vision/image/cat.png"),
        ),
        chat(
            user("What is 17 * 23? Use Python."),
            call("code_execution", code="print(17 * 23)"),
            result("code_execution", value={"stdout": "391\n", "stderr": "", "exit_code": 0}),
            reply("17 × 23 = 391."),
        ),
        chat(
            user("Busca las últimas noticias sobre energía solar"),
            call("web_search", query="noticias energía solar", max_results=3),
            result(
                "web_search",
                value=[{"title": "Récord solar", "url": "https://e.es/1", "snippet": "Récord"}],
            ),
            reply("La noticia principal: un nuevo récord de energía solar (https://e.es/1)."),
        ),
        chat(user("Hola, ¿qué tal estás?"), reply("¡Hola! Muy bien, gracias. ¿En qué te ayudo?")),
        chat(
            user("Explain what a list comprehension is in one sentence."),
            reply("It builds a list from an iterable in one expression: [x * 2 for x in xs]."),
        ),
        chat(
            user("Search the web for the population of Lisbon"),
            call("web_search", query="population of Lisbon"),
            result("web_search", ok=False, error="search backend timed out"),
            reply("The search timed out, so I could not look it up. Try again in a moment."),
        ),
        chat(
            user("Genera una imagen de un faro en la tormenta, 768x512"),
            call("generate_image", prompt="a lighthouse in a storm", width=768, height=512),
            result("generate_image", ok=False, error="vision server is not running"),
            reply("No pude crear la imagen: el servidor de visión no está en marcha."),
        ),
        chat(
            user("Calcula la suma de los números del 1 al 100"),
            call("code_execution", code="print(sum(range(1, 101)))"),
            result("code_execution", value={"stdout": "5050\n", "stderr": "", "exit_code": 0}),
            reply("La suma es 5050."),
            user("¿Y la de los cuadrados?"),
            call("code_execution", code="print(sum(i * i for i in range(1, 101)))"),
            result("code_execution", value={"stdout": "338350\n", "stderr": "", "exit_code": 0}),
            reply("La suma de los cuadrados del 1 al 100 es 338350."),
        ),
        chat(
            user("Find a recipe for pancakes and draw one"),
            call("web_search", query="easy pancake recipe", max_results=2),
            result(
                "web_search",
                value=[{"title": "Pancakes", "url": "https://r.com/p", "snippet": "Flour, egg"}],
            ),
            call("generate_image", prompt="a stack of fluffy pancakes with syrup"),
            result("generate_image", value=image),
            reply("Recipe: https://r.com/p. And here is your pancake picture."),
        ),
        chat(
            user("¿Cuál es la capital de Francia?"),
            reply("La capital de Francia es París."),
            user("Thanks! Now run print('hi') for me"),
            call("code_execution", code="print('hi')"),
            result("code_execution", value={"stdout": "hi\n", "stderr": "", "exit_code": 0}),
            reply("It printed: hi"),
        ),
    ]


def _llama(model: str | Path, adapter: str | Path | None, n_threads: int) -> Any:
    from llama_cpp import Llama

    return Llama(
        model_path=str(model),
        lora_path=str(adapter) if adapter else None,
        n_ctx=2048,
        n_batch=512,
        n_threads=n_threads,
        logits_all=True,
        verbose=False,
    )


def _logits(llm: Any, ids: list[int]) -> Any:
    import numpy as np

    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def compare_merged(
    base_gguf: str | Path,
    adapter_gguf: str | Path,
    merged_gguf: str | Path,
    chats: Sequence[Sequence[dict[str, Any]]],
    *,
    n_threads: int = 2,
) -> dict[str, Any]:
    """Top-1 agreement of a merged GGUF with base + GGUF adapter, both in llama.cpp."""
    import numpy as np

    reference = _llama(base_gguf, adapter_gguf, n_threads)
    merged = _llama(merged_gguf, None, n_threads)
    agree = positions = 0
    gap = 0.0
    for chat in chats:
        text = render_chatml(chat, add_generation_prompt=False)
        ids = reference.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        want, got = _logits(reference, ids), _logits(merged, ids)
        agree += int((want.argmax(1) == got.argmax(1)).sum())
        positions += len(ids)
        gap = max(gap, float(np.abs(want - got).max()))
    return {"positions": positions, "top1_agreement": agree / positions, "max_abs_logit_diff": gap}


def compare(
    base_gguf: str | Path,
    adapter_gguf: str | Path,
    peft_model: Any,
    chats: Sequence[Sequence[dict[str, Any]]],
    *,
    n_threads: int = 2,
) -> dict[str, Any]:
    """Teacher-forced top-1 agreement of llama.cpp (base + GGUF adapter) with
    transformers + peft over ``chats`` rendered by ``render_chatml``; also llama.cpp's
    base alone against the adapted reference (how much the adapter acts) and against
    transformers' base (how faithful the base itself is). Figures as a dict."""
    import numpy as np
    import torch

    started = time.perf_counter()
    adapted = _llama(base_gguf, adapter_gguf, n_threads)
    plain = _llama(base_gguf, None, n_threads)
    rows = []
    for chat in chats:
        text = render_chatml(chat, add_generation_prompt=False)
        ids = adapted.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        with torch.no_grad():
            reference = peft_model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
            with peft_model.disable_adapter():
                hf_base = peft_model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
        cpp, base = _logits(adapted, ids), _logits(plain, ids)
        top, chosen = reference.argmax(1), cpp.argmax(1)
        at = np.arange(len(ids))
        # a disagreement is a near-tie when the reference ranks llama.cpp's choice within
        # twice the largest logit difference at that position
        margin = reference[at, top] - reference[at, chosen]
        near_tie = margin <= 2 * np.abs(cpp - reference).max(axis=1)
        rows.append(
            {
                "tokens": len(ids),
                "agree": int((chosen == top).sum()),
                "clear_disagreements": int(((chosen != top) & ~near_tie).sum()),
                "base_agree": int((base.argmax(1) == top).sum()),
                "base_vs_base_agree": int((base.argmax(1) == hf_base.argmax(1)).sum()),
                "max_abs_logit_diff": float(np.abs(cpp - reference).max()),
                "base_max_abs_logit_diff": float(np.abs(base - hf_base).max()),
            }
        )
    positions = sum(r["tokens"] for r in rows)
    return {
        "conversations": len(rows),
        "positions": positions,
        "top1_agreement": sum(r["agree"] for r in rows) / positions,
        "max_abs_logit_diff": max(r["max_abs_logit_diff"] for r in rows),
        "clear_disagreements": sum(r["clear_disagreements"] for r in rows),
        "base_only_top1_agreement": sum(r["base_agree"] for r in rows) / positions,
        "base_vs_base_top1_agreement": sum(r["base_vs_base_agree"] for r in rows) / positions,
        "base_vs_base_max_abs_logit_diff": max(r["base_max_abs_logit_diff"] for r in rows),
        "per_conversation": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
