"""Padding-free packing: the batch plan, the packed attention, and models switched to it."""

import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from codescaler.packing import (last_query_attention, packed_inputs, plan_packed, use_varlen_attention,
                                varlen_attention)
from codescaler.records import UserError
from codescaler.scorer import RewardScorer, ScorerConfig, use_packing


def test_plan_packed_best_fit_decreasing_known_answer():
    # longest first: 6 -> new, 5 -> new, 4 -> new, 3 joins 5 (the tightest fit: 8), 2 joins 6 (8)
    assert plan_packed([5, 3, 4, 2, 6], token_budget=8, max_batch_size=8) == [[4, 3], [0, 1], [2]]
    assert plan_packed([1, 1, 1], token_budget=8, max_batch_size=2) == [[0, 1], [2]]
    assert plan_packed([4, 3, 2, 2], token_budget=6, max_batch_size=8) == [[0, 2], [1, 3]]  # 2 -> tightest room (2)
    assert plan_packed([], token_budget=6, max_batch_size=8) == []


def test_plan_packed_covers_every_index_within_the_budget():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(300)]
    plan = plan_packed(lengths, token_budget=256, max_batch_size=7)
    assert sorted(i for b in plan for i in b) == list(range(300))
    assert all(sum(lengths[i] for i in b) <= 256 and len(b) <= 7 for b in plan)
    uncapped = plan_packed(lengths, token_budget=256, max_batch_size=300)
    assert len(uncapped) <= -(-sum(lengths) // 256) + 1  # at the lower bound but one: batches are full


def test_packed_inputs_restart_positions_and_mark_boundaries():
    inputs = packed_inputs([[7, 8, 9], [4], [5, 6]])
    assert inputs["input_ids"].tolist() == [[7, 8, 9, 4, 5, 6]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 0, 0, 1]]
    assert inputs["codescaler_cu_seqlens"].tolist() == [0, 3, 4, 6]
    assert inputs["codescaler_cu_seqlens"].dtype == torch.int32


def test_varlen_attention_equals_attention_per_input():
    torch.manual_seed(0)
    lens = [3, 9, 1, 6]
    hq, hkv, d = 4, 2, 8
    q, k, v = (torch.randn(1, h, sum(lens), d) for h in (hq, hkv, hkv))
    cu = torch.tensor([0, 3, 12, 13, 19], dtype=torch.int32)
    out, weights = varlen_attention(None, q, k, v, None, scaling=0.3, codescaler_cu_seqlens=cu)
    assert weights is None and out.shape == (1, sum(lens), hq, d)
    lo = 0
    for n in lens:  # each input alone, by the textbook formula, KV heads repeated for the grouped query heads
        qi, ki, vi = q[0, :, lo:lo + n], k[0, :, lo:lo + n].repeat_interleave(2, 0), v[0, :, lo:lo + n].repeat_interleave(2, 0)
        scores = (qi @ ki.transpose(1, 2)) * 0.3 + torch.triu(torch.full((n, n), float("-inf")), 1)
        expected = (scores.softmax(-1) @ vi).transpose(0, 1)
        assert torch.allclose(out[0, lo:lo + n], expected, atol=1e-5)
        lo += n


def test_last_query_attention_is_the_last_row_of_causal_attention():
    torch.manual_seed(4)
    lens = [3, 9, 1, 6]
    q, k, v = (torch.randn(sum(lens), h, 8) for h in (4, 2, 2))  # [T, H, D]
    cu = torch.tensor([0, 3, 12, 13, 19], dtype=torch.int32)
    last = cu[1:].long() - 1
    got = last_query_attention(q[last], k, v, cu, max_len=9, scaling=0.3)
    full = varlen_attention(None, *(t.transpose(0, 1).unsqueeze(0) for t in (q, k, v)), None, scaling=0.3,
                            codescaler_cu_seqlens=cu)[0][0]  # [T, H, D]
    assert got.shape == (4, 4, 8) and torch.allclose(got, full[last], atol=1e-6)
    lo = 0
    for i, n in enumerate(lens):  # the textbook formula: the last query sees its whole input, and nothing else
        ki, vi = k[lo:lo + n].repeat_interleave(2, 1), v[lo:lo + n].repeat_interleave(2, 1)  # [n, 4, 8]
        w = (torch.einsum("hd,nhd->hn", q[lo + n - 1], ki) * 0.3).softmax(-1)
        assert torch.allclose(got[i], torch.einsum("hn,nhd->hd", w, vi), atol=1e-6)
        lo += n


def test_varlen_attention_without_boundaries_is_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(1)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8)
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool).tril()
    mask[1, :, :, 3:] = False
    module = torch.nn.Module()
    module.is_causal = True
    got = varlen_attention(module, q, k, v, mask, scaling=0.5)[0]
    assert torch.equal(got, sdpa_attention_forward(module, q, k, v, mask, scaling=0.5)[0])
    assert torch.allclose(got[0], F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.5)[0].transpose(0, 1))


def tiny_llama():
    """SmolLM2's architecture (Llama) in miniature: the CPU default RM's code path."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=0)
    return LlamaForSequenceClassification(cfg).eval()


def test_packed_scores_equal_padded_on_a_llama_model():
    rng = random.Random(2)
    seqs = [[rng.randrange(1, 300) for _ in range(rng.randint(1, 90))] for _ in range(17)]
    tok = SimpleNamespace(pad_token_id=0)
    padded = RewardScorer(ScorerConfig(model="t", dtype="float32", device="cpu", max_length=128, token_budget=256),
                          tokenizer=tok, model=tiny_llama()).score_ids(seqs)
    packed_scorer = RewardScorer(ScorerConfig(model="t", dtype="float32", device="cpu", max_length=128,
                                              token_budget=256, packing="on"), tokenizer=tok, model=tiny_llama())
    assert packed_scorer.model.config._attn_implementation == "codescaler_varlen"
    packed = packed_scorer.score_ids(seqs)
    assert max(abs(a - b) for a, b in zip(padded, packed)) <= 1e-5


@pytest.mark.parametrize("packing", ["on", "off"])
def test_scores_read_back_one_batch_behind_land_in_input_order(packing):
    from codescaler.scorer import plan_batches

    rng = random.Random(5)
    seqs = [[rng.randrange(1, 300) for _ in range(rng.randint(1, 120))] for _ in range(23)]
    scorer = RewardScorer(ScorerConfig(model="t", dtype="float32", device="cpu", max_length=128, token_budget=128,
                                       packing=packing), tokenizer=SimpleNamespace(pad_token_id=0), model=tiny_llama())
    seen: list[int] = []
    scores = scorer.score_ids(seqs, progress=seen.append)
    plan = (plan_packed if packing == "on" else plan_batches)([len(s) for s in seqs], 128, 256)
    assert len(plan) > 5 and seen == [len(b) for b in plan]  # each batch reported once, in plan order
    alone = [scorer.score_ids([s])[0] for s in seqs]
    assert max(abs(a - b) for a, b in zip(scores, alone)) <= 1e-5


def tiny_model(kind):
    """Three-layer Llama, Qwen2 and Qwen3 (CodeScaler's) seq-cls models with grouped KV heads."""
    from transformers import (LlamaConfig, LlamaForSequenceClassification, Qwen2Config,
                              Qwen2ForSequenceClassification, Qwen3Config, Qwen3ForSequenceClassification)

    torch.manual_seed(0)
    kw = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, num_labels=1, pad_token_id=0)
    if kind == "llama":
        return LlamaForSequenceClassification(LlamaConfig(**kw)).eval()
    if kind == "qwen2":
        return Qwen2ForSequenceClassification(Qwen2Config(**kw)).eval()
    return Qwen3ForSequenceClassification(Qwen3Config(**kw, head_dim=16)).eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_last_layer_at_the_last_tokens_gives_the_whole_layers_scores(kind):
    rng = random.Random(6)
    seqs = [[rng.randrange(1, 300) for _ in range(rng.randint(1, 90))] for _ in range(17)]
    cfg = dict(model="t", dtype="float32", device="cpu", max_length=128, token_budget=256)
    tok = SimpleNamespace(pad_token_id=0)
    trimmed = RewardScorer(ScorerConfig(**cfg, packing="on"), tokenizer=tok, model=tiny_model(kind))
    whole = RewardScorer(ScorerConfig(**cfg, packing="on", trim_last_layer=False), tokenizer=tok,
                         model=tiny_model(kind))
    padded = RewardScorer(ScorerConfig(**cfg, packing="off"), tokenizer=tok, model=tiny_model(kind))
    assert trimmed.trim and not whole.trim and not padded.trim
    rows_seen = {}  # rows each layer's MLP ran on
    for i, layer in enumerate(trimmed.model.model.layers):
        layer.mlp.register_forward_hook(lambda m, args, out, i=i: rows_seen.setdefault(i, []).append(
            args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    got = trimmed.score_ids(seqs)
    plan = plan_packed([len(s) for s in seqs], 256, 256)
    assert rows_seen[2] == [len(b) for b in plan]  # the last layer: one row per input
    assert rows_seen[0] == rows_seen[1] == [sum(len(seqs[i]) for i in b) for b in plan]  # the others: every token
    assert max(abs(a - b) for a, b in zip(got, whole.score_ids(seqs))) <= 1e-5
    assert max(abs(a - b) for a, b in zip(got, padded.score_ids(seqs))) <= 1e-5


def test_a_backbone_not_known_to_trim_runs_whole():
    from transformers import GPTNeoXConfig, GPTNeoXForSequenceClassification

    from codescaler.packing import can_trim_last_layer

    torch.manual_seed(0)
    model = GPTNeoXForSequenceClassification(GPTNeoXConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_labels=1, pad_token_id=0)).eval()
    assert not can_trim_last_layer(model.gpt_neox) and can_trim_last_layer(tiny_llama().model)
    scorer = RewardScorer(ScorerConfig(model="t", dtype="float32", device="cpu", max_length=128, packing="on"),
                          tokenizer=SimpleNamespace(pad_token_id=0), model=model)
    assert scorer.packing and not scorer.trim
    assert len(scorer.score_ids([[5, 6, 7], [8]])) == 2


def test_a_switched_model_still_honours_padding_masks():
    model = tiny_llama()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        use_varlen_attention(model)
        after = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(before, after, atol=1e-6)


def test_packing_refuses_a_model_without_sdpa():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_labels=1, pad_token_id=0)
    cfg._attn_implementation = "eager"
    model = LlamaForSequenceClassification(cfg)
    with pytest.raises(UserError, match="attn_implementation='sdpa'"):
        use_varlen_attention(model)


def test_packing_auto_means_an_sdpa_model_with_full_attention():
    sdpa, eager, windowed = tiny_llama(), tiny_llama(), tiny_llama()
    eager.config._attn_implementation = "eager"
    windowed.config.sliding_window = 64  # Mistral-style: packing would let inputs see past their window
    parts = (object(), object())
    assert use_packing("auto", sdpa, *parts) is True
    assert use_packing("auto", eager, *parts) is False
    assert use_packing("auto", windowed, *parts) is False
    assert use_packing("auto", sdpa, None, None) is False  # no backbone/head split: padded batches
    assert use_packing("on", sdpa, *parts) is True
    assert use_packing("off", sdpa, *parts) is False
    with pytest.raises(UserError, match="--packing off"):
        use_packing("on", sdpa, None, None)
    with pytest.raises(UserError, match="sliding window"):
        use_varlen_attention(windowed)
    with pytest.raises(ValueError, match="use one of"):
        ScorerConfig(packing="yes")
    with pytest.raises(ValueError, match="packing='off' or 'auto'"):
        ScorerConfig(packing="on", pad_mask=True)


def test_pad_mask_means_padded_batches():
    scorer = RewardScorer(ScorerConfig(model="t", dtype="float32", device="cpu", max_length=128, pad_mask=True),
                          tokenizer=SimpleNamespace(pad_token_id=0), model=tiny_llama())
    assert scorer.packing is False and scorer.model.config._attn_implementation == "sdpa"


def test_packed_attention_refuses_a_sliding_window():
    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="sliding window"):
        varlen_attention(None, q, q, q, None, codescaler_cu_seqlens=torch.tensor([0, 4], dtype=torch.int32),
                         sliding_window=2)


def test_auto_packing_falls_back_to_padded_batches(monkeypatch, capsys):
    import codescaler.scorer as scorer_mod

    def refuse(model):
        raise UserError("this transformers has no AttentionInterface")

    monkeypatch.setattr(scorer_mod, "use_packing", lambda *a: True)
    monkeypatch.setattr(scorer_mod, "use_varlen_attention", refuse)
    cfg = dict(model="t", dtype="float32", device="cpu", max_length=128, token_budget=256)
    scorer = RewardScorer(ScorerConfig(**cfg), tokenizer=SimpleNamespace(pad_token_id=0), model=tiny_llama())
    assert scorer.packing is False and "padded batches" in capsys.readouterr().err
    assert len(scorer.score_ids([[5, 6, 7], [8]])) == 2
    with pytest.raises(UserError, match="AttentionInterface"):
        RewardScorer(ScorerConfig(**cfg, packing="on"), tokenizer=SimpleNamespace(pad_token_id=0), model=tiny_llama())


@pytest.mark.parametrize("scope", ["layers", "model"])
def test_compiled_scores_equal_eager_ones(scope):
    rng = random.Random(3)
    seqs = [[rng.randrange(1, 300) for _ in range(rng.randint(1, 90))] for _ in range(9)]
    cfg = dict(model="t", dtype="float32", device="cpu", max_length=128, token_budget=256, packing="on")
    tok = SimpleNamespace(pad_token_id=0)
    eager = RewardScorer(ScorerConfig(**cfg), tokenizer=tok, model=tiny_llama()).score_ids(seqs)
    model = tiny_llama()
    scorer = RewardScorer(ScorerConfig(**cfg, compile=True, compile_scope=scope), tokenizer=tok, model=model)
    layers = model.model.layers
    if scope == "layers":  # each decoder layer compiled in place, the backbone itself left as it is
        assert scorer._backbone is model.model and all(layer._compiled_call_impl is not None for layer in layers)
        assert scorer.trim  # compiled layers, then the last one at the last tokens
    else:  # a backbone compiled whole runs its own forward, the last layer whole
        assert scorer._backbone is not model.model and all(layer._compiled_call_impl is None for layer in layers)
        assert not scorer.trim
    compiled = scorer.score_ids(seqs)
    assert max(abs(a - b) for a, b in zip(eager, compiled)) <= 1e-4


def test_compile_scope_is_checked():
    with pytest.raises(ValueError, match="compile_scope='graph'.*layers"):
        ScorerConfig(compile=True, compile_scope="graph")


def test_packed_attention_on_the_cpu_takes_sdpa_fused_kernel():
    from torch.profiler import profile

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, h, 40, 16, dtype=torch.bfloat16) for h in (4, 2, 2))
    cu = torch.tensor([0, 15, 40], dtype=torch.int32)
    with profile() as prof:
        varlen_attention(None, q, k, v, None, scaling=0.25, codescaler_cu_seqlens=cu)
    ops = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops  # 3-D slices went to the math path: 2x slower
    assert "aten::_scaled_dot_product_attention_math" not in ops
