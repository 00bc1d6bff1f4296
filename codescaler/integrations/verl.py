"""verl plug-in: CodeScaler rewards through verl's `custom_reward_function`.

verl loads this file by path and calls one of its functions for each rollout (naive reward manager) or
for a whole batch (batch reward manager); `reward_kwargs` from the config arrive as keyword arguments:

    reward.custom_reward_function.path=/path/to/codescaler/integrations/verl.py
    reward.custom_reward_function.name=compute_score          # or compute_score_async / compute_score_batch
    +reward.custom_reward_function.reward_kwargs.model=LARK-Lab/CodeScaler-8B   # in-process RM, or:
    +reward.custom_reward_function.reward_kwargs.reward_url=http://rm-host:5000   # a `codescaler serve`

- `compute_score(data_source, solution_str, ground_truth, extra_info=None, **options) -> dict`
- `compute_score_async(...)`: the same as a coroutine; against a `reward_url` the server batches the
  concurrent calls of verl's naive manager (dynamic batching), which is the fast way at cluster scale.
- `compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos=None, **options) -> list[dict]`

Each returns {"score": reward, "valid_code": 0/1, "from_tests": 0/1}; verl uses "score" and logs the rest.
The reward is codescaler.rewards' (the shared RewardScorer, the sandbox), so it equals `codescaler score`.

Dataset convention (examples/verl/prepare_data.py writes it): `extra_info.problem_prompt` is the problem
text the RM sees (verl passes no prompt to reward functions; `question` or `prompt` also work),
`reward_model.ground_truth` is the problem's `tests` as JSON text, or "" for none, and the optional
`extra_info.import_header` is the sandbox's import header for the tests ("lcb" on LiveCodeBench-graded data).

options (all optional): reward ("rm" default as in the reference recipe, "tests", "hybrid"), model, reward_url,
max_length (4096), device ("auto"), dtype ("auto"), extraction ("syntax"), shaping ("softplus"), timeout (600 s).
A sandbox (infrastructure) error raises instead of returning a score: verl has no "no reward" value, and
scoring a broken sandbox as wrong code would train on noise.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Sequence

from codescaler.records import Problem
from codescaler.rewards import REWARDS, RewardResult, make_reward, parse_tests
from codescaler.scorer import ScorerConfig

OPTIONS = {"reward": "rm", "model": None, "reward_url": None, "max_length": 4096, "device": "auto",
           "dtype": "auto", "extraction": "syntax", "shaping": "softplus", "timeout": 600.0}
VERL_EXTRAS = ("reward_router_address", "reward_model_tokenizer")  # passed by verl's managers; unused here
PROMPT_KEYS = ("problem_prompt", "question", "prompt")


def _options(options: dict) -> dict:
    unknown = sorted(set(options) - set(OPTIONS) - set(VERL_EXTRAS))
    if unknown:
        raise TypeError(f"codescaler verl plug-in: unknown reward_kwargs {unknown}; known: {sorted(OPTIONS)}")
    out = {k: options.get(k, v) for k, v in OPTIONS.items()}
    if out["reward"] not in REWARDS:
        raise ValueError(f"reward_kwargs.reward={out['reward']!r}; use one of {REWARDS}")
    return out


@functools.lru_cache(maxsize=4)  # one loaded RM (or client) per distinct configuration, per worker process
def reward_fn(reward: str, model, reward_url, max_length: int, device: str, dtype: str, extraction: str,
              shaping: str, timeout: float):
    """The codescaler.rewards callable for these options (the RM is loaded once and kept)."""
    scorer = None
    if reward != "tests" and not reward_url:
        scorer = ScorerConfig(model=model, max_length=int(max_length), device=device, dtype=dtype,
                              extraction=extraction, shaping=shaping)
    return make_reward(reward, scorer, url=reward_url, extraction=extraction, timeout=float(timeout))


def problem_of(ground_truth: Any, extra_info: dict | None, row: int, with_tests: bool = True,
               with_prompt: bool = True) -> Problem:
    """The Problem behind one verl row: prompt from extra_info (needed unless the reward is tests alone, which
    never reads it), tests from ground_truth (JSON or empty)."""
    info = extra_info if isinstance(extra_info, dict) else {}
    prompt = next((info[k] for k in PROMPT_KEYS if isinstance(info.get(k), str)), None if with_prompt else "")
    if prompt is None:
        raise ValueError("codescaler verl plug-in: extra_info has no problem_prompt (the problem text the RM sees); "
                         "write the data with examples/verl/prepare_data.py or add extra_info.problem_prompt")
    pid = info.get("problem_id", info.get("index", f"row-{row}"))
    header = info.get("import_header")  # the sandbox's import header for the tests (SandboxConfig.import_header)
    return Problem(id=str(pid), prompt=prompt, tests=parse_tests(ground_truth) if with_tests else None,
                   extra={"import_header": header} if header else {})


def _verl_result(r: RewardResult) -> dict:
    if r.reward is None:
        raise RuntimeError(f"codescaler verl plug-in: sandbox error ({r.status}); refusing to score it as wrong code")
    return {"score": float(r.reward), "valid_code": float(r.code is not None), "from_tests": float(r.source == "tests")}


def compute_score_batch(data_sources: Sequence, solution_strs: Sequence[str], ground_truths: Sequence,
                        extra_infos: Sequence | None = None, **options) -> list[dict]:
    """verl's batch reward manager signature: one result dict per rollout, in order."""
    opts = _options(options)
    extra_infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    if not len(data_sources) == len(solution_strs) == len(ground_truths) == len(extra_infos):
        raise ValueError("data_sources, solution_strs, ground_truths and extra_infos differ in length")
    with_tests = opts["reward"] != "rm"  # the rm reward never reads ground_truth (any format is fine there)
    with_prompt = opts["reward"] != "tests"
    problems = [problem_of(gt, ei, i, with_tests, with_prompt)
                for i, (gt, ei) in enumerate(zip(ground_truths, extra_infos))]
    fn = reward_fn(**opts)
    return [_verl_result(r) for r in fn.results(problems, [str(s) for s in solution_strs])] if problems else []


def compute_score(data_source, solution_str: str, ground_truth, extra_info: dict | None = None, **options) -> dict:
    """verl's per-rollout signature (naive reward manager)."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **options)[0]


async def compute_score_async(data_source, solution_str: str, ground_truth, extra_info: dict | None = None,
                              **options) -> dict:
    """The same as a coroutine; remote calls overlap, so `codescaler serve` batches them together."""
    opts = _options(options)
    problem = problem_of(ground_truth, extra_info, 0, opts["reward"] != "rm", opts["reward"] != "tests")
    fn = reward_fn(**opts)
    client = getattr(getattr(fn, "rm", fn), "client", None)
    if client is None or problem.tests is not None:  # in-process RM or the sandbox: off the event loop
        return await asyncio.to_thread(compute_score, data_source, solution_str, ground_truth, extra_info, **options)
    scored = (await client.ascore([problem.prompt], [str(solution_str)]))[0]
    return _verl_result(RewardResult(scored.reward, scored.code, "rm", scored.rm_score))
