"""QAT (python/quantcore/qat.py, cpp/kernels/qat_fake_quant.cpp): the fake-quant
op against RTN and an autograd reference, prepare -> train -> convert on tiny
models, state_dict resume, torch.compile, bad configs."""

from __future__ import annotations

import copy

import pytest
import torch

import quantcore
from quantcore import QuantLinear, RTNConfig, qat
from quantcore._torch_kernels import qat_fake_quantize_backward_torch, qat_fake_quantize_torch

from conftest import make_tiny


def grid_for(w, bits, group, sym, scale_dtype=torch.float32):
    _, scales, zeros = quantcore.ops.rtn_quantize(w, bits, group, sym, scale_dtype=scale_dtype)
    return scales.float(), (None if sym else zeros.float())


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group,sym", [(32, True), (64, False), (-1, True), (-1, False), (0, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_equals_rtn_quantize_then_dequantize(bits, group, sym, dtype):
    w = (torch.randn(48, 128, generator=torch.Generator().manual_seed(bits)) * 0.1).to(dtype)
    codes, scales, zeros = quantcore.ops.rtn_quantize(w, bits, group, sym, scale_dtype=torch.float16)
    gs = 128 if group <= 0 else group
    want = quantcore.ops.dequantize(quantcore.ops.pack(codes, bits, 32), scales.float().expand(48, -1).contiguous()
                                    if group == 0 else scales.float(),
                                    None if sym else (zeros.expand(48, -1).contiguous() if group == 0 else zeros),
                                    bits, gs, torch.float32)
    got = qat.fake_quantize(w, scales.float(), None if sym else zeros.float(), bits, gs)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want.to(dtype).float(), rtol=0, atol=0)


def reference(x, scale, zero, bits, group):
    """Fake quantization from differentiable torch ops (round straight through, clamp not)."""
    rows, cols = x.shape
    s = scale.repeat_interleave(group, 1).expand(rows, cols)
    z = (zero if zero is not None else torch.full_like(scale, float(1 << (bits - 1)))).repeat_interleave(
        group, 1).expand(rows, cols)
    v = x / s
    r = v + (torch.round(v) - v).detach()
    q = torch.clamp(r + z, 0, (1 << bits) - 1)
    return (q - z) * s


@pytest.mark.parametrize("shape,group,scale_rows", [((16, 64), 32, 16), ((7, 96), 96, 7), ((9, 64), 64, 1)])
@pytest.mark.parametrize("sym", [True, False])
def test_gradients_match_an_autograd_reference(shape, group, scale_rows, sym):
    g = torch.Generator().manual_seed(shape[0])
    x = torch.randn(*shape, generator=g) * 0.2
    scale = torch.rand(scale_rows, shape[1] // group, generator=g) * 0.02 + 0.01  # small: many values clip
    zero = None if sym else torch.randint(2, 14, scale.shape, generator=g).float()
    upstream = torch.randn(*shape, generator=g)
    args = [t.clone().requires_grad_(True) if t is not None else None for t in (x, scale, zero)]
    (qat.fake_quantize(args[0], args[1], args[2], 4, group) * upstream).sum().backward()
    ref = [t.clone().requires_grad_(True) if t is not None else None for t in (x, scale, zero)]
    (reference(ref[0], ref[1], ref[2], 4, group) * upstream).sum().backward()
    for a, b in zip(args, ref):
        if a is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)
    # The tensor-op implementation used on CUDA gives the same values.
    got = qat_fake_quantize_backward_torch(upstream, x, scale, zero, 4, group)
    want = torch.ops.quantcore.qat_fake_quantize_backward(upstream, x, scale, zero, 4, group)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(qat_fake_quantize_torch(x, scale, zero, 4, group),
                               qat.fake_quantize(x, scale, zero, 4, group), rtol=0, atol=0)


def snapped_reference(x, scale, zero, bits, group, grid_dtype, factor):
    """The snapped learnable grid from differentiable ops: values rounded to
    grid_dtype (floored) and integer zeros in range, gradients straight through
    times factor (LSQ's gradient scale)."""
    s_val = scale.detach().to(grid_dtype).float().clamp_min(6.103515625e-05)
    s = scale * factor + (s_val - scale * factor).detach()
    z = None
    if zero is not None:
        z_val = zero.detach().round().clamp(0, (1 << bits) - 1)
        z = zero * factor + (z_val - zero * factor).detach()
    return reference(x, s, z, bits, group)


@pytest.mark.parametrize("grid_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sym", [True, False])
def test_snapped_learnable_grid_matches_a_straight_through_reference(grid_dtype, sym):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 64, generator=g) * 0.2
    scale = torch.rand(12, 2, generator=g) * 0.02 + 0.01
    scale[0, 0] = -0.01  # LSQ drove it below zero: floored, gradient still flows
    zero = None if sym else torch.rand(12, 2, generator=g) * 16 - 0.5  # fractional, some out of range
    upstream = torch.randn(12, 64, generator=g)
    factor = 0.3
    args = [t.clone().requires_grad_(True) if t is not None else None for t in (x, scale, zero)]
    y = qat.fake_quantize(args[0], args[1], args[2], 4, 32, grid_dtype, factor)
    (y * upstream).sum().backward()
    ref = [t.clone().requires_grad_(True) if t is not None else None for t in (x, scale, zero)]
    y_ref = snapped_reference(ref[0], ref[1], ref[2], 4, 32, grid_dtype, factor)
    (y_ref * upstream).sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    for a, b in zip(args, ref):
        if a is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)
    # The tensor-op implementation (CUDA without the CUDA build) agrees.
    got = qat_fake_quantize_backward_torch(upstream, x, scale, zero, 4, 32, grid_dtype, factor)
    want = torch.ops.quantcore.qat_fake_quantize_backward(upstream, x, scale, zero, 4, 32, grid_dtype, factor)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.equal(qat_fake_quantize_torch(x, scale, zero, 4, 32, grid_dtype, factor), y.detach())


def test_lsq_gradient_scale_and_learnable_switch():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 16)
    layer = qat.FakeQuantLinear(lin, qat.QATConfig(bits=4, group_size=32, scale_dtype=torch.float32))
    assert layer.grad_factor == pytest.approx(1 / (32 * 7) ** 0.5)
    x = torch.randn(5, 64)
    layer(x).sum().backward()
    s = layer.weight_scale.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(x, reference(lin.weight.detach(), s, None, 4, 32), lin.bias).sum().backward()
    torch.testing.assert_close(layer.weight_scale.grad, s.grad * layer.grad_factor, rtol=1e-4, atol=1e-5)
    frozen = qat.FakeQuantLinear(torch.nn.Linear(64, 16), qat.QATConfig(bits=4, group_size=32, learnable="none"))
    assert not frozen.weight_scale.requires_grad


@pytest.mark.parametrize("name", ["llama", "gpt2"])
@pytest.mark.parametrize("sym", [True, False])
def test_prepare_then_convert_without_training_equals_rtn(name, sym):
    model = make_tiny(name)
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    cfg = qat.QATConfig(bits=4, group_size=32, sym=sym)
    names = qat.prepare_(model, cfg)
    assert names and all(isinstance(model.get_submodule(n), qat.FakeQuantLinear) for n in names)
    with torch.no_grad():
        fake = model(ids).logits
    qat.convert_(model)
    rtn = make_tiny(name)
    quantcore.quantize_(rtn, RTNConfig(bits=4, group_size=32, sym=sym), progress=False)
    for n in names:
        a, b = model.get_submodule(n), rtn.get_submodule(n)
        assert isinstance(a, QuantLinear) and torch.equal(a.qweight, b.qweight) and torch.equal(a.scales, b.scales)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, fake, rtol=1e-4, atol=1e-4)


def train(model, ids, steps, lr=1e-3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    return opt, train_more(model, opt, ids, steps)


def test_training_learns_scales_and_convert_reproduces_the_trained_model(tmp_path):
    model = make_tiny("llama")
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    qat.prepare_(model, qat.QATConfig(bits=3, group_size=32, sym=False))
    before = model.model.layers[0].mlp.down_proj.weight_scale.detach().clone()
    _, losses = train(model, ids, 15, lr=3e-3)
    assert losses[-1] < losses[0]
    assert not torch.equal(model.model.layers[0].mlp.down_proj.weight_scale, before)
    with torch.no_grad():
        fake = model(ids).logits
    qat.convert_(model)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, fake, rtol=1e-3, atol=1e-3)
    loaded = quantcore.load_quantized(quantcore.save_quantized(model, tmp_path / "q"))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_state_dict_resume_gives_identical_losses():
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(2))
    cfg = qat.QATConfig(bits=4, group_size=32, sym=False)
    a = make_tiny("llama")
    qat.prepare_(a, cfg)
    opt, _ = train(a, ids, 3)
    state, opt_state = copy.deepcopy(a.state_dict()), copy.deepcopy(opt.state_dict())
    assert any(k.endswith("weight_scale") for k in state) and any(k.endswith("weight_zero") for k in state)
    continued = train_more(a, opt, ids, 2)
    b = make_tiny("llama")
    qat.prepare_(b, cfg)
    b.load_state_dict(state)
    opt_b = torch.optim.AdamW([p for p in b.parameters() if p.requires_grad], lr=1e-3)
    opt_b.load_state_dict(opt_state)
    assert train_more(b, opt_b, ids, 2) == continued


def train_more(model, opt, ids, steps):
    losses = []
    for _ in range(steps):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_autocast_bf16_and_torch_compile_train_steps():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64))
    qat.prepare_(model, qat.QATConfig(bits=4, group_size=32))
    x = torch.randn(8, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().square().mean()
    loss.backward()
    assert model[0].weight_scale.grad is not None and model[0].weight.grad is not None
    eager = model(x)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, eager)
    out.square().mean().backward()


def test_opcheck_of_the_fake_quant_op():
    x = torch.randn(8, 64)
    scale = torch.rand(8, 2) * 0.05 + 0.01
    torch.library.opcheck(torch.ops.quantcore.qat_fake_quantize.default, (x, scale, None, 4, 32))
    torch.library.opcheck(torch.ops.quantcore.qat_fake_quantize.default,
                          (x, scale, torch.full((8, 2), 7.0), 4, 32))
    learnable = [scale.clone().requires_grad_(True), torch.full((8, 2), 7.3, requires_grad=True)]
    torch.library.opcheck(torch.ops.quantcore.qat_fake_quantize.default,
                          (x.requires_grad_(True), learnable[0], learnable[1], 4, 32, torch.float16, 0.5))


def test_bad_inputs_raise_clearly():
    with pytest.raises(ValueError, match="learnable"):
        qat.QATConfig(learnable="adam")
    with pytest.raises(ValueError, match="init"):
        qat.QATConfig(init="gptq-ish")
    model = torch.nn.Sequential(torch.nn.Linear(48, 8))
    with pytest.raises(ValueError, match="not divisible by group_size"):
        qat.prepare_(model, qat.QATConfig(group_size=32))
    with pytest.raises(TypeError, match="QATConfig"):
        qat.prepare_(model, RTNConfig())
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        qat.prepare_(model, qat.QATConfig(group_size=16))
    with pytest.raises(ValueError, match="no FakeQuantLinear"):
        qat.convert_(torch.nn.Sequential(torch.nn.Linear(8, 8)))
    x = torch.randn(4, 64)
    with pytest.raises(ValueError, match="positive"):
        qat.fake_quantize(x, torch.zeros(4, 2), None, 4, 32)
    with pytest.raises(ValueError, match="scale must be"):
        qat.fake_quantize(x, torch.ones(3, 2), None, 4, 32)
    with pytest.raises(ValueError, match="divide"):
        qat.fake_quantize(x, torch.ones(4, 2), None, 4, 48)
    with pytest.raises(ValueError, match="NaN"):
        qat.fake_quantize(x, torch.full((4, 2), float("nan")), None, 4, 32, torch.float16)
    with pytest.raises(TypeError, match="scale_dtype"):
        qat.fake_quantize(x, torch.ones(4, 2), None, 4, 32, torch.float64)


def test_init_from_gptq_starts_from_gptqs_codes():
    from quantcore import GPTQConfig

    ids = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(3))
    ptq = GPTQConfig(bits=3, group_size=32, sym=False, n_samples=8, seq_len=32)
    ref = make_tiny("llama")
    quantcore.quantize_(ref, ptq, calib=ids, progress=False)
    model = make_tiny("llama")
    names = qat.prepare_(model, qat.QATConfig(bits=3, group_size=32, sym=False, init="gptq"), calib=ids,
                         ptq_config=ptq, progress=False)
    qat.convert_(model)
    for n in names:
        a, b = model.get_submodule(n), ref.get_submodule(n)
        assert torch.equal(a.qweight, b.qweight) and torch.equal(a.scales, b.scales) and torch.equal(a.zeros, b.zeros)
    with pytest.raises(ValueError, match="calibration data"):
        qat.prepare_(make_tiny("llama"), qat.QATConfig(bits=3, group_size=32, init="gptq"))
    with pytest.raises(ValueError, match="act_order"):
        qat.prepare_(make_tiny("llama"), qat.QATConfig(bits=3, group_size=32, init="gptq"), calib=ids,
                     ptq_config=GPTQConfig(bits=3, group_size=32, act_order=True, n_samples=8, seq_len=32))


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_init_from_awq_starts_from_awqs_model(name):
    from quantcore import AWQConfig

    ids = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(4))
    ptq = AWQConfig(bits=3, group_size=32, sym=False, n_samples=8, seq_len=32, n_grid=5, clip_grid=5)
    ref = make_tiny(name)
    quantcore.quantize_(ref, ptq, calib=ids, progress=False)
    model = make_tiny(name)
    names = qat.prepare_(model, qat.QATConfig(bits=3, group_size=32, sym=False, init="awq"), calib=ids,
                         ptq_config=ptq, progress=False)
    with torch.no_grad():
        fake = model(ids).logits
        torch.testing.assert_close(fake, ref(ids).logits, rtol=1e-4, atol=1e-4)  # AWQ's model, simulated
    kept = [n for n in names if ref.get_submodule(n).input_scale is not None]
    if name == "gpt2":
        assert kept  # c_proj after GELU: no fold, the scale stays on the layer
    qat.convert_(model)
    for n in names:
        a, b = model.get_submodule(n), ref.get_submodule(n)
        assert torch.equal(a.qweight, b.qweight) and torch.equal(a.scales, b.scales) and torch.equal(a.zeros, b.zeros)
        assert (a.input_scale is None) == (b.input_scale is None)
        if a.input_scale is not None:
            assert torch.equal(a.input_scale, b.input_scale)
    with pytest.raises(TypeError, match="AWQConfig"):
        qat.prepare_(make_tiny(name), qat.QATConfig(bits=3, group_size=32, init="awq"), calib=ids,
                     ptq_config=quantcore.GPTQConfig(bits=3, group_size=32))


@pytest.mark.skipif(not (torch.cuda.is_available() and quantcore._C.cuda_kernels),
                    reason="needs a CUDA GPU and a build with QUANTCORE_ENABLE_CUDA=ON")
@pytest.mark.parametrize("group,scale_rows,sym,snap", [(32, 24, True, False), (64, 24, False, False),
                                                       (128, 1, False, False), (32, 24, True, True),
                                                       (64, 24, False, True)])
def test_cuda_kernels_match_the_cpu_kernel(group, scale_rows, sym, snap):
    g = torch.Generator().manual_seed(group)
    x = torch.randn(24, 128, generator=g) * 0.2
    scale = torch.rand(scale_rows, 128 // group, generator=g) * 0.02 + 0.01
    zero = None if sym else torch.randint(2, 14, scale.shape, generator=g).float()
    if snap:  # raw learnable parameters, snapped by the kernels (fp16 grid, LSQ factor)
        scale[0, 0] = -1.0
        zero = zero + torch.rand(scale.shape, generator=g) * 3 - 1.5 if zero is not None else None
        fq = qat.fake_quantize
        qat_fake = lambda *a: fq(*a, torch.float16, 0.25)  # noqa: E731
        bwd = lambda *a: torch.ops.quantcore.qat_fake_quantize_backward(*a, torch.float16, 0.25)  # noqa: E731
    else:
        qat_fake, bwd = qat.fake_quantize, torch.ops.quantcore.qat_fake_quantize_backward
    upstream = torch.randn(24, 128, generator=g)
    cuda = lambda t: t.cuda() if t is not None else None  # noqa: E731
    y = qat_fake(x, scale, zero, 4, group)
    y_gpu = qat_fake(x.cuda(), scale.cuda(), cuda(zero), 4, group)
    assert torch.equal(y_gpu.cpu(), y)
    want = bwd(upstream, x, scale, zero, 4, group)
    got = bwd(upstream.cuda(), x.cuda(), scale.cuda(), cuda(zero), 4, group)
    assert torch.equal(got[0].cpu(), want[0])
    for a, b in zip(got[1:], want[1:]):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-5)
    # bf16 in and out on the GPU (no fp32 copies): the CPU kernel's values, rounded once.
    xb, ub = x.bfloat16(), upstream.bfloat16()
    yb = qat_fake(xb.cuda(), scale.cuda(), cuda(zero), 4, group)
    assert yb.dtype == torch.bfloat16 and torch.equal(yb.cpu(), qat_fake(xb, scale, zero, 4, group))
    gb = bwd(ub.cuda(), xb.cuda(), scale.cuda(), cuda(zero), 4, group)
    wb = bwd(ub, xb, scale, zero, 4, group)
    assert gb[0].dtype == torch.bfloat16 and torch.equal(gb[0].cpu(), wb[0])
    torch.testing.assert_close(gb[1].cpu(), wb[1], rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(not (torch.cuda.is_available() and quantcore._C.cuda_kernels),
                    reason="needs a CUDA GPU and a build with QUANTCORE_ENABLE_CUDA=ON")
def test_qat_trains_and_converts_on_cuda():
    model = make_tiny("llama").cuda()
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1)).cuda()
    qat.prepare_(model, qat.QATConfig(bits=4, group_size=32, sym=False))
    _, losses = train(model, ids, 5, lr=3e-3)
    assert losses[-1] < losses[0]
    with torch.no_grad():
        fake = model(ids).logits
    qat.convert_(model)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, fake, rtol=1e-3, atol=1e-3)


def test_gradient_accumulation_equals_one_large_batch():
    cfg = qat.QATConfig(bits=4, group_size=32, sym=False, activation="int8_per_token")
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(6))
    whole, parts = make_tiny("llama"), make_tiny("llama")
    qat.prepare_(whole, cfg)
    qat.prepare_(parts, cfg)
    whole(ids, labels=ids).loss.backward()
    for half in ids.split(2):
        (parts(half, labels=half).loss / 2).backward()
    for (name, a), (_, b) in zip(whole.named_parameters(), parts.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("fmt", ["gptq", "compressed-tensors"])
def test_converted_models_export_to_the_ecosystem_formats(fmt, tmp_path):
    model = make_tiny("llama")
    qat.prepare_(model, qat.QATConfig(bits=4, group_size=32, sym=fmt == "gptq"))
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(7))
    train(model, ids, 2)
    qat.convert_(model)
    loaded = quantcore.load_quantized(quantcore.save_quantized(model, tmp_path / "q", format=fmt))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
