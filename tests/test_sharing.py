"""Shared prefixes: grouping by leading tokens, the packed row, its attention, and the scores it gives."""

import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from codescaler.packing import varlen_attention
from codescaler.scorer import RewardScorer, ScorerConfig
from codescaler.sharing import common_length, plan_groups, prefix_groups, shared_forward_tokens, shared_inputs
from tests.test_packing import tiny_model

P = list(range(100, 120))  # 20 tokens a few inputs begin with
Q = list(range(200, 230))


def test_common_length_known_answers():
    assert common_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_length([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_length([], [1]) == 0
    assert common_length([5] * 1000 + [1], [5] * 1000 + [2]) == 1000
    assert common_length([9, 1], [1, 9]) == 0


@pytest.mark.parametrize("seqs, expected", [
    # three share P (two of them P + [1], but a group of three sharing 20 saves more than a pair sharing 21)
    ([P + [1, 2], P + [1, 3], P + [4], Q + [5], [1, 2, 3]], [(20, [0, 1, 2]), (0, [3]), (0, [4])]),
    # identical inputs share all but the last token; an input that is another's start keeps its last token
    ([P + [7], P + [7]], [(20, [0, 1])]),
    ([P + [1], P + [1, 2, 3], P + [1]], [(20, [0, 2, 1])]),
    # one input sharing only 20 tokens with three that share 100: left alone, not a group of four sharing 20
    ([P + [9] * 50] + [list(range(1000, 1100)) + [k] for k in (1, 2, 3)], [(0, [0]), (100, [1, 2, 3])]),
    ([list(range(1000, 1020)) + [9] * 50] + [list(range(1000, 1100)) + [k] for k in (1, 2, 3)],
     [(0, [0]), (100, [1, 2, 3])]),
    # two problems that begin alike: two groups, each with its whole prefix
    ([P + Q + [1], P + Q + [2], P + [7] * 30 + [1], P + [7] * 30 + [2]], [(50, [0, 1]), (50, [2, 3])]),
    # fewer than MIN_SHARED (16) tokens in common: nothing shared
    ([P[:10] + [1] * 20, P[:10] + [2] * 20], [(0, [0]), (0, [1])]),
])
def test_prefix_groups_known_answers(seqs, expected):
    assert sorted(prefix_groups(seqs), key=lambda g: g[1]) == sorted(expected, key=lambda g: g[1])


def test_prefix_groups_cover_every_input_once_and_share_what_they_claim():
    rng = random.Random(0)
    heads = [[rng.randrange(300) for _ in range(rng.randint(10, 60))] for _ in range(6)]
    seqs = [rng.choice(heads) + [rng.randrange(300) for _ in range(rng.randint(1, 40))] for _ in range(200)]
    seqs += [list(s) for s in seqs[:10]]  # exact duplicates too
    groups = prefix_groups(seqs)
    assert sorted(i for _, m in groups for i in m) == list(range(len(seqs)))
    for shared, members in groups:
        assert shared == 0 or len(members) > 1
        assert all(len(seqs[i]) > shared and seqs[i][:shared] == seqs[members[0]][:shared] for i in members)
    saved = sum((len(m) - 1) * s for s, m in groups)
    assert saved > 0.5 * sum(map(len, seqs)) * 0.4  # the heads are ~35 of ~55 tokens, shared ~33 times each


def test_plan_groups_respects_the_budget_and_the_batch_size():
    rng = random.Random(1)
    seqs = [P * 3 + [rng.randrange(300) for _ in range(rng.randint(1, 50))] for _ in range(40)]
    seqs += [[rng.randrange(300) for _ in range(rng.randint(1, 100))] for _ in range(30)]
    lengths = [len(s) for s in seqs]
    groups = prefix_groups(seqs)
    assert (60, list(range(40))) in [(s, sorted(m)) for s, m in groups]
    plan = plan_groups(groups, lengths, token_budget=300, max_batch_size=8)
    assert sorted(i for batch in plan for _, m in batch for i in m) == list(range(len(seqs)))
    for batch in plan:
        assert sum(len(m) for _, m in batch) <= 8
        assert sum(s + sum(lengths[i] - s for i in m) for s, m in batch) <= 300
        assert all(s == 60 or s == 0 for s, _ in batch) and all(len(m) > 1 for s, m in batch if s)
    assert sum(1 for batch in plan for s, _ in batch if s) >= 5  # the 40 split in parts, each keeping the prefix


def test_shared_forward_tokens_known_answer():
    seqs = [P + [1, 2], P + [3], P + [4, 5, 6], Q]  # 20 shared by three, then 2 + 1 + 3 of their own; Q alone
    assert shared_forward_tokens(seqs, token_budget=1000) == 20 + 6 + 30
    assert shared_forward_tokens(seqs, token_budget=25) == (20 + 2 + 1) + (20 + 3) + 30  # the group split in two
    assert shared_forward_tokens([Q, P], token_budget=100) == 50


def test_shared_row_layout_known_answer():
    seqs = [[1, 2, 3], P + [4, 5], P + [6], [7, 8]]
    row = shared_inputs(seqs, [(0, [0]), (20, [1, 2]), (0, [3])])
    assert row["input_ids"][0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8] + P  # inputs' own tokens, then the prefix
    assert row["position_ids"][0].tolist() == [0, 1, 2, 20, 21, 20, 0, 1] + list(range(20))
    assert row["codescaler_cu_seqlens"].tolist() == [0, 3, 5, 6, 8, 28]
    assert row["codescaler_cu_kv"].tolist() == [0, 3, 25, 46, 48, 68]
    prefix_rows = list(range(8, 28))
    assert row["codescaler_kv_index"].tolist() == ([0, 1, 2] + prefix_rows + [3, 4] + prefix_rows + [5] + [6, 7]
                                                   + prefix_rows)
    # nothing shared: exactly the plain packed row
    plain = shared_inputs(seqs, [(0, [0]), (0, [1]), (0, [2]), (0, [3])])
    assert set(plain) == {"input_ids", "position_ids", "codescaler_cu_seqlens"}


def test_shared_attention_equals_each_inputs_own_causal_attention():
    torch.manual_seed(0)
    seqs = [[1, 2, 3], P + [4, 5, 9, 9], P + [6], [7, 8]]
    row = shared_inputs(seqs, [(0, [0]), (20, [1, 2]), (0, [3])])
    n_rows = row["input_ids"].shape[1]
    q, k, v = torch.randn(1, 4, n_rows, 8), torch.randn(1, 2, n_rows, 8), torch.randn(1, 2, n_rows, 8)
    # the prefix's rows of q/k/v stand for every member's first 20 tokens
    out, _ = varlen_attention(None, q, k, v, None, scaling=0.3, **{k_: row[k_] for k_ in row if k_.startswith("code")})
    cu, kv, cu_kv = row["codescaler_cu_seqlens"].tolist(), row["codescaler_kv_index"], row["codescaler_cu_kv"].tolist()
    for s in range(len(cu) - 1):  # each segment: full causal attention over its input, its own rows kept
        keys = kv[cu_kv[s]:cu_kv[s + 1]]
        want = F.scaled_dot_product_attention(q[:, :, keys], k[:, :, keys], v[:, :, keys], is_causal=True, scale=0.3,
                                              enable_gqa=True).transpose(1, 2)[:, -(cu[s + 1] - cu[s]):]
        assert torch.allclose(out[:, cu[s]:cu[s + 1]], want, atol=1e-6)


def grouped_seqs(rng, problems=5, per_problem=6):
    """Inputs the way GRPO sends them: each problem's chat start followed by different code tails."""
    seqs = []
    for _ in range(problems):
        head = [rng.randrange(1, 300) for _ in range(rng.randint(20, 60))]
        seqs += [head + [rng.randrange(1, 300) for _ in range(rng.randint(1, 40))] for _ in range(per_problem)]
    seqs += [[rng.randrange(1, 300) for _ in range(rng.randint(1, 90))] for _ in range(4)]  # and a few alone
    seqs.append(list(seqs[0]))  # and a duplicate
    rng.shuffle(seqs)
    return seqs


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("trim", [True, False])
def test_shared_prefix_scores_equal_unshared_with_fewer_tokens(kind, trim):
    seqs = grouped_seqs(random.Random(7))
    cfg = dict(model="t", dtype="float32", device="cpu", max_length=128, token_budget=256, packing="on",
               trim_last_layer=trim)
    tok = SimpleNamespace(pad_token_id=0)
    shared = RewardScorer(ScorerConfig(**cfg), tokenizer=tok, model=tiny_model(kind))
    unshared = RewardScorer(ScorerConfig(**cfg, share_prefix="off"), tokenizer=tok, model=tiny_model(kind))
    padded = RewardScorer(ScorerConfig(**{**cfg, "packing": "off"}), tokenizer=tok, model=tiny_model(kind))
    assert shared.share and not unshared.share and not padded.share
    tokens = []  # tokens each forward embedded
    shared.model.model.embed_tokens.register_forward_hook(lambda m, args, out: tokens.append(args[0].numel()))
    got = shared.score_ids(seqs)
    groups = prefix_groups(seqs)
    assert sum(tokens) == sum(map(len, seqs)) - sum((len(m) - 1) * s for s, m in groups) < 0.75 * sum(map(len, seqs))
    assert max(abs(a - b) for a, b in zip(got, unshared.score_ids(seqs))) <= 1e-5
    assert max(abs(a - b) for a, b in zip(got, padded.score_ids(seqs))) <= 1e-5


def test_shared_prefixes_in_a_backbone_not_known_to_trim():
    """GPT-NeoX runs its own forward (no trimmed last layer): the key index reaches its attention all the same."""
    from transformers import GPTNeoXConfig, GPTNeoXForSequenceClassification

    def neox():
        torch.manual_seed(0)
        return GPTNeoXForSequenceClassification(GPTNeoXConfig(
            vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_labels=1, pad_token_id=0)).eval()

    seqs = grouped_seqs(random.Random(9))
    cfg = dict(model="t", dtype="float32", device="cpu", max_length=128, token_budget=256)
    tok = SimpleNamespace(pad_token_id=0)
    shared = RewardScorer(ScorerConfig(**cfg, packing="on"), tokenizer=tok, model=neox())
    padded = RewardScorer(ScorerConfig(**cfg, packing="off"), tokenizer=tok, model=neox())
    assert shared.share and not shared.trim
    got = shared.score_ids(seqs)
    assert max(abs(a - b) for a, b in zip(got, padded.score_ids(seqs))) <= 1e-5


def test_shared_prefixes_under_compile_give_the_eager_scores():
    seqs = grouped_seqs(random.Random(8), problems=3, per_problem=4)
    cfg = dict(model="t", dtype="float32", device="cpu", max_length=128, token_budget=256, packing="on")
    tok = SimpleNamespace(pad_token_id=0)
    eager = RewardScorer(ScorerConfig(**cfg, share_prefix="off"), tokenizer=tok, model=tiny_model("qwen3"))
    compiled = RewardScorer(ScorerConfig(**cfg, compile=True), tokenizer=tok, model=tiny_model("qwen3"))
    got = compiled.score_ids(seqs)
    assert max(abs(a - b) for a, b in zip(got, eager.score_ids(seqs))) <= 1e-4


def test_scoring_text_shares_a_problems_prompt(smollm2_tokenizer):
    """Real chat template: a problem's responses share its whole rendered prompt, and the scores do not move."""
    prompts = ["Write a function that adds two numbers and returns their sum, for any two integers a and b."] * 4 \
        + ["Reverse a string."] * 2
    codes = ["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return b + a\n",
             "def add(a, b):\n    return a - b\n", "add = lambda a, b: a + b\n",
             "def rev(s):\n    return s[::-1]\n", "def rev(s):\n    return ''.join(reversed(s))\n"]
    scorer = RewardScorer(ScorerConfig(model="t", dtype="float32", device="cpu", packing="on"),
                          tokenizer=smollm2_tokenizer, model=tiny_smollm_rm(smollm2_tokenizer))
    seqs = [ids for ids, _ in scorer.encode(prompts, codes)]
    groups = prefix_groups(seqs)
    shared = {s for s, m in groups if len(m) == 4}
    assert shared and min(shared) >= len(smollm2_tokenizer(prompts[0])["input_ids"])  # the whole prompt at least
    unshared = RewardScorer(ScorerConfig(model="t", dtype="float32", device="cpu", packing="on", share_prefix="off"),
                            tokenizer=smollm2_tokenizer, model=scorer.model)
    got, want = scorer.score_code(prompts, codes), unshared.score_code(prompts, codes)
    assert max(abs(a[0] - b[0]) for a, b in zip(got, want)) <= 1e-5


def tiny_smollm_rm(tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    return LlamaForSequenceClassification(cfg).eval()


def test_share_prefix_config_is_checked_and_auto_is_on_on_the_cpu():
    with pytest.raises(ValueError, match="share_prefix='maybe'.*auto"):
        ScorerConfig(share_prefix="maybe")
    with pytest.raises(ValueError, match="needs packed batches"):
        ScorerConfig(share_prefix="on", packing="off")
    tok = SimpleNamespace(pad_token_id=0)
    cfg = dict(model="t", dtype="float32", device="cpu", max_length=128)
    assert RewardScorer(ScorerConfig(**cfg), tokenizer=tok, model=tiny_model("llama")).share
    assert not RewardScorer(ScorerConfig(**cfg, share_prefix="off"), tokenizer=tok, model=tiny_model("llama")).share
    assert not RewardScorer(ScorerConfig(**cfg, packing="off"), tokenizer=tok, model=tiny_model("llama")).share


def test_cli_takes_share_prefix():
    import argparse

    from codescaler.scorer import add_scorer_args, scorer_config_from_args

    p = argparse.ArgumentParser()
    add_scorer_args(p)
    assert scorer_config_from_args(p.parse_args(["--share-prefix", "off"])).share_prefix == "off"
    assert scorer_config_from_args(p.parse_args([])).share_prefix == "auto"
    with pytest.raises(SystemExit):
        p.parse_args(["--share-prefix", "sometimes"])
