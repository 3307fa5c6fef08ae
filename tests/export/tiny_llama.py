"""A tiny random llama model (a small byte-level BPE vocabulary, 2 layers), written as an
F32 GGUF base the way llama.cpp's converter lays it out, plus a peft LoRA on it, and
teacher-forced logits from transformers and from llama-cpp-python."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thau.export.gguf_base import permute_rows

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "e r", "o n", "Ġ a", "r e"]
VOCAB = len(SPECIALS) + 256 + len(MERGES)
HEADS = 4
KV_HEADS = 2
LAYERS = 2
CPP_NAMES = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_HF_TO_CPP = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def byte_symbols() -> list[str]:
    """GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the
    others move to code points from 256 on."""
    printable = {*range(33, 127), *range(161, 173), *range(174, 256)}
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def tiny_vocabulary() -> list[str]:
    """Special tokens, the 256 byte symbols, then one token per merge."""
    return SPECIALS + byte_symbols() + [m.replace(" ", "") for m in MERGES]


def tiny_llama(seed: int = 0, *, hidden: int = 64, init: float = 0.1) -> Any:
    """A ``LlamaForCausalLM`` with weights large enough that logits are spread out and
    random norm weights, so that a wrong tensor layout shows."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=init,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
    return model


def write_gguf_base(model: Any, path: Path) -> Path:
    """``model`` as an F32 llama GGUF with a small gpt2-style BPE tokenizer."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens = tiny_vocabulary()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    for layer in range(cfg.num_hidden_layers):
        for hf, cpp in _HF_TO_CPP.items():
            weight = state[f"model.layers.{layer}.{hf}.weight"]
            if cpp == "attn_q":
                weight = permute_rows(weight, cfg.num_attention_heads)
            elif cpp == "attn_k":
                weight = permute_rows(weight, cfg.num_key_value_heads)
            writer.add_tensor(f"blk.{layer}.{cpp}.weight", np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def add_lora(
    model: Any, folder: Path, *, rank: int = 4, alpha: float = 8.0, std: float = 0.1, **extra: Any
) -> Any:
    """Wrap ``model`` in a peft LoRA with random non-zero A and B; save it to ``folder``."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS, lora_dropout=0.0, **extra)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(std * torch.randn(param.shape, generator=generator))
    peft_model.eval()
    peft_model.save_pretrained(folder)
    return peft_model


def hf_logits(model: Any, tokens: list[int]) -> np.ndarray:
    """Teacher-forced logits from a transformers model, one row per position."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens]))
    return out.logits[0].float().numpy()


def load_cpp(model: Path, adapter: Path | None = None, n_ctx: int = 512) -> Any:
    """A ``llama_cpp.Llama`` that keeps the logits of every position."""
    from llama_cpp import Llama

    return Llama(
        model_path=str(model),
        lora_path=str(adapter) if adapter else None,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_threads=2,
        logits_all=True,
        verbose=False,
    )


def cpp_logits(llm: Any, tokens: list[int]) -> np.ndarray:
    """Teacher-forced logits from llama.cpp, one row per position."""
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def agreement(left: list[np.ndarray], right: list[np.ndarray]) -> tuple[float, float]:
    """Share of positions whose argmax agrees, and the largest absolute logit gap."""
    same = sum(int((a.argmax(1) == b.argmax(1)).sum()) for a, b in zip(left, right, strict=True))
    total = sum(len(a) for a in left)
    gap = max(float(np.abs(a - b).max()) for a, b in zip(left, right, strict=True))
    return same / total, gap


@dataclass
class Tiny:
    """A tiny base as a GGUF, a random peft LoRA on it exported as a GGUF LoRA, and the
    logits of both runtimes on the same token sequences."""

    folder: Path
    base: Path  # F32 GGUF
    adapter_dir: Path  # peft save_pretrained
    adapter: Path  # exported GGUF LoRA
    peft_model: Any
    sequences: list[list[int]]
    hf: list[np.ndarray]  # transformers + peft logits
    cpp: list[np.ndarray]  # llama.cpp base + GGUF adapter logits


def build_tiny(
    folder: Path,
    new_model: Callable[[], Any],
    write_base: Callable[[Any, Path], Path],
    vocab: int,
    chat: bytes,
) -> Tiny:
    """:class:`Tiny` for ``new_model`` (called twice: the base, and the model the LoRA
    goes on) on four random sequences of ``vocab`` ids and the tokens of ``chat``."""
    from thau.export.gguf_adapter import export_adapter

    base = write_base(new_model(), folder / "base.gguf")
    peft_model = add_lora(new_model(), folder / "adapter")
    adapter = export_adapter(folder / "adapter", base, folder / "lora.gguf").path
    rng = random.Random(7)
    sequences = [[rng.randrange(vocab) for _ in range(64)] for _ in range(4)]
    llm = load_cpp(base, adapter)
    sequences.append(llm.tokenize(chat, special=True))
    hf = [hf_logits(peft_model, s) for s in sequences]
    cpp = [cpp_logits(llm, s) for s in sequences]
    return Tiny(folder, base, folder / "adapter", adapter, peft_model, sequences, hf, cpp)
