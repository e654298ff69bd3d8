"""Host memory that CUDA torch itself holds (the floor under any GPU-side
conversion's peak RSS), step by step, and the GPTQ solver's time on the GPU for a
contiguous Hessian and for a strided view of it (the copying path).

Run on the GPU machine: python benchmarks/bench_cuda_host_floor.py
"""
import os, time, sys
def rss():
    with open('/proc/self/statm') as f: return int(f.read().split()[1])*4096/2**20
print(f"start {rss():.0f} MiB")
import torch; print(f"import torch {rss():.0f}")
import transformers, quantcore; print(f"import transformers+quantcore {rss():.0f}")
x=torch.zeros(1, device='cuda'); torch.cuda.synchronize(); print(f"cuda init {rss():.0f}")
a=torch.randn(512,512,device='cuda'); (a@a).sum().item(); print(f"fp32 matmul {rss():.0f}")
b=a.bfloat16(); (b@b).sum().item(); print(f"bf16 matmul {rss():.0f}")
h=a@a.T+512*torch.eye(512,device='cuda')
torch.linalg.solve_triangular(torch.linalg.cholesky(h.cpu()).cuda(), a, upper=False).sum().item(); print(f"solve_triangular {rss():.0f}")
torch.linalg.cholesky_ex(h)[0].sum().item(); print(f"cholesky_ex (cusolver) {rss():.0f}")
n=6912
H=torch.zeros(n,n,device='cuda'); torch.ops.quantcore.gptq_hessian_update(H, torch.randn(4096,n,device='cuda'), 0)
W=torch.randn(2560,n,device='cuda').bfloat16()*0.02
for label, Hx in (("in place", H), ("copy (strided H)", H.t())):
    for act in (False, True):
        for rep in range(2):
            torch.cuda.synchronize(); t=time.perf_counter()
            torch.ops.quantcore.gptq_quantize(W, Hx, 4, 128, True, act, False, 0.01, 128, False, torch.float16); torch.cuda.synchronize()
        print(f"gptq n={n} {label} act_order={act}: {time.perf_counter()-t:.3f}s; rss {rss():.0f}")
n=2560
H=torch.zeros(n,n,device='cuda'); torch.ops.quantcore.gptq_hessian_update(H, torch.randn(4096,n,device='cuda'), 0)
W=torch.randn(6912,n,device='cuda').bfloat16()*0.02
for label, Hx in (("in place", H), ("copy (strided H)", H.t())):
    for rep in range(2):
        torch.cuda.synchronize(); t=time.perf_counter()
        torch.ops.quantcore.gptq_quantize(W, Hx, 4, 128, True, True, False, 0.01, 128, False, torch.float16); torch.cuda.synchronize()
    print(f"gptq n={n} {label} act_order=True: {time.perf_counter()-t:.3f}s")
