"""Client for `codescaler serve`: sync and async, with timeouts and retries that back off.

    client = RewardClient("http://127.0.0.1:5000")
    scored = client.score(prompts, responses)            # list[Scored], in order
    rewards = client(prompts, completions)               # TRL reward-function signature
    reply = client.get_reward(queries, prompts, labels)  # OpenRLHF's {"rewards", "scores", "extra_logs"}
    scored = await client.ascore(prompts, responses)     # the same from async code (verl, agents)

Transport failures, timeouts and 429/5xx answers are retried with exponential backoff and jitter (honouring
Retry-After); a 4xx means the request itself is wrong and is raised at once as `RewardServerError`, with the
server's message naming the field. Long lists are sent in chunks of `max_items_per_request`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Sequence

from codescaler.payloads import rm_prompts, text_of
from codescaler.records import Scored

ENDPOINTS = ("/score", "/get_reward", "/health", "/metrics")


class RewardServerError(RuntimeError):
    """The server refused the request (4xx), or kept failing after every retry."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _base_url(url: str) -> str:
    """`http://host:port`, also from a full endpoint URL such as OpenRLHF's `--remote_rm_url .../get_reward`."""
    url = url.rstrip("/")
    for ep in ENDPOINTS:
        if url.endswith(ep):
            return url[:-len(ep)]
    return url


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def _body(payload: dict | None) -> dict:
    """Request arguments for a JSON payload, escaped to ASCII as `requests` does (OpenRLHF's client): text
    that is not valid Unicode (a lone surrogate) then reaches the server, which names the field, instead of
    failing inside httpx's encoder."""
    if payload is None:
        return {}
    return {"content": json.dumps(payload, allow_nan=False).encode("ascii"),
            "headers": {"Content-Type": "application/json"}}




class RewardClient:
    """Talks to one reward server. Thread-safe for sync calls; async calls share one client per event loop."""

    __name__ = "codescaler_rm_remote"  # TRL logs reward functions by __name__

    def __init__(self, url: str = "http://127.0.0.1:5000", timeout: float = 180.0, retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 16.0, max_items_per_request: int = 1024,
                 retry_statuses: Sequence[int] = (429, 500, 502, 503, 504), max_connections: int = 32):
        """
        url: the server (`http://127.0.0.1:5000`; a full `/get_reward` URL works too).
        timeout: seconds per attempt (connect, send, wait for the answer).
        retries: extra attempts after the first, for connection errors and `retry_statuses` (busy; a proxy
            between; a 500, which may pass, e.g. out of memory on one merged batch); a read timeout is raised at
            once, since the server may still be scoring that batch and a retry would send it again.
        backoff, max_backoff: the n-th retry waits about backoff * 2**n seconds (jittered), at most max_backoff.
        max_items_per_request: longer lists go in several requests (the server's default cap is 8192).
        max_connections: most requests in flight at once from the async API; more concurrent calls wait their
            turn (the server merges whatever arrives together, so a few connections keep it busy).
        """
        import httpx

        if retries < 0 or timeout <= 0 or max_items_per_request < 1 or max_connections < 1:
            raise ValueError("need retries >= 0, timeout > 0, max_items_per_request >= 1 and max_connections >= 1")
        self.url = _base_url(url)
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.max_items_per_request = max_items_per_request
        self.retry_statuses = frozenset(retry_statuses)
        self.max_connections = max_connections
        self._sync = httpx.Client(base_url=self.url, timeout=self.timeout)
        self._async: list = []  # small httpx pools, used in turn (see _async_client)
        self._async_turn = 0
        self._async_gate: asyncio.Semaphore | None = None
        self._async_loop = None

    # ------------------------------------------------------------ plumbing

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(self.max_backoff, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return min(self.max_backoff, self.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)

    def _check(self, response) -> dict | None:
        """The JSON answer; None when the status is worth a retry; raises on a 4xx or a broken answer."""
        if response.status_code in self.retry_statuses:
            return None
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text[:500]}
        if response.status_code >= 400:
            detail = body.get("detail", body) if isinstance(body, dict) else body
            raise RewardServerError(f"{response.request.url.path}: HTTP {response.status_code}: {detail}",
                                    response.status_code)
        if not isinstance(body, dict):
            raise RewardServerError(f"{response.request.url.path}: expected a JSON object, got {body!r:.200}")
        return body

    def _timed_out(self, path: str, e) -> RewardServerError:
        return RewardServerError(f"{self.url}{path}: no answer within {self.timeout.read} s ({type(e).__name__}); "
                                 "not retried, since the server may still be scoring it: raise the timeout")

    def _give_up(self, path: str, last: str) -> RewardServerError:
        return RewardServerError(f"{self.url}{path}: failed {self.retries + 1} times; last error: {last}")

    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        import httpx

        last = ""
        for attempt in range(self.retries + 1):
            retry_after = None
            try:
                response = self._sync.request(method, path, **_body(payload))
                body = self._check(response)
                if body is not None:
                    return body
                last, retry_after = f"HTTP {response.status_code}: {response.text[:300]}", \
                    response.headers.get("retry-after")
            except httpx.ReadTimeout as e:
                raise self._timed_out(path, e) from None
            except httpx.TransportError as e:  # connect/write errors, a dropped connection
                last = f"{type(e).__name__}: {e}"
            if attempt < self.retries:
                time.sleep(self._delay(attempt, retry_after))
        raise self._give_up(path, last)

    def _async_client(self):
        """The next of several small httpx pools for this event loop.

        One httpx.AsyncClient slows down sharply with many requests in flight (its pool bookkeeping grows with
        them; encode/httpx#3215): 64 concurrent callers got about 100 requests/s from one pool of 256
        connections against 300-550 from 4-connection pools used in turn, on this 2-core machine.
        """
        import httpx

        loop = asyncio.get_running_loop()
        if not self._async or self._async_loop is not loop:
            per_pool = min(4, self.max_connections)
            self._async = [httpx.AsyncClient(base_url=self.url, timeout=self.timeout,
                                             limits=httpx.Limits(max_connections=per_pool,
                                                                 max_keepalive_connections=per_pool))
                           for _ in range(-(-self.max_connections // per_pool))]
            self._async_gate = asyncio.Semaphore(self.max_connections)
            self._async_loop = loop
        self._async_turn = (self._async_turn + 1) % len(self._async)
        return self._async[self._async_turn]

    async def _arequest(self, method: str, path: str, payload: dict | None = None) -> dict:
        import httpx

        last = ""
        for attempt in range(self.retries + 1):
            retry_after = None
            try:
                client = self._async_client()
                async with self._async_gate:
                    response = await client.request(method, path, **_body(payload))
                body = self._check(response)
                if body is not None:
                    return body
                last, retry_after = f"HTTP {response.status_code}: {response.text[:300]}", \
                    response.headers.get("retry-after")
            except httpx.ReadTimeout as e:
                raise self._timed_out(path, e) from None
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < self.retries:
                await asyncio.sleep(self._delay(attempt, retry_after))
        raise self._give_up(path, last)

    # ------------------------------------------------------------ payloads

    @staticmethod
    def _score_payload(prompts: Sequence[str], responses: Sequence[str]) -> dict:
        return {"records": [{"prompt": p, "response": r} for p, r in zip(prompts, responses)]}

    @staticmethod
    def _scored(body: dict, n: int) -> list[Scored]:
        results = body.get("results")
        if not isinstance(results, list) or len(results) != n:
            raise RewardServerError(f"/score: expected {n} results, got {body!r:.200}")
        return [Scored.from_dict(r, "/score") for r in results]

    @staticmethod
    def _reward_payload(queries, prompts, labels) -> dict:
        return {"query": list(queries), "prompts": None if prompts is None else list(prompts),
                "labels": None if labels is None else list(labels)}

    @staticmethod
    def _merge_rewards(parts: list[dict], n: int) -> dict:
        out = {"rewards": [], "scores": [], "extra_logs": {}}
        for part in parts:
            out["rewards"] += part.get("rewards", [])
            out["scores"] += part.get("scores", [])
            for k, v in part.get("extra_logs", {}).items():
                out["extra_logs"].setdefault(k, []).extend(v)
        if len(out["rewards"]) != n:
            raise RewardServerError(f"/get_reward: expected {n} rewards, got {len(out['rewards'])}")
        return out

    @staticmethod
    def _check_lengths(a: Sequence, b: Sequence | None, what: str) -> None:
        if b is not None and len(a) != len(b):
            raise ValueError(f"{len(a)} {what[0]} but {len(b)} {what[1]}")

    # ------------------------------------------------------------ sync API

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Scored]:
        """Scored fields (code, rm_score, reward, truncated) for each (problem prompt, LLM response), in order."""
        self._check_lengths(prompts, responses, ("prompts", "responses"))
        out: list[Scored] = []
        for a, b in _chunks(len(prompts), self.max_items_per_request):
            out += self._scored(self._request("POST", "/score", self._score_payload(prompts[a:b], responses[a:b])),
                                b - a)
        return out

    def get_reward(self, queries: Sequence[str], prompts: Sequence[str] | None = None,
                   labels: Sequence | None = None) -> dict:
        """OpenRLHF's call: queries are prompt+response under the policy's chat template."""
        self._check_lengths(queries, prompts, ("queries", "prompts"))
        self._check_lengths(queries, labels, ("queries", "labels"))
        parts = [self._request("POST", "/get_reward", self._reward_payload(
            queries[a:b], None if prompts is None else prompts[a:b], None if labels is None else labels[a:b]))
            for a, b in _chunks(len(queries), self.max_items_per_request)]
        return self._merge_rewards(parts, len(queries))

    def health(self) -> dict:
        return self._request("GET", "/health")

    def metrics(self) -> dict:
        return self._request("GET", "/metrics")

    def __call__(self, prompts: Sequence, completions: Sequence, completion_ids=None, **kwargs) -> list[float]:
        """TRL reward-function signature (plain or conversational), like `RewardScorer.__call__`: the RM sees the
        `problem_prompt` column when the dataset has one."""
        return [s.reward for s in self.score(rm_prompts(prompts, kwargs),
                                             [text_of(c, "assistant") for c in completions])]

    def close(self) -> None:
        self._sync.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ async API

    async def ascore(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Scored]:
        self._check_lengths(prompts, responses, ("prompts", "responses"))
        spans = _chunks(len(prompts), self.max_items_per_request)
        bodies = await asyncio.gather(*(self._arequest("POST", "/score", self._score_payload(
            prompts[a:b], responses[a:b])) for a, b in spans))
        return [s for body, (a, b) in zip(bodies, spans) for s in self._scored(body, b - a)]

    async def aget_reward(self, queries: Sequence[str], prompts: Sequence[str] | None = None,
                          labels: Sequence | None = None) -> dict:
        self._check_lengths(queries, prompts, ("queries", "prompts"))
        self._check_lengths(queries, labels, ("queries", "labels"))
        parts = await asyncio.gather(*(self._arequest("POST", "/get_reward", self._reward_payload(
            queries[a:b], None if prompts is None else prompts[a:b], None if labels is None else labels[a:b]))
            for a, b in _chunks(len(queries), self.max_items_per_request)))
        return self._merge_rewards(list(parts), len(queries))

    async def ahealth(self) -> dict:
        return await self._arequest("GET", "/health")

    async def ametrics(self) -> dict:
        return await self._arequest("GET", "/metrics")

    async def aclose(self) -> None:
        """Close the async pools; the sync client stays usable (`close()` ends it)."""
        for client in self._async:
            await client.aclose()
        self._async = []

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()
