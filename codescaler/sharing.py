"""Shared prefixes: a problem's N responses scored with the problem's tokens computed once.

In GRPO and best-of-N the RM sees each problem with N codes, so N chats that begin with the same tokens
(template, problem statement, assistant header). Under causal attention a token's hidden states do not
depend on anything after it, so a packed row can hold that common prefix once, followed by each input's
own tail, whose queries attend to the prefix's keys and values and then to their own (causal, aligned at
the end: flash-attention's `causal` when a segment has fewer queries than keys). Same scores, (N-1) x
prefix fewer tokens through every layer. With SmolLM2's template, half of a HumanEval chat's tokens are the
problem's, so 8 codes a problem need 55% of the tokens (bench/score_groups_cpu.py: 26-33% on best-of-8 pools,
2.7-3.6x faster on the CPU). With CUDA `share_prefix="auto"` is off until a GPU run has checked it (scorer.py).

Grouping looks only at token ids, so it needs nothing from the caller: any inputs that start with the same
MIN_SHARED or more tokens share what they have in common. Each input keeps at least its last token of its
own, where its score is read. A row lays out every input's own segment first, then the groups' prefixes;
`codescaler_kv_index` lists, segment after segment, the row positions of each segment's keys (its group's
prefix, then itself), so the inputs' keys are one leading slice of it (what the trimmed last layer reads).
"""

from __future__ import annotations

from typing import Sequence

from codescaler.packing import packed_inputs, plan_packed

# Tokens: a shorter common start is not worth a group (each group adds an attention segment and a gather).
MIN_SHARED = 16

Group = tuple[int, list[int]]  # (tokens shared by all members, member indices); (0, [i]) for a lone input


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token lists (binary search over C-level slice compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def prefix_groups(seqs: Sequence[list[int]], min_shared: int = MIN_SHARED) -> list[Group]:
    """Inputs grouped by common leading tokens, each group with the length every member shares.

    Inputs that agree on their first `min_shared` tokens are sorted, so that any run of neighbours shares
    the least of its neighbouring pairs' common lengths, and each sorted run is cut where that saves the
    most tokens (`_runs`)."""
    groups: list[Group] = []
    buckets: dict[tuple, list[int]] = {}
    for i, s in enumerate(seqs):
        if len(s) > min_shared:
            buckets.setdefault(tuple(s[:min_shared]), []).append(i)
        else:
            groups.append((0, [i]))
    for members in buckets.values():
        members.sort(key=lambda i: seqs[i])
        # shared[k]: what members k-1 and k may share, each keeping its last token (where its score is read)
        shared = [0] + [min(common_length(seqs[a], seqs[b]), len(seqs[a]) - 1, len(seqs[b]) - 1)
                        for a, b in zip(members, members[1:])]
        groups += [(n, members[lo:hi + 1]) for lo, hi, n in _runs(shared, 0, len(members) - 1, min_shared)[1]]
    return groups


def _runs(shared: list[int], lo: int, hi: int, min_shared: int, depth: int = 0) -> tuple[int, list]:
    """(tokens saved, [(first, last, tokens shared), ...]): the runs covering sorted members lo..hi that
    save the most. The members lo..hi have the least neighbour value in common: either they form one group
    that saves (hi - lo) x that, or they split wherever that least value is and each part does its best.
    A lone member shares nothing."""
    if lo == hi:
        return 0, [(lo, hi, 0)]
    least = min(shared[lo + 1:hi + 1])
    whole = (hi - lo) * least if least >= min_shared else -1
    if depth >= 64 and whole >= 0:  # a deep chain (inputs each extending the last): settle for one group
        return whole, [(lo, hi, least)]
    saving, runs, start = 0, [], lo
    for k in [k for k in range(lo + 1, hi + 1) if shared[k] == least] + [hi + 1]:
        part_saving, part_runs = _runs(shared, start, k - 1, min_shared, depth + 1)
        saving, runs, start = saving + part_saving, runs + part_runs, k
    return (whole, [(lo, hi, least)]) if whole >= saving else (saving, runs)


def plan_groups(groups: Sequence[Group], lengths: Sequence[int], token_budget: int,
                max_batch_size: int) -> list[list[Group]]:
    """Groups into batches of at most `token_budget` row tokens (a group costs its prefix once plus its
    members' own tokens) and `max_batch_size` inputs; a group too big for one batch is split in parts that
    each keep the prefix."""
    parts: list[Group] = []
    for shared, members in groups:
        part: list[int] = []
        cost = shared
        for i in members:
            own = lengths[i] - shared
            if part and (cost + own > token_budget or len(part) == max_batch_size):
                parts.append((shared if len(part) > 1 else 0, part))
                part, cost = [], shared
            part.append(i)
            cost += own
        parts.append((shared if len(part) > 1 else 0, part))
    costs = [shared + sum(lengths[i] - shared for i in members) for shared, members in parts]
    plan = plan_packed(costs, token_budget, max_batch_size, counts=[len(m) for _, m in parts])
    return [[parts[p] for p in batch] for batch in plan]


def shared_forward_tokens(seqs: Sequence[list[int]], token_budget: int, max_batch_size: int = 256) -> int:
    """Tokens that packed scoring with shared prefixes runs through the model for `seqs` (benchmarks report it)."""
    lengths = [len(s) for s in seqs]
    return sum(shared + sum(lengths[i] - shared for i in members)
               for batch in plan_groups(prefix_groups(seqs), lengths, token_budget, max_batch_size)
               for shared, members in batch)


def shared_inputs(seqs: Sequence[list[int]], groups: Sequence[Group]) -> dict:
    """One packed row for `groups` of `seqs` (inputs in group order; see the module doc for the layout).

    Adds to `packed_inputs`' tensors `codescaler_kv_index` and `codescaler_cu_kv` (each segment's keys), or
    is exactly `packed_inputs` when nothing is shared. `codescaler_cu_seqlens` bounds the segments: the
    inputs' first, one each in group order, then one per shared prefix."""
    import torch

    order = [i for _, members in groups for i in members]
    if not any(shared for shared, _ in groups):
        return packed_inputs([seqs[i] for i in order])
    ids: list[int] = []
    positions: list[int] = []
    cu_q, cu_kv, keys = [0], [0], []
    prefix_at = sum(len(seqs[i]) - shared for shared, members in groups for i in members)  # the prefixes' start
    for shared, members in groups:
        for i in members:
            lo = len(ids)
            ids += seqs[i][shared:]
            positions += range(shared, len(seqs[i]))
            keys += [torch.arange(prefix_at, prefix_at + shared), torch.arange(lo, len(ids))]
            cu_q.append(len(ids))
            cu_kv.append(cu_kv[-1] + len(seqs[i]))
        prefix_at += shared
    for shared, members in groups:
        if shared:
            lo = len(ids)
            ids += seqs[members[0]][:shared]
            positions += range(shared)
            keys.append(torch.arange(lo, len(ids)))
            cu_q.append(len(ids))
            cu_kv.append(cu_kv[-1] + shared)
    return {"input_ids": torch.tensor(ids).unsqueeze(0), "position_ids": torch.tensor(positions).unsqueeze(0),
            "codescaler_cu_seqlens": torch.tensor(cu_q, dtype=torch.int32),
            "codescaler_kv_index": torch.cat(keys), "codescaler_cu_kv": torch.tensor(cu_kv, dtype=torch.int32)}
