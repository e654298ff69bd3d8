"""Per-tensor types of llama.cpp's mixtures, checked against files llama.cpp made."""

from __future__ import annotations

import pytest

from quantcore.gguf import GGMLType, GGUFReader
from quantcore.gguf.mixtures import MIXTURES, fallback_type, is_quantizable, tensor_type

from gguf_files import gemma3_q4_k_m, smollm2_q4_1

T = GGMLType


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf")
    return {"smollm2": smollm2_q4_1(d), "gemma3": gemma3_q4_k_m(d)}


@pytest.mark.parametrize("which,mixture,n_layers,n_gqa", [("smollm2", "Q4_1", 30, 3), ("gemma3", "Q4_K_M", 18, 4)])
def test_types_match_the_file_llama_cpp_quantized(real_files, which, mixture, n_layers, n_gqa):
    path = real_files[which]
    if path is None:
        pytest.skip(f"{which}'s GGUF wheel is not in .cache/downloads (scripts/prepare_assets.py"
                    f"{' --gemma3' if which == 'gemma3' else ''})")
    r = GGUFReader(path)
    tied = "output.weight" not in r
    for t in r.tensors:
        got, why = tensor_type(mixture, t.name, t.shape, n_layers=n_layers, n_gqa=n_gqa, tied_output=tied)
        assert got == t.ggml_type, (t.name, t.shape, why)


def test_q4_k_m_rules_on_a_llama_shaped_model():
    kw = dict(n_layers=24, n_gqa=4)
    more = [i for i in range(24) if tensor_type("Q4_K_M", f"blk.{i}.attn_v.weight", (2048, 512), **kw)[0] == T.Q6_K]
    assert more == [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]
    assert tensor_type("Q4_K_M", "blk.3.ffn_down.weight", (5632, 2048), **kw)[0] == T.Q4_K
    assert tensor_type("Q4_K_M", "blk.2.ffn_down.weight", (5632, 2048), **kw)[0] == T.Q6_K
    assert tensor_type("Q4_K_M", "blk.2.ffn_up.weight", (2048, 5632), **kw)[0] == T.Q4_K
    assert tensor_type("Q4_K_M", "output.weight", (2048, 32000), **kw)[0] == T.Q6_K
    assert tensor_type("Q4_K_M", "token_embd.weight", (2048, 32000), **kw)[0] == T.Q4_K
    assert tensor_type("Q4_K_M", "token_embd.weight", (2048, 32000), tied_output=True, **kw)[0] == T.Q6_K
    assert tensor_type("Q4_K_M", "blk.0.attn_norm.weight", (2048,), **kw)[0] == T.F32
    assert tensor_type("Q8_0", "output.weight", (2048, 32000), **kw)[0] == T.Q8_0
    assert tensor_type("Q2_K", "blk.0.attn_v.weight", (2048, 512), **kw)[0] == T.Q4_K  # GQA >= 4
    assert tensor_type("Q2_K", "blk.0.attn_output.weight", (2048, 2048), **kw)[0] == T.Q3_K
    assert tensor_type("Q3_K_M", "blk.1.attn_v.weight", (2048, 512), **kw)[0] == T.Q5_K
    assert tensor_type("Q3_K_M", "blk.2.attn_v.weight", (2048, 512), **kw)[0] == T.Q4_K
    assert tensor_type("Q4_K_S", "blk.2.ffn_down.weight", (5632, 2048), **kw)[0] == T.Q5_K
    assert tensor_type("Q4_0", "blk.0.ffn_down.weight", (5632, 2048), imatrix=True, **kw)[0] == T.Q4_1
    assert tensor_type("F16", "blk.0.ffn_down.weight", (5632, 2048), **kw)[0] == T.F16


def test_fallbacks_and_what_is_never_quantized():
    assert fallback_type(T.Q4_K, 576) == T.Q5_0
    assert fallback_type(T.Q5_K, 640) == T.Q5_1
    assert fallback_type(T.Q6_K, 896) == T.Q8_0
    assert fallback_type(T.Q2_K, 576) == T.Q4_0 and fallback_type(T.Q3_K, 576) == T.Q4_0
    assert fallback_type(T.Q4_K, 100) == T.F16
    assert fallback_type(T.Q4_K, 512) is None
    assert not is_quantizable("blk.0.attn_norm.weight", 1)
    assert not is_quantizable("blk.0.attn_q_norm.weight", 2)
    assert not is_quantizable("blk.0.attn_q.bias", 1)
    assert is_quantizable("blk.0.attn_q.weight", 2)
    assert set(MIXTURES) >= {"Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q8_0", "Q3_K_M", "Q2_K"}
