"""Streaming quantization of checkpoint directories (python/quantcore/streaming.py)
and the `quantcore quantize` / `quantcore info` CLI: the result equals in-memory
quantize_ + save_quantized, the input is never modified, bad inputs give one
error line, and an interrupted run leaves nothing that looks complete."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import quantcore
from quantcore import AWQConfig, GPTQConfig, RTNConfig
from quantcore.cli import main
from quantcore.streaming import quantize_checkpoint

from conftest import make_tiny

IDS = torch.randint(0, 26, (2, 16), generator=torch.Generator().manual_seed(0))
CALIB = torch.randint(0, 26, (8, 16), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def src(tmp_path, char_tokenizer):
    def build(name="llama"):
        model = make_tiny(name)
        path = tmp_path / f"src-{name}"
        model.save_pretrained(path, max_shard_size="100KB")  # several shards
        char_tokenizer.save_pretrained(path)
        return model, path
    return build


def digest(path):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


def in_memory(model, cfg):
    ref = make_tiny("gpt2" if "GPT2" in type(model).__name__ else "llama")
    ref.load_state_dict(model.state_dict())
    quantcore.quantize_(ref, cfg, progress=False, **({} if isinstance(cfg, RTNConfig) else {"calib": CALIB}))
    return ref


CASES = [("llama", RTNConfig(bits=4, group_size=32), "quantcore"),
         ("gpt2", RTNConfig(bits=4, group_size=32, sym=False), "gptq_v2"),
         ("llama", GPTQConfig(bits=4, group_size=32, act_order=True, n_samples=8, seq_len=16), "gptq"),
         ("llama", AWQConfig(bits=4, group_size=32, n_samples=8, seq_len=16, n_grid=4, clip_grid=4,
                             unfolded="skip"), "awq"),
         ("llama", AWQConfig(bits=4, group_size=32, n_samples=8, seq_len=16, n_grid=4, clip_grid=4), "quantcore"),
         ("llama", RTNConfig(bits=3, group_size=32, sym=False), "compressed-tensors")]


@pytest.mark.parametrize("name,cfg,fmt", CASES, ids=[f"{n}-{c.method}-{f}" for n, c, f in CASES])
def test_streaming_equals_in_memory_quantization(src, tmp_path, name, cfg, fmt):
    model, path = src(name)
    before = digest(path)
    out, report = quantize_checkpoint(path, tmp_path / "out", cfg, format=fmt, progress=False,
                                      max_shard_bytes=20_000, calib=None if isinstance(cfg, RTNConfig) else CALIB)
    assert digest(path) == before  # the input is only read
    assert (out / "model.safetensors.index.json").is_file() and (out / "tokenizer.json").is_file()
    assert len(report.layers) == 14 if name == "llama" else len(report.layers) == 8
    loaded = quantcore.load_quantized(out)
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, in_memory(model, cfg)(IDS).logits)
    from safetensors import safe_open  # our shard writer's files read back with the reference reader

    shard = sorted(out.glob("model-*.safetensors"))[0]
    with safe_open(str(shard), framework="pt") as f:
        key = next(iter(f.keys()))
        assert torch.equal(f.get_tensor(key), quantcore.checkpoint_io.TensorSource(out).get(key))


def test_interrupted_run_leaves_no_output(src, tmp_path, monkeypatch):
    _, path = src()
    from quantcore import streaming

    calls = []

    def failing_done(self, li, block):
        calls.append(li)
        if li == 1:
            raise KeyboardInterrupt
        return original(self, li, block)

    original = streaming._BlockStream.done
    monkeypatch.setattr(streaming._BlockStream, "done", failing_done)
    with pytest.raises(KeyboardInterrupt):
        quantize_checkpoint(path, tmp_path / "out", RTNConfig(group_size=32), progress=False)
    assert calls == [0, 1]
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dirs left


def test_cli_quantize_info_and_eval(src, tmp_path, capsys):
    _, path = src()
    (tmp_path / "calib.txt").write_text("the quick brown fox jumps over the lazy dog " * 40)
    assert main(["quantize", str(path), "-o", str(tmp_path / "q"), "--method", "gptq", "--group-size", "32",
                 "--calib", str(tmp_path / "calib.txt"), "--n-samples", "4", "--seq-len", "16",
                 "--format", "gptq", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "q")]) == 0
    text = capsys.readouterr().out
    assert "gptq checkpoint" in text and "14 quantized layers" in text
    qcfg = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert qcfg["quant_method"] == "gptq" and qcfg["bits"] == 4 and qcfg["group_size"] == 32
    assert main(["eval", str(tmp_path / "q"), "--text", str(tmp_path / "calib.txt"), "--seq-len", "16",
                 "--max-windows", "2"]) == 0
    assert "perplexity" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["nonempty", "missing", "badjson", "quantized", "arch", "truncated", "mismatch",
                                  "nocalib", "format"])
def test_cli_bad_inputs_give_one_error_line(src, tmp_path, capsys, case):
    _, path = src()
    out = tmp_path / "out"
    args = ["quantize", str(path), "-o", str(out), "--group-size", "32", "--no-progress"]
    cfg_file = path / "config.json"
    if case == "nonempty":
        out.mkdir()
        (out / "x").write_text("x")
    elif case == "missing":
        args[1] = str(tmp_path / "nope")
    elif case == "badjson":
        cfg_file.write_text("{")
    elif case == "quantized":
        cfg = json.loads(cfg_file.read_text())
        cfg["quantization_config"] = {"quant_method": "gptq"}
        cfg_file.write_text(json.dumps(cfg))
    elif case == "arch":
        cfg = json.loads(cfg_file.read_text())
        cfg["architectures"] = ["NoSuchForCausalLM"]
        cfg_file.write_text(json.dumps(cfg))
    elif case == "truncated":
        shard = sorted(path.glob("model-*.safetensors"))[1]
        shard.write_bytes(shard.read_bytes()[:100])
    elif case == "mismatch":
        cfg = json.loads(cfg_file.read_text())
        cfg["intermediate_size"] = 96
        cfg_file.write_text(json.dumps(cfg))
    elif case == "nocalib":
        args += ["--method", "gptq"]
    elif case == "format":
        args += ["--format", "exl2"]
    capsys.readouterr()  # drop what building the fixture printed
    with pytest.raises(SystemExit) if case == "format" else _nothing():
        rc = main(args)
        assert rc == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
    if case != "nonempty":
        assert not out.exists()


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_quantize_on_a_checkpoint_directory_streams_it(src, tmp_path):
    model, path = src()
    report = quantcore.quantize_(str(path), RTNConfig(group_size=32), out_dir=tmp_path / "out", format="gptq",
                                 progress=False)
    assert len(report.layers) == 14
    loaded = quantcore.load_quantized(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, in_memory(model, RTNConfig(group_size=32))(IDS).logits)
    with pytest.raises(ValueError, match="out_dir"):
        quantcore.quantize_(str(path), RTNConfig(group_size=32))


@pytest.mark.parametrize("cfg", [GPTQConfig(bits=4, group_size=32, n_samples=8, seq_len=16),
                                 GPTQConfig(bits=4, group_size=32, n_samples=8, seq_len=16, true_sequential=False),
                                 AWQConfig(bits=4, group_size=32, n_samples=8, seq_len=16, n_grid=4, clip_grid=4)],
                         ids=["gptq", "gptq-not-sequential", "awq"])
def test_linears_calibration_never_reaches_get_rtn(src, tmp_path, monkeypatch, cfg):
    """A linear inside a decoder layer that never runs on the calibration text (an
    unrouted expert, an unused branch) is rounded to nearest while its block is
    loaded, in memory and when streaming (where its weights are freed after the block)."""
    from transformers.models.llama import modeling_llama

    def mlp_without_up(self, x):  # up_proj never runs
        return self.down_proj(self.act_fn(self.gate_proj(x)))

    model, path = src("llama")
    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", mlp_without_up)
    out, report = quantize_checkpoint(path, tmp_path / "out", cfg, format="quantcore", progress=False, calib=CALIB)
    up = [r for r in report.layers if r.name.endswith("mlp.up_proj")]
    assert len(up) == 2 and len(report.layers) == 14
    assert all("not reached by calibration" in report.notes[r.name] for r in up)
    loaded = quantcore.load_quantized(out)
    ref = in_memory(model, cfg)
    for name, _ in [(r.name, r) for r in up]:
        a, b = loaded.get_submodule(name), ref.get_submodule(name)
        assert isinstance(a, quantcore.QuantLinear) and isinstance(b, quantcore.QuantLinear)
        rtn = quantcore.QuantLinear.from_linear(model.get_submodule(name), RTNConfig(bits=4, group_size=32))
        assert torch.equal(a.qweight, rtn.qweight) and torch.equal(b.qweight, rtn.qweight)
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, ref(IDS).logits)
