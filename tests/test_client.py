"""`RewardClient` against a real `codescaler serve` app on 127.0.0.1 (free ports, always stopped): sync and async
answers equal in-process scoring, chunking keeps order, retries back off on 5xx/503 and transport errors, a 4xx
is raised at once, and timeouts end a call."""

import asyncio
import socket
import threading
import time

import httpx
import pytest
from serve_helpers import GatedScorer, response_text, tiny_scorer

from codescaler.client import RewardClient, RewardServerError
from codescaler.server import BackgroundServer, ServerConfig, create_app


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return tiny_scorer(tmp_path_factory.mktemp("client"))


@pytest.fixture(scope="module")
def server(scorer):
    with BackgroundServer(create_app(scorer, ServerConfig(port=0), model_name="tiny")) as srv:
        yield srv


PROMPTS = [f"Problem {i}: return x * {i}." for i in range(5)]
RESPONSES = [response_text(i, ("code", "none", "think", "code", "code")[i]) for i in range(5)]


def metrics_count(url: str, path: str) -> dict:
    m = httpx.get(url + "/metrics", timeout=30).json()
    return m["requests"].get(path, {"by_status": {}})["by_status"]


def test_sync_and_async_score_equal_in_process_and_chunks_keep_order(server, scorer):
    want = scorer.score(PROMPTS, RESPONSES)
    before = sum(metrics_count(server.url, "/score").values())
    with RewardClient(server.url, max_items_per_request=2) as client:  # 5 pairs -> 3 requests
        got = client.score(PROMPTS, RESPONSES)
    assert sum(metrics_count(server.url, "/score").values()) - before == 3

    async def run():
        async with RewardClient(server.url, max_items_per_request=2) as client:
            return await client.ascore(PROMPTS, RESPONSES)

    for result in (got, asyncio.run(run())):
        assert [s.code for s in result] == [s.code for s in want]
        assert [s.reward for s in result] == pytest.approx([s.reward for s in want], abs=1e-5)
        assert result[1].code is None and result[1].reward == 0.0


def test_trl_signature_and_openrlhf_url(server, scorer):
    conv_prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}] for p in PROMPTS]
    completions = [[{"role": "assistant", "content": r}] for r in RESPONSES]
    with RewardClient(server.url) as client:
        assert client(conv_prompts, completions) == pytest.approx(scorer(PROMPTS, RESPONSES), abs=1e-5)
        assert client.__name__ == "codescaler_rm_remote"
    # OpenRLHF's --remote_rm_url is the full endpoint URL; the client accepts it too
    query = "<|im_start|>user\n" + PROMPTS[0] + "<|im_end|>\n<|im_start|>assistant\n"
    with RewardClient(server.url + "/get_reward", max_items_per_request=1) as client:
        reply = client.get_reward([query + RESPONSES[0] + "<|im_end|>", query + RESPONSES[1]], [query, query])
    want = scorer.score([PROMPTS[0], PROMPTS[0]], RESPONSES[:2])
    assert reply["rewards"] == pytest.approx([s.reward for s in want], abs=1e-5)
    assert reply["extra_logs"]["code_extracted"] == [1.0, 0.0]


def test_length_mismatch_is_a_local_error(server):
    with RewardClient(server.url) as client, pytest.raises(ValueError, match="2 prompts but 1 responses"):
        client.score(["a", "b"], ["c"])


def test_4xx_is_raised_at_once_with_the_field(server):
    before = metrics_count(server.url, "/score").get("422", 0)
    with RewardClient(server.url, retries=3, backoff=0.01) as client:
        with pytest.raises(RewardServerError) as e:
            client.score(["\ud800"], ["x"])  # a lone surrogate: valid JSON escape, not valid Unicode
    assert e.value.status == 422 and "records[0].prompt" in str(e.value)
    assert metrics_count(server.url, "/score").get("422", 0) == before + 1  # not retried


class FlakyScorer:
    """The real scorer, failing its first `failures` calls (an internal error: the server answers 500)."""

    def __init__(self, scorer, failures):
        self.inner, self.failures, self.calls = scorer, failures, 0

    def score(self, prompts, responses, progress=None):
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"transient fault {self.calls}")
        return self.inner.score(prompts, responses, progress)


def test_5xx_is_retried_with_backoff_sync_and_async(scorer):
    flaky = FlakyScorer(scorer, failures=2)
    with BackgroundServer(create_app(flaky, ServerConfig(port=0, max_wait_ms=0), model_name="flaky")) as srv:
        with RewardClient(srv.url, retries=3, backoff=0.1) as client:
            t0 = time.perf_counter()
            [s] = client.score([PROMPTS[0]], [RESPONSES[0]])
            waited = time.perf_counter() - t0
        assert s.reward == pytest.approx(scorer.score([PROMPTS[0]], [RESPONSES[0]])[0].reward, abs=1e-5)
        assert waited >= 0.05 + 0.1  # two backoffs of at least backoff * 2**n * 0.5
        assert metrics_count(srv.url, "/score") == {"500": 2, "200": 1}

        flaky.calls, flaky.failures = 0, 5

        async def run():
            async with RewardClient(srv.url, retries=2, backoff=0.01) as client:
                return await client.ascore([PROMPTS[0]], [RESPONSES[0]])

        with pytest.raises(RewardServerError, match="failed 3 times; last error: HTTP 500.*transient fault 3"):
            asyncio.run(run())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_retried_then_raised():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with RewardClient(url, retries=2, backoff=0.01) as client:
        t0 = time.perf_counter()
        with pytest.raises(RewardServerError, match="failed 3 times; last error: ConnectError"):
            client.health()
        assert time.perf_counter() - t0 < 10


class SlowScorer:
    def __init__(self, scorer, seconds):
        self.inner, self.seconds = scorer, seconds

    def score(self, prompts, responses, progress=None):
        time.sleep(self.seconds)
        return self.inner.score(prompts, responses, progress)


def test_timeout_ends_the_call_without_sending_the_batch_again(scorer):
    slow = SlowScorer(scorer, 1.0)
    app = create_app(slow, ServerConfig(port=0, max_wait_ms=0), model_name="slow")
    with BackgroundServer(app) as srv, RewardClient(srv.url, timeout=0.2, retries=3, backoff=0.01) as client:
        t0 = time.perf_counter()
        with pytest.raises(RewardServerError, match="no answer within 0.2 s.*not retried"):
            client.score([PROMPTS[0]], [RESPONSES[0]])
        assert time.perf_counter() - t0 < 0.9

        async def run():
            async with RewardClient(srv.url, timeout=0.2, retries=3, backoff=0.01) as aclient:
                return await aclient.ascore([PROMPTS[0]], [RESPONSES[0]])

        with pytest.raises(RewardServerError, match="not retried"):
            asyncio.run(run())
        deadline = time.monotonic() + 10
        while sum(metrics_count(srv.url, "/score").values()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the server finishes scoring both abandoned requests
        time.sleep(0.5)
        assert sum(metrics_count(srv.url, "/score").values()) == 2  # each batch was sent once, never again


def test_overloaded_503_honours_retry_after_then_succeeds(scorer):
    """A full queue answers 503 + Retry-After; the client waits and gets its answer once there is room."""
    gated = GatedScorer(scorer)
    cfg = ServerConfig(port=0, max_wait_ms=0, max_request_items=2, max_queue_items=2)
    srv = BackgroundServer(create_app(gated, cfg, model_name="gated")).start()
    post = lambda n: httpx.post(srv.url + "/score", json={"records": [  # noqa: E731
        {"prompt": PROMPTS[0], "response": RESPONSES[0]}] * n}, timeout=60)
    first = threading.Thread(target=post, args=(1,))  # taken by the worker, held at the gate
    second = threading.Thread(target=post, args=(2,))  # fills the queue
    try:
        first.start()
        assert gated.entered.wait(30)
        second.start()
        deadline = time.monotonic() + 30
        while httpx.get(srv.url + "/health", timeout=30).json()["queued_items"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        threading.Timer(0.5, gated.gate.set).start()
        with RewardClient(srv.url, retries=3, backoff=0.01) as client:
            t0 = time.perf_counter()
            [s] = client.score([PROMPTS[1]], [RESPONSES[3]])
            assert time.perf_counter() - t0 >= 0.9  # waited Retry-After: 1, not the 0.01 s backoff
        assert s.code == scorer.score([PROMPTS[1]], [RESPONSES[3]])[0].code
        assert metrics_count(srv.url, "/score").get("503", 0) >= 1
    finally:
        gated.gate.set()
        first.join(30)
        second.join(30)
        srv.stop()


def test_aclose_leaves_the_sync_client_usable(server):
    async def run(client):
        await client.ahealth()
        await client.aclose()

    with RewardClient(server.url) as client:
        asyncio.run(run(client))
        assert client.health()["status"] == "ok"
