"""Load benchmark for `codescaler serve`, on loopback only, side by side with in-process scoring.

    python bench/serve_load.py --threads 1          # tiny random RM (HTTP + batching overhead only)
    python bench/serve_load.py --model DIR --dtype bfloat16 --requests 2048 --clients 64

One run measures the same requests three ways:
  server      `codescaler serve` in its own process on 127.0.0.1 (a free port); C concurrent callers in this
              process post single-sample requests to /score through `RewardClient` (OpenRLHF's and verl's
              per-sample mode); the server merges them into batches. Every answer is checked against
              in-process scoring of the same pair, so a misrouted answer fails the run.
  per-call    in-process `RewardScorer.score` once per request, one after another (no batching: what a
              per-sample reward function gets).
  one-call    in-process `RewardScorer.score` on all requests at once (the batching upper bound).
Throughput is pairs per second; latency is per request (for per-call, the call itself, with no queueing).
The tiny random model makes the forward almost free, so its numbers measure HTTP + batching overhead, not
a real RM; pass --model for a real one. The callers' HTTP client (httpx) costs about 2 ms of CPU a request,
so on a small machine the server row is bounded by the load generator as much as by the server.
"""

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from codescaler.client import RewardClient  # noqa: E402
from codescaler.extract import extract_code  # noqa: E402
from codescaler.scorer import RewardScorer, ScorerConfig  # noqa: E402
from codescaler.server import percentiles  # noqa: E402


def workload(n: int) -> list[tuple[str, str]]:
    """n distinct (problem, response) pairs of mixed length; every fifth response has no code."""
    out = []
    for i in range(n):
        statement = f"Problem {i % 50}: given a list of integers, " + "return the running maximum. " * (1 + i % 8)
        body = "".join(f"        acc = max(acc, x * {j})\n" for j in range(1 + i % 12))
        if i % 5 == 4:
            response = f"I am not sure about problem {i}."
        else:
            response = f"Here is solution {i}:\n```python\ndef solve(xs):\n    acc = 0\n    for x in xs:\n{body}" \
                       f"    return acc\n```\n"
        out.append((statement, response))
    return out


def stats(latencies_s: list[float], n_items: int, wall_s: float) -> dict:
    p = percentiles([x * 1000 for x in latencies_s], (50, 99))
    return {"pairs/s": n_items / wall_s, "p50 ms": p["p50"], "p99 ms": p["p99"], "wall s": wall_s}


def start_server(args) -> tuple[subprocess.Popen, str]:
    """`codescaler serve` on 127.0.0.1, any free port; returns (process, url) once it answers."""
    cmd = [sys.executable, "-m", "codescaler", "serve", "--host", "127.0.0.1", "--port", "0",
           "--model", args.model, "--dtype", args.dtype, "--device", args.device, "--log-level", "warning",
           "--max-wait-ms", str(args.max_wait_ms), "--max-batch-items", str(args.max_batch_items)]
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if " at http://127.0.0.1:" in line:
            return proc, line.split(" at ")[1].split()[0]
    proc.wait()
    raise RuntimeError("the server did not start:\n" + "".join(lines))


def stop_server(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


async def drive(url: str, pairs, clients: int) -> tuple[list, list[float], float, dict]:
    """`clients` concurrent callers, each posting one pair at a time until all pairs are done."""
    client = RewardClient(url, retries=2, timeout=300, max_connections=clients)
    results, latencies, next_i = [None] * len(pairs), [], 0

    async def caller():
        nonlocal next_i
        while next_i < len(pairs):
            i = next_i
            next_i += 1
            t0 = time.perf_counter()
            [results[i]] = await client.ascore([pairs[i][0]], [pairs[i][1]])
            latencies.append(time.perf_counter() - t0)

    await client.ahealth()  # the first connection is not part of the measurement
    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    wall = time.perf_counter() - t0
    metrics = await client.ametrics()
    await client.aclose()
    return results, latencies, wall, metrics


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="RM directory or hub id; default: a tiny random Qwen3 RM")
    p.add_argument("--dtype", default="float32", help="float32/bfloat16/float16/auto")
    p.add_argument("--device", default="auto", help="auto/cpu/cuda")
    p.add_argument("--requests", type=int, default=512, help="single-sample requests (and pairs) in all")
    p.add_argument("--clients", type=int, default=64, help="concurrent callers")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's batching wait")
    p.add_argument("--max-batch-items", type=int, default=256, help="the server's cap on pairs per scorer call")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch on both sides (0 = torch's default); on a shared, busy machine 1 "
                        "avoids OpenMP oversubscription, which made 2 threads 8x slower than 1 here")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    if args.model is None:
        from serve_helpers import tiny_rm_dir

        args.model = tiny_rm_dir(tempfile.mkdtemp(prefix="serve-bench-"))
        print("model: tiny random Qwen3 RM (2 layers, hidden 64): measures overhead, not a real RM")
    pairs = workload(args.requests)
    with_code = sum(extract_code(r) is not None for _, r in pairs)
    print(f"workload: {len(pairs)} pairs, {with_code} with extractable code (the rest score 0 without the model)")

    proc, url = start_server(args)
    try:
        served, lat, wall, metrics = asyncio.run(drive(url, pairs, args.clients))
    finally:
        stop_log = stop_server(proc)
    rows = {"server": stats(lat, len(pairs), wall)}

    scorer = RewardScorer(ScorerConfig(model=args.model, dtype=args.dtype, device=args.device))
    scorer.score([pairs[0][0]], [pairs[0][1]])  # warm up
    lat, t0 = [], time.perf_counter()
    for prompt, response in pairs:
        t = time.perf_counter()
        scorer.score([prompt], [response])
        lat.append(time.perf_counter() - t)
    rows["per-call"] = stats(lat, len(pairs), time.perf_counter() - t0)

    t0 = time.perf_counter()
    local = scorer.score([a for a, _ in pairs], [b for _, b in pairs])
    one = time.perf_counter() - t0
    rows["one-call"] = stats([one], len(pairs), one)

    # every caller got the answer for its own pair (scores differ across batch shapes only by float noise)
    wrong = [i for i, (a, b) in enumerate(zip(served, local)) if a.code != b.code or abs(a.reward - b.reward) > 1e-3]
    max_diff = max(abs(a.reward - b.reward) for a, b in zip(served, local))

    print(f"device {scorer.device}, dtype {scorer.dtype}, {len(pairs)} requests of 1 pair, "
          f"{args.clients} concurrent callers, max_wait {args.max_wait_ms} ms, server in its own process")
    print(f"{'way':<10} {'pairs/s':>10} {'p50 ms':>10} {'p99 ms':>10} {'wall s':>8}")
    for name, r in rows.items():
        print(f"{name:<10} {r['pairs/s']:>10.1f} {r['p50 ms']:>10.1f} {r['p99 ms']:>10.1f} {r['wall s']:>8.2f}")
    b = metrics["batches"]
    print(f"server: {b['scorer_calls']} scorer calls, mean {b['mean_items_per_call']} pairs/call, "
          f"max {b['max_requests_per_call']} requests/call, {b['scorer_seconds']} s in the scorer, "
          f"errors {metrics['errors']}")
    print(f"server answers vs in-process: {len(wrong)} wrong, max |reward diff| {max_diff:.2e}")
    print(f"server/per-call throughput: {rows['server']['pairs/s'] / rows['per-call']['pairs/s']:.2f}x")
    if "stopped after finishing" not in stop_log:
        print("server did not stop cleanly:\n" + stop_log[-2000:])
        return 1
    return 0 if not wrong and metrics["errors"]["4xx"] == metrics["errors"]["5xx"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
