"""Training-step overhead of QAT: forward + backward + AdamW of a Llama-shaped
model (random weights) in float vs with every decoder linear fake-quantized
(``quantcore.qat``, W4 g128, learnable LSQ scales), on the same batches.

Run: python benchmarks/bench_qat_step.py [--device cuda] [--layers 8 --hidden 2048 --mlp 5632]
     [--batch 4 --seq-len 512] [--dtype bfloat16] [--json FILE]
Prints the median step time of each and the ratio (issue 6's target: <= 1.3x).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from quantcore import qat


def build(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32000, hidden_size=args.hidden, intermediate_size=args.mlp,
                      num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                      num_key_value_heads=max(1, args.hidden // 512), max_position_embeddings=4096)
    torch.manual_seed(0)
    return LlamaForCausalLM._from_config(cfg, dtype=getattr(torch, args.dtype)).to(args.device)


def step_times(model, batches, steps):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    times = []
    for i in range(steps):
        ids = batches[i % len(batches)]
        if ids.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ids.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times[2:])[len(times[2:]) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--mlp", type=int, default=2816)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 32000, (args.batch, args.seq_len), generator=g).to(args.device) for _ in range(4)]
    out = {"args": {k: v for k, v in vars(args).items() if k != "json"}}
    model = build(args)
    out["float_s"] = step_times(model, batches, args.steps)
    del model
    model = build(args)
    qat.prepare_(model, qat.QATConfig(bits=4, group_size=128))
    out["qat_s"] = step_times(model, batches, args.steps)
    out["overhead"] = out["qat_s"] / out["float_s"]
    if args.device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
