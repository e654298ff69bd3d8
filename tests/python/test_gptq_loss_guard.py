"""GPTQ's loss guard (python/quantcore/loss_guard.py): the replayed loss equals the
model's own, a group whose GPTQ codes hurt the loss gets RTN's codes back (and
only such groups), the report says so, and bad settings are refused."""

from __future__ import annotations

import copy
import zlib

import pytest
import torch

import quantcore
from quantcore import GPTQConfig, QuantLinear, RTNConfig
from quantcore.calibration import find_decoder_layers
from quantcore.streaming import quantize_checkpoint
from quantcore.loss_guard import LOSS_GUARD_Z, _LossPass, layer_ranges, linear_kind

from conftest import GPTQ_MODELS, make_tiny


def calib_ids(n=16, seq=32, seed=0):
    return torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(seed))


def losses(model, ids):
    with torch.no_grad():
        return torch.tensor([float(torch.nn.functional.cross_entropy(model(r[None]).logits[0, :-1].float(), r[1:]))
                             for r in ids], dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(GPTQ_MODELS))
def test_replayed_layers_give_the_models_own_loss(name):
    model = make_tiny(name)
    ids = calib_ids(3, 24)
    _, layers = find_decoder_layers(model)
    runner = _LossPass(model, layers, ids, torch.device("cpu"))
    final, kept = runner.run_layers(0, runner.first_hidden, keep=[1])
    assert set(kept) == {1} and len(kept[1]) == 3
    torch.testing.assert_close(runner.window_losses(final), losses(model, ids), rtol=0, atol=1e-6)
    assert all(type(a) is type(b) for a, b in zip(layers, find_decoder_layers(make_tiny(name))[1]))  # put back
    # From layer 1 on, with layer 1's stored inputs: the same.
    final1, _ = runner.run_layers(1, kept[1])
    torch.testing.assert_close(runner.window_losses(final1), losses(model, ids), rtol=0, atol=1e-6)


def test_kinds_and_ranges():
    assert linear_kind("mlp.down_proj") == "mlp.down_proj"
    assert linear_kind("mlp.experts.3.down_proj") == "mlp.experts.*.down_proj"
    assert linear_kind("0.w1") == "*.w1"
    assert layer_ranges(18, 3) == [(0, 6), (6, 12), (12, 18)]
    assert layer_ranges(2, 3) == [(0, 1), (1, 2)]
    assert layer_ranges(7, 1) == [(0, 7)]
    assert sum(b - a for a, b in layer_ranges(32, 3)) == 32


def peaked_llama():
    """The tiny Llama with its logits scaled up: a random model's near-uniform
    predictions barely react to its weights, a peaked one's loss does."""
    model = make_tiny("llama")
    model.model.norm.weight.data *= 24
    return model


def sampled_ids(model, n=16, seq=32, seed=0):
    """Windows sampled from the model itself: any change of its weights raises
    the expected loss (by the KL divergence), so a spoiled group shows."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (n, 1), generator=g)
    with torch.no_grad():
        for _ in range(seq - 1):
            p = torch.softmax(model(ids).logits[:, -1].float(), -1)
            ids = torch.cat([ids, torch.multinomial(p, 1, generator=g)], 1)
    return ids


def _spoil(monkeypatch, models, kinds, scale=1.0):
    """Makes GPTQ's result for linears whose name ends with one of ``kinds`` a
    noisy weight's RTN codes: a group whose codes hurt the loss. The noise
    depends on the linear's name only, so equal models get equal noise."""
    from quantcore import gptq

    names = {id(m): n for model in models for n, m in model.named_modules()}
    original = gptq._solve_one

    def spoiled(module, hessian, config, held_out=None, **kw):
        layer, rel, note, held = original(module, hessian, config, held_out, **kw)
        name = names.get(id(module), "")
        if name.endswith(kinds):
            noisy = copy.deepcopy(module)
            w = noisy.weight.data
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            w += scale * w.std() * torch.randn(w.shape, generator=g).to(w.device)
            layer = QuantLinear.from_linear(noisy, RTNConfig(bits=config.bits, group_size=config.group_size))
        return layer, rel, note, held

    monkeypatch.setattr(gptq, "_solve_one", spoiled)


def _config(**kw):
    base = dict(bits=4, group_size=32, n_samples=16, seq_len=32, rtn_guard=False, loss_guard=True,
                loss_guard_windows=12, loss_guard_ranges=1)
    base.update(kw)
    return GPTQConfig(**base)


def test_guard_gives_a_harmful_group_rtns_codes(monkeypatch):
    model, ref = peaked_llama(), peaked_llama()
    _spoil(monkeypatch, [model], ("down_proj",))
    ids = sampled_ids(model)
    report = quantcore.quantize_(model, _config(), calib=ids, progress=False)
    assert len(report.loss_guard) == 7  # 7 projections, one range of layers
    kept = [label for label, (_, _, k) in report.loss_guard.items() if k]
    assert kept == ["mlp.down_proj@0-1"], report.loss_guard
    delta, se, _ = report.loss_guard["mlp.down_proj@0-1"]
    assert delta < -3 * se
    rtn_of = {n: QuantLinear.from_linear(m, RTNConfig(bits=4, group_size=32)) for n, m in ref.named_modules()
              if n.endswith("down_proj")}
    for name, rtn in rtn_of.items():
        assert torch.equal(model.get_submodule(name).dequantize(), rtn.dequantize())
        assert "loss guard: RTN's codes for mlp.down_proj@0-1" in report.notes[name]
    rows = {layer.name: layer for layer in report.layers}
    assert all(0 < rows[n].rel_error < 1 for n in rtn_of)  # RTN's own output error, from the Hessian
    assert "loss guard   7 groups scored; RTN kept in mlp.down_proj@0-1" in str(report)
    assert "RTN guard" not in str(report)  # rtn_guard was off: the guard's swaps are not counted as its keeps
    assert report.to_dict()["loss_guard"]["mlp.down_proj@0-1"][2] is True


def test_guard_keeps_two_groups_when_together_they_beat_either(monkeypatch):
    model = peaked_llama()
    _spoil(monkeypatch, [model], ("v_proj", "up_proj"))
    report = quantcore.quantize_(model, _config(loss_guard_windows=16), calib=sampled_ids(model), progress=False)
    kept = sorted(label for label, (_, _, k) in report.loss_guard.items() if k)
    assert kept == ["mlp.up_proj@0-1", "self_attn.v_proj@0-1"], report.loss_guard


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the GPU machine)")
def test_guard_on_cuda_picks_what_it_picks_on_cpu_and_leaves_layers_home(monkeypatch):
    on_cpu, on_gpu = peaked_llama(), peaked_llama()
    ids = sampled_ids(on_cpu)
    _spoil(monkeypatch, [on_cpu, on_gpu], ("down_proj",))
    cpu = quantcore.quantize_(on_cpu, _config(), calib=ids, progress=False)
    gpu = quantcore.quantize_(on_gpu, _config(), calib=ids, progress=False, device="cuda")
    assert {p.device.type for p in on_gpu.parameters()} | {b.device.type for b in on_gpu.buffers()} == {"cpu"}
    assert cpu.loss_guard.keys() == gpu.loss_guard.keys()
    assert [k for k, v in cpu.loss_guard.items() if v[2]] == [k for k, v in gpu.loss_guard.items() if v[2]] \
        == ["mlp.down_proj@0-1"]
    for label, (delta, se, _) in cpu.loss_guard.items():
        assert abs(gpu.loss_guard[label][0] - delta) < max(0.1 * abs(delta), 2e-3), (label, delta, se, gpu.loss_guard[label])
    # A model that lives on the GPU: the kept RTN layers land there with the rest.
    resident = peaked_llama().cuda()
    _spoil(monkeypatch, [resident], ("down_proj",))
    report = quantcore.quantize_(resident, _config(), calib=ids, progress=False)
    # GPTQ runs on the GPU here, so its codes (and a borderline group's score)
    # may differ from the CPU's: the spoiled group must be kept, and every kept
    # group must have passed the guard's rule. (A run on the H100 also kept
    # v_proj, once: benchmarks/RESULTS.md, sixteenth session.)
    kept = [k for k, v in report.loss_guard.items() if v[2]]
    assert "mlp.down_proj@0-1" in kept, report.loss_guard
    assert all(report.loss_guard[k][0] < -LOSS_GUARD_Z * report.loss_guard[k][1] for k in kept), report.loss_guard
    assert {t.device.type for t in list(resident.parameters()) + list(resident.buffers())} == {"cuda"}
    for name, module in resident.named_modules():
        if isinstance(module, QuantLinear):
            assert {t.device.type for t in list(module.parameters()) + list(module.buffers())} == {"cuda"}, name


def test_guard_scores_groups_by_layer_range(monkeypatch):
    model = peaked_llama()  # two decoder layers: two ranges of one layer
    _spoil(monkeypatch, [model], ("layers.1.mlp.down_proj",))
    report = quantcore.quantize_(model, _config(loss_guard_ranges=2), calib=sampled_ids(model), progress=False)
    assert len(report.loss_guard) == 14
    kept = [label for label, (_, _, k) in report.loss_guard.items() if k]
    assert kept == ["mlp.down_proj@1-1"], report.loss_guard
    assert "loss guard" not in report.notes.get("model.layers.0.mlp.down_proj", "")


def test_guard_that_keeps_nothing_changes_nothing():
    ids = calib_ids()
    plain, guarded = make_tiny("llama"), make_tiny("llama")
    quantcore.quantize_(plain, _config(loss_guard=False), calib=ids, progress=False)
    report = quantcore.quantize_(guarded, _config(), calib=ids, progress=False)
    if any(k for _, _, k in report.loss_guard.values()):
        pytest.skip("the guard kept a group on this model")  # not expected: GPTQ beats RTN at W4 here
    assert report.loss_guard and not any("loss guard" in v for v in report.notes.values())
    sd_plain, sd_guarded = plain.state_dict(), guarded.state_dict()
    assert sd_plain.keys() == sd_guarded.keys()
    assert all(torch.equal(sd_plain[k], sd_guarded[k]) for k in sd_plain)


def test_layers_that_already_kept_rtn_form_no_group():
    model = make_tiny("llama")
    # W8 per channel on 256 calibration tokens: rtn_guard keeps RTN in some layers.
    report = quantcore.quantize_(model, _config(bits=8, group_size=-1, rtn_guard=True, seq_len=16),
                                 calib=calib_ids(16, 16), progress=False)
    kept_rtn = {n for n, v in report.notes.items() if v.startswith("kept RTN")}
    assert kept_rtn
    scored = {label.split("@")[0] for label in report.loss_guard}
    for kind in {n.split("layers.")[1].split(".", 1)[1] for n in kept_rtn}:
        members = [f"model.layers.{i}.{kind}" for i in range(2)]
        assert (kind in scored) == (not all(m in kept_rtn for m in members))


def test_failure_in_the_guard_leaves_the_model_as_it_was(monkeypatch):
    from quantcore import gptq

    model = make_tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gptq, "loss_guard", boom)
    with pytest.raises(KeyboardInterrupt):
        quantcore.quantize_(model, _config(), calib=calib_ids(), progress=False)
    assert not any(isinstance(m, QuantLinear) for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_failure_inside_the_guard_puts_back_the_layers_and_the_float_model():
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    model = make_tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = [0]

    def interrupt(_m, _args, _out):
        calls[0] += 1
        if calls[0] == 12 + 5:  # only the guard's loss passes reach the norm: the base pass, then a group's
            raise KeyboardInterrupt

    model.model.norm.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        quantcore.quantize_(model, _config(), calib=calib_ids(), progress=False)
    assert calls[0] == 17
    assert all(type(layer) is LlamaDecoderLayer for layer in model.model.layers)
    assert not any(isinstance(m, QuantLinear) for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_headless_model_turns_auto_off_and_refuses_true(monkeypatch):
    from quantcore import gptq

    body = make_tiny("llama").model  # LlamaModel: hidden states, no logits
    report = quantcore.quantize_(body, GPTQConfig(bits=8, group_size=32, n_samples=16, seq_len=32),
                                 calib=calib_ids(), progress=False)
    assert report.notes["loss_guard"].startswith("off") and "no output head" in report.notes["loss_guard"]
    solves = []
    monkeypatch.setattr(gptq, "_solve_one", lambda *a, **k: solves.append(1))
    with pytest.raises(ValueError, match="no output head"):
        quantcore.quantize_(make_tiny("llama").model, _config(), calib=calib_ids(), progress=False)
    assert not solves  # refused before the walk


def test_loss_guard_settings_are_checked(tmp_path):
    with pytest.raises(TypeError, match="loss_guard must be a bool or 'auto'"):
        GPTQConfig(loss_guard=1)
    with pytest.raises(TypeError, match="loss_guard must be a bool or 'auto'"):
        GPTQConfig(loss_guard="yes")
    with pytest.raises(ValueError, match="loss_guard_windows"):
        GPTQConfig(loss_guard_windows=1)
    with pytest.raises(ValueError, match="loss_guard_ranges"):
        GPTQConfig(loss_guard_ranges=0)
    with pytest.raises(TypeError, match="loss_guard_windows must be an int"):
        GPTQConfig(loss_guard_windows=8.0)
    with pytest.raises(ValueError, match="in memory"):
        quantize_checkpoint(tmp_path / "nowhere", tmp_path / "out", _config(), calib=calib_ids())


def test_auto_runs_the_guard_at_8_bits_only():
    from quantcore.gptq import loss_guard_on

    assert loss_guard_on(GPTQConfig(bits=8, group_size=-1)) and not loss_guard_on(GPTQConfig(bits=4))
    assert loss_guard_on(GPTQConfig(bits=4, loss_guard=True)) and not loss_guard_on(GPTQConfig(bits=8, loss_guard=False))
    ids = calib_ids()
    w8 = quantcore.quantize_(make_tiny("llama"), GPTQConfig(bits=8, group_size=32, n_samples=16, seq_len=32),
                             calib=ids, progress=False)
    w4 = quantcore.quantize_(make_tiny("llama"), GPTQConfig(bits=4, group_size=32, n_samples=16, seq_len=32),
                             calib=ids, progress=False)
    assert w8.loss_guard and "groups scored" in w8.notes["loss_guard"]
    assert not w4.loss_guard and "loss_guard" not in w4.notes


def test_streaming_skips_the_automatic_guard(tmp_path, char_tokenizer, monkeypatch):
    from quantcore import gptq

    built = []
    original = gptq._rtn_alternative
    monkeypatch.setattr(gptq, "_rtn_alternative", lambda *a: built.append(1) or original(*a))
    model = make_tiny("llama")
    model.save_pretrained(tmp_path / "src")
    char_tokenizer.save_pretrained(tmp_path / "src")
    _, report = quantize_checkpoint(tmp_path / "src", tmp_path / "out", GPTQConfig(bits=8, group_size=32, n_samples=8,
                                                                                     seq_len=16),
                                    calib=calib_ids(8, 16), progress=False)
    assert report.notes["loss_guard"].startswith("off") and not report.loss_guard
    assert not built  # no RTN copies kept for a guard that will not run


def test_one_calibration_window_turns_the_guard_off_with_a_note():
    model = make_tiny("llama")
    report = quantcore.quantize_(model, _config(n_samples=1), calib=calib_ids(1), progress=False)
    assert report.notes["loss_guard"].startswith("off") and not report.loss_guard
