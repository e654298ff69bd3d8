"""Training-step overhead of QAT: forward + backward + AdamW of a Llama-shaped
model (random weights) in float vs with every decoder linear fake-quantized
(``quantcore.qat``, W4 g128, learnable LSQ scales), on the same batches.

Run: python benchmarks/bench_qat_step.py [--device cuda] [--layers 8 --hidden 2048 --mlp 5632]
     [--batch 4 --seq-len 512] [--dtype bfloat16] [--activation int8_per_token] [--json FILE] [--profile]
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


def train_step(model, ids, opt) -> None:
    """One language-model step (forward, backward, AdamW), finished on the device."""
    loss = model(ids, labels=ids).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if ids.is_cuda:
        torch.cuda.synchronize()


def step_times(model, batches, steps):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    times = []
    for i in range(steps):
        ids = batches[i % len(batches)]
        if ids.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(model, ids, opt)
        times.append(time.perf_counter() - t0)
    return sorted(times[2:])[len(times[2:]) // 2]


def profile_step(model, batch, label):
    """Prints the kernels and operators of one training step by self device time."""
    from torch.profiler import ProfilerActivity, profile

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if batch.is_cuda else [])
    for i in range(3):  # the last step is recorded, after warm-up
        with profile(activities=acts) if i == 2 else _null() as prof:
            train_step(model, batch, opt)
    key = "self_cuda_time_total" if batch.is_cuda else "self_cpu_time_total"
    print(f"--- {label}")
    print(prof.key_averages().table(sort_by=key, row_limit=25))


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


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
    ap.add_argument("--activation", default=None, help="e.g. int8_per_token: also fake-quantize the inputs")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step of each")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 32000, (args.batch, args.seq_len), generator=g).to(args.device) for _ in range(4)]
    out = {"args": {k: v for k, v in vars(args).items() if k != "json"}}
    model = build(args)
    out["float_s"] = step_times(model, batches, args.steps)
    if args.profile:
        profile_step(model, batches[0], "float")
    del model
    model = build(args)
    qat.prepare_(model, qat.QATConfig(bits=4, group_size=128, activation=args.activation))
    out["qat_s"] = step_times(model, batches, args.steps)
    if args.profile:
        profile_step(model, batches[0], "qat")
    out["overhead"] = out["qat_s"] / out["float_s"]
    if args.device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
