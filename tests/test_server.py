"""`codescaler serve`: OpenRLHF protocol, equality with `codescaler score`, batching under load, bad input,
internal errors and graceful shutdown. Servers run on 127.0.0.1 only, on free ports, and are always stopped."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import requests
import torch
from serve_helpers import GatedScorer, policy_tokenizer, response_text, tiny_rm_dir, tiny_scorer

from codescaler.cli import main as cli_main
from codescaler.client import RewardClient
from codescaler.records import Problem, write_jsonl
from codescaler.payloads import sigmoid
from codescaler.server import BackgroundServer, ServerConfig, create_app

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LONG = "Read the statement carefully. " * 120  # about 700 tokens: over max_length=512, so truncated


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def scorer(root):
    return tiny_scorer(root)


@pytest.fixture(scope="module")
def problems(root):
    probs = [Problem(id=f"p{i}", prompt=f"Problem {i}: return x * {i} plus something.\n", tests=None)
             for i in range(5)]
    probs.append(Problem(id="long", prompt=LONG + "Return x.", tests=None))
    path = root / "problems.jsonl"
    write_jsonl(str(path), [p.to_dict() for p in probs])
    return str(path), {p.id: p for p in probs}


@pytest.fixture(scope="module")
def responses(root, problems):
    rows = []
    for k, pid in enumerate(problems[1]):
        for s, kind in enumerate(("code", "none", "think", "code")):
            rows.append({"problem_id": pid, "response": response_text(10 * k + s, kind), "sample": s})
    path = root / "responses.jsonl"
    write_jsonl(str(path), rows)
    return str(path), rows


@pytest.fixture(scope="module")
def server(scorer):
    with BackgroundServer(create_app(scorer, ServerConfig(port=0, max_wait_ms=20), model_name="tiny")) as srv:
        yield srv


@pytest.fixture(scope="module")
def problem_server(scorer, problems):
    cfg = ServerConfig(port=0, problems=problems[0])
    with BackgroundServer(create_app(scorer, cfg, problems[1], model_name="tiny")) as srv:
        yield srv


def openrlhf_sample(tok, statement: str, response: str) -> tuple[str, str]:
    """(query, prompt) exactly as OpenRLHF builds them: --apply_chat_template prompt, vLLM tokens, decode."""
    prompt = tok.apply_chat_template([{"role": "user", "content": statement}], tokenize=False,
                                     add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # stop token kept
    query = tok.batch_decode([prompt_ids + response_ids], skip_special_tokens=False)[0]
    return query, prompt


def openrlhf_request(url: str, data: dict, try_max_times: int = 5) -> dict:
    """OpenRLHF's request_api_wrapper: requests.post(json=...), raise_for_status, .json()."""
    headers = {"Content-Type": "application/json"}
    for _ in range(try_max_times):
        response = requests.post(url=url, json=data, headers=headers, timeout=180)
        response.raise_for_status()
        return response.json()
    raise AssertionError("unreachable")


def openrlhf_merge(rewards_info: list[dict], samples_len: list[int]) -> dict:
    """OpenRLHF's update_samples_with_rewards: torch.cat over server chunks, split per micro-batch."""
    out = {k: torch.cat([torch.as_tensor(i[k]) for i in rewards_info]).split(samples_len)
           for k in ("rewards", "scores")}
    for key in rewards_info[0]["extra_logs"]:
        out[key] = torch.cat([torch.as_tensor(i["extra_logs"][key]) for i in rewards_info]).split(samples_len)
    return out


# ---------------------------------------------------------------- OpenRLHF protocol


def test_get_reward_one_sample_per_request_like_openrlhf(server, scorer, root, problems):
    tok = policy_tokenizer(root)
    probs = list(problems[1].values())[:3]
    kinds = ("code", "none", "think")
    for i, (p, kind) in enumerate(zip(probs, kinds)):
        resp = response_text(i, kind)
        query, prompt = openrlhf_sample(tok, p.prompt, resp)
        assert query.startswith(prompt) and query.endswith("<|im_end|>")
        reply = openrlhf_request(server.url + "/get_reward", {"query": [query], "prompts": [prompt], "labels": ["x"]})
        assert set(reply) == {"rewards", "scores", "extra_logs"}
        [want] = scorer.score([p.prompt], [resp])
        assert reply["rewards"][0] == pytest.approx(want.reward, abs=1e-5)
        assert reply["extra_logs"]["code_extracted"] == [float(want.code is not None)]
        if want.code is None:
            assert reply["rewards"] == [0.0] and reply["scores"] == [0.0]
        else:
            assert reply["scores"][0] == pytest.approx(sigmoid(want.rm_score), abs=1e-6)
            assert 0.0 < reply["scores"][0] < 1.0


def test_get_reward_batches_like_openrlhf_remote_reward_model(server, scorer, root, problems):
    """RemoteRewardModel splits a rollout evenly across its servers (here 3 URLs, one server) and may post empty
    chunks; update_samples_with_rewards then torch.cat()s rewards/scores/extra_logs and splits per micro-batch."""
    tok = policy_tokenizer(root)
    probs = list(problems[1].values())
    samples = [(probs[i % len(probs)], response_text(100 + i, ("code", "none", "think")[i % 3])) for i in range(4)]
    queries, prompts = zip(*(openrlhf_sample(tok, p.prompt, r) for p, r in samples))
    labels = [""] * len(queries)
    urls = [server.url + "/get_reward"] * 3
    batch = (len(queries) + len(urls) - 1) // len(urls)  # 2, 2, 0: the third server gets empty lists
    infos = [openrlhf_request(u, {"query": list(queries[i * batch:(i + 1) * batch]),
                                  "prompts": list(prompts[i * batch:(i + 1) * batch]),
                                  "labels": labels[i * batch:(i + 1) * batch]}) for i, u in enumerate(urls)]
    assert infos[2] == {"rewards": [], "scores": [], "extra_logs": {k: [] for k in infos[0]["extra_logs"]}}
    merged = openrlhf_merge(infos, [1, 3])
    want = scorer.score([p.prompt for p, _ in samples], [r for _, r in samples])
    got = torch.cat(merged["rewards"]).tolist()
    assert got == pytest.approx([s.reward for s in want], abs=1e-5)
    assert torch.cat(merged["code_extracted"]).tolist() == [float(s.code is not None) for s in want]
    assert torch.cat(merged["rm_truncated"]).tolist() == [0.0] * 4


def test_get_reward_legacy_and_newer_openrlhf_payloads(server, scorer, root, problems):
    """Old OpenRLHF (remote_rm_fn) posts only {"query": [...]}; newer ones may add "metas" (extra keys are
    ignored). Both score the response of each query against its problem."""
    tok = policy_tokenizer(root)
    p = problems[1]["p2"]
    query, prompt = openrlhf_sample(tok, p.prompt, response_text(11))
    [want] = scorer.score([p.prompt], [response_text(11)])
    legacy = openrlhf_request(server.url + "/get_reward", {"query": [query]})
    newer = openrlhf_request(server.url + "/get_reward", {"query": [query], "prompts": [prompt], "labels": [None],
                                                          "metas": [{"id": "p2"}]})
    for reply in (legacy, newer):
        assert reply["rewards"][0] == pytest.approx(want.reward, abs=1e-5)


def test_get_reward_labels_are_problem_ids_with_problems(problem_server, scorer, root, problems):
    tok = policy_tokenizer(root)
    p = problems[1]["p3"]
    # the policy saw a different wording (system prompt, instructions); the RM must see the problem's own prompt
    query, prompt = openrlhf_sample(tok, "Solve this in Python please:\n" + p.prompt, response_text(7))
    reply = openrlhf_request(problem_server.url + "/get_reward", {"query": [query], "prompts": [prompt],
                                                                  "labels": ["p3"]})
    [want] = scorer.score([p.prompt], [response_text(7)])
    assert reply["rewards"][0] == pytest.approx(want.reward, abs=1e-5)
    r = requests.post(problem_server.url + "/get_reward", json={"query": [query], "prompts": [prompt],
                                                                "labels": ["nope"]}, timeout=30)
    assert r.status_code == 422 and r.json()["field"] == "labels[0]"


# ---------------------------------------------------------------- server == `codescaler score`


def test_server_scores_equal_codescaler_score(problem_server, server, root, problems, responses):
    out = root / "cli_scored.jsonl"
    rc = cli_main(["score", "--problems", problems[0], "--responses", responses[0], "--output", str(out),
                   "--model", tiny_rm_dir(root), "--dtype", "float32", "--device", "cpu", "--max-length", "512",
                   "--token-budget", "4096"])
    assert rc == 0
    cli = [json.loads(line) for line in open(out, encoding="utf-8")]
    assert len(cli) == len(responses[1]) and any(d["truncated"] for d in cli) and any(d["code"] is None for d in cli)

    r = requests.post(problem_server.url + "/score", json={"records": responses[1]}, timeout=120)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    with_prompts = requests.post(server.url + "/score", json={"records": [
        {"prompt": problems[1][d["problem_id"]].prompt, "response": d["response"]} for d in responses[1]]},
        timeout=120).json()["results"]
    tok = policy_tokenizer(root)
    pairs = [openrlhf_sample(tok, problems[1][d["problem_id"]].prompt, d["response"]) for d in responses[1]]
    rewards = requests.post(server.url + "/get_reward", json={"query": [q for q, _ in pairs],
                            "prompts": [p for _, p in pairs], "labels": None}, timeout=120).json()["rewards"]
    for d, a, b, rw in zip(cli, results, with_prompts, rewards):
        for got in (a, b):
            assert got["code"] == d["code"] and got["truncated"] == d["truncated"]
            if d["rm_score"] is None:
                assert got["rm_score"] is None and got["reward"] == 0.0
            else:
                assert got["rm_score"] == pytest.approx(d["rm_score"], abs=1e-5)
            assert got["reward"] == pytest.approx(d["reward"], abs=1e-5)
        assert rw == pytest.approx(d["reward"], abs=1e-5)


# ---------------------------------------------------------------- load: batching, routing, no errors


def test_load_64_concurrent_clients_batch_and_route(scorer, root, problems):
    """64 concurrent callers, 4 single-sample requests each (OpenRLHF's per-sample mode): 0 errors, every
    caller gets the result for its own input, and the metrics show merged batches."""
    tok = policy_tokenizer(root)
    probs = list(problems[1].values())[:5]
    n_clients, per_client = 64, 4
    inputs = [(probs[i % 5].prompt, response_text(1000 + i, ("code", "think", "none", "code")[i % 4]))
              for i in range(n_clients * per_client)]
    want = scorer.score([p for p, _ in inputs], [r for _, r in inputs])
    queries = [openrlhf_sample(tok, p, r) for p, r in inputs]
    app = create_app(scorer, ServerConfig(port=0, max_wait_ms=10, max_batch_items=64), model_name="tiny")

    async def run(url: str):
        client = RewardClient(url, retries=0, timeout=60)

        async def caller(c: int):
            got = []
            for k in range(per_client):
                i = c * per_client + k
                if k % 2 == 0:
                    reply = await client.aget_reward([queries[i][0]], [queries[i][1]], [""])
                    got.append((i, reply["rewards"][0], reply["extra_logs"]["code_extracted"][0]))
                else:
                    [s] = await client.ascore([inputs[i][0]], [inputs[i][1]])
                    assert s.code == want[i].code  # the code extracted from *this* caller's response
                    got.append((i, s.reward, float(s.code is not None)))
            return got

        try:
            results = await asyncio.wait_for(asyncio.gather(*(caller(c) for c in range(n_clients))), 120)
            return [x for r in results for x in r], await client.ametrics()
        finally:
            await client.aclose()

    with BackgroundServer(app) as srv:
        got, metrics = asyncio.run(run(srv.url))
    assert len(got) == n_clients * per_client
    for i, reward, has_code in got:
        assert reward == pytest.approx(want[i].reward, abs=1e-4), i
        assert has_code == float(want[i].code is not None)
    assert metrics["errors"] == {"4xx": 0, "5xx": 0, "last": None}
    batches = metrics["batches"]
    assert batches["items_scored"] == n_clients * per_client
    assert batches["max_requests_per_call"] > 1, batches
    assert batches["scorer_calls"] < n_clients * per_client
    assert metrics["requests"]["/score"]["latency_ms"]["p99"] > 0


# ---------------------------------------------------------------- bad input


BAD = [  # (id, path, raw body, status, field)
    ("malformed-json", "/get_reward", b'{"query": [', 400, "body"),
    ("non-utf8", "/get_reward", b'{"query": ["\xff\xfe"], "prompts": [""]}', 400, "body"),
    ("empty-body", "/score", b"", 400, "body"),
    ("too-deep", "/score", b"[" * 50000, 400, "body"),
    ("not-an-object", "/get_reward", b"[1, 2]", 422, "body"),
    ("query-missing", "/get_reward", b'{"prompts": ["a"]}', 422, "query"),
    ("query-not-list", "/get_reward", b'{"query": "abc", "prompts": ["a"]}', 422, "query"),
    ("query-item-type", "/get_reward", b'{"query": ["a", 3], "prompts": ["a", "b"]}', 422, "query[1]"),
    ("query-item-nan", "/get_reward", b'{"query": [NaN], "prompts": ["a"]}', 422, "query[0]"),
    ("prompts-not-list", "/get_reward", b'{"query": ["a"], "prompts": "a"}', 422, "prompts"),
    ("prompts-item-type", "/get_reward", b'{"query": ["a"], "prompts": [{}]}', 422, "prompts[0]"),
    ("prompts-length", "/get_reward", b'{"query": ["a", "b"], "prompts": ["a"]}', 422, "prompts"),
    ("labels-length", "/get_reward", b'{"query": ["a"], "prompts": ["a"], "labels": [1, 2]}', 422, "labels"),
    ("no-prompts-no-template", "/get_reward", b'{"query": ["just text"]}', 422, "query[0]"),
    ("lone-surrogate", "/get_reward", b'{"query": ["\\ud800"], "prompts": [""]}', 422, "query[0]"),
    ("records-missing", "/score", b'{"query": ["a"]}', 422, "records"),
    ("records-empty", "/score", b'{"records": []}', 422, "records"),
    ("records-not-list", "/score", b'{"records": {"prompt": "a"}}', 422, "records"),
    ("record-not-object", "/score", b'{"records": ["x"]}', 422, "records[0]"),
    ("response-missing", "/score", b'{"records": [{"prompt": "a"}]}', 422, "records[0].response"),
    ("response-type", "/score", b'{"records": [{"prompt": "a", "response": ["x"]}]}', 422, "records[0].response"),
    ("prompt-type", "/score", b'{"records": [{"prompt": 5, "response": "x"}]}', 422, "records[0].prompt"),
    ("no-prompt-or-id", "/score", b'{"records": [{"response": "x"}]}', 422, "records[0]"),
    ("problem-id-without-problems", "/score", b'{"records": [{"problem_id": "p1", "response": "x"}]}', 422,
     "records[0].problem_id"),
    ("too-many-items", "/score", json.dumps({"records": [{"prompt": "a", "response": "b"}] * 9}).encode(), 413,
     "records"),
    ("oversize-body", "/score", json.dumps({"records": [{"prompt": "a" * 70000, "response": "b"}]}).encode(), 413,
     "body"),
]


@pytest.fixture(scope="module")
def strict_server(scorer):
    cfg = ServerConfig(port=0, max_request_items=8, max_queue_items=64, max_body_mb=0.0625)  # 64 KiB
    with BackgroundServer(create_app(scorer, cfg, model_name="tiny")) as srv:
        yield srv


@pytest.mark.parametrize("name,path,raw,status,field", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_4xx_naming_the_field(strict_server, name, path, raw, status, field):
    r = httpx.post(strict_server.url + path, content=raw, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["field"] == field and body["detail"].startswith(field + ":"), body
    health = httpx.get(strict_server.url + "/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_oversize_chunked_body_without_length(strict_server):
    def chunks():
        for _ in range(100):
            yield b" " * 4096  # 400 KiB of whitespace, streamed with no Content-Length

    r = httpx.post(strict_server.url + "/score", content=chunks(), timeout=30)
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_after_bad_input_the_server_still_scores(strict_server, scorer):
    for _, path, raw, _, _ in BAD:
        httpx.post(strict_server.url + path, content=raw, timeout=30)
    r = httpx.post(strict_server.url + "/score", json={"records": [{"prompt": "p", "response": response_text(3)}]},
                   timeout=30)
    assert r.status_code == 200
    assert r.json()["results"][0]["reward"] == pytest.approx(scorer.score(["p"], [response_text(3)])[0].reward,
                                                             abs=1e-5)
    m = httpx.get(strict_server.url + "/metrics", timeout=30).json()
    assert m["errors"]["5xx"] == 0 and m["errors"]["4xx"] >= len(BAD)


# ---------------------------------------------------------------- internal errors, shutdown


class FaultyScorer:
    """The real scorer, with a fault injected for responses containing POISON."""

    def __init__(self, scorer):
        self.inner = scorer

    def score(self, prompts, responses, progress=None):
        if any("POISON" in r for r in responses):
            raise RuntimeError("injected fault")
        return self.inner.score(prompts, responses, progress)


def test_internal_error_is_5xx_and_only_for_its_caller(scorer):
    app = create_app(FaultyScorer(scorer), ServerConfig(port=0, max_wait_ms=300), model_name="faulty")

    async def run(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            reqs = [c.post("/score", json={"records": [{"prompt": "p", "response": response_text(i)}]})
                    for i in range(3)]
            reqs.append(c.post("/score", json={"records": [{"prompt": "p", "response": "POISON"}]}))
            return await asyncio.gather(*reqs)

    with BackgroundServer(app) as srv:
        replies = asyncio.run(run(srv.url))
        assert [r.status_code for r in replies] == [200, 200, 200, 500]
        assert "injected fault" in replies[3].json()["detail"]
        for i, r in enumerate(replies[:3]):
            assert r.json()["results"][0]["code"] == scorer.score(["p"], [response_text(i)])[0].code
        assert httpx.get(srv.url + "/health", timeout=30).json()["status"] == "ok"
        again = httpx.post(srv.url + "/score", json={"records": [{"prompt": "p", "response": response_text(9)}]},
                           timeout=30)
        assert again.status_code == 200
        m = httpx.get(srv.url + "/metrics", timeout=30).json()
        assert m["errors"]["5xx"] == 1 and "injected fault" in m["errors"]["last"]
        assert m["batches"]["max_requests_per_call"] >= 1


def test_graceful_shutdown_finishes_in_flight_requests(scorer):
    gated = GatedScorer(scorer)
    srv = BackgroundServer(create_app(gated, ServerConfig(port=0), model_name="gated")).start()
    result = {}

    def call():
        result["r"] = httpx.post(srv.url + "/score", json={"records": [{"prompt": "p", "response": response_text(5)}]},
                                 timeout=60)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert gated.entered.wait(30)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        time.sleep(0.5)  # shutdown has begun: no new connections
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/health", timeout=5)
        assert caller.is_alive()  # still waiting for its answer
        gated.gate.set()
        caller.join(30)
        stopper.join(30)
        assert not stopper.is_alive()
        assert result["r"].status_code == 200
        assert result["r"].json()["results"][0]["code"] == scorer.score(["p"], [response_text(5)])[0].code
    finally:
        gated.gate.set()
        srv.stop()


# ---------------------------------------------------------------- the CLI verb


def test_cli_serve_default_model_sigterm_exits_cleanly(root, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(tiny_rm_dir(root), home / "default-rm")  # `make demo`'s default RM location
    env = {**os.environ, "CODESCALER_HOME": str(home), "PYTHONPATH": REPO}
    proc = subprocess.Popen([sys.executable, "-m", "codescaler", "serve", "--port", "0", "--dtype", "float32",
                             "--device", "cpu", "--log-level", "warning"], env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        url, lines, deadline = None, [], time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if " at http://127.0.0.1:" in line:
                url = line.split(" at ")[1].split()[0]
        assert url is not None, "".join(lines)
        assert "default-rm" in "".join(lines)
        assert httpx.get(url + "/health", timeout=30).json()["status"] == "ok"
        r = httpx.post(url + "/score", json={"records": [{"prompt": "p", "response": response_text(1)}]}, timeout=60)
        assert r.status_code == 200 and r.json()["results"][0]["code"] is not None
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
        assert proc.returncode == 0, rest
        assert "stopped after finishing the requests in flight" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_cli_serve_without_any_model_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CODESCALER_HOME", str(tmp_path / "empty"))
    assert cli_main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("codescaler serve: error: no --model given") and "\n" not in err


def test_cli_serve_on_a_taken_port_fails_before_loading_the_model(tmp_path, capsys):
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:  # the model does not exist: had it been loaded first, its error would be the one reported
        assert cli_main(["serve", "--port", str(port), "--model", str(tmp_path / "no-such-rm")]) == 2
    finally:
        busy.close()
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "no-such-rm" not in err


def test_server_config_refuses_a_nan_body_limit():
    with pytest.raises(ValueError, match="max_body_mb=nan"):
        ServerConfig(max_body_mb=float("nan"))
