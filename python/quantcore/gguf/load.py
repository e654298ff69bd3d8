"""GGUF -> Hugging Face model: the configuration rebuilt from the metadata,
every tensor dequantized by our kernels (through the hardened reader) and put
back in Hugging Face's layout, so a GGUF-only model can be evaluated,
re-quantized or fine-tuned. With ``quantized=True`` the linear layers whose
ggml type has an integer grid (Q8_0, Q4_0, Q5_0, Q3_K, Q6_K; see codes.py)
become QuantLinear layers holding the file's codes and scales unchanged."""

from __future__ import annotations

import os
from typing import Any, Dict, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from ..nn import QuantLinear
from ..serialization import model_from_config
from .arch import GGUF_TO_HF_CLASS, arch_by_gguf_name
from .codes import MAPPABLE_TYPES, ggml_codes
from .container import GGUFReader

__all__ = ["load_gguf", "hf_config_from_gguf"]


def hf_config_from_gguf(reader: GGUFReader) -> Dict[str, Any]:
    """config.json's fields for the model a GGUF file describes."""
    md = reader.metadata
    arch = md.get("general.architecture")
    if arch not in GGUF_TO_HF_CLASS:
        raise ValueError(f"{reader.path}: architecture {arch!r} is not one quantcore reads "
                         f"({', '.join(sorted(GGUF_TO_HF_CLASS))})")

    def get(key: str, default: Any = None, required: bool = True) -> Any:
        full = f"{arch}.{key}"
        if full in md:
            return md[full]
        if required and default is None:
            raise ValueError(f"{reader.path}: metadata {full} is missing")
        return default

    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    tokens = md.get("tokenizer.ggml.tokens")
    embd = reader.info("token_embd.weight")
    cfg: Dict[str, Any] = {
        "architectures": [GGUF_TO_HF_CLASS[arch]],
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(get("context_length", 4096)),
        "vocab_size": int(embd.shape[1]) if tokens is None else len(tokens),
        "tie_word_embeddings": "output.weight" not in reader,
        "head_dim": int(get("attention.key_length", get("rope.dimension_count", hidden // heads, False), False)),
    }
    theta = get("rope.freq_base", None, False)
    for kind, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id")):
        if f"tokenizer.ggml.{key}" in md:
            cfg[f"{kind}_token_id"] = int(md[f"tokenizer.ggml.{key}"])
    if arch == "llama":
        cfg["model_type"] = "llama"
        cfg["rope_theta"] = float(theta if theta is not None else 10000.0)
    elif arch in ("qwen2", "qwen3"):
        cfg["model_type"] = arch
        cfg["rope_theta"] = float(theta if theta is not None else 10000.0)
    elif arch == "gemma":
        cfg["model_type"] = "gemma"
    elif arch == "gemma3":
        # llama.cpp's Gemma 3: every sixth layer attends globally, the rest within the window.
        n = cfg["num_hidden_layers"]
        cfg.update(model_type="gemma3_text", query_pre_attn_scalar=cfg["head_dim"],
                   sliding_window=int(get("attention.sliding_window", 4096, False)),
                   layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)],
                   rope_parameters={"full_attention": {"rope_type": "default",
                                                       "rope_theta": float(theta or 1e6)},
                                    "sliding_attention": {"rope_type": "default",
                                                          "rope_theta": float(get("rope.freq_base_swa", 1e4,
                                                                                  False))}})
        softcap = get("final_logit_softcapping", None, False)
        if softcap:
            cfg["final_logit_softcapping"] = float(softcap)
    return cfg


def load_gguf(path: Union[str, os.PathLike], *, dtype: torch.dtype = torch.float32, quantized: bool = False,
              progress: bool = True) -> nn.Module:
    """A Hugging Face causal LM holding the GGUF file's weights (dequantized to
    ``dtype``). Raises GGUFError/ValueError for files it cannot map.

    ``quantized=True``: linear layers stored as Q8_0, Q4_0, Q5_0, Q3_K or Q6_K
    become :class:`QuantLinear` layers with the file's own codes and scales
    (they dequantize to exactly the values llama.cpp computes; the model can be
    saved with ``save_quantized``); layers of the affine types with a float
    minimum (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K) and all other tensors load as
    ``dtype``.

    >>> model = quantcore.load_gguf("smollm2-q4_k_m.gguf")  # doctest: +SKIP
    """
    import transformers

    reader = GGUFReader(path)
    cfg = hf_config_from_gguf(reader)
    spec = arch_by_gguf_name(reader.metadata["general.architecture"])
    config = transformers.AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items()
                                                                     if k != "model_type"})
    model_cls = getattr(transformers, cfg["architectures"][0])
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        model = model_from_config(model_cls, config, dtype)
    expected = dict(model.state_dict())
    seen = set()
    pending = {}  # module name -> GGMLCodes, built into QuantLinear once its bias is loaded
    bar = tqdm(reader.tensors, desc="quantcore load_gguf", disable=not progress, unit="tensor")
    with torch.no_grad():
        for t in bar:
            name = spec.hf_name(t.name)
            if name is None or name not in expected:
                raise ValueError(f"{reader.path}: tensor {t.name!r} has no place in {cfg['architectures'][0]}")
            if tuple(t.torch_shape) != tuple(expected[name].shape):
                raise ValueError(f"{reader.path}: tensor {t.name!r} is {tuple(t.torch_shape)}, the model expects "
                                 f"{tuple(expected[name].shape)}")
            module_name = name.rsplit(".", 1)[0]
            if quantized and t.ggml_type in MAPPABLE_TYPES and name.endswith(".weight") and \
                    isinstance(model.get_submodule(module_name), nn.Linear):
                codes = ggml_codes(reader.raw(t.name), t.ggml_type, t.n_elements // t.shape[0], t.shape[0])
                # Q/K row reordering moves whole rows, so codes and scales follow the weight.
                pending[module_name] = codes._replace(codes=spec.untransform(t.name, codes.codes, cfg),
                                                      scales=spec.untransform(t.name, codes.scales, cfg))
                seen.add(name)
                continue
            value = spec.untransform(t.name, reader.tensor(t.name), cfg)
            expected[name].copy_(value.to(dtype))
            seen.add(name)
    if cfg["tie_word_embeddings"]:
        seen.add("lm_head.weight")
    missing = [k for k in expected if k not in seen and not k.endswith("rotary_emb.inv_freq")]
    if missing:
        raise ValueError(f"{reader.path}: no tensors for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if cfg["tie_word_embeddings"]:
        model.tie_weights()
    for module_name, c in pending.items():
        linear = model.get_submodule(module_name)
        layer = QuantLinear.from_codes(c.codes, c.scales, None, linear.bias.detach() if linear.bias is not None
                                       else None, bits=c.bits, group_size=c.group_size, dtype=dtype)
        model.set_submodule(module_name, layer)
    model.eval()
    return model
