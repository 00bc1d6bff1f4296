"""train_rm: BT loss known answer, scorer-identical inputs, nothing dropped, end to end, resume, GGUF base."""

import json
import math
import os

import pytest

from codescaler.records import Pair, write_jsonl
from codescaler.scorer import RewardScorer, ScorerConfig
from codescaler.train_rm import (TrainRMConfig, encode_pairs, length_baseline, make_dataset, pairwise_accuracy,
                                 split_by_problem, train_reward_model)


@pytest.fixture(scope="session")
def tiny_rm(tmp_path_factory, smollm2_tokenizer):
    """A 2-layer random Qwen3 seq-cls model (default small head init) with the SmolLM2 tokenizer, saved to a directory."""
    import torch
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    tok = smollm2_tokenizer
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_labels=1,
                      pad_token_id=tok.pad_token_id, max_position_embeddings=1024)
    path = str(tmp_path_factory.mktemp("tiny_rm"))
    Qwen3ForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def toy_pairs(n_problems: int, per_problem: int = 2, long_prompt: int = 0) -> list[Pair]:
    """A separable toy set: chosen code says `ok`, rejected code says `bad`."""
    out = []
    for i in range(n_problems):
        prompt = f"Problem {i}: write f.\n" + "Some context. " * long_prompt
        for j in range(per_problem):
            out.append(Pair(problem_id=f"p{i}", prompt=prompt,
                            chosen=f"def f(x):\n    return x + {j}  # ok ok ok",
                            rejected=f"def f(x):\n    return x + {j}  # bad bad bad",
                            chosen_pass_rate=1.0, rejected_pass_rate=0.25 * j))
    return out


def test_bt_loss_known_answer_with_margin_and_centering(tiny_rm):
    """TRL's loss on fixed rewards equals the hand computation."""
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput
    from trl import RewardConfig, RewardTrainer
    from datasets import Dataset

    rc, rr, m, c = [1.0, -0.5], [0.0, 0.5], [0.5, 0.0], 0.01
    # by hand: -log s(1 - 0 - .5) = 0.474077, -log s(-.5 - .5 - 0) = 1.313262; centering .01 * (1 + 0) / 2
    expected = (0.474077 + 1.313262) / 2 + 0.005
    ds = Dataset.from_dict({"chosen_ids": [[1, 2]], "rejected_ids": [[1, 3]]})
    args = RewardConfig(output_dir=os.path.join(tiny_rm, "unused"), use_cpu=True, bf16=False, report_to="none",
                        center_rewards_coefficient=c)
    trainer = RewardTrainer(model=tiny_rm, args=args, train_dataset=ds)

    class FixedRewards(torch.nn.Module):
        def forward(self, **kw):
            return SequenceClassifierOutput(logits=torch.tensor(rc + rr).unsqueeze(-1))

    inputs = {"input_ids": torch.ones(4, 2, dtype=torch.long), "attention_mask": torch.ones(4, 2, dtype=torch.long),
              "margin": torch.tensor(m)}
    loss = trainer.compute_loss(FixedRewards(), inputs)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_training_loss_reads_the_score_where_the_scorer_does(tiny_rm):
    """On a real model, the trainer's BT loss equals the formula applied to the scorer's own scores."""
    import torch
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    cfg = TrainRMConfig(pairs="", base_model=tiny_rm, output_dir="", max_length=64, margin=0.3,
                        margin_by_pass_rate=True)
    pairs = toy_pairs(2, 2, long_prompt=8)
    from codescaler.train_rm import load_base
    tok, model = load_base(tiny_rm, torch.float32)
    ds, _ = make_dataset(tok, pairs, cfg)
    args = RewardConfig(output_dir=os.path.join(tiny_rm, "unused"), use_cpu=True, bf16=False, report_to="none",
                        center_rewards_coefficient=0.05, max_length=64)
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)([ds[i] for i in range(len(ds))])
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch)).item()
    scorer = RewardScorer(ScorerConfig(max_length=64, dtype="float32"), tok, model)
    c = scorer.score_ids(list(ds["chosen_ids"]))
    r = scorer.score_ids(list(ds["rejected_ids"]))
    margins = [0.3 * (p.chosen_pass_rate - p.rejected_pass_rate) for p in pairs]
    bt = sum(-math.log(1 / (1 + math.exp(-(ci - ri - mi)))) for ci, ri, mi in zip(c, r, margins)) / len(c)
    center = 0.05 * sum((ci + ri) ** 2 for ci, ri in zip(c, r)) / len(c)
    assert loss == pytest.approx(bt + center, rel=1e-4, abs=1e-5)


def test_train_inputs_are_the_scorer_inputs_and_none_is_dropped(tiny_rm):
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from codescaler.train_rm import load_base

    tok, model = load_base(tiny_rm, torch.float32)
    pairs = toy_pairs(3, 2, long_prompt=30)  # prompts far over 96 tokens
    chosen, rejected, shortened = encode_pairs(tok, pairs, 96)
    scorer = RewardScorer(ScorerConfig(max_length=96, dtype="float32"), tok, model)
    assert chosen == [ids for ids, _ in scorer.encode([p.prompt for p in pairs], [p.chosen for p in pairs])]
    assert rejected == [ids for ids, _ in scorer.encode([p.prompt for p in pairs], [p.rejected for p in pairs])]
    assert shortened == 2 * len(pairs) and all(len(ids) <= 96 for ids in chosen + rejected)
    assert all(tok.decode(ids).rstrip().endswith("# bad bad bad<|im_end|>") for ids in rejected)

    cfg = TrainRMConfig(pairs="", base_model=tiny_rm, output_dir="", max_length=96)
    ds, _ = make_dataset(tok, pairs, cfg)
    args = RewardConfig(output_dir=os.path.join(tiny_rm, "unused"), use_cpu=True, bf16=False, report_to="none",
                        max_length=96)
    assert len(RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train_dataset) == 6
    # Whereas TRL tokenising the same pairs itself drops every one of them (the failure this guards against).
    raw = Dataset.from_dict({"prompt": [[{"role": "user", "content": p.prompt}] for p in pairs],
                             "chosen": [[{"role": "assistant", "content": p.chosen}] for p in pairs],
                             "rejected": [[{"role": "assistant", "content": p.rejected}] for p in pairs]})
    assert len(RewardTrainer(model=model, args=args, train_dataset=raw, processing_class=tok).train_dataset) == 0


def test_split_by_problem_holds_out_whole_problems():
    pairs = toy_pairs(10, 3)
    train, held = split_by_problem(pairs, 0.2, seed=1)
    assert len(held) == 6 and len(train) == 24
    assert not {p.problem_id for p in train} & {p.problem_id for p in held}
    assert split_by_problem(pairs, 0.2, seed=1) == (train, held)


def test_split_by_problem_always_leaves_a_problem_to_train():
    train, held = split_by_problem(toy_pairs(2, 2), 0.8, seed=0)  # round(0.8 x 2) = 2 would hold out both
    assert len({p.problem_id for p in train}) == 1 and len({p.problem_id for p in held}) == 1


@pytest.mark.parametrize("bad, match", [
    ({"warmup_ratio": 1.0}, r"warmup_ratio=1.0; use a fraction of the updates in \[0, 1\)"),
    ({"warmup_ratio": -0.1}, "warmup_ratio"),
    ({"lr_scheduler": "bogus"}, "lr_scheduler='bogus'; use one of cosine, linear"),
    ({"margin_by_pass_rate": True}, "set --margin > 0 too"),
])
def test_config_errors_say_what_works(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainRMConfig(pairs="p", base_model="m", output_dir="o", **bad)


def test_accuracy_and_length_baseline_known_answers():
    assert pairwise_accuracy([1.0, 2.0, 0.0, 5.0], [0.0, 3.0, 0.0, 1.0]) == pytest.approx(0.625)
    assert length_baseline([[1, 2, 3], [1]], [[1], [1, 2]]) == 0.5


def test_end_to_end_pairs_train_score(tiny_rm, tmp_path, capsys):
    """pairs -> train-rm (full FT of a tiny random model) -> `codescaler score` loads the output; accuracy rises."""
    from codescaler.cli import main

    problems, verified = [], []
    for i in range(24):
        problems.append({"id": f"p{i}", "prompt": f"Problem {i}: return x plus {i}.", "tests": None})
        for s, (good, rate) in enumerate([(True, 1.0), (True, 1.0), (False, 0.0), (False, 0.5)]):
            note = "ok ok ok" if good else "bad bad bad"
            code = f"def f(x):\n    return x + {i + s}  # {note}"
            verified.append({"problem_id": f"p{i}", "sample": s, "response": f"```python\n{code}\n```",
                             "verdict": {"status": "passed" if good else "wrong_answer", "passed": good,
                                         "cases_passed": int(rate * 2), "cases_total": 2, "seconds": 0.1}})
    write_jsonl(tmp_path / "problems.jsonl", problems)
    write_jsonl(tmp_path / "verified.jsonl", verified)
    assert main(["pairs", "--problems", str(tmp_path / "problems.jsonl"), "--verified", str(tmp_path / "verified.jsonl"),
                 "--output", str(tmp_path / "pairs.jsonl")]) == 0
    out = str(tmp_path / "rm")
    assert main(["train-rm", "--pairs", str(tmp_path / "pairs.jsonl"), "--base-model", tiny_rm, "--output-dir", out,
                 "--max-length", "64", "--batch-size", "8", "--epochs", "6", "--learning-rate", "3e-3",
                 "--eval-fraction", "0.25", "--logging-steps", "50", "--save-steps", "1000"]) == 0
    summary = json.load(open(os.path.join(out, "codescaler_train_rm.json")))
    assert summary["train_pairs"] == 18 * 4 and summary["eval_pairs"] == 6 * 4
    assert summary["eval_after"]["accuracy"] >= 0.9 > summary["eval_before"]["accuracy"]
    assert not os.path.exists(os.path.join(out, "checkpoints"))
    write_jsonl(tmp_path / "resp.jsonl", [{"problem_id": "p0", "response": "```python\ndef f(x):\n    return x  # ok ok ok\n```"},
                                         {"problem_id": "p0", "response": "```python\ndef f(x):\n    return x  # bad bad bad\n```"}])
    assert main(["score", "--problems", str(tmp_path / "problems.jsonl"), "--responses", str(tmp_path / "resp.jsonl"),
                 "--output", str(tmp_path / "scored.jsonl"), "--model", out, "--max-length", "64",
                 "--dtype", "float32"]) == 0
    good, bad = [json.loads(line) for line in open(tmp_path / "scored.jsonl")]
    assert good["rm_score"] > bad["rm_score"]


def test_lora_resume_and_merged_output(tiny_rm, tmp_path):
    """LoRA training checkpoints, resumes from the last checkpoint, and saves a merged plain model."""
    import torch
    from transformers import AutoModelForSequenceClassification

    write_jsonl(tmp_path / "pairs.jsonl", [p.to_dict() for p in toy_pairs(8, 2)])
    kw = dict(pairs=str(tmp_path / "pairs.jsonl"), base_model=tiny_rm, output_dir=str(tmp_path / "rm"),
              method="lora", max_length=64, batch_size=4, save_steps=2, keep_checkpoints=True, eval_fraction=0.25,
              eval_before=False, logging_steps=1)
    first = train_reward_model(TrainRMConfig(**kw, max_steps=2))
    assert first["train"]["train_loss"] > 0
    os.remove(tmp_path / "rm" / "codescaler_train_rm.json")  # as if the run had died after its checkpoint
    second = train_reward_model(TrainRMConfig(**kw, max_steps=4))
    steps = [h["step"] for h in second["log_history"] if "loss" in h]
    assert steps == [1, 2, 3, 4][:len(steps)] and 3 in steps  # logs carried over from the checkpoint, then 3, 4
    assert os.path.isdir(tmp_path / "rm" / "checkpoints" / "checkpoint-4")
    assert not os.path.exists(tmp_path / "rm" / "adapter_config.json")
    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "rm"))
    assert not any("lora" in n for n, _ in model.named_parameters())
    base = AutoModelForSequenceClassification.from_pretrained(tiny_rm)
    trained, before = dict(model.named_parameters()), dict(base.named_parameters())
    assert not torch.equal(trained["score.weight"], before["score.weight"])  # the head trains fully
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(trained[q], before[q])  # the LoRA update is merged into the weights
    emb = "model.embed_tokens.weight"
    assert torch.equal(trained[emb], before[emb])  # and nothing outside LoRA + head moved


@pytest.mark.slow
def test_tiny_run_on_smollm2_gguf_gives_a_score_loadable_dir(smollm2_gguf, tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", [p.to_dict() for p in toy_pairs(4, 1)])
    gguf = smollm2_gguf
    out = str(tmp_path / "rm")
    summary = train_reward_model(TrainRMConfig(pairs=str(tmp_path / "pairs.jsonl"), base_model=gguf, output_dir=out,
                                               max_length=80, batch_size=2, max_steps=2, eval_fraction=0.25,
                                               eval_before=False, logging_steps=1))
    assert summary["eval_pairs"] == 1 and "eval_after" in summary
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert "quantization_config" not in cfg and len(cfg["id2label"]) == 1
    scorer = RewardScorer(ScorerConfig(model=out, max_length=80, dtype="float32"))
    scored = scorer.score(["Write f."], ["```python\ndef f(x):\n    return x\n```"])
    assert scored[0].rm_score is not None and math.isfinite(scored[0].rm_score)
