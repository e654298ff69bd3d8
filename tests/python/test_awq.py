"""AWQ: the C++ searches against a PyTorch reference, folding invariance for
every listed family, and quantize_(model, AWQConfig) end to end."""

from __future__ import annotations

import copy

import pytest
import torch

import quantcore
from quantcore import AWQConfig, QuantLinear, RTNConfig
from quantcore.awq import _divide_rows_, _Edits, _fold_into_prev_, scaling_groups
from quantcore.calibration import find_decoder_layers
from quantcore.nn.quant_linear import is_conv1d

import awq_reference as ref
from conftest import GPTQ_MODELS, make_tiny

ops = torch.ops.quantcore


def hessian_of(x):
    h = torch.zeros(x.shape[1], x.shape[1])
    ops.gptq_hessian_update(h, x, 0)
    return h


def outlier_inputs(n, cols, seed=0, outliers=4, factor=30.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cols, generator=g)
    idx = torch.randperm(cols, generator=g)[:outliers]
    x[:, idx] *= factor
    return x


def calib_ids(n=16, seq=32, seed=0):
    return torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------ ops

@pytest.mark.parametrize("bits,group_size,sym", [(4, 32, True), (3, 64, False), (8, -1, True), (2, 32, False)])
@pytest.mark.parametrize("rows", [1, 37])
def test_fake_quantize_equals_rtn_of_the_scaled_clamped_weight(bits, group_size, sym, rows):
    torch.manual_seed(rows + bits)
    w = torch.randn(rows, 192)
    s = torch.rand(192) * 3 + 0.1
    gs = 192 if group_size == -1 else group_size
    clip = w.abs().reshape(rows, -1, gs).amax(-1) * (torch.rand(rows, 192 // gs) * 0.5 + 0.5)
    for col_scale, c in [(None, None), (s, None), (None, clip), (s, clip)]:
        v = w * s if col_scale is not None else w.clone()
        if c is not None:
            m = c.repeat_interleave(gs, 1)
            v = torch.maximum(torch.minimum(v, m), -m)
        codes, scales, zeros = quantcore.ops.rtn_quantize(v.contiguous(), bits=bits, group_size=group_size,
                                                          symmetric=sym)
        deq = (codes.float() - zeros.float().repeat_interleave(gs, 1)) * scales.float().repeat_interleave(gs, 1)
        expected = deq / s if col_scale is not None else deq
        out = ops.fake_quantize_groups(w, col_scale, c, bits, group_size, sym, torch.float16)
        assert torch.equal(out, expected)
        assert torch.equal(out, ref.pseudo_quantize(v, bits, group_size, sym) / (s if col_scale is not None else 1))


@pytest.mark.parametrize("group_size,sym", [(32, True), (64, False), (-1, True)])
def test_scale_search_matches_the_reference_and_never_loses_to_rtn(group_size, sym):
    torch.manual_seed(1)
    w = torch.randn(48, 128)
    x = outlier_inputs(512, 128)
    s, losses = ops.awq_search_scale(w, hessian_of(x), x.abs().mean(0), None, 4, group_size, sym, 20, False, 0.0,
                                     torch.float16)
    s_ref, losses_ref = ref.search_scale(w, x, 4, group_size, sym)
    # Our loss is tr(D H D^T) with H = 2/n X^T X: the reference's ||X D^T||^2 times 2/n.
    torch.testing.assert_close(losses, losses_ref * 2 / x.shape[0], rtol=2e-4, atol=0)
    assert int(torch.argmin(losses)) == int(torch.argmin(losses_ref))
    torch.testing.assert_close(s, s_ref, rtol=1e-6, atol=0)
    assert losses.min() <= losses[0]  # alpha = 0 is plain RTN
    rtn = ref.pseudo_quantize(w, 4, group_size, sym)
    assert float(((x @ (rtn - w).T) ** 2).sum()) * 2 / x.shape[0] == pytest.approx(float(losses[0]), rel=2e-4)


def test_scale_search_beats_rtn_clearly_when_inputs_have_outlier_channels():
    torch.manual_seed(2)
    w = torch.randn(64, 256) * 0.02
    x = outlier_inputs(1024, 256, outliers=6, factor=50.0)
    s, losses = ops.awq_search_scale(w, hessian_of(x), x.abs().mean(0), None, 4, 64, True, 20, False, 0.0,
                                     torch.float16)
    assert float(losses.min()) < 0.7 * float(losses[0])
    assert not torch.all(s == 1)


def test_duo_scaling_never_loses_to_rtn():
    torch.manual_seed(3)
    w = torch.randn(32, 128)
    x = torch.randn(256, 128)  # no outliers: scaling rarely helps
    h = hessian_of(x)
    s, losses = ops.awq_search_scale(w, h, x.abs().mean(0), None, 4, 32, True, 20, True, 0.0, torch.float16)
    rtn_err = (ref.pseudo_quantize(w, 4, 32, True) - w)
    rtn_loss = float(torch.einsum("ij,jk,ik->", rtn_err, h, rtn_err))
    fq = ops.fake_quantize_groups(w, s, None, 4, 32, True, torch.float16) - w
    assert float(torch.einsum("ij,jk,ik->", fq, h, fq)) <= rtn_loss * (1 + 1e-6)


def test_scale_search_skips_candidates_that_would_overflow():
    torch.manual_seed(4)
    w = torch.randn(16, 64)
    x = outlier_inputs(256, 64, factor=1000.0)
    h, xm = hessian_of(x), x.abs().mean(0)
    free_s, free = ops.awq_search_scale(w, h, xm, None, 4, 32, True, 20, False, 0.0, torch.float16)
    limit = float(w.abs().max()) * 2  # large alphas scale the outlier channels' weights past it
    s, losses = ops.awq_search_scale(w, h, xm, None, 4, 32, True, 20, False, limit, torch.float16)
    for i in range(20):
        s_i = xm.pow(i / 20)
        s_i = s_i / (s_i.max() * s_i.min()).sqrt()
        fits = float((w.abs().amax(0) * s_i).max()) <= limit
        assert bool(torch.isfinite(losses[i])) == fits
        if fits:
            assert float(losses[i]) == pytest.approx(float(free[i]), rel=1e-6)
    assert torch.isinf(losses).any() and torch.isfinite(losses[0])
    assert float((w.abs().amax(0) * s).max()) <= limit
    # The op before is limited too: |prev / s| must fit.
    limit = float(w.abs().max()) * 1.01
    prev = torch.full((64,), limit / 1.2)
    s2, losses2 = ops.awq_search_scale(w, h, xm, prev, 4, 32, True, 20, False, limit, torch.float16)
    assert float((prev / s2).max()) <= limit and torch.isfinite(losses2[0]) and torch.isinf(losses2).any()


@pytest.mark.parametrize("group_size,sym", [(32, True), (32, False), (-1, True)])
def test_clip_search_matches_the_reference(group_size, sym):
    torch.manual_seed(5)
    w = torch.randn(40, 128)
    x = outlier_inputs(400, 128, factor=5.0)
    clip = ops.awq_search_clip(w, hessian_of(x), 4, group_size, sym, 20, 0.5, torch.float16)
    expected = ref.search_clip(w, x, 4, group_size, sym)
    # Candidates whose errors tie within float rounding may swap; nearly all agree.
    agree = torch.isclose(clip, expected, rtol=1e-6).float().mean()
    assert agree >= 0.97, float(agree)
    ratio = clip / w.abs().reshape(40, -1, 128 if group_size == -1 else group_size).amax(-1)
    assert float(ratio.min()) >= 0.55 - 1e-6 and float(ratio.max()) <= 1 + 1e-6


def test_awq_ops_refuse_bad_inputs():
    w, h, xm = torch.randn(8, 64), torch.eye(64), torch.ones(64)
    with pytest.raises(ValueError, match="hessian must be"):
        ops.awq_search_scale(w, torch.eye(32), xm, None, 4, 32, True, 20, False, 0.0, torch.float16)
    with pytest.raises(ValueError, match="x_mean contains NaN"):
        ops.awq_search_scale(w, h, torch.full((64,), float("nan")), None, 4, 32, True, 20, False, 0.0,
                             torch.float16)
    with pytest.raises(ValueError, match="x_mean must be"):
        ops.awq_search_scale(w, h, torch.ones(63), None, 4, 32, True, 20, False, 0.0, torch.float16)
    with pytest.raises(ValueError, match="group_size"):
        ops.awq_search_clip(w, h, 4, 48, True, 20, 0.5, torch.float16)
    with pytest.raises(ValueError, match="max_shrink"):
        ops.awq_search_clip(w, h, 4, 32, True, 20, 1.0, torch.float16)
    with pytest.raises(ValueError, match="col_scale must be positive"):
        ops.fake_quantize_groups(w, -torch.ones(64), None, 4, 32, True, torch.float16)
    with pytest.raises(ValueError, match="weight contains NaN"):
        ops.fake_quantize_groups(torch.full((2, 64), float("inf")), None, None, 4, 32, True, torch.float16)
    with pytest.raises(TypeError, match="weight must be float"):
        ops.fake_quantize_groups(torch.ones(2, 64, dtype=torch.int32), None, None, 4, 32, True, torch.float16)
    with pytest.raises(ValueError, match="bits"):
        ops.fake_quantize_groups(w, None, None, 9, 32, True, torch.float16)


def test_awq_ops_pass_opcheck():
    w, x = torch.randn(8, 64), torch.randn(32, 64)
    h = hessian_of(x)
    torch.library.opcheck(ops.fake_quantize_groups.default, (w, torch.rand(64) + 0.5, None, 4, 32, True,
                                                             torch.float16))
    torch.library.opcheck(ops.awq_search_scale.default, (w, h, x.abs().mean(0), None, 4, 32, True, 4, False, 0.0,
                                                         torch.float16))
    torch.library.opcheck(ops.awq_search_clip.default, (w, h, 4, 32, True, 20, 0.5, torch.float16))


# -------------------------------------------------------------------- folding

def _tiny_llama_mha(dtype=torch.float32):
    # Equal query and key/value heads: o_proj's scale folds into v_proj.
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    return LlamaForCausalLM._from_config(cfg, dtype=dtype)


def _tiny_phi3_mha(dtype=torch.float32):
    from transformers import Phi3Config, Phi3ForCausalLM

    cfg = Phi3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, pad_token_id=0)
    return Phi3ForCausalLM._from_config(cfg, dtype=dtype)


FOLD_MODELS = {**GPTQ_MODELS, "llama_mha": _tiny_llama_mha, "phi3_mha": _tiny_phi3_mha}
# Groups that fold per block (o_proj only without grouped-query attention; GPT-2's
# mlp.c_proj follows a GELU, so never).
EXPECTED_FOLDS = {"llama": 3, "qwen2": 3, "mistral": 3, "qwen3": 3, "phi3": 3, "gemma": 3, "gemma3": 3,
                  "gpt2": 3, "opt": 4, "llama_mha": 4, "phi3_mha": 4}


def _build(name):
    torch.manual_seed(0)
    model = FOLD_MODELS[name]().eval()
    with torch.no_grad():  # non-trivial norms, so a fold into the wrong one shows
        for mod in model.modules():
            if "norm" in type(mod).__name__.lower():
                for p in mod.parameters():
                    p.add_(torch.randn_like(p) * 0.3)
    return model


@pytest.mark.parametrize("name", sorted(FOLD_MODELS))
def test_folding_scales_leaves_the_float_model_unchanged(name):
    model = _build(name)
    ids = calib_ids(2, 24)
    with torch.no_grad():
        before = model(ids).logits
    _, layers = find_decoder_layers(model)
    edits, folds = _Edits(), 0
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in layers:
            groups = scaling_groups(model, block)
            folds += len(groups)
            for group in groups:
                prev = block.get_submodule(group.prev)
                width = prev.weight.shape[0] if group.kind != "rows" else group.rows[1] - group.rows[0]
                s = torch.rand(width, generator=g) * 3 + 0.25
                if group.kind == "rows":
                    _divide_rows_(prev, group.rows, s, edits)
                else:
                    _fold_into_prev_(group, prev, s, edits)
                for lin in group.linears:
                    m = block.get_submodule(lin)
                    m.weight.mul_(s[:, None] if is_conv1d(m) else s)
        after = model(ids).logits
    assert folds == EXPECTED_FOLDS[name] * len(layers)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    edits.undo()


@pytest.mark.parametrize("name", sorted(GPTQ_MODELS))
def test_awq_end_to_end_on_every_family(name, tmp_path):
    model = make_tiny(name)
    ids = calib_ids()
    held_out = calib_ids(2, 24, seed=9)
    with torch.no_grad():
        ref_logits = model(held_out).logits
    report = quantcore.quantize_(model, AWQConfig(bits=4, group_size=32, n_samples=16, seq_len=32), calib=ids,
                                 progress=False)
    _, layers = find_decoder_layers(model)
    n_linear = sum(isinstance(m, QuantLinear) for m in model.modules())
    assert len(report.layers) == n_linear and len(report.scaling) == n_linear
    folded = sum("folded" in where for where in report.scaling.values())
    assert folded >= 2 * len(layers) and not report.notes
    assert "AWQ scales" in str(report)
    with torch.no_grad():
        out = model(held_out).logits
    assert torch.isfinite(out).all()
    assert float((out - ref_logits).norm() / ref_logits.norm()) < 0.5
    quantcore.save_quantized(model, tmp_path / "q")
    loaded = quantcore.load_quantized(tmp_path / "q")
    with torch.no_grad():
        assert torch.equal(loaded(held_out).logits, out)


def test_awq_lowers_output_error_against_rtn_on_a_model_with_outlier_channels():
    model = make_tiny("llama")
    with torch.no_grad():  # a few hidden channels carry large activations, as in real LLMs
        for layer in model.model.layers:
            layer.input_layernorm.weight[:3] = 25.0
            layer.post_attention_layernorm.weight[5:8] = 25.0
    ids = calib_ids(32, 32)
    held_out = calib_ids(4, 32, seed=7)
    with torch.no_grad():
        ref_logits = model(held_out).logits
    errors = {}
    for label, cfg in [("rtn", RTNConfig(bits=4, group_size=32)),
                       ("awq", AWQConfig(bits=4, group_size=32, n_samples=32, seq_len=32))]:
        m = copy.deepcopy(model)
        quantcore.quantize_(m, cfg, calib=ids, progress=False) if label == "awq" else \
            quantcore.quantize_(m, cfg, progress=False)
        with torch.no_grad():
            errors[label] = float((m(held_out).logits - ref_logits).norm() / ref_logits.norm())
    assert errors["awq"] < 0.8 * errors["rtn"], errors


def test_unfoldable_layers_keep_an_input_scale_and_round_trip(tmp_path):
    model = make_tiny("gpt2")
    report = quantcore.quantize_(model, AWQConfig(bits=4, group_size=32, n_samples=8, seq_len=32),
                                 calib=calib_ids(8), progress=False)
    c_proj = model.transformer.h[0].mlp.c_proj
    assert c_proj.input_scale is not None and "input_scale" in report.scaling["transformer.h.0.mlp.c_proj"]
    assert model.transformer.h[0].attn.c_attn.input_scale is None
    x = torch.randn(3, c_proj.in_features)
    torch.testing.assert_close(c_proj(x), torch.nn.functional.linear(x, c_proj.dequantize(), c_proj.bias),
                               rtol=1e-5, atol=1e-5)
    c_proj.to(torch.bfloat16)
    assert c_proj.input_scale.dtype == torch.float32
    quantcore.save_quantized(model.float(), tmp_path / "q")
    loaded = quantcore.load_quantized(tmp_path / "q")
    assert loaded.transformer.h[0].mlp.c_proj.input_scale is not None


def test_a_fold_that_changes_the_output_is_undone(monkeypatch):
    from quantcore import awq

    wrong = dict(awq._FAMILIES)  # gate/up "folded" into the attention norm: not what Llama computes
    wrong["llama"] = [(("mlp.gate_proj", "mlp.up_proj"), "input_layernorm", "norm", "")]
    monkeypatch.setattr(awq, "_FAMILIES", wrong)
    model = make_tiny("llama")
    norms = [layer.input_layernorm.weight.detach().clone() for layer in model.model.layers]
    report = quantcore.quantize_(model, AWQConfig(bits=4, group_size=32, n_samples=8, seq_len=32),
                                 calib=calib_ids(8), progress=False)
    assert any("fold changed the layer's output" in note for note in report.notes.values())
    assert model.model.layers[0].mlp.gate_proj.input_scale is not None
    for layer, norm in zip(model.model.layers, norms):
        assert torch.equal(layer.input_layernorm.weight, norm)


def test_unknown_architecture_keeps_every_scale_in_its_layers():
    from test_gptq_models import _CustomLM

    torch.manual_seed(0)
    model = _CustomLM().eval()
    ids = torch.randint(0, 64, (16, 32), generator=torch.Generator().manual_seed(0))
    report = quantcore.quantize_(model, AWQConfig(bits=4, group_size=32, n_samples=16, seq_len=32), calib=ids,
                                 exclude=["head"], progress=False)
    assert len(report.layers) == 6
    assert all("input_scale" in where for where in report.scaling.values())


def test_then_gptq_and_act_order(tmp_path):
    model = make_tiny("llama")
    held_out = calib_ids(2, 24, seed=9)
    report = quantcore.quantize_(model, AWQConfig(bits=4, group_size=32, n_samples=16, seq_len=32, then_gptq=True,
                                                  act_order=True), calib=calib_ids(), progress=False)
    assert report.method == "awq" and report.config["then_gptq"]
    layer = model.model.layers[0].self_attn.o_proj  # GQA: not foldable, so input_scale and perm together
    assert layer.perm is not None and layer.input_scale is not None
    x = torch.randn(3, layer.in_features)
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.dequantize()), rtol=1e-4, atol=1e-4)
    quantcore.save_quantized(model, tmp_path / "q")
    loaded = quantcore.load_quantized(tmp_path / "q")
    with torch.no_grad():
        assert torch.equal(loaded(held_out).logits, model(held_out).logits)


def test_nan_activations_name_the_layer_and_leave_the_model_untouched():
    model = make_tiny("llama")
    with torch.no_grad():
        model.model.layers[1].post_attention_layernorm.weight[0] = float("nan")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.gate_proj.*NaN"):
        quantcore.quantize_(model, AWQConfig(bits=4, group_size=32, n_samples=4, seq_len=32),
                            calib=calib_ids(4), progress=False)
    assert not any(isinstance(m, QuantLinear) for m in model.modules())
    for k, v in model.state_dict().items():  # layer 0's folds were undone too
        assert torch.equal(v, state[k]) or (torch.isnan(v).any() and torch.equal(v.isnan(), state[k].isnan()))


def test_half_precision_model_stays_finite():
    model = make_tiny("llama", dtype=torch.float16)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[:2] = 200.0
    report = quantcore.quantize_(model, AWQConfig(bits=4, group_size=32, n_samples=8, seq_len=32),
                                 calib=calib_ids(8), progress=False)
    assert all(torch.isfinite(torch.tensor(layer.rel_error)) for layer in report.layers)
    for m in model.modules():
        if isinstance(m, QuantLinear):
            assert torch.isfinite(m.scales).all()
        elif hasattr(m, "weight") and isinstance(m.weight, torch.Tensor):
            assert torch.isfinite(m.weight).all()
    with torch.no_grad():
        assert torch.isfinite(model(calib_ids(1, 16)).logits).all()


def test_awq_config_validation():
    with pytest.raises(ValueError, match="per tensor"):
        AWQConfig(group_size=0)
    with pytest.raises(ValueError, match="clip_max_shrink"):
        AWQConfig(clip_max_shrink=1.0)
    with pytest.raises(ValueError, match="then_gptq"):
        AWQConfig(act_order=True)
    with pytest.raises(ValueError, match="AWQ needs calibration data"):
        quantcore.quantize_(make_tiny("llama"), AWQConfig(), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_awq_ops_on_cuda_match_cpu():
    torch.manual_seed(6)
    w = torch.randn(64, 256)
    x = outlier_inputs(512, 256)
    h = hessian_of(x)
    s = torch.rand(256) + 0.5
    for args in [(None, None), (s, None)]:
        cpu = ops.fake_quantize_groups(w, *args, 4, 64, False, torch.float16)
        gpu = ops.fake_quantize_groups(w.cuda(), *[a.cuda() if a is not None else None for a in args], 4, 64, False,
                                       torch.float16)
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
    s_cpu, l_cpu = ops.awq_search_scale(w, h, x.abs().mean(0), None, 4, 64, True, 20, False, 0.0, torch.float16)
    s_gpu, l_gpu = ops.awq_search_scale(w.cuda(), h.cuda(), x.abs().mean(0).cuda(), None, 4, 64, True, 20, False,
                                        0.0, torch.float16)
    torch.testing.assert_close(l_gpu, l_cpu, rtol=1e-3, atol=0)
    torch.testing.assert_close(s_gpu.cpu(), s_cpu)
    c_cpu = ops.awq_search_clip(w, h, 4, 64, True, 20, 0.5, torch.float16)
    c_gpu = ops.awq_search_clip(w.cuda(), h.cuda(), 4, 64, True, 20, 0.5, torch.float16)
    assert torch.isclose(c_gpu.cpu(), c_cpu).float().mean() > 0.97
    model = make_tiny("llama")
    quantcore.quantize_(model, AWQConfig(bits=4, group_size=32, n_samples=8, seq_len=32), calib=calib_ids(8),
                        device="cuda", progress=False)
    assert all(p.device.type == "cpu" for p in model.parameters())
