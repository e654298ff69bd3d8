"""HF -> GGUF export and GGUF -> HF loading: round trips on tiny models of every
supported architecture, gguf-py (llama.cpp's library) as the reader of our
files, and llama.cpp's own files as the reference where set-up prepared them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

import quantcore  # noqa: E402
from quantcore.gguf import GGMLType, GGUFReader  # noqa: E402
from quantcore.gguf.mixtures import tensor_type  # noqa: E402

from gguf_files import gemma3_q4_k_m, smollm2_q4_1  # noqa: E402


def _smollm2_dir():
    try:
        return quantcore.assets.demo_model_dir()
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def bpe_tokenizer_dir(tmp_path_factory):
    """SmolLM2's byte-level BPE tokenizer files (llama.cpp knows its pre-tokenizer)."""
    src = _smollm2_dir()
    if src is None:
        pytest.skip("the demo model's tokenizer is not prepared (scripts/prepare_assets.py)")
    d = tmp_path_factory.mktemp("bpe_tok")
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src / f).is_file():
            shutil.copy(src / f, d / f)
    return d


@pytest.fixture(scope="module")
def spm_tokenizer_dir(tmp_path_factory):
    """A small SentencePiece-style BPE (byte fallback), built in memory."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in "▁abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
    merges = [("▁", "t"), ("▁t", "h"), ("▁th", "e"), ("a", "n"), ("e", "r"), ("i", "n"), ("o", "n")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tk.normalizer = normalizers.Replace(" ", "▁")
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    d = tmp_path_factory.mktemp("spm_tok")
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                            pad_token="<pad>").save_pretrained(d)
    return d, len(vocab)


def _tiny(arch, vocab, hidden=256, layers=2):
    import transformers

    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    cls, cfg_cls, extra = {
        "llama": ("LlamaForCausalLM", "LlamaConfig", dict(tie_word_embeddings=False)),
        "mistral": ("MistralForCausalLM", "MistralConfig", {}),
        "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", dict(tie_word_embeddings=True)),
        "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", dict(head_dim=64)),
        "gemma": ("GemmaForCausalLM", "GemmaConfig", dict(head_dim=64)),
        "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", dict(head_dim=64, sliding_window=16,
                                                                 query_pre_attn_scalar=64)),
    }[arch]
    cfg = getattr(transformers, cfg_cls)(**common, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, cls)(cfg).eval()
    with torch.no_grad():  # visible norms, so Gemma's (1 + w) storage matters
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def _checkpoint(tmp_path, arch, bpe_tokenizer_dir, spm_tokenizer_dir):
    if arch.startswith("gemma"):
        tok_dir, vocab = spm_tokenizer_dir
    else:
        tok_dir, vocab = bpe_tokenizer_dir, 49152
    model = _tiny(arch, vocab)
    d = tmp_path / f"{arch}-hf"
    model.save_pretrained(d)
    for f in tok_dir.iterdir():
        shutil.copy(f, d / f.name)
    return model, d


ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma3"]
IDS = torch.tensor([[2, 5, 17, 40, 99, 120, 33, 7, 250, 64]])


@pytest.mark.parametrize("arch", ARCHS)
def test_f32_export_loads_back_to_the_same_logits(tmp_path, arch, bpe_tokenizer_dir, spm_tokenizer_dir):
    model, d = _checkpoint(tmp_path, arch, bpe_tokenizer_dir, spm_tokenizer_dir)
    report = quantcore.export_gguf(d, tmp_path / "m.gguf", "F32", progress=False)
    assert report.file_bytes == (tmp_path / "m.gguf").stat().st_size
    back = quantcore.load_gguf(tmp_path / "m.gguf", progress=False)
    with torch.no_grad():
        assert torch.allclose(back(IDS).logits, model(IDS).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K_M"])
def test_quantized_export_reads_in_gguf_py_and_stays_close(tmp_path, arch, qtype, bpe_tokenizer_dir,
                                                          spm_tokenizer_dir):
    model, d = _checkpoint(tmp_path, arch, bpe_tokenizer_dir, spm_tokenizer_dir)
    path = tmp_path / "m.gguf"
    report = quantcore.export_gguf(d, path, qtype, progress=False)
    theirs = gguf.GGUFReader(path)
    ours = GGUFReader(path)
    assert theirs.get_field("general.architecture").contents() == ours.metadata["general.architecture"]
    assert theirs.get_field("general.file_type").contents() == {"Q8_0": 7, "Q4_K_M": 15}[qtype]
    n_layers = model.config.num_hidden_layers
    heads, kv = model.config.num_attention_heads, model.config.num_key_value_heads
    for t in theirs.tensors:
        info = ours.info(t.name)
        want, _ = tensor_type(qtype, t.name, info.shape, n_layers=n_layers, n_gqa=heads // kv,
                              tied_output="output.weight" not in ours)
        assert int(t.tensor_type) == int(want) == int(info.ggml_type), t.name
        # gguf-py's dequantization of our bytes equals ours, bit for bit.
        with np.errstate(all="ignore"):
            ref = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        assert np.array_equal(ref.reshape(-1), ours.tensor(t.name).numpy().reshape(-1)), t.name
    assert {name for name, *_ in report.tensors} == {t.name for t in theirs.tensors}
    back = quantcore.load_gguf(path, progress=False)
    with torch.no_grad():
        a, b = back(IDS).logits, model(IDS).logits
    rel = float((a - b).norm() / b.norm())
    assert rel < {"Q8_0": 0.05, "Q4_K_M": 0.45}[qtype], rel  # random tiny models amplify errors


def test_imatrix_export_weights_the_error_where_inputs_are_large(tmp_path, bpe_tokenizer_dir, spm_tokenizer_dir):
    model, d = _checkpoint(tmp_path, "llama", bpe_tokenizer_dir, spm_tokenizer_dir)
    texts = ["the quick brown fox jumps over the lazy dog " * 8] * 8
    imatrix = quantcore.gguf.collect_imatrix(d, texts, n_samples=8, seq_len=32, progress=False)
    key = "model.layers.0.mlp.down_proj.weight"
    assert set(imatrix) >= {key, "model.layers.1.self_attn.q_proj.weight"}
    assert imatrix[key].shape == (512,) and bool((imatrix[key] >= 0).all())
    plain = quantcore.export_gguf(d, tmp_path / "plain.gguf", "Q4_K_M", progress=False)
    weighted = quantcore.export_gguf(d, tmp_path / "imx.gguf", "Q4_K_M", imatrix=imatrix, progress=False)
    assert weighted.imatrix and not plain.imatrix
    a, b = GGUFReader(tmp_path / "plain.gguf"), GGUFReader(tmp_path / "imx.gguf")
    w = dict(model.named_parameters())[key].detach()
    err = lambda r: float((imatrix[key] * (r.tensor("blk.0.ffn_down.weight") - w) ** 2).sum())
    assert err(b) < err(a)
    # calib= collects the same statistics itself.
    again = quantcore.export_gguf(d, tmp_path / "imx2.gguf", "Q4_K_M", calib=texts, n_samples=8, seq_len=32,
                                  progress=False)
    assert again.imatrix and (tmp_path / "imx2.gguf").read_bytes() == (tmp_path / "imx.gguf").read_bytes()


def test_bad_inputs(tmp_path, bpe_tokenizer_dir, spm_tokenizer_dir):
    model, d = _checkpoint(tmp_path, "llama", bpe_tokenizer_dir, spm_tokenizer_dir)
    with pytest.raises(ValueError, match="unknown GGUF type"):
        quantcore.export_gguf(d, tmp_path / "x.gguf", "Q4_K_X", progress=False)
    (tmp_path / "exists.gguf").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        quantcore.export_gguf(d, tmp_path / "exists.gguf", "Q8_0", progress=False)
    no_tok = tmp_path / "no-tok"
    model.save_pretrained(no_tok)
    with pytest.raises(ValueError, match="tokenizer.json"):
        quantcore.export_gguf(no_tok, tmp_path / "x.gguf", "Q8_0", progress=False)
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=64, n_head=4, vocab_size=300)).save_pretrained(gpt2)
    with pytest.raises(ValueError, match="supports"):
        quantcore.export_gguf(gpt2, tmp_path / "x.gguf", "Q8_0", progress=False)
    with pytest.raises(ValueError, match="tokenizer"):
        quantcore.export_gguf(model, tmp_path / "x.gguf", "Q8_0", progress=False)
    assert not (tmp_path / "x.gguf").exists()
    with pytest.raises(quantcore.gguf.GGUFError):
        quantcore.load_gguf(tmp_path / "exists.gguf", progress=False)


@pytest.fixture(scope="module")
def llama_cpp_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama_cpp")
    return {"smollm2": smollm2_q4_1(d), "gemma3": gemma3_q4_k_m(d)}


def test_smollm2_export_matches_llama_cpp_file(tmp_path, llama_cpp_files):
    theirs_path, src = llama_cpp_files["smollm2"], _smollm2_dir()
    if theirs_path is None or src is None:
        pytest.skip("SmolLM2's GGUF wheel or HF directory is not prepared")
    quantcore.export_gguf(src, tmp_path / "ours.gguf", "Q4_1", progress=False)
    ours, theirs = GGUFReader(tmp_path / "ours.gguf"), GGUFReader(theirs_path)
    assert {t.name for t in ours.tensors} == {t.name for t in theirs.tensors}
    for t in theirs.tensors:
        assert ours.info(t.name).shape == t.shape and ours.info(t.name).ggml_type == t.ggml_type
        # The HF weights are llama.cpp's Q4_1 values; quantizing them again gives the same values.
        assert torch.equal(ours.tensor(t.name), theirs.tensor(t.name)), t.name
    for key, value in theirs.metadata.items():
        if key.startswith(("tokenizer.", "llama.")):
            assert ours.metadata.get(key) == value, key


def test_gemma3_export_matches_llama_cpp_file(tmp_path, llama_cpp_files):
    theirs_path = llama_cpp_files["gemma3"]
    try:
        src = quantcore.assets.gemma3_model_dir()
    except FileNotFoundError:
        src = None
    if theirs_path is None or src is None:
        pytest.skip("Gemma 3 is not prepared (scripts/prepare_assets.py --gemma3)")
    quantcore.export_gguf(src, tmp_path / "ours.gguf", "Q4_K_M", progress=False)
    ours, theirs = GGUFReader(tmp_path / "ours.gguf"), GGUFReader(theirs_path)
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for t in theirs.tensors:
        assert ours.info(t.name).ggml_type == t.ggml_type, t.name
        a, b = ours.tensor(t.name), theirs.tensor(t.name)
        assert float((a - b).norm() / b.norm()) < 0.01, t.name  # the HF weights went through bf16
    for key in ("gemma3.embedding_length", "gemma3.attention.key_length", "gemma3.rope.freq_base",
                "gemma3.attention.sliding_window", "tokenizer.ggml.model", "tokenizer.ggml.bos_token_id"):
        assert ours.metadata[key] == theirs.metadata[key], key


@pytest.mark.parametrize("t", [GGMLType.Q8_0, GGMLType.Q6_K, GGMLType.Q4_K, GGMLType.Q4_0, GGMLType.Q3_K,
                               GGMLType.Q2_K])
def test_gptq_compensation_lowers_the_output_error_of_every_block_type(t):
    from quantcore.gguf.compensate import gptq_quantize_blocks

    g = torch.Generator().manual_seed(0)
    n, rows = 512, 48
    X = torch.randn(2048, n, generator=g) @ (torch.randn(n, n, generator=g) / n ** 0.5 + torch.eye(n))
    X[:, 3] *= 8
    W = torch.randn(rows, n, generator=g) * 0.05
    H = torch.zeros(n, n)
    torch.ops.quantcore.gptq_hessian_update(H, X, 0)
    H0 = H.clone()
    deq = lambda b: torch.ops.quantcore.gguf_dequantize(b, int(t), n)
    err = lambda wq: float((X @ (W - wq).T).norm())
    weighted = deq(torch.ops.quantcore.gguf_quantize(W, int(t), (X * X).mean(0)))
    compensated = gptq_quantize_blocks(W, H, t)
    assert torch.equal(H, H0)
    assert compensated.shape == weighted.shape[:1] + (n // gguf.GGML_QUANT_SIZES[t][0] * gguf.GGML_QUANT_SIZES[t][1],)
    assert err(deq(compensated)) < err(weighted)
    with pytest.raises(ValueError, match="multiple"):
        gptq_quantize_blocks(W[:, :100], H[:100, :100], GGMLType.Q4_K)


def test_gptq_export_runs_end_to_end(tmp_path, bpe_tokenizer_dir, spm_tokenizer_dir):
    model, d = _checkpoint(tmp_path, "qwen3", bpe_tokenizer_dir, spm_tokenizer_dir)
    texts = ["the quick brown fox jumps over the lazy dog " * 8] * 8
    report = quantcore.export_gguf(d, tmp_path / "g.gguf", "Q4_K_M", calib=texts, gptq=True, n_samples=8,
                                   seq_len=32, progress=False)
    assert report.gptq and "GPTQ" in report.summary()
    back = quantcore.load_gguf(tmp_path / "g.gguf", progress=False)
    with torch.no_grad():
        rel = float((back(IDS).logits - model(IDS).logits).norm() / model(IDS).logits.norm())
    assert rel < 0.45
    with pytest.raises(ValueError, match="calib"):
        quantcore.export_gguf(d, tmp_path / "h.gguf", "Q4_K_M", gptq=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".quantcore")) == []
