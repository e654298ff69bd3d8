"""QAT against PTQ on a real model (issue 6's results), and the training step's
overhead.

Run: python benchmarks/bench_qat.py [--model smollm2|gemma3] [--bits 3] [--steps 200] [--json FILE]

The model is fine-tuned through fake quantization (``quantcore.qat``, init from
RTN's grid, learnable LSQ scales) for a fixed budget of steps by distillation:
the loss is the KL divergence from the float model's next-token distribution,
on windows of the calibration half of the text (the evaluation half is never
trained on). Then it is converted to ``QuantLinear`` and its perplexity on the
evaluation half is compared with float, RTN and GPTQ at the same bits and
group size. The training step's time (forward + backward + AdamW) is measured
for the float model and the fake-quantized one on the same batches.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _real_model  # noqa: E402
import quantcore  # noqa: E402
from quantcore import eval as qe, qat  # noqa: E402


def perplexity(model, rm, seq_len, windows=None) -> float:
    return qe.perplexity(model, rm.evaluation, seq_len=seq_len, max_windows=windows or None, bos_token_id=rm.bos,
                         progress=False)


def train_windows(rm, seq_len: int, seed: int) -> torch.Tensor:
    return quantcore.calibration.calibration_windows(rm.calibration_text, rm.tokenizer, 4096, seq_len, seed)


def step_time(model, batch, opt) -> float:
    """One plain language-model training step (forward, backward, AdamW)."""
    t0 = time.perf_counter()
    loss = model(batch, labels=batch).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def distill_loss(model, teacher, batch):
    with torch.no_grad():
        target = F.log_softmax(teacher(batch).logits.float(), -1)
    logp = F.log_softmax(model(batch).logits.float(), -1)
    return F.kl_div(logp, target, log_target=True, reduction="batchmean") / batch.shape[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", choices=["smollm2", "gemma3"])
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--scale-lr", type=float, default=1e-3)
    ap.add_argument("--eval-seq-len", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=0, help="windows to score (0: the whole evaluation half)")
    ap.add_argument("--gptq-samples", type=int, default=64, help="GPTQ baseline's calibration windows of 512")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    rm = _real_model.load(args.model)
    gs = rm.group_size
    out = {"model": args.model, "bits": args.bits, "group_size": gs, "steps": args.steps, "batch": args.batch,
           "seq_len": args.seq_len}
    base = rm.model
    out["float_ppl"] = perplexity(base, rm, args.eval_seq_len, args.eval_windows)
    print(f"float ppl {out['float_ppl']:.3f}", flush=True)

    m = copy.deepcopy(base)
    quantcore.quantize_(m, quantcore.RTNConfig(bits=args.bits, group_size=gs), progress=False)
    out["rtn_ppl"] = perplexity(m, rm, args.eval_seq_len, args.eval_windows)
    print(f"RTN ppl {out['rtn_ppl']:.3f}", flush=True)
    m = copy.deepcopy(base)
    quantcore.quantize_(m, quantcore.GPTQConfig(bits=args.bits, group_size=gs, act_order=True, n_samples=args.gptq_samples,
                                                seq_len=512), calib=rm.calibration_text, tokenizer=rm.tokenizer,
                        progress=False)
    out["gptq_ppl"] = perplexity(m, rm, args.eval_seq_len, args.eval_windows)
    print(f"GPTQ ppl {out['gptq_ppl']:.3f}", flush=True)
    del m

    windows = train_windows(rm, args.seq_len, seed=1)
    student = copy.deepcopy(base)
    qat.prepare_(student, qat.QATConfig(bits=args.bits, group_size=gs))
    scales = [p for n, p in student.named_parameters() if n.endswith(("weight_scale", "weight_zero"))]
    others = [p for n, p in student.named_parameters() if p.requires_grad and not n.endswith(
        ("weight_scale", "weight_zero"))]
    opt = torch.optim.AdamW([{"params": others, "lr": args.lr, "weight_decay": 0.0},
                             {"params": scales, "lr": args.scale_lr, "weight_decay": 0.0}])
    student.train()
    losses = []
    t0 = time.perf_counter()
    for step in tqdm(range(args.steps), desc="QAT", unit="step"):
        idx = torch.randint(0, windows.shape[0], (args.batch,), generator=torch.Generator().manual_seed(step))
        batch = windows[idx]
        loss = distill_loss(student, base, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    out["train_seconds"] = time.perf_counter() - t0
    out["losses"] = losses
    student.eval()
    qat.convert_(student)
    out["qat_ppl"] = perplexity(student, rm, args.eval_seq_len, args.eval_windows)
    gap_rtn = out["rtn_ppl"] - out["float_ppl"]
    out["qat_recovered_of_rtn_gap"] = (out["rtn_ppl"] - out["qat_ppl"]) / gap_rtn if gap_rtn > 0 else float("nan")
    print(f"QAT ppl {out['qat_ppl']:.3f} (recovers {out['qat_recovered_of_rtn_gap']:.0%} of RTN's gap; "
          f"KD loss {losses[0]:.4f} -> {sum(losses[-10:]) / 10:.4f})", flush=True)

    # Step overhead: float vs fake-quantized training steps on the same batches.
    timing = {}
    for name in ("float", "qat"):
        m = copy.deepcopy(base)
        if name == "qat":
            qat.prepare_(m, qat.QATConfig(bits=args.bits, group_size=gs))
        m.train()
        o = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-6)
        times = [step_time(m, windows[i * args.batch:(i + 1) * args.batch], o) for i in range(6)]
        timing[name] = sorted(times[1:])[len(times[1:]) // 2]
        del m
    out["step_seconds"] = timing
    out["step_overhead"] = timing["qat"] / timing["float"]
    print(f"training step: float {timing['float']:.3f} s, QAT {timing['qat']:.3f} s "
          f"({out['step_overhead']:.2f}x)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
