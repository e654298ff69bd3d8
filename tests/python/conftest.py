"""Shared fixtures: tiny Hugging Face models built from configs (no downloads)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import quantcore  # noqa: E402


def _build(cls, cfg, dtype):
    # _from_config builds in `dtype` the way from_pretrained does (rotary
    # frequencies stay fp32), unlike model.to(dtype) afterwards.
    return cls._from_config(cfg, dtype=dtype)


def _tiny_llama(dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return _build(LlamaForCausalLM, cfg, dtype)


def _tiny_qwen2(dtype=torch.float32):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return _build(Qwen2ForCausalLM, cfg, dtype)


def _tiny_gpt2(dtype=torch.float32):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    return _build(GPT2LMHeadModel, cfg, dtype)


def _tiny_mistral(dtype=torch.float32):
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                        sliding_window=16)
    return _build(MistralForCausalLM, cfg, dtype)


def _tiny_qwen3(dtype=torch.float32):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128)
    return _build(Qwen3ForCausalLM, cfg, dtype)


def _tiny_phi3(dtype=torch.float32):
    from transformers import Phi3Config, Phi3ForCausalLM

    cfg = Phi3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                     pad_token_id=0)
    return _build(Phi3ForCausalLM, cfg, dtype)


def _tiny_gemma(dtype=torch.float32):
    from transformers import GemmaConfig, GemmaForCausalLM

    cfg = GemmaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=128)
    return _build(GemmaForCausalLM, cfg, dtype)


def _tiny_gemma3(dtype=torch.float32):
    # Sliding-window and global layers get different masks and rotary tables:
    # the case where reusing the first layer's arguments for every layer is wrong.
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
                           sliding_window=8, layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    return _build(Gemma3ForCausalLM, cfg, dtype)


def _tiny_opt(dtype=torch.float32):
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(vocab_size=256, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=128, word_embed_proj_dim=64)
    return _build(OPTForCausalLM, cfg, dtype)


TINY_MODELS = {"llama": _tiny_llama, "qwen2": _tiny_qwen2, "gpt2": _tiny_gpt2}
# Every architecture GPTQ's driver is tested on (the RTN tests keep the first three).
GPTQ_MODELS = {**TINY_MODELS, "mistral": _tiny_mistral, "qwen3": _tiny_qwen3, "phi3": _tiny_phi3,
               "gemma": _tiny_gemma, "gemma3": _tiny_gemma3, "opt": _tiny_opt}


@pytest.fixture(params=sorted(TINY_MODELS))
def tiny_model(request):
    """(name, model) for each tiny architecture, seeded and in eval mode."""
    torch.manual_seed(0)
    return request.param, TINY_MODELS[request.param]().eval()


def make_tiny(name: str, dtype=torch.float32):
    torch.manual_seed(0)
    return GPTQ_MODELS[name](dtype).eval()


@pytest.fixture
def input_ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (2, 24), generator=g)


@pytest.fixture(params=quantcore._C.supported_cpu_isas())
def cpu_isa(request):
    """Runs the test once per instruction set this CPU supports."""
    quantcore.set_cpu_isa(request.param)
    yield request.param
    quantcore.set_cpu_isa(quantcore._C.best_cpu_isa())


@pytest.fixture
def char_tokenizer():
    """A character-level tokenizer built in memory (a-z), for text inputs without downloads."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(97 + i): i for i in range(26)}
    vocab["[UNK]"] = 26
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]")
