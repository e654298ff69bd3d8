"""QAT under DistributedDataParallel (two CPU processes, gloo): the learnable
scales are ordinary parameters, so DDP averages their gradients like any
other, and two ranks on half batches train exactly as one process on the whole
batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from quantcore import qat

STEPS = 3


def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 32))
    qat.prepare_(model, qat.QATConfig(bits=4, group_size=32, sym=False, activation="int8_per_token"))
    return model


def batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 64, generator=g), torch.randn(8, 32, generator=g)) for _ in range(STEPS)]


def train(model, data, rank=0, world=1):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for x, y in data:
        n = x.shape[0] // world
        x, y = x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = torch.nn.parallel.DistributedDataParallel(build())
        train(model, batches(), rank, world)
        if rank == 0:
            torch.save(model.module.state_dict(), os.path.join(out_dir, "ddp.pt"))
        # No rank tears gloo down while the other still uses it (a rank that did
        # aborted with "terminate called without an active exception", 2 runs in 6).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_on_two_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp_state = torch.load(tmp_path / "ddp.pt")
    single = build()
    train(single, batches())
    state = single.state_dict()
    assert any(k.endswith("weight_scale") for k in ddp_state) and any(k.endswith("weight_zero") for k in ddp_state)
    for key, value in state.items():
        torch.testing.assert_close(ddp_state[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert not torch.equal(state["0.weight_scale"], build().state_dict()["0.weight_scale"])  # the scales trained
