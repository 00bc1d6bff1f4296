"""Run INSIDE the verl venv by tests/test_verl_plugin.py: verl's own loader and naive reward manager call our plug-in.

    .venv-verl/bin/python tests/verl_loader_check.py CASES.json FUNCTION_NAMES (comma-separated) REWARD_KWARGS_JSON

CASES.json: {"tokenizer": dir, "rows": [{"response", "ground_truth", "extra_info"}, ...]}. Prints one JSON line:
{"verl": version, "scores": [...], "extra": [...]}.
"""

import json
import os
import sys


def main() -> None:
    cases_path, names, reward_kwargs = sys.argv[1], sys.argv[2].split(","), json.loads(sys.argv[3])
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)
    plugin = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "codescaler", "integrations",
                          "verl.py")
    for fn_name in names:
        run(cases, plugin, fn_name, reward_kwargs)


def run(cases: dict, plugin: str, fn_name: str, reward_kwargs: dict) -> None:
    import numpy as np
    import torch
    import verl
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.trainer.ppo.reward import load_reward_manager

    config = OmegaConf.create({"reward": {
        "custom_reward_function": {"path": plugin, "name": fn_name, "reward_kwargs": reward_kwargs},
        "reward_manager": {"source": "register", "name": "naive"}}})
    tok = AutoTokenizer.from_pretrained(cases["tokenizer"])
    if fn_name == "compute_score_batch":  # verl's batch manager (workers/reward_manager/batch.py), one call per batch
        from verl.trainer.ppo.reward import get_custom_reward_fn
        from verl.workers.reward_manager.batch import BatchRewardManager

        prompt = tok("problem", add_special_tokens=False)["input_ids"]
        resps = [tok(r["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in cases["rows"]]
        width = max(map(len, resps))
        responses = torch.full((len(resps), width), tok.pad_token_id or 0)
        mask = torch.zeros(len(resps), len(prompt) + width, dtype=torch.long)
        mask[:, :len(prompt)] = 1
        for i, r in enumerate(resps):
            responses[i, :len(r)] = torch.tensor(r)
            mask[i, len(prompt):len(prompt) + len(r)] = 1
        data = DataProto.from_dict(
            tensors={"prompts": torch.tensor([prompt] * len(resps)), "responses": responses, "attention_mask": mask},
            non_tensors={"data_source": np.array(["codescaler"] * len(resps), dtype=object),
                         "reward_model": np.array([{"ground_truth": r["ground_truth"]} for r in cases["rows"]], dtype=object),
                         "extra_info": np.array([dict(r["extra_info"]) for r in cases["rows"]], dtype=object)})
        manager = BatchRewardManager(tok, num_examine=0, compute_score=get_custom_reward_fn(config))
        results = manager.verify(data)
        print(json.dumps({"name": fn_name, "verl": verl.__version__, "manager": type(manager).__name__,
                          "scores": [r["score"] for r in results],
                          "extra": [{k: r[k] for k in ("valid_code", "from_tests")} for r in results]}))
        return
    manager = load_reward_manager(config, tok)  # verl's loader: load_extern_object + its kwargs wrapper

    async def run_all():
        out = []
        for row in cases["rows"]:
            prompt = tok("problem", add_special_tokens=False)["input_ids"]
            resp = tok(row["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            data = DataProto.from_dict(
                tensors={"prompts": torch.tensor([prompt]), "responses": torch.tensor([resp]),
                         "attention_mask": torch.ones(1, len(prompt) + len(resp), dtype=torch.long)},
                non_tensors={"data_source": np.array(["codescaler"], dtype=object),
                             "reward_model": np.array([{"ground_truth": row["ground_truth"]}], dtype=object),
                             "extra_info": np.array([dict(row["extra_info"])], dtype=object)})
            out.append(await manager.run_single(data))
        return out

    results = manager.loop.run_until_complete(run_all())  # the manager's own event loop
    print(json.dumps({"name": fn_name, "verl": verl.__version__, "manager": type(manager).__name__,
                      "scores": [r["reward_score"] for r in results],
                      "extra": [{k: v for k, v in r["reward_extra_info"].items() if k in ("valid_code", "from_tests")}
                                for r in results]}))


if __name__ == "__main__":
    main()
