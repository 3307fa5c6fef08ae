"""A tiny random Gemma 3 text model (a small SentencePiece-style vocabulary with byte
fallback, 6 layers: five sliding-window layers and one global one), written as an F32
GGUF base the way llama.cpp's converter lays out ``gemma3``.

llama.cpp's ``gemma3`` differs from ``llama`` in what a converter must write: every
norm (including the per-head Q/K norms) holds HF's weight + 1, because HF's Gemma
RMSNorm multiplies by ``1 + w`` and llama.cpp by ``w``; Q and K keep HF's row order;
the head size, the sliding window and the global rope base are metadata; the output
projection is the tied embedding. The peft LoRA and logit helpers of
:mod:`tests.export.tiny_llama` work on this model unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
PIECES = ["▁", "t", "h", "e", "i", "n", "a", "r", "u", "s", "m", "o", "d", "l"]
PIECES += ["▁t", "he", "▁the", "in", "▁in", "ra", "▁ra", "▁rain", "er", "us", "user", "model"]
VOCAB = len(SPECIALS) + 256 + len(PIECES)
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
LAYERS = 6  # llama.cpp's gemma3 makes every 6th layer global: layers 0-4 slide, 5 does not
SLIDING_WINDOW = 8
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + message['role'] + "
    "'\\n' + message['content'] + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
_HF_TO_CPP = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
# gguf.TokenType: normal, unknown, control, byte
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6


def tiny_vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types: control tokens (``<unk>`` is unknown), the byte
    tokens ``<0x00>``..``<0xFF>``, then pieces scored so that earlier ones merge first."""
    tokens = SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + PIECES
    scores = [0.0] * (len(SPECIALS) + 256) + [-float(i) for i in range(len(PIECES))]
    types = [_UNKNOWN if t == "<unk>" else _CONTROL for t in SPECIALS]
    types += [_BYTE] * 256 + [_NORMAL] * len(PIECES)
    return tokens, scores, types


def tiny_gemma3(seed: int = 0, *, hidden: int = 64, init: float = 0.3) -> Any:
    """A ``Gemma3ForCausalLM`` with weights large enough that logits are spread out and
    random norm weights, so that a wrong tensor layout shows. Attention scales by
    ``1 / sqrt(head_dim)``, as llama.cpp does for every Gemma 3 but the 27B."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        query_pre_attn_scalar=HEAD_DIM,
        sliding_window=SLIDING_WINDOW,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        initializer_range=init,
    )
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(0.3 * torch.randn_like(param))
    return model


def write_gguf_base(model: Any, path: Path, *, norm_shift: float = 1.0) -> Path:
    """``model`` as an F32 gemma3 GGUF with a small SentencePiece-style tokenizer; norms
    get ``norm_shift`` added (llama.cpp's converter adds 1)."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(path, "gemma3")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name("tiny-gemma3")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_parameters["full_attention"]["rope_theta"])
    writer.add_sliding_window(cfg.sliding_window)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, scores, types = tiny_vocabulary()
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(cfg.bos_token_id)
    writer.add_eos_token_id(cfg.eos_token_id)
    writer.add_unk_token_id(SPECIALS.index("<unk>"))
    writer.add_pad_token_id(cfg.pad_token_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"] + np.float32(norm_shift))
    for layer in range(cfg.num_hidden_layers):
        for hf, cpp in _HF_TO_CPP.items():
            weight = state[f"model.layers.{layer}.{hf}.weight"]
            if hf.endswith("norm"):
                weight = weight + np.float32(norm_shift)
            writer.add_tensor(f"blk.{layer}.{cpp}.weight", np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
