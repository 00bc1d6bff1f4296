"""Reward functions for policy RL: `rm`, `tests` and `hybrid`, with TRL's signature.

Each reward is a plain callable `reward(prompts, completions, completion_ids=None, **kwargs)
-> list[float | None]`, usable directly in `trl.GRPOTrainer(reward_funcs=[...])`:

    from codescaler.rewards import RMReward
    trainer = GRPOTrainer(model=..., reward_funcs=[RMReward(ScorerConfig(model="LARK-Lab/CodeScaler-8B"))], ...)

- `RMReward`: softplus(RM) on the extracted code, 0 without valid code, through the one shared
  `RewardScorer` (in-process) or a `codescaler serve` URL.
- `TestsReward`: 1.0 when the sandbox says every test passed, else 0.0 (the RLVR baseline). A
  sandbox (infrastructure) error gives None, which TRL treats as "no reward", never as wrong code.
  Its sandboxed workers start at the first call and stay warm for the next ones; `close()` (or
  `with`) stops them.
- `HybridReward`: tests where the problem has them, the RM where `tests` is null.

Completions may be plain strings or conversations (the last assistant turn is the response).
The RM sees the problem's own prompt text: the `problem_prompt` dataset column when present (TRL
passes dataset columns as keyword arguments), else the prompt's last user turn. Tests come from the
`tests` column (a dict or its JSON text, null for none) and the sandbox's import header from the
`import_header` column (SandboxConfig.import_header), or both from a `problems` dict by `problem_id`.
When TRL passes `log_metric`, each call logs `valid_code_rate` (and for tests `pass_rate`,
`sandbox_errors`; for hybrid `tests_fraction`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from codescaler.extract import extract_code
from codescaler.records import Problem, Scored, Status, UserError
from codescaler.payloads import rm_prompts, text_of
from codescaler.scorer import RewardScorer, ScorerConfig

REWARDS = ("rm", "tests", "hybrid")


@dataclass
class RewardResult:
    """One completion's reward and where it came from."""

    reward: float | None  # None: no reward could be computed (sandbox infrastructure error)
    code: str | None  # the extracted code, None when the response has no valid code
    source: str  # "rm" or "tests"
    rm_score: float | None = None  # raw RM logit (rm source, in-process only)
    status: str | None = None  # verdict status (tests source)


# ---------------------------------------------------------------- inputs


def parse_tests(value: Any) -> dict | None:
    """A `tests` column value: a dict, its JSON text, or null/empty for no tests."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise UserError(f"tests column is not valid JSON ({e.msg}, column {e.colno})") from None
    if value is not None and not isinstance(value, dict):
        raise UserError(f"tests column must be an object or null, got {type(value).__name__}")
    return value


def problems_for(prompts: Sequence, kwargs: dict, problems: dict[str, Problem] | None = None) -> list[Problem]:
    """The Problem behind each row of a TRL reward call, from `problems` or from the dataset columns."""
    n = len(prompts)
    ids = kwargs.get("problem_id") or [None] * n
    texts = rm_prompts(prompts, kwargs)
    tests = kwargs.get("tests")
    headers = kwargs.get("import_header") or [None] * n
    out = []
    for i in range(n):
        pid = ids[i]
        if problems is not None and pid in problems:
            out.append(problems[pid])
            continue
        out.append(Problem(id=str(pid if pid is not None else f"row-{i}"), prompt=texts[i],
                           tests=parse_tests(tests[i]) if tests is not None else None,
                           extra={"import_header": headers[i]} if headers[i] else {}))
    return out


# ---------------------------------------------------------------- adapters (one each)


def start_sandbox(config=None):
    """The one way into the sandbox (issue 3): a pool of warm sandboxed workers (`sandbox.Verifier`), which the tests
    reward starts at its first call and keeps for the calls after it."""
    from codescaler import sandbox

    try:
        return sandbox.Verifier(config if config is not None else sandbox.SandboxConfig())
    except sandbox.SandboxUnavailable as e:
        raise UserError(f"the tests reward cannot start the sandbox: {e}") from None


def remote_scores(client, prompts: list[str], responses: list[str]) -> list[Scored]:
    """The one call into a `codescaler serve` RM through its `RewardClient` (retries with backoff)."""
    from codescaler.client import RewardServerError

    try:
        return client.score(prompts, responses)
    except RewardServerError as e:
        raise UserError(f"reward server {client.url}: {e}") from None


# ---------------------------------------------------------------- rewards


class _Reward:
    """TRL's reward-function protocol around `results(problems, responses)`."""

    __name__ = "codescaler"

    def __init__(self, problems: dict[str, Problem] | None = None):
        self.problems = problems

    def results(self, problems: list[Problem], responses: list[str]) -> list[RewardResult]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop what the reward keeps running between calls (the tests reward's sandboxed workers)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __call__(self, prompts: Sequence, completions: Sequence, completion_ids=None, **kwargs) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        results = self.results(problems_for(prompts, kwargs, self.problems),
                               [text_of(c, "assistant") for c in completions])
        log = kwargs.get("log_metric")
        if callable(log) and results:
            for name, value in batch_metrics(results, isinstance(self, HybridReward)).items():
                log(name, value)
        return [r.reward for r in results]


def batch_metrics(results: list[RewardResult], hybrid: bool = False) -> dict[str, float]:
    """Per-batch scalars worth logging: valid-code rate, and per-source rates where they apply."""
    n = len(results)
    out = {"valid_code_rate": sum(r.code is not None for r in results) / n}
    tests = [r for r in results if r.source == "tests"]
    if tests:
        out["pass_rate"] = sum(r.reward == 1.0 for r in tests) / len(tests)
        out["sandbox_errors"] = float(sum(r.reward is None for r in tests))
    if hybrid:
        out["tests_fraction"] = len(tests) / n
    return out


class RMReward(_Reward):
    """softplus(RM(problem prompt, extracted code)), 0 without valid code; in-process or remote."""

    __name__ = "codescaler_rm"

    def __init__(self, scorer: RewardScorer | ScorerConfig | None = None, url: str | None = None,
                 problems: dict[str, Problem] | None = None, timeout: float = 600.0):
        super().__init__(problems)
        self.scorer = self.client = None
        if url:  # the server extracts, scores and shapes with its own ScorerConfig
            from codescaler.client import RewardClient

            self.client = RewardClient(url, timeout=timeout)
        else:
            self.scorer = scorer if isinstance(scorer, RewardScorer) else RewardScorer(scorer)

    def results(self, problems: list[Problem], responses: list[str]) -> list[RewardResult]:
        prompts = [p.prompt for p in problems]
        if self.scorer is not None:
            return [RewardResult(s.reward, s.code, "rm", s.rm_score) for s in self.scorer.score(prompts, responses)]
        scored = remote_scores(self.client, prompts, responses) if responses else []
        return [RewardResult(s.reward, s.code, "rm", s.rm_score) for s in scored]


class TestsReward(_Reward):
    """1.0 when every test passes in the sandbox, 0.0 otherwise, None on a sandbox error."""

    __name__ = "codescaler_tests"
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, problems: dict[str, Problem] | None = None, sandbox_config=None, extraction: str = "syntax"):
        super().__init__(problems)
        self.sandbox_config, self.extraction = sandbox_config, extraction
        self._verifier = None  # warm workers, started by the first call and kept across GRPO steps until `close`
        self._lock = threading.Lock()

    def verifier(self):
        with self._lock:
            if self._verifier is None:
                self._verifier = start_sandbox(self.sandbox_config)
            return self._verifier

    def close(self) -> None:
        with self._lock:
            if self._verifier is not None:
                self._verifier.close()
                self._verifier = None

    def results(self, problems: list[Problem], responses: list[str]) -> list[RewardResult]:
        missing = sorted({p.id for p in problems if p.tests is None})
        if missing:
            raise UserError(f"the tests reward needs tests, and problem {missing[0]!r} has none "
                            f"({len(missing)} such); use --reward hybrid to score those with the RM")
        codes = [extract_code(r, self.extraction) for r in responses]
        verdicts = self.verifier().verify({p.id: p for p in problems}, [(p.id, c) for p, c in zip(problems, codes)]) \
            if responses else []
        out = []
        for code, v in zip(codes, verdicts):
            reward = None if v.status is Status.SANDBOX_ERROR else (1.0 if v.passed else 0.0)
            out.append(RewardResult(reward, code, "tests", status=v.status.value))
        return out


class HybridReward(_Reward):
    """Tests where a problem has them, the RM where `tests` is null (the paper's synthetic-data setting)."""

    __name__ = "codescaler_hybrid"

    def __init__(self, rm: RMReward, tests: TestsReward, problems: dict[str, Problem] | None = None):
        super().__init__(problems)
        self.rm, self.tests = rm, tests

    def close(self) -> None:
        self.tests.close()

    def results(self, problems: list[Problem], responses: list[str]) -> list[RewardResult]:
        by_tests = [i for i, p in enumerate(problems) if p.tests is not None]
        by_rm = [i for i, p in enumerate(problems) if p.tests is None]
        out: list[RewardResult | None] = [None] * len(problems)
        for idx, fn in ((by_tests, self.tests), (by_rm, self.rm)):
            if idx:
                for i, r in zip(idx, fn.results([problems[i] for i in idx], [responses[i] for i in idx])):
                    out[i] = r
        return out  # type: ignore[return-value]


def make_reward(kind: str, scorer: RewardScorer | ScorerConfig | None = None, url: str | None = None,
                problems: dict[str, Problem] | None = None, sandbox_config=None,
                extraction: str = "syntax", timeout: float = 600.0) -> _Reward:
    """The reward callable for `kind` in REWARDS. The RM is loaded only for rm and hybrid."""
    if kind not in REWARDS:
        raise UserError(f"--reward {kind!r}: use one of {', '.join(REWARDS)}")
    if kind == "tests":
        return TestsReward(problems, sandbox_config, extraction)
    rm = RMReward(scorer, url=url, problems=problems, timeout=timeout)
    if kind == "rm":
        return rm
    return HybridReward(rm, TestsReward(problems, sandbox_config, extraction), problems)
