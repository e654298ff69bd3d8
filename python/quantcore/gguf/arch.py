"""Hugging Face architectures as llama.cpp names them in GGUF: the
hyper-parameter keys, tensor names, and the weight transforms llama.cpp's
converter applies (Llama's Q/K row order for its rotary embedding, Gemma's
norm weights stored as 1 + w)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

from .container import ValueType
from .vocab import Metadata

__all__ = ["ArchSpec", "arch_for_config", "SUPPORTED_ARCHITECTURES"]

_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GEMMA3_LAYER_NAMES = {
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def _rope_theta(cfg: Dict[str, Any]) -> Optional[float]:
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if isinstance(params.get("full_attention"), dict):
        params = params["full_attention"]
    theta = params.get("rope_theta", cfg.get("rope_theta"))
    return float(theta) if theta is not None else None


@dataclass(frozen=True)
class ArchSpec:
    name: str                 # general.architecture
    permute_qk: bool          # Llama: llama.cpp rotates adjacent pairs, HF rotates halves
    norm_plus_one: bool       # Gemma: RMSNorm scales by (1 + w); llama.cpp stores 1 + w
    keeps_output: bool        # whether an lm_head is written as output.weight

    # ------------------------------------------------------------------ metadata
    def hparams(self, cfg: Dict[str, Any]) -> Metadata:
        a = self.name
        md = Metadata()
        u32 = lambda k, v: md.add(f"{a}.{k}", int(v), ValueType.UINT32)
        f32 = lambda k, v: md.add(f"{a}.{k}", float(v), ValueType.FLOAT32)
        hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        kv_heads = cfg.get("num_key_value_heads") or heads
        head_dim = cfg.get("head_dim") or hidden // heads
        u32("context_length", cfg.get("max_position_embeddings", 4096))
        u32("embedding_length", hidden)
        u32("block_count", cfg["num_hidden_layers"])
        u32("feed_forward_length", cfg["intermediate_size"])
        u32("attention.head_count", heads)
        u32("attention.head_count_kv", kv_heads)
        theta = _rope_theta(cfg)
        if theta is not None and self.name != "gemma":
            f32("rope.freq_base", theta)
        f32("attention.layer_norm_rms_epsilon", cfg.get("rms_norm_eps", 1e-6))
        if self.name in ("gemma", "gemma3", "qwen3") or head_dim != hidden // heads:
            u32("attention.key_length", head_dim)
            u32("attention.value_length", head_dim)
        if self.name == "llama":
            u32("rope.dimension_count", head_dim)
            u32("vocab_size", cfg["vocab_size"])
        if self.name == "gemma3":
            if cfg.get("sliding_window"):
                u32("attention.sliding_window", cfg["sliding_window"])
            if cfg.get("final_logit_softcapping"):
                f32("final_logit_softcapping", cfg["final_logit_softcapping"])
        return md

    # ------------------------------------------------------------------ tensors
    def _layer_table(self) -> Dict[str, str]:
        """Decoder-block module name -> GGUF short name."""
        table = dict(_LAYER_NAMES)
        if self.name == "gemma3":
            table.update(_GEMMA3_LAYER_NAMES)
        else:
            table["post_attention_layernorm"] = "ffn_norm"
        return table

    def tensor_name(self, hf_name: str) -> Optional[str]:
        """The GGUF name of a checkpoint tensor, or None when llama.cpp has no use for it."""
        if hf_name == "model.embed_tokens.weight":
            return "token_embd.weight"
        if hf_name == "model.norm.weight":
            return "output_norm.weight"
        if hf_name == "lm_head.weight":
            return "output.weight" if self.keeps_output else None
        m = _LAYER.match(hf_name)
        if not m:
            return None
        layer, part, kind = m.groups()
        short = self._layer_table().get(part)
        return f"blk.{layer}.{short}.{kind}" if short else None

    def transform(self, hf_name: str, t: torch.Tensor, cfg: Dict[str, Any]) -> torch.Tensor:
        """The tensor as llama.cpp stores it (float32)."""
        t = t.float()
        if self.norm_plus_one and hf_name.endswith("norm.weight"):
            t = t + 1.0
        if self.permute_qk and re.search(r"self_attn\.(q|k)_proj\.(weight|bias)$", hf_name):
            t = permute_rotary_rows(t, _rotary_heads(".k_proj." in hf_name, cfg))
        return t

    def untransform(self, gguf_name: str, t: torch.Tensor, cfg: Dict[str, Any]) -> torch.Tensor:
        """The inverse of ``transform`` (for reading GGUF files back into HF models)."""
        if self.norm_plus_one and gguf_name.endswith("norm.weight"):
            t = t - 1.0
        if self.permute_qk and re.search(r"\.attn_(q|k)\.(weight|bias)$", gguf_name):
            t = unpermute_rotary_rows(t, _rotary_heads(".attn_k." in gguf_name, cfg))
        return t

    def hf_name(self, gguf_name: str) -> Optional[str]:
        """The checkpoint name of a GGUF tensor (the inverse of ``tensor_name``)."""
        fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}
        if gguf_name in fixed:
            return fixed[gguf_name]
        m = re.match(r"^blk\.(\d+)\.(.+)\.(weight|bias)$", gguf_name)
        if not m:
            return None
        layer, short, kind = m.groups()
        inverse = {v: k for k, v in self._layer_table().items()}
        return f"model.layers.{layer}.{inverse[short]}.{kind}" if short in inverse else None


def _rotary_heads(is_key: bool, cfg: Dict[str, Any]) -> int:
    """Heads whose rows a Q (all heads) or K (the key-value heads) projection holds."""
    heads = cfg["num_attention_heads"]
    return (cfg.get("num_key_value_heads") or heads) if is_key else heads


def permute_rotary_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
    """HF's rotate-half row order -> llama.cpp's interleaved pairs, per head:
    row h*d + 2i + j takes row h*d + j*d/2 + i."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def unpermute_rotary_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


_ARCHS = {
    "LlamaForCausalLM": ArchSpec("llama", True, False, True),
    "MistralForCausalLM": ArchSpec("llama", True, False, True),
    "Qwen2ForCausalLM": ArchSpec("qwen2", False, False, True),
    "Qwen3ForCausalLM": ArchSpec("qwen3", False, False, True),
    "GemmaForCausalLM": ArchSpec("gemma", False, True, False),
    "Gemma3ForCausalLM": ArchSpec("gemma3", False, True, True),
}
SUPPORTED_ARCHITECTURES = tuple(_ARCHS)
GGUF_TO_HF_CLASS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                    "gemma": "GemmaForCausalLM", "gemma3": "Gemma3ForCausalLM"}


def arch_for_config(cfg: Dict[str, Any]) -> ArchSpec:
    archs = cfg.get("architectures") or []
    for a in archs:
        if a in _ARCHS:
            return _ARCHS[a]
    raise ValueError(f"GGUF export supports {', '.join(SUPPORTED_ARCHITECTURES)}; config.json names "
                     f"{archs or 'no architecture'}")


def arch_by_gguf_name(name: str) -> ArchSpec:
    for spec in _ARCHS.values():
        if spec.name == name:
            return spec
    raise ValueError(f"GGUF architecture {name!r} is not one quantcore reads ({sorted(GGUF_TO_HF_CLASS)})")
