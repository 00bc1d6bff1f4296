"""The GEMM ceiling under the 8B scorer: cuBLAS bf16 matrix products at the CodeScaler-8B layer shapes.

The compiled 8B scorer spends ~82% of its GPU time in these products (bench/score_gpu.py profiles), so their
rate bounds its tokens/s. Each shape is timed with CUDA events (median of --reps after warm-up) on random
data, for a packed batch of M tokens, next to a square 8192^3 product, and once more in a sustained run
(the same product back to back for --sustain-s seconds) to see what clocks hold under a long load.
Writes JSON. Needs only torch and a CUDA GPU.

    python bench/gemm_shapes.py [--out bench/results/gemm_shapes.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

# (name, K, N) of y[M, N] = x[M, K] @ W[N, K]^T in one CodeScaler-8B decoder layer (hidden 4096, 32 query and
# 8 KV heads of 128, intermediate 12288), and the two projections stacked as serving engines do.
LAYER = [("q_or_o", 4096, 4096), ("k_or_v", 4096, 1024), ("gate_or_up", 4096, 12288), ("down", 12288, 4096),
         ("gate_up_stacked", 4096, 24576)]


def time_mm(m: int, k: int, n: int, reps: int) -> float:
    """Median milliseconds of one bf16 x @ w.T with x [m, k] and w [n, k] (the nn.Linear layout)."""
    g = torch.Generator(device="cuda").manual_seed(m + k + n)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=g)
    for _ in range(3):
        x @ w.t()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        x @ w.t()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def sustained(m: int, k: int, n: int, seconds: float) -> dict:
    """TFLOP/s of the same product back to back for `seconds` (first and last tenth of the run apart)."""
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    ms = time_mm(m, k, n, 5)
    count = max(10, int(seconds * 1e3 / ms))
    events = [torch.cuda.Event(enable_timing=True) for _ in range(count + 1)]
    events[0].record()
    for i in range(count):
        x @ w.t()
        events[i + 1].record()
    torch.cuda.synchronize()
    per = [events[i].elapsed_time(events[i + 1]) for i in range(count)]
    tenth = max(1, count // 10)
    rate = lambda xs: round(2 * m * k * n / (sum(xs) / len(xs)) / 1e9, 1)  # noqa: E731 (TFLOP/s from ms)
    return {"products": count, "first_tenth_tflops": rate(per[:tenth]), "last_tenth_tflops": rate(per[-tenth:])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="27243,32768", help="M: tokens in a packed batch (27243: a profiled one)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sustain-s", type=float, default=8.0)
    ap.add_argument("--out", default="bench/results/gemm_shapes.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shapes": {}}
    t0 = time.perf_counter()
    ms = time_mm(8192, 8192, 8192, args.reps)
    report["square_8192"] = {"ms": round(ms, 3), "tflops": round(2 * 8192 ** 3 / ms / 1e9, 1)}
    print(f"8192^3: {report['square_8192']}", flush=True)
    for m in (int(t) for t in args.tokens.split(",")):
        for name, k, n in LAYER:
            ms = time_mm(m, k, n, args.reps)
            row = {"m": m, "k": k, "n": n, "ms": round(ms, 3), "tflops": round(2 * m * k * n / ms / 1e9, 1)}
            report["shapes"][f"{name}_m{m}"] = row
            print(f"{name:16s} M={m}: {row}", flush=True)
    report["sustained_gate_or_up_m32768"] = sustained(32768, 4096, 12288, args.sustain_s)
    report["sustained_square_8192"] = sustained(8192, 8192, 8192, args.sustain_s)
    print(f"sustained: {report['sustained_gate_or_up_m32768']} {report['sustained_square_8192']}", flush=True)
    report["elapsed_s"] = round(time.perf_counter() - t0, 1)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out} after {report['elapsed_s']}s")


if __name__ == "__main__":
    main()
