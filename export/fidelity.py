"""Does an exported adapter compute in llama.cpp what it computes in transformers + peft?

Teacher-forced comparison on rendered conversations: the same token ids go through
llama.cpp (an F32 base GGUF plus the GGUF LoRA) and through transformers + peft (the
same F32 weights), and the top-1 token is compared at every position. The base alone
in llama.cpp is measured too, to show that the adapter really changes the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thau.export.errors import ExportError
from thau.export.gguf_base import BaseModelInfo, base_info, open_gguf, unpermute_rows
from thau.prompt_format import (
    CHATML,
    ChatTemplate,
    format_tool_call,
    format_tool_result,
    render_chat,
)

if TYPE_CHECKING:
    import numpy as np

    from thau.export.gguf_file import GGUFFile

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
# gemma3 blocks have four norms per layer, and RMS norms on each head of Q and K
_GEMMA3_CPP_TO_HF = {
    **_CPP_TO_HF,
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def hf_model_from_gguf(path: str | Path) -> Any:
    """A float32 transformers model holding the (dequantized) weights of a ``llama`` or
    ``gemma3`` GGUF (chosen by ``general.architecture``). Much faster than transformers'
    GGUF loader, which also converts the whole tokenizer."""
    reader = open_gguf(path)
    base = base_info(reader)
    if base.arch == "llama":
        return _llama_from_gguf(reader, base)
    if base.arch == "gemma3":
        return _gemma3_from_gguf(reader, base)
    raise ExportError(f"{path} is a {base.arch} model; only llama and gemma3 are rebuilt here.")


def _hf_state(
    reader: GGUFFile, names: dict[str, str], convert: Callable[[str, np.ndarray], np.ndarray]
) -> dict[str, Any]:
    """The GGUF's tensors under transformers' names; ``names`` maps a block tensor
    (``attn_q``) to its module, ``convert(cpp_name, data)`` adapts its values."""
    import torch

    state = {}
    for info in reader.tensors:
        data = reader.f32(info)
        parts = info.name.split(".")
        if info.name == "token_embd.weight":
            key = "model.embed_tokens.weight"
        elif info.name == "output_norm.weight":
            key = "model.norm.weight"
        elif info.name == "output.weight":
            key = "lm_head.weight"
        elif parts[0] == "blk" and parts[2] in names:
            key = f"model.layers.{parts[1]}.{names[parts[2]]}.weight"
        else:
            raise ExportError(f"{reader.path} holds {info.name}, which the model has no place for.")
        state[key] = torch.from_numpy(convert(parts[-2], data).copy())
    return state


def _with_weights(model_class: Any, config: Any, state: dict[str, Any], path: Path) -> Any:
    """``model_class(config)`` holding ``state`` (the output tied to the embedding when
    ``state`` has no ``lm_head``), in eval mode."""
    try:  # skip the random init of weights that are replaced right away
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        model = model_class(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise ExportError(f"{path}: missing {missing}, unexpected {unexpected}.")
    model.tie_weights()
    return model.eval()


def _llama_from_gguf(reader: GGUFFile, base: BaseModelInfo) -> Any:
    """A ``LlamaForCausalLM``, Q/K rows put back in HF order."""
    from transformers import LlamaConfig, LlamaForCausalLM

    get = reader.get
    names = {t.name for t in reader.tensors}
    config = LlamaConfig(
        vocab_size=reader.tensor("token_embd.weight").shape[0],
        hidden_size=get("llama.embedding_length"),
        intermediate_size=get("llama.feed_forward_length"),
        num_hidden_layers=base.block_count,
        num_attention_heads=base.n_head,
        num_key_value_heads=base.n_head_kv,
        max_position_embeddings=get("llama.context_length", 2048),
        rms_norm_eps=get("llama.attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta=get("llama.rope.freq_base", 10000.0),
        tie_word_embeddings="output.weight" not in names,
        bos_token_id=get("tokenizer.ggml.bos_token_id"),
        eos_token_id=get("tokenizer.ggml.eos_token_id"),
    )

    def convert(name: str, data: np.ndarray) -> np.ndarray:
        if name == "attn_q":
            return unpermute_rows(data, base.n_head)
        if name == "attn_k":
            return unpermute_rows(data, base.n_head_kv)
        return data

    state = _hf_state(reader, _CPP_TO_HF, convert)
    return _with_weights(LlamaForCausalLM, config, state, reader.path)


def gemma3_layer_types(reader: GGUFFile, block_count: int) -> list[str]:
    """Which layers attend through the sliding window, as llama.cpp decides it:
    ``gemma3.attention.sliding_window_pattern`` (a period, or one flag per layer),
    by default every 6th layer global."""
    pattern = reader.get("gemma3.attention.sliding_window_pattern", 6)
    if isinstance(pattern, list):
        sliding = [bool(flag) for flag in pattern]
    else:
        period = int(pattern)
        sliding = [period > 0 and layer % period < period - 1 for layer in range(block_count)]
    return ["sliding_attention" if s else "full_attention" for s in sliding]


def _gemma3_from_gguf(reader: GGUFFile, base: BaseModelInfo) -> Any:
    """A ``Gemma3ForCausalLM``: llama.cpp's norm weights minus 1 (HF's Gemma norms
    multiply by ``1 + w``), Q/K rows as stored, attention scaled like llama.cpp does."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    get = reader.get
    path = reader.path
    hidden = int(get("gemma3.embedding_length"))
    head_dim = int(get("gemma3.attention.key_length", hidden // base.n_head))
    window = get("gemma3.attention.sliding_window")
    if not window:
        raise ExportError(f"{path} has no gemma3.attention.sliding_window.")
    full_rope: dict[str, Any] = {
        "rope_type": "default",
        "rope_theta": float(get("gemma3.rope.freq_base", 10000.0)),
    }
    scaling = get("gemma3.rope.scaling.type", "none")
    if scaling == "linear":
        full_rope |= {"rope_type": "linear", "factor": float(get("gemma3.rope.scaling.factor"))}
    elif scaling != "none":
        raise ExportError(f"{path}: rope scaling {scaling!r} is not rebuilt here.")
    sliding_rope = {
        "rope_type": "default",
        "rope_theta": float(get("gemma3.rope.freq_base_swa", 10000.0)),
    }
    names = {t.name for t in reader.tensors}
    config = Gemma3TextConfig(
        vocab_size=reader.tensor("token_embd.weight").shape[0],
        hidden_size=hidden,
        intermediate_size=get("gemma3.feed_forward_length"),
        num_hidden_layers=base.block_count,
        num_attention_heads=base.n_head,
        num_key_value_heads=base.n_head_kv,
        head_dim=head_dim,
        # llama.cpp scales by 1 / sqrt(head_dim), except for the 62-layer 27B
        query_pre_attn_scalar=hidden // base.n_head if base.block_count == 62 else head_dim,
        sliding_window=int(window),
        layer_types=gemma3_layer_types(reader, base.block_count),
        rope_parameters={"full_attention": full_rope, "sliding_attention": sliding_rope},
        max_position_embeddings=get("gemma3.context_length", 32768),
        rms_norm_eps=get("gemma3.attention.layer_norm_rms_epsilon", 1e-6),
        tie_word_embeddings="output.weight" not in names,
        bos_token_id=get("tokenizer.ggml.bos_token_id"),
        eos_token_id=get("tokenizer.ggml.eos_token_id"),
        pad_token_id=get("tokenizer.ggml.padding_token_id"),
    )

    def convert(name: str, data: np.ndarray) -> np.ndarray:
        import numpy as np

        return data - np.float32(1.0) if name.endswith("norm") else data

    state = _hf_state(reader, _GEMMA3_CPP_TO_HF, convert)
    return _with_weights(Gemma3ForCausalLM, config, state, path)


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


def chat_ids(llm: Any, chat: Sequence[dict[str, Any]], template: ChatTemplate) -> list[int]:
    """``chat`` rendered in ``template`` and tokenized by ``llm`` as training sees it:
    special tokens parsed, BOS first when the template wants it."""
    text = render_chat(chat, add_generation_prompt=False, template=template)
    return llm.tokenize(text.encode("utf-8"), add_bos=template.bos, special=True)


def compare_merged(
    base_gguf: str | Path,
    adapter_gguf: str | Path,
    merged_gguf: str | Path,
    chats: Sequence[Sequence[dict[str, Any]]],
    *,
    n_threads: int = 2,
    template: ChatTemplate = CHATML,
) -> dict[str, Any]:
    """Top-1 agreement of a merged GGUF with base + GGUF adapter, both in llama.cpp,
    over ``chats`` rendered in ``template``."""
    import numpy as np

    reference = _llama(base_gguf, adapter_gguf, n_threads)
    merged = _llama(merged_gguf, None, n_threads)
    agree = positions = 0
    gap = 0.0
    for chat in chats:
        ids = chat_ids(reference, chat, template)
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
    template: ChatTemplate = CHATML,
) -> dict[str, Any]:
    """Teacher-forced top-1 agreement of llama.cpp (base + GGUF adapter) with
    transformers + peft over ``chats`` rendered in ``template``; also llama.cpp's
    base alone against the adapted reference (how much the adapter acts) and against
    transformers' base (how faithful the base itself is). Figures as a dict."""
    import numpy as np
    import torch

    started = time.perf_counter()
    adapted = _llama(base_gguf, adapter_gguf, n_threads)
    plain = _llama(base_gguf, None, n_threads)
    rows = []
    for chat in chats:
        ids = chat_ids(adapted, chat, template)
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
