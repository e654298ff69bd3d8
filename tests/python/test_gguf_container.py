"""The GGUF container: our writer's files read by gguf-py (llama.cpp's Python
library), gguf-py's files read by us, and hostile files rejected cleanly."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from quantcore.gguf import GGMLType, GGUFError, GGUFReader, GGUFWriter, ValueType  # noqa: E402


def write_sample(path, alignment=32):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 512, generator=g)
    norm = torch.rand(512, generator=g)
    blocks = torch.ops.quantcore.gguf_quantize(w, int(GGMLType.Q4_K))
    writer = GGUFWriter(path, alignment=alignment)
    writer.add("general.architecture", "llama", ValueType.STRING)
    writer.add("llama.block_count", 2, ValueType.UINT32)
    writer.add("llama.attention.layer_norm_rms_epsilon", 1e-5, ValueType.FLOAT32)
    writer.add("tokenizer.ggml.tokens", ["<s>", "a", "ü", ""], ValueType.ARRAY, ValueType.STRING)
    writer.add("tokenizer.ggml.token_type", [3, 1, 1, 5], ValueType.ARRAY, ValueType.INT32)
    writer.add("tokenizer.ggml.add_bos_token", True, ValueType.BOOL)
    writer.add_tensor_info("blk.0.attn_q.weight", (96, 512), GGMLType.Q4_K)
    writer.add_tensor_info("blk.0.attn_norm.weight", (512,), GGMLType.F32)
    writer.add_tensor_info("token_embd.weight", (3, 64), GGMLType.F16)
    writer.begin()
    writer.write_tensor("blk.0.attn_q.weight", blocks.numpy().tobytes())
    writer.write_tensor("blk.0.attn_norm.weight", norm.numpy().tobytes())
    emb = torch.arange(192, dtype=torch.float16).view(3, 64)
    writer.write_tensor("token_embd.weight", emb.numpy().tobytes())
    writer.close()
    return w, blocks, norm, emb


@pytest.mark.parametrize("alignment", [32, 64])
def test_our_file_reads_in_gguf_py_with_the_same_values(tmp_path, alignment):
    path = tmp_path / "m.gguf"
    w, blocks, norm, emb = write_sample(path, alignment)
    r = gguf.GGUFReader(path)
    f = lambda k: r.get_field(k).contents()
    assert f("general.architecture") == "llama" and f("llama.block_count") == 2
    assert f("tokenizer.ggml.tokens") == ["<s>", "a", "ü", ""] and f("tokenizer.ggml.token_type") == [3, 1, 1, 5]
    assert f("tokenizer.ggml.add_bos_token") is True
    assert r.get_field("llama.block_count").types == [gguf.GGUFValueType.UINT32]
    t = {x.name: x for x in r.tensors}
    q = t["blk.0.attn_q.weight"]
    assert q.tensor_type == gguf.GGMLQuantizationType.Q4_K and list(q.shape) == [512, 96]
    assert np.array_equal(np.asarray(q.data), blocks.numpy())
    assert np.array_equal(gguf.quants.dequantize(np.asarray(q.data), q.tensor_type),
                          torch.ops.quantcore.gguf_dequantize(blocks, int(GGMLType.Q4_K), 512).numpy())
    assert np.array_equal(np.asarray(t["blk.0.attn_norm.weight"].data), norm.numpy())
    assert np.array_equal(np.asarray(t["token_embd.weight"].data), emb.numpy())
    # And our reader agrees.
    ours = GGUFReader(path)
    assert ours.metadata["tokenizer.ggml.tokens"] == ["<s>", "a", "ü", ""]
    assert ours.metadata_types["tokenizer.ggml.token_type"] == (ValueType.ARRAY, ValueType.INT32)
    assert ours.alignment == alignment
    assert torch.equal(ours.tensor("blk.0.attn_q.weight"), torch.ops.quantcore.gguf_dequantize(blocks, 12, 512))
    assert torch.equal(ours.tensor("token_embd.weight"), emb.float())


def test_gguf_py_files_read_with_our_reader(tmp_path):
    path = tmp_path / "theirs.gguf"
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_uint32("qwen2.block_count", 3)
    w.add_float32("qwen2.rope.freq_base", 1e6)
    w.add_array("tokenizer.ggml.merges", ["a b", "Ġ t"])
    w.add_string("tokenizer.chat_template", "{{ x }}")
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    w.add_tensor("a", gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("b", x[0].copy())
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    r = GGUFReader(path)
    assert r.metadata["general.architecture"] == "qwen2" and r.metadata["qwen2.block_count"] == 3
    assert r.metadata["tokenizer.ggml.merges"] == ["a b", "Ġ t"]
    assert r.metadata["tokenizer.chat_template"] == "{{ x }}"
    assert np.array_equal(r.tensor("a").numpy(), gguf.quants.dequantize(
        gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0))
    assert np.array_equal(r.tensor("b").numpy(), x[0])


def test_writer_refuses_bad_declarations_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / "x.gguf"
    w = GGUFWriter(path)
    with pytest.raises(GGUFError, match="multiple of"):
        w.add_tensor_info("t", (4, 100), GGMLType.Q4_K)
    with pytest.raises(GGUFError, match="longer than 63"):
        w.add_tensor_info("x" * 64, (4, 32), GGMLType.Q8_0)
    with pytest.raises(GGUFError, match="UINT8"):
        w.add("k", 300, ValueType.UINT8)
    with pytest.raises(GGUFError, match="empty arrays"):
        w.add("k", [], ValueType.ARRAY, ValueType.INT32)
    w.add_tensor_info("t", (2, 32), GGMLType.Q8_0)
    w.add_tensor_info("u", (32,), GGMLType.F32)
    with pytest.raises(GGUFError, match="duplicate"):
        w.add_tensor_info("t", (2, 32), GGMLType.Q8_0)
    w.begin()
    with pytest.raises(GGUFError, match="declaration order"):
        w.write_tensor("u", bytes(128))
    with pytest.raises(GGUFError, match="68 declared"):
        w.write_tensor("t", bytes(10))
    w.write_tensor("t", bytes(68))
    with pytest.raises(GGUFError, match="not written"):
        w.close()
    assert not path.exists() and not list(tmp_path.iterdir())
    with pytest.raises(GGUFError, match="power of two"):
        GGUFWriter(path, alignment=48)


def _u64(b, at, v):
    b[at:at + 8] = struct.pack("<Q", v)


def test_hostile_and_truncated_files_give_clean_errors(tmp_path):
    good = tmp_path / "good.gguf"
    write_sample(good)
    data = bytearray(good.read_bytes())
    bad = tmp_path / "bad.gguf"

    def check(blob, match=None):
        bad.write_bytes(bytes(blob))
        with pytest.raises(GGUFError, match=match):
            GGUFReader(bad)

    # Every truncation of the header and of the data.
    header_end = GGUFReader(good).data_start
    for cut in list(range(0, header_end, 7)) + [header_end + 10, len(data) - 1]:
        check(data[:cut])
    check(b"GGUF" + struct.pack("<I", 1) + bytes(16), "version")
    check(b"GGML" + data[4:], "magic")
    huge = bytearray(data)
    _u64(huge, 8, 1 << 62)  # tensor count
    check(huge, "implausible")
    huge = bytearray(data)
    _u64(huge, 24, 1 << 60)  # length of the first key
    check(huge)
    # The tokens array: count patched to 2^40.
    pos = bytes(data).index(b"tokenizer.ggml.tokens") + len("tokenizer.ggml.tokens") + 4 + 4
    huge = bytearray(data)
    _u64(huge, pos, 1 << 40)
    check(huge, "does not fit")
    # Wrong metadata value type and wrong tensor type.
    vt = bytes(data).index(b"llama.block_count") + len("llama.block_count")
    wrong = bytearray(data)
    wrong[vt:vt + 4] = struct.pack("<I", 77)
    check(wrong, "unknown metadata type")
    r = GGUFReader(good)
    name = bytes(data).index(b"blk.0.attn_q.weight") + len("blk.0.attn_q.weight")
    type_at = name + 4 + 16
    wrong = bytearray(data)
    wrong[type_at:type_at + 4] = struct.pack("<I", 4)  # retired Q4_2
    check(wrong, "ggml type 4")
    # Offsets that do not follow, dims that overflow, too many dims.
    off = bytearray(data)
    _u64(off, type_at + 4, 64)
    check(off, "offset")
    big = bytearray(data)
    _u64(big, name + 4 + 8, 1 << 50)  # rows of attn_q
    check(big)
    dims = bytearray(data)
    dims[name:name + 4] = struct.pack("<I", 9)
    check(dims, "dimensions")
    assert r.tensors[0].name == "blk.0.attn_q.weight"


def test_random_corruption_never_crashes(tmp_path):
    good = tmp_path / "good.gguf"
    write_sample(good)
    data = bytes(good.read_bytes())
    header_end = GGUFReader(good).data_start
    g = np.random.default_rng(0)
    bad = tmp_path / "bad.gguf"
    for _ in range(300):
        blob = bytearray(data)
        for at in g.integers(0, header_end, size=int(g.integers(1, 4))):
            blob[at] = int(g.integers(0, 256))
        bad.write_bytes(bytes(blob))
        try:
            r = GGUFReader(bad)
            for t in r.tensors:
                r.tensor(t.name)
        except (GGUFError, ValueError, KeyError):
            pass  # a clean error; anything else (or a crash) fails the test
