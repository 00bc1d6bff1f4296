"""The shared scorer: fidelity to the paper's README snippet, truncation, batching, TRL signature."""

import json
import random

import pytest
import torch

from codescaler.scorer import RewardScorer, ScorerConfig, build_rm_input, plan_batches, rm_messages

F = "```"


def snippet_scores(model_dir, pairs, max_length=2048):
    """The seed README's scoring snippet, verbatim in spirit: template per conversation, pad, logits."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    reward_model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    reward_model.eval()
    convs = [[{"content": q, "role": "user"}, {"role": "assistant", "content": p}] for q, p in pairs]
    texts = [tokenizer.apply_chat_template(conv, tokenize=False) for conv in convs]
    toks = tokenizer(texts, truncation=True, padding=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        outputs = reward_model(input_ids=toks["input_ids"], attention_mask=toks["attention_mask"])
    return outputs.logits.squeeze(-1).tolist()


def mixed_workload(n=24, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        body = "\n".join(f"    x{j} = {rng.randint(0, 99)} * {j}" for j in range(rng.choice([1, 3, 10, 40])))
        q = f"Problem {i}: " + " ".join(["compute the value"] * rng.choice([1, 5, 30]))
        out.append((q, f"def f{i}():\n{body}\n    return {i}"))
    return out


def test_fidelity_to_readme_snippet_fp32(tiny_rm_dir):
    pairs = mixed_workload()
    expected = snippet_scores(tiny_rm_dir, pairs)
    # A small token budget forces several batches, and length-sorting reorders the items.
    scorer = RewardScorer(ScorerConfig(model=tiny_rm_dir, dtype="float32", device="cpu", token_budget=2048,
                                       max_length=2048))
    got = scorer.score_code([q for q, _ in pairs], [c for _, c in pairs])
    lengths = [len(ids) for ids, _ in scorer.encode([q for q, _ in pairs], [c for _, c in pairs])]
    batches = plan_batches(lengths, scorer.token_budget, scorer.config.max_batch_size)
    assert len(batches) > 1 and [i for b in batches for i in b] != list(range(len(pairs)))
    assert max(abs(a - b) for a, b in zip(expected, [s for s, _ in got])) <= 1e-4
    assert not any(t for _, t in got)
    assert len(set(round(e, 3) for e in expected)) > 10  # the scores really differ per input


def test_score_cli_matches_snippet(tiny_rm_dir, tmp_path):
    from codescaler.cli import main

    pairs = mixed_workload(8, seed=1)
    probs, resps = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    probs.write_text("".join(json.dumps({"id": f"p{i}", "prompt": q, "tests": None}) + "\n"
                             for i, (q, _) in enumerate(pairs)))
    resps.write_text("".join(json.dumps({"problem_id": f"p{i}", "response": f"Sure:\n{F}python\n{c}\n{F}\n",
                                         "sample": 0, "keep": i}) + "\n" for i, (_, c) in enumerate(pairs)))
    out = tmp_path / "s.jsonl"
    rc = main(["score", "--problems", str(probs), "--responses", str(resps), "--model", tiny_rm_dir,
               "--output", str(out), "--dtype", "float32", "--device", "cpu"])
    assert rc == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    expected = snippet_scores(tiny_rm_dir, pairs)
    assert [r["keep"] for r in rows] == list(range(8))  # input order, extra keys carried
    for r, e in zip(rows, expected):
        assert abs(r["rm_score"] - e) <= 1e-4
        assert r["reward"] == pytest.approx(torch.nn.functional.softplus(torch.tensor(r["rm_score"])).item())
        assert r["truncated"] is False and r["code"].startswith("def f")


def test_no_code_gets_zero_and_none(tiny_rm_dir):
    scorer = RewardScorer(ScorerConfig(model=tiny_rm_dir, dtype="float32", device="cpu"))
    out = scorer.score(["q", "q"], ["no code here", f"{F}python\nx = 1\n{F}"])
    assert out[0].code is None and out[0].rm_score is None and out[0].reward == 0.0
    assert out[1].code == "x = 1" and out[1].reward > 0.0


def test_truncation_cuts_prompt_not_code_end(smollm2_tokenizer):
    code = "def solve():\n    return 42  # THE_END"
    prompt = "long statement " * 400
    ids, truncated = build_rm_input(smollm2_tokenizer, prompt, code, max_length=256)
    assert truncated and len(ids) <= 256
    text = smollm2_tokenizer.decode(ids)
    assert "return 42  # THE_END" in text and text.count("long statement") < 400
    full, t2 = build_rm_input(smollm2_tokenizer, "short", code, max_length=256)
    assert not t2 and full[-3:] == ids[-3:]  # the closing template tokens (where the score is read) survive


def test_truncation_of_code_keeps_its_end(smollm2_tokenizer):
    code = "\n".join(f"x{i} = {i}" for i in range(300)) + "\nprint('THE_END')"
    ids, truncated = build_rm_input(smollm2_tokenizer, "prompt", code, max_length=200)
    assert truncated and len(ids) <= 200
    assert "print('THE_END')" in smollm2_tokenizer.decode(ids)


def test_duplicate_bos_is_stripped(smollm2_tokenizer):
    bos = smollm2_tokenizer.bos_token
    ids, _ = build_rm_input(smollm2_tokenizer, "q", "x = 1", 512)
    assert ids[0] == smollm2_tokenizer.bos_token_id and ids[1] != smollm2_tokenizer.bos_token_id
    # A template that emits BOS itself, with a tokenizer that adds one too, still yields one BOS.
    class DoubleBos:
        bos_token_id = smollm2_tokenizer.bos_token_id
        chat_template = "x"

        def apply_chat_template(self, msgs, tokenize=False):
            return smollm2_tokenizer.apply_chat_template(msgs, tokenize=False)

        def __call__(self, text, add_special_tokens=True):
            out = smollm2_tokenizer(text, add_special_tokens=False)
            return {"input_ids": [self.bos_token_id] + out["input_ids"]}

    assert text_startswith_one_bos(build_rm_input(DoubleBos(), "q", "x = 1", 512)[0], smollm2_tokenizer, bos)


def text_startswith_one_bos(ids, tok, bos):
    return ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id


def test_plan_batches_respects_budget_and_covers_all():
    lengths = [5, 100, 37, 37, 2, 64, 64, 64, 1]
    batches = plan_batches(lengths, token_budget=128, max_batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3 and len(b) * max(lengths[i] for i in b) <= 128
    assert batches[0] == [1]  # longest first: an out-of-memory shows up at once


def test_trl_reward_signature_plain_and_conversational(tiny_rm_dir):
    scorer = RewardScorer(ScorerConfig(model=tiny_rm_dir, dtype="float32", device="cpu"))
    code = f"{F}python\nprint(2)\n{F}"
    plain = scorer(prompts=["Print 2."], completions=[code], completion_ids=[[1, 2]], problem_id=["a"])
    conv = scorer(prompts=[[{"role": "system", "content": "be brief"}, {"role": "user", "content": "Print 2."}]],
                  completions=[[{"role": "assistant", "content": code}]])
    assert plain == pytest.approx(conv) and plain[0] > 0
    assert scorer(prompts=["Print 2."], completions=["no code"]) == [0.0]


def test_config_cross_checks_say_what_works():
    with pytest.raises(ValueError, match="token_budget >= 4096"):
        ScorerConfig(token_budget=1000)
    with pytest.raises(ValueError, match="use one of"):
        ScorerConfig(dtype="int8")


def test_rm_messages_shape():
    assert rm_messages("q", "c") == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "c"}]


def test_packed_forward_equals_padded(tiny_rm_dir):
    pairs = mixed_workload(12, seed=3)
    args = ([q for q, _ in pairs], [c for _, c in pairs])
    padded = RewardScorer(ScorerConfig(model=tiny_rm_dir, dtype="float32", device="cpu", packing="off")).score_code(*args)
    packed = RewardScorer(ScorerConfig(model=tiny_rm_dir, dtype="float32", device="cpu", packing="on")).score_code(*args)
    assert max(abs(a - b) for (a, _), (b, _) in zip(padded, packed)) <= 1e-4


def test_encode_spans_known_answer():
    from codescaler.scorer import encode_spans

    assert encode_spans(0) == []
    assert encode_spans(5) == [(0, 5)]
    assert encode_spans(10) == [(0, 8), (8, 10)]
    assert encode_spans(500) == [(0, 8), (8, 24), (24, 56), (56, 120), (120, 248), (248, 500)]


def test_overlapped_encoding_gives_the_same_scores_flags_and_order(tiny_rm_dir):
    import threading

    pairs = mixed_workload(200, seed=4)
    args = ([q for q, _ in pairs], [c for _, c in pairs])
    cfg = dict(model=tiny_rm_dir, dtype="float32", device="cpu", max_length=96, token_budget=512)
    serial = RewardScorer(ScorerConfig(**cfg))
    overlapped = RewardScorer(ScorerConfig(**cfg, encode_overlap="on"))
    assert not serial.overlap and overlapped.overlap  # auto is off on a CPU
    encoded_in, original = [], overlapped.encode
    overlapped.encode = lambda p, c: encoded_in.append((threading.current_thread().name, len(p))) or original(p, c)
    seen: list[int] = []
    got = overlapped.score_code(*args, progress=seen.append)
    assert [n for _, n in encoded_in] == [8, 16, 32, 64, 80]  # chunks doubling from 8, then the rest
    assert all(name != threading.main_thread().name for name, _ in encoded_in)  # tokenised in the worker
    want = serial.score_code(*args)
    assert [t for _, t in got] == [t for _, t in want] and any(t for _, t in want)  # some inputs were shortened
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, want)) <= 1e-5
    assert sum(seen) == 200
    encoded_in.clear()
    overlapped.score_code(*(a[:3] for a in args))  # a small call: tokenised at once, on the caller's thread
    assert encoded_in == [(threading.main_thread().name, 3)]


def test_an_encoding_error_in_the_worker_reaches_the_caller(tiny_rm_dir):
    from codescaler.records import UserError

    scorer = RewardScorer(ScorerConfig(model=tiny_rm_dir, dtype="float32", device="cpu", encode_overlap="on",
                                       token_budget=512, max_length=96))
    scorer.tokenizer.chat_template = None
    pairs = mixed_workload(40, seed=5)
    with pytest.raises(UserError, match="chat template"):
        scorer.score_code([q for q, _ in pairs], [c for _, c in pairs])
    with pytest.raises(ValueError, match="encode_overlap='sometimes'"):
        ScorerConfig(encode_overlap="sometimes")


def test_a_max_length_that_cannot_hold_any_code_is_an_error(smollm2_tokenizer):
    from codescaler.records import UserError

    with pytest.raises(UserError, match="too small to hold the RM chat template and the code's end"):
        build_rm_input(smollm2_tokenizer, "p", "x = 1", 30)  # SmolLM2's template alone (with its system turn) is 32
    ids, truncated = build_rm_input(smollm2_tokenizer, "p", "x = 1 + 2 + 3 + 4 + 5 + 6 # END", 36)
    assert truncated and len(ids) <= 36 and "END" in smollm2_tokenizer.decode(ids)


def test_shortening_never_leaves_half_a_character(smollm2_tokenizer):
    prompt = "日本語の問題文です。" * 200
    for max_length in range(90, 110):
        ids, truncated = build_rm_input(smollm2_tokenizer, prompt, "x = 1", max_length)
        assert truncated and "\ufffd" not in smollm2_tokenizer.decode(ids)


def test_non_finite_scores_are_refused_with_advice():
    from codescaler.records import Scored, UserError
    from codescaler.scorer import check_finite

    check_finite([Scored(code="x", rm_score=1.0, reward=1.3), Scored(code=None, rm_score=None, reward=0.0)])
    for bad in (float("nan"), float("inf")):
        with pytest.raises(UserError, match="non-finite score.*--dtype"):
            check_finite([Scored(code="x", rm_score=bad, reward=bad)])


@pytest.mark.parametrize("device, message", [("foo", "use auto, cpu, cuda"), ("cuda", "no CUDA device")])
def test_bad_devices_are_one_line_errors(device, message):
    from codescaler.records import UserError
    from codescaler.scorer import pick_device

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match=message):
        pick_device(device)
    assert pick_device("cpu").type == "cpu"
