"""End-to-end decode speed on the GPU: a Llama-shaped model (random weights) in
bf16 vs the same model with every decoder linear as QuantLinear W4 g128.

Run on a GPU with a QUANTCORE_ENABLE_CUDA=ON build:
    python benchmarks/bench_cuda_decode.py [--layers 22 --hidden 2048 --mlp 5632] [--json FILE]
Greedy generation of --new tokens after a 16-token prompt, batch 1, KV cache;
tokens/s of the timed run after a warm-up run. "eager" is plain PyTorch (Python
overhead included); "cudagraph" captures one greedy decode step (forward over a
static KV cache, argmax, next position) in a CUDA graph and replays it, so the
host's overhead is gone and the GPU's time per token is what is measured; with
--graph, also each decode step in torch.compile with mode="reduce-overhead" over a
static cache (transformers' cache updates kept CUDA graphs off in the run of
2026-11-24, so that mode mostly measures compilation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import quantcore


def cudagraph_tokens_per_s(model, new: int) -> float:
    """Greedy decoding with each step replayed from one captured CUDA graph."""
    from transformers import StaticCache

    prompt = 16
    cache = StaticCache(config=model.config, max_cache_len=prompt + new + 8)
    ids = torch.randint(0, model.config.vocab_size, (1, prompt), device="cuda")
    with torch.no_grad():
        logits = model(input_ids=ids, past_key_values=cache, cache_position=torch.arange(prompt, device="cuda"),
                       use_cache=True).logits
        token = logits[:, -1:].argmax(-1)
        pos = torch.full((1,), prompt, dtype=torch.long, device="cuda")

        def step():
            out = model(input_ids=token, past_key_values=cache, cache_position=pos, use_cache=True).logits
            token.copy_(out[:, -1:].argmax(-1))
            pos.add_(1)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the graph (allocations, lazy cache set-up)
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        pos.fill_(prompt)
        for _ in range(4):
            graph.replay()
        pos.fill_(prompt)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(new):
            graph.replay()
        torch.cuda.synchronize()
    return new / (time.perf_counter() - t0)


def tokens_per_s(model, new: int, compile_mode: str) -> float:
    if compile_mode == "cudagraph":
        return cudagraph_tokens_per_s(model, new)
    ids = torch.randint(0, model.config.vocab_size, (1, 16), device="cuda")
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False)
    if compile_mode == "graph":
        kwargs["cache_implementation"] = "static"
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)
    with torch.no_grad():
        model.generate(ids, **kwargs)  # warm-up (and compilation)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(ids, **kwargs)
        torch.cuda.synchronize()
    return new / (time.perf_counter() - t0)


def build(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32000, hidden_size=args.hidden, intermediate_size=args.mlp,
                      num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                      num_key_value_heads=max(1, args.hidden // 512), max_position_embeddings=4096)
    torch.manual_seed(0)
    return LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--mlp", type=int, default=5632)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--graph", action="store_true",
                    help="also time torch.compile(mode='reduce-overhead') steps (slow to compile)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    modes = ("eager", "cudagraph", "graph") if args.graph else ("eager", "cudagraph")
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "shape": vars(args).copy()}
    out["shape"].pop("json")
    out["shape"].pop("graph")
    model = build(args)
    out["params_b"] = sum(p.numel() for p in model.parameters()) / 1e9
    for mode in modes:
        m = build(args).cuda() if mode == "graph" else model.cuda()
        try:
            out[f"bf16_{mode}_tok_s"] = tokens_per_s(m, args.new, mode)
        except Exception as e:  # noqa: BLE001 - report and go on
            out[f"bf16_{mode}_error"] = f"{type(e).__name__}: {e}"[:300]
        if m is not model:
            del m
    model.cpu()
    quantcore.quantize_(model, quantcore.RTNConfig(bits=4, group_size=128), progress=False)
    qbytes = quantcore.quantize.model_bytes(model)
    for mode in modes:
        try:
            out[f"w4_{mode}_tok_s"] = tokens_per_s(model.cuda(), args.new, mode)
        except Exception as e:  # noqa: BLE001
            out[f"w4_{mode}_error"] = f"{type(e).__name__}: {e}"[:300]
    out["w4_model_gib"] = qbytes / 2**30
    for mode in modes:
        if f"w4_{mode}_tok_s" in out and f"bf16_{mode}_tok_s" in out:
            out[f"speedup_{mode}"] = out[f"w4_{mode}_tok_s"] / out[f"bf16_{mode}_tok_s"]
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
