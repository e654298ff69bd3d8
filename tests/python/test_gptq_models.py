"""GPTQ through quantize_ on tiny Llama / Qwen2 / GPT-2 models."""

from __future__ import annotations

import copy

import pytest
import torch

import quantcore
from quantcore import GPTQConfig, QuantLinear, RTNConfig
from quantcore.gptq import _capture_layer_inputs, _first_tensor, calibration_windows, find_decoder_layers

from conftest import GPTQ_MODELS, make_tiny


def calib_ids(n=16, seq=32, seed=0):
    return torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(seed))


def logit_error(model, ref_logits, ids):
    with torch.no_grad():
        out = model(ids).logits
    return float((out - ref_logits).norm() / ref_logits.norm())


@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2"])
def test_gptq_end_to_end_beats_rtn_and_round_trips(name, tmp_path):
    model = make_tiny(name)
    ids = calib_ids()
    held_out = calib_ids(4, 32, seed=9)
    with torch.no_grad():
        ref = model(held_out).logits
    m_rtn = copy.deepcopy(model)
    quantcore.quantize_(m_rtn, RTNConfig(bits=3, group_size=32), progress=False)
    m_gptq = copy.deepcopy(model)
    report = quantcore.quantize_(m_gptq, GPTQConfig(bits=3, group_size=32, n_samples=16, seq_len=32),
                                 calib=ids, progress=False)
    n_linear = 14 if name != "gpt2" else 8
    assert len(report.layers) == n_linear
    assert sum(isinstance(m, QuantLinear) for m in m_gptq.modules()) == n_linear
    assert all(0 <= layer.rel_error < 0.5 for layer in report.layers)
    assert all(layer.seconds > 0 for layer in report.layers) and "in the solver" in str(report)
    e_rtn, e_gptq = logit_error(m_rtn, ref, held_out), logit_error(m_gptq, ref, held_out)
    assert e_gptq < e_rtn, (e_gptq, e_rtn)
    loaded = quantcore.load_quantized(quantcore.save_quantized(m_gptq, tmp_path / "q"))
    with torch.no_grad():
        assert torch.equal(loaded(held_out).logits, m_gptq(held_out).logits)


def test_gptq_options_and_text_calibration(char_tokenizer):
    tok = char_tokenizer
    model = make_tiny("llama")
    text = "the quick brown fox jumps over the lazy dog " * 30
    cfg = GPTQConfig(bits=4, group_size=32, act_order=True, static_groups=True, sym=False, true_sequential=False,
                     n_samples=4, seq_len=64)
    report = quantcore.quantize_(model, cfg, calib=[text], tokenizer=tok, progress=False)
    assert report.method == "gptq" and len(report.layers) == 14
    w = calibration_windows([text], tok, 4, 64, seed=0)
    assert w.shape == (4, 64) and torch.equal(w, calibration_windows([text], tok, 4, 64, seed=0))


def test_linears_outside_the_decoder_layers_get_rtn():
    model = make_tiny("llama")
    head = copy.deepcopy(model.lm_head)
    report = quantcore.quantize_(model, GPTQConfig(bits=4, group_size=32, n_samples=4, seq_len=16),
                                 calib=calib_ids(), skip_output_embeddings=False, progress=False)
    assert isinstance(model.lm_head, QuantLinear)
    assert "outside the decoder layers" in report.notes["lm_head"]
    rtn = QuantLinear.from_linear(head, RTNConfig(bits=4, group_size=32))
    assert torch.equal(model.lm_head.qweight, rtn.qweight)
    assert [r.name for r in report.layers].count("lm_head") == 1


def test_gptq_bad_inputs():
    model = make_tiny("llama")
    with pytest.raises(ValueError, match="calibration data"):
        quantcore.quantize_(model, GPTQConfig(group_size=32), progress=False)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        quantcore.quantize_(model, GPTQConfig(group_size=32, seq_len=64), calib=torch.arange(10), progress=False)
    with pytest.raises(ValueError, match="tokenizer"):
        quantcore.quantize_(model, GPTQConfig(group_size=32), calib="some text", progress=False)
    with pytest.raises(TypeError, match="unexpected"):
        quantcore.quantize_(model, RTNConfig(group_size=32), calib=calib_ids(), progress=False)
    with pytest.raises(ValueError, match="per tensor"):  # not silently per channel
        GPTQConfig(group_size=0)
    assert not any(isinstance(m, QuantLinear) for m in model.modules())
    with pytest.raises(ValueError, match="decoder layers"):
        find_decoder_layers(torch.nn.Sequential(torch.nn.ReLU()))


def test_linears_outside_decoder_layers_fall_back_to_rtn_with_a_note():
    model = make_tiny("llama")
    report = quantcore.quantize_(model, GPTQConfig(bits=8, group_size=32, n_samples=4, seq_len=32),
                                 calib=calib_ids(4), include=["*"], progress=False)
    assert isinstance(model.lm_head, QuantLinear)
    assert "lm_head" in report.notes and "RTN" in report.notes["lm_head"]
    assert len(report.layers) == 15


@pytest.mark.parametrize("name", sorted(GPTQ_MODELS))
def test_captured_layer_inputs_reproduce_the_models_hidden_states(name):
    # Each layer must run with its own arguments: Gemma3's sliding-window and
    # global layers get different masks and rotary tables than layer 0.
    model = make_tiny(name)
    ids = calib_ids(2, 32)
    _, layers = find_decoder_layers(model)
    hidden, rest = _capture_layer_inputs(model, layers, ids)
    assert len(hidden) == 2 and len(rest) == len(layers)
    with torch.no_grad():
        states = model(ids[:1], output_hidden_states=True).hidden_states
        h = hidden[0]
        for li in range(len(layers) - 1):  # the last entry of hidden_states is after the final norm
            args, kwargs = rest[li][0]
            h = _first_tensor(layers[li](h, *args, **kwargs))
            assert torch.allclose(h, states[li + 1], atol=1e-5), (name, li)


@pytest.mark.parametrize("name", sorted(set(GPTQ_MODELS) - {"llama", "qwen2", "gpt2"}))
def test_gptq_runs_on_every_supported_architecture(name, tmp_path):
    model = make_tiny(name)
    held_out = calib_ids(4, 32, seed=9)
    with torch.no_grad():
        ref = model(held_out).logits
    m_rtn = copy.deepcopy(model)
    quantcore.quantize_(m_rtn, RTNConfig(bits=3, group_size=32), progress=False)
    # sink_weight=1: these random-weight models have no attention sink for the
    # default ("auto") to protect (test_gptq_end_to_end_* runs the default).
    report = quantcore.quantize_(model, GPTQConfig(bits=3, group_size=32, act_order=True, n_samples=16, seq_len=32,
                                                   sink_weight=1.0),
                                 calib=calib_ids(16), progress=False)
    n = sum(isinstance(m, QuantLinear) for m in model.modules())
    # Only the RTN guard may speak (a few layers overfit 14 tiny windows and keep RTN).
    assert n == len(report.layers) > 0 and all(v.startswith("kept RTN") for v in report.notes.values())
    assert logit_error(model, ref, held_out) < logit_error(m_rtn, ref, held_out)
    loaded = quantcore.load_quantized(quantcore.save_quantized(model, tmp_path / "q"))
    with torch.no_grad():
        assert torch.equal(loaded(held_out).logits, model(held_out).logits)


def test_act_order_groups_store_a_permutation_and_round_trip(tmp_path):
    model = make_tiny("llama")
    held_out = calib_ids(2, 32, seed=9)
    cfg = GPTQConfig(bits=4, group_size=16, act_order=True, n_samples=8, seq_len=32, rtn_guard=False)
    quantcore.quantize_(model, cfg, calib=calib_ids(8), progress=False)
    q = model.model.layers[0].self_attn.q_proj
    assert q.perm is not None and not torch.equal(q.perm, torch.arange(64, dtype=torch.int32))
    g_idx = q.g_idx
    assert torch.equal(torch.bincount(g_idx.long()), torch.full((4,), 16))
    x = torch.randn(3, 64)
    assert torch.allclose(q(x), torch.nn.functional.linear(x, q.dequantize(), q.bias), atol=1e-5)
    loaded = quantcore.load_quantized(quantcore.save_quantized(model, tmp_path / "q"))
    assert torch.equal(loaded.model.layers[0].self_attn.q_proj.perm, q.perm)
    with torch.no_grad():
        assert torch.equal(loaded(held_out).logits, model(held_out).logits)


def test_nan_activations_name_the_layer_and_leave_the_model_untouched():
    model = make_tiny("llama")
    with torch.no_grad():
        model.model.layers[1].post_attention_layernorm.weight[0] = float("nan")
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.gate_proj.*NaN"):
        quantcore.quantize_(model, GPTQConfig(bits=4, group_size=32, n_samples=4, seq_len=32),
                            calib=calib_ids(4), progress=False)
    assert not any(isinstance(m, QuantLinear) for m in model.modules())


def test_device_that_is_not_there_is_refused():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    model = make_tiny("llama")
    with pytest.raises(ValueError, match="cuda"):
        quantcore.quantize_(model, GPTQConfig(group_size=32, n_samples=2, seq_len=32), calib=calib_ids(2),
                            device="cuda", progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the GPU machine)")
def test_gptq_on_cuda_matches_cpu_and_leaves_layers_home():
    ids, held_out = calib_ids(8), calib_ids(2, 32, seed=9)
    cfg = GPTQConfig(bits=4, group_size=32, act_order=True, n_samples=8, seq_len=32)
    on_cpu, on_gpu = make_tiny("llama"), make_tiny("llama")
    quantcore.quantize_(on_cpu, cfg, calib=ids, progress=False)
    report = quantcore.quantize_(on_gpu, cfg, calib=ids, device="cuda", progress=False)
    assert all(p.device.type == "cpu" for p in on_gpu.parameters())
    assert all(b.device.type == "cpu" for b in on_gpu.buffers())
    with torch.no_grad():
        a, b = on_cpu(held_out).logits, on_gpu(held_out).logits
    assert float((a - b).norm() / a.norm()) < 0.05  # same algorithm; GPU rounding flips a few codes
    assert len(report.layers) == 14


def test_calibration_accepts_long_texts_files_and_refuses_missing_files(char_tokenizer, tmp_path):
    text = "the quick brown fox jumps over the lazy dog " * 400  # far longer than any path
    w = calibration_windows(text, char_tokenizer, 4, 64, seed=0)
    f = tmp_path / "calib.txt"
    f.write_text(text)
    assert torch.equal(calibration_windows(str(f), char_tokenizer, 4, 64, seed=0), w)
    assert torch.equal(calibration_windows(f, char_tokenizer, 4, 64, seed=0), w)
    with pytest.raises(ValueError, match="does not exist"):
        calibration_windows(tmp_path / "missing.txt", char_tokenizer, 4, 64, seed=0)


class _Block(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)
        self.up = torch.nn.Linear(d, 2 * d)
        self.down = torch.nn.Linear(2 * d, d)

    def forward(self, h, scale):  # an extra argument the driver must replay
        return h + self.down(torch.relu(self.up(self.norm(h)))) * scale


class _CustomLM(torch.nn.Module):
    """No Hugging Face class and no known layer path: found as the longest list of identical blocks."""

    def __init__(self, vocab=64, d=32, n=3):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d)
        self.stack = torch.nn.ModuleList(_Block(d) for _ in range(n))
        self.head = torch.nn.Linear(d, vocab)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, ids, use_cache=False):
        h = self.embed(ids)
        for block in self.stack:
            h = block(h, 0.5)
        return self.head(h)


def test_unknown_architecture_is_found_through_its_list_of_blocks():
    torch.manual_seed(0)
    model = _CustomLM().eval()
    ids = torch.randint(0, 64, (16, 32), generator=torch.Generator().manual_seed(0))
    assert find_decoder_layers(model)[0] == "stack"
    with torch.no_grad():
        ref = model(ids[:4])
    m_rtn = copy.deepcopy(model)
    quantcore.quantize_(m_rtn, RTNConfig(bits=3, group_size=32), exclude=["head"], progress=False)
    report = quantcore.quantize_(model, GPTQConfig(bits=3, group_size=32, n_samples=16, seq_len=32),
                                 calib=ids, exclude=["head"], progress=False)
    assert len(report.layers) == 6 and not report.notes
    with torch.no_grad():
        err = lambda m: float((m(ids[:4]) - ref).norm() / ref.norm())
        assert err(model) < err(m_rtn)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_each_linear_gets_the_hessian_of_its_own_inputs(name, monkeypatch):
    # A freed input's id and address can be reused by the next linear's input
    # (GPT-2's c_proj then c_fc): the driver must not take them for one tensor.
    from quantcore import gptq

    model = make_tiny(name)
    ids = calib_ids(4, 32)
    expected = {}
    block = find_decoder_layers(model)[1][0]

    def record(mod_name):
        def hook(_m, args):
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            h, n = expected.setdefault(mod_name, [torch.zeros(x.shape[1], x.shape[1]), 0])
            expected[mod_name][1] = torch.ops.quantcore.gptq_hessian_update(h, x, n)
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in block.named_modules()
               if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"]
    with torch.no_grad():
        for row in ids:
            model(row.unsqueeze(0))
    for h in handles:
        h.remove()
    seen = {}
    original = gptq._solve_one

    def spy(module, hessian, config, held_hessian=None):
        seen[id(module)] = hessian.clone()
        return original(module, hessian, config, held_hessian)

    monkeypatch.setattr(gptq, "_solve_one", spy)
    modules = dict(block.named_modules())
    # sink_weight=1: the plain average X^T X that `expected` holds.
    quantcore.quantize_(model, GPTQConfig(bits=4, group_size=32, n_samples=4, seq_len=32, true_sequential=False,
                                          sink_weight=1.0),
                        calib=ids, progress=False)
    for mod_name, (h, _) in expected.items():
        torch.testing.assert_close(seen[id(modules[mod_name])], h, rtol=1e-5, atol=1e-6)


def test_rtn_guard_keeps_rtn_where_gptq_does_worse_on_held_out_windows():
    from quantcore import gptq

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32, bias=False)
    cfg = GPTQConfig(bits=8, group_size=-1)
    # Calibration inputs in a 4-dimensional subspace: GPTQ moves error into
    # directions it never saw; held-out inputs span them all.
    x = torch.randn(256, 4) @ torch.randn(4, 64)
    h_cal = torch.zeros(64, 64)
    torch.ops.quantcore.gptq_hessian_update(h_cal, x, 0)
    h_held = gptq._HeldOut(64, torch.device("cpu"))
    h_held.add(torch.eye(64))  # 64 rows: kept as rows
    assert h_held.hessian is None
    layer, rel, note, held = gptq._solve_one(lin, h_cal, cfg, h_held)
    assert held[1] <= held[0]
    rtn = QuantLinear.from_linear(lin, RTNConfig(bits=8, group_size=-1))
    assert note.startswith("kept RTN") and torch.equal(layer.dequantize(), rtn.dequantize())
    # Held-out statistics like the calibration ones: GPTQ is kept.
    like_cal = gptq._HeldOut(64, torch.device("cpu"))
    like_cal.add(x)  # 256 rows > 64 features: kept as a Hessian
    assert like_cal.hessian is not None and torch.allclose(like_cal.hessian, h_cal)
    layer, rel, note, held = gptq._solve_one(lin, h_cal, GPTQConfig(bits=3, group_size=-1), like_cal)
    assert held[0] < held[1]
    assert "kept RTN" not in note
    assert not torch.equal(layer.dequantize(), QuantLinear.from_linear(lin, RTNConfig(bits=3, group_size=-1)).dequantize())


def test_held_out_rows_and_their_hessian_score_alike():
    from quantcore import gptq

    g = torch.Generator().manual_seed(1)
    w, deq = torch.randn(8, 48, generator=g), torch.randn(8, 48, generator=g)
    held = gptq._HeldOut(48, torch.device("cpu"))
    chunks = torch.randn(3, 20, 48, generator=g)
    held.add(chunks[0])
    held.add(chunks[1])  # 40 rows: still rows
    err_rows, out_rows = held.output_error(deq, w)
    assert held.hessian is None
    held.add(chunks[2])  # 60 rows: turned into a Hessian
    assert held.hessian is not None and not held.rows
    X = chunks.reshape(-1, 48)
    err_h, out_h = held.output_error(deq, w)
    n = 60
    assert abs(err_h - 2 / n * float((X @ (deq - w).t()).pow(2).sum())) < 1e-3 * err_h
    # The ratio (what the guard compares) does not depend on the form.
    X40 = X[:40]
    assert abs(err_rows / out_rows - float((X40 @ (deq - w).t()).pow(2).sum() / (X40 @ w.t()).pow(2).sum())) < 1e-5


def test_rtn_guard_holds_out_the_last_windows_and_can_be_switched_off(monkeypatch):
    from quantcore import gptq

    model = make_tiny("llama")
    ids = calib_ids(16, 32)
    held_counts = []
    original = gptq._solve_one

    def spy(module, hessian, config, held_out=None):
        held_counts.append(held_out is not None)
        return original(module, hessian, config, held_out)

    monkeypatch.setattr(gptq, "_solve_one", spy)
    report = quantcore.quantize_(copy.deepcopy(model), GPTQConfig(bits=8, group_size=32, n_samples=16, seq_len=32),
                                 calib=ids, progress=False)
    assert held_counts and all(held_counts) and "rtn_guard" not in report.notes
    assert set(report.holdout_errors) == {layer.name for layer in report.layers}

    held_counts.clear()
    report = quantcore.quantize_(copy.deepcopy(model), GPTQConfig(bits=8, group_size=32, n_samples=16, seq_len=32,
                                                                  rtn_guard=False, loss_guard=False),
                                 calib=ids, progress=False)
    assert held_counts and not any(held_counts) and not report.notes
    held_counts.clear()
    report = quantcore.quantize_(copy.deepcopy(model), GPTQConfig(bits=8, group_size=32, n_samples=4, seq_len=32),
                                 calib=ids[:4], progress=False)
    assert not any(held_counts) and report.notes["rtn_guard"].startswith("off")
    with pytest.raises(ValueError, match="holdout_fraction"):
        GPTQConfig(holdout_fraction=1.0)


def test_kept_rtn_layers_carry_rtn_codes_and_report_counts_them():
    model = make_tiny("llama")
    report = quantcore.quantize_(model, GPTQConfig(bits=8, group_size=-1, n_samples=16, seq_len=16),
                                 calib=calib_ids(16, 16), progress=False)
    kept = [n for n, v in report.notes.items() if v.startswith("kept RTN")]
    ref = make_tiny("llama")
    mods = dict(model.named_modules())
    for name in kept:
        rtn = QuantLinear.from_linear(dict(ref.named_modules())[name], RTNConfig(bits=8, group_size=-1))
        assert torch.equal(mods[name].dequantize(), rtn.dequantize())
    assert kept  # W8 on 256 calibration tokens: some layers overfit
    assert f"{len(kept)} of {len(report.layers)} layers kept round-to-nearest" in str(report)


def test_skip_first_tokens_leaves_those_positions_out_of_the_hessians(monkeypatch):
    from quantcore import gptq

    model = make_tiny("llama")
    ids = calib_ids(4, 32)
    block = find_decoder_layers(model)[1][0]
    expected = {}

    def record(_m, args):
        x = args[0][:, 2:].reshape(-1, args[0].shape[-1]).float()  # positions 2.. only
        h, n = expected.setdefault("q", [torch.zeros(x.shape[1], x.shape[1]), 0])
        expected["q"][1] = torch.ops.quantcore.gptq_hessian_update(h, x, n)

    handle = block.self_attn.q_proj.register_forward_pre_hook(record)
    with torch.no_grad():
        for row in ids:
            model(row.unsqueeze(0))
    handle.remove()
    seen = {}
    original = gptq._solve_one

    def spy(module, hessian, config, held_hessian=None):
        seen.setdefault(id(module), hessian.clone())
        return original(module, hessian, config, held_hessian)

    monkeypatch.setattr(gptq, "_solve_one", spy)
    q_id = id(block.self_attn.q_proj)
    quantcore.quantize_(model, GPTQConfig(bits=4, group_size=32, n_samples=4, seq_len=32, skip_first_tokens=2),
                        calib=ids, progress=False)
    torch.testing.assert_close(seen[q_id], expected["q"][0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="skip_first_tokens"):
        GPTQConfig(seq_len=8, skip_first_tokens=7)


@pytest.mark.parametrize("true_sequential", [True, False])
def test_gptaq_fits_the_float_models_outputs(true_sequential):
    # gptaq_alpha (asymmetric calibration): each layer aims at the float
    # model's output, so the quantized model's logits on the calibration text
    # move towards the float model's, more with alpha = 1 than 0.25.
    torch.manual_seed(0)
    model = make_tiny("llama").float()
    calib = torch.randint(0, 256, (8, 64))
    with torch.no_grad():
        ref = model(calib).logits
    errs = []
    for alpha in (0.0, 0.25, 1.0):
        m = copy.deepcopy(model)
        cfg = GPTQConfig(bits=3, group_size=32, n_samples=8, seq_len=64, rtn_guard=False, gptaq_alpha=alpha,
                         true_sequential=true_sequential)
        report = quantcore.quantize_(m, cfg, calib=calib, progress=False)
        assert len(report.layers) == 14 and sum(isinstance(x, QuantLinear) for x in m.modules()) == 14
        with torch.no_grad():
            errs.append(float((m(calib).logits - ref).pow(2).mean()))
    assert errs[2] < errs[1] < errs[0], errs
    assert not any(isinstance(x, QuantLinear) for x in model.modules())  # the float copies were copies


@pytest.mark.parametrize("gptaq_alpha", [0.0, 0.25])
def test_sink_weight_protects_the_first_position(gptaq_alpha):
    # sink_weight counts each window's first position (the attention sink) that
    # many times in H: the quantized model's output there moves towards the
    # float model's, at little cost to the other positions.
    torch.manual_seed(0)
    model = make_tiny("llama").float()
    calib = torch.randint(0, 256, (8, 64))
    with torch.no_grad():
        ref = model(calib).logits
    first, rest = [], []
    for weight in (1.0, "auto"):  # auto: 32 for these 64-token windows
        m = copy.deepcopy(model)
        cfg = GPTQConfig(bits=3, group_size=32, n_samples=8, seq_len=64, rtn_guard=False, sink_weight=weight,
                         gptaq_alpha=gptaq_alpha)
        quantcore.quantize_(m, cfg, calib=calib, progress=False)
        with torch.no_grad():
            err = (m(calib).logits - ref).pow(2).mean(-1)  # [window, position]
        first.append(float(err[:, 0].mean()))
        rest.append(float(err[:, 1:].mean()))
    assert first[1] < 0.5 * first[0], first
    assert rest[1] < 1.5 * rest[0], rest


def test_sink_weight_is_checked():
    for bad in (0.0, -1.0, float("inf"), float("nan"), "half"):
        with pytest.raises(ValueError, match="sink_weight"):
            GPTQConfig(sink_weight=bad)
    for bad in (None, True, [2.0]):
        with pytest.raises(TypeError, match="sink_weight"):
            GPTQConfig(sink_weight=bad)


def test_auto_sink_weight_is_a_third_of_each_window():
    from quantcore.gptq import sink_weight_for

    assert GPTQConfig().sink_weight == "auto"
    for window in (32, 512, 2048):
        w = sink_weight_for(GPTQConfig(), window)
        assert w / (window - 1 + w) == pytest.approx(1 / 3, abs=0.02)
    assert sink_weight_for(GPTQConfig(), 1) == 1.0
    assert sink_weight_for(GPTQConfig(sink_weight=1), 512) == 1.0
    assert sink_weight_for(GPTQConfig(sink_weight=64.0), 512) == 64.0


def test_gptaq_alpha_is_checked():
    with pytest.raises(ValueError, match="gptaq_alpha"):
        GPTQConfig(gptaq_alpha=1.5)
    with pytest.raises(ValueError, match="gptaq_alpha"):
        GPTQConfig(gptaq_alpha=-0.1)
