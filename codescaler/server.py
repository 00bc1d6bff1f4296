"""`codescaler serve`: the reward model as an HTTP service, batched across callers.

Endpoints (one model copy, bound to 127.0.0.1 unless `--host` says otherwise):

- `POST /score` `{"records": [{"prompt": ..., "response": ...} | {"problem_id": ..., "response": ...}]}`
  -> `{"results": [{"code", "rm_score", "reward", "truncated"}, ...]}` in request order (SPEC "Scored").
  `problem_id` needs `--problems`; an explicit `prompt` wins over it.
- `POST /get_reward`, OpenRLHF's remote-RM protocol: `{"query": [...], "prompts": [...], "labels": [...]}`
  -> `{"rewards": [...], "scores": [...], "extra_logs": {...}}`. Each query is the policy prompt plus its
  response under the policy's chat template; the response is what follows the prompt in the query, with
  trailing end-of-turn tokens dropped. The RM's problem text is the last user turn of the prompt, or, with
  `--problems`, the problem whose id is the label. `rewards` are the shaped rewards (SPEC), `scores` are
  sigmoid(rm_score) (0.0 without code): the 0-1 value OpenRLHF's dynamic filtering reads.
- `GET /health` (liveness plus a summary) and `GET /metrics` (requests, batch sizes, latency percentiles, errors).

Requests that arrive together are merged (waiting at most `--max-wait-ms` for company) into one call of the
shared `RewardScorer.score`, which cuts length-sorted token-budget forward batches; the model runs in one
worker thread so the event loop keeps accepting and answering. Bad input gets a 4xx naming the field; an
internal error gets a 5xx with its message and the server keeps serving. SIGTERM/SIGINT finish the requests
in flight before exiting.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' `Request` annotation at runtime.
import asyncio
import contextlib
import math
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

from codescaler.payloads import BadInput, decode_body, openrlhf_reply, parse_reward_request, parse_score_request
from codescaler.records import Scored, UserError
from codescaler.scorer import check_finite

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServerConfig:
    """How the reward server listens, batches and protects itself."""

    host: str = field(default="127.0.0.1", metadata={
        "help": "address to bind; the default serves this machine only (use 0.0.0.0 to expose it, at your own risk)"})
    port: int = field(default=5000, metadata={"help": "TCP port (OpenRLHF's examples use 5000); 0 picks a free one"})
    problems: str | None = field(default=None, metadata={
        "help": "problems JSONL(.gz): lets /score take problem_id and /get_reward take problem ids as labels"})
    max_wait_ms: float = field(default=5.0, metadata={
        "help": "how long an idle server waits for more requests to join a batch (a busy one never waits)"})
    max_batch_items: int = field(default=512, metadata={
        "help": "cap on (prompt, response) pairs merged into one scorer call; requests are never split"})
    max_request_items: int = field(default=8192, metadata={"help": "most pairs one request may carry (413 above)"})
    max_body_mb: float = field(default=64.0, metadata={"help": "largest request body in MiB (413 above)"})
    max_queue_items: int = field(default=65536, metadata={
        "help": "pairs waiting to be scored before new requests get 503 + Retry-After (the client retries)"})
    graceful_timeout_s: int = field(default=120, metadata={
        "help": "on SIGTERM, how long in-flight requests may take to finish before they are cancelled"})
    access_log: bool = field(default=False, metadata={"help": "log every request (noisy under RL load)"})

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port}; use 0-65535 (0 = any free port)")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={self.max_wait_ms}; use 0 or more (default 5)")
        if self.max_batch_items < 1 or self.max_request_items < 1:
            raise ValueError("max_batch_items and max_request_items must be at least 1")
        if self.max_queue_items < self.max_request_items:
            raise ValueError(f"max_queue_items={self.max_queue_items} is below max_request_items="
                             f"{self.max_request_items}: a legal request could never be queued")
        if not 0 < self.max_body_mb < 1 << 20:  # NaN fails this too
            raise ValueError(f"max_body_mb={self.max_body_mb}; use a positive size (default 64)")


class Overloaded(Exception):
    """The queue is full: answered 503 with Retry-After."""


# ---------------------------------------------------------------- metrics


def percentiles(values: Sequence[float], qs=(50, 90, 99)) -> dict:
    """Nearest-rank percentiles, e.g. {"p50": ..., "p99": ...}; empty input gives an empty dict."""
    if not values:
        return {}
    s = sorted(values)
    return {f"p{q}": s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))] for q in qs}


class Metrics:
    """Counters and recent-latency windows; read and written on the event loop thread only."""

    def __init__(self, window: int = 8192):
        self.started = time.time()
        self.requests: Counter = Counter()  # (path, status) -> n
        self.latency_ms: dict[str, deque] = {}
        self.window = window
        self.batch_requests: Counter = Counter()  # requests merged per scorer call -> n calls
        self.batch_items: Counter = Counter()  # pairs per scorer call -> n calls
        self.forward_sizes: Counter = Counter()  # sequences per model forward -> n forwards
        self.items_scored = 0
        self.scorer_seconds = 0.0
        self.last_error: str | None = None

    def record_request(self, path: str, status: int, seconds: float, error: str | None = None) -> None:
        self.requests[(path, status)] += 1
        self.latency_ms.setdefault(path, deque(maxlen=self.window)).append(seconds * 1000.0)
        if error is not None:
            self.last_error = error

    def record_batch(self, n_requests: int, n_items: int, forward_sizes: Sequence[int], seconds: float) -> None:
        self.batch_requests[n_requests] += 1
        self.batch_items[n_items] += 1
        self.forward_sizes.update(forward_sizes)
        self.items_scored += n_items
        self.scorer_seconds += seconds

    def snapshot(self) -> dict:
        by_path: dict[str, dict] = {}
        for (path, status), n in sorted(self.requests.items()):
            d = by_path.setdefault(path, {"count": 0, "by_status": {}})
            d["count"] += n
            d["by_status"][str(status)] = n
        for path, lat in self.latency_ms.items():
            by_path.setdefault(path, {"count": 0, "by_status": {}})["latency_ms"] = {
                **{k: round(v, 3) for k, v in percentiles(list(lat)).items()}, "window": len(lat)}
        n_4xx = sum(n for (_, s), n in self.requests.items() if 400 <= s < 500)
        n_5xx = sum(n for (_, s), n in self.requests.items() if s >= 500)
        calls = sum(self.batch_requests.values())

        def hist(c: Counter) -> dict:
            return {str(k): c[k] for k in sorted(c)}

        return {
            "uptime_s": round(time.time() - self.started, 3),
            "requests": by_path,
            "errors": {"4xx": n_4xx, "5xx": n_5xx, "last": self.last_error},
            "batches": {
                "scorer_calls": calls,
                "items_scored": self.items_scored,
                "scorer_seconds": round(self.scorer_seconds, 3),
                "requests_per_call": hist(self.batch_requests),
                "items_per_call": hist(self.batch_items),
                "sequences_per_forward": hist(self.forward_sizes),
                "max_requests_per_call": max(self.batch_requests, default=0),
                "mean_items_per_call": round(self.items_scored / calls, 3) if calls else 0.0,
            },
        }


# ---------------------------------------------------------------- dynamic batching


@dataclass
class _Job:
    prompts: list[str]
    responses: list[str]
    future: asyncio.Future
    enqueued: float


class Batcher:
    """Merges concurrent scoring jobs into calls of one `score_fn`, run in a single worker thread.

    `score_fn(prompts, responses, progress)` is `RewardScorer.score`. A busy server takes everything queued
    (up to `max_batch_items`) as soon as the previous call returns; an idle one waits at most `max_wait_s`
    after the first job for others to join. When a merged call fails, its jobs are retried one by one so that
    only the job that causes the failure gets the error.
    """

    def __init__(self, score_fn: Callable, metrics: Metrics, max_wait_s: float = 0.005,
                 max_batch_items: int = 512, max_queue_items: int = 65536):
        self.score_fn, self.metrics = score_fn, metrics
        self.max_wait_s, self.max_batch_items, self.max_queue_items = max_wait_s, max_batch_items, max_queue_items
        self._queue: deque[_Job] = deque()
        self.queued_items = 0
        self.in_flight_items = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codescaler-rm")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="codescaler-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop the loop and the worker thread."""
        while (self._queue or self.in_flight_items) and self.alive:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def score(self, prompts: list[str], responses: list[str]) -> list[Scored]:
        if not prompts:
            return []
        if not self.alive:
            raise RuntimeError("the batching loop is not running")
        if self.queued_items + len(prompts) > self.max_queue_items:
            raise Overloaded(f"{self.queued_items} pairs are queued (--max-queue-items {self.max_queue_items})")
        job = _Job(prompts, responses, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.append(job)
        self.queued_items += len(prompts)
        self._wakeup.set()
        return await job.future

    def _take(self) -> list[_Job]:
        jobs, n = [], 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # the caller went away
                self._queue.popleft()
                self.queued_items -= len(job.prompts)
                continue
            if jobs and n + len(job.prompts) > self.max_batch_items:
                break
            self._queue.popleft()
            self.queued_items -= len(job.prompts)
            jobs.append(job)
            n += len(job.prompts)
        return jobs

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._queue[0].enqueued + self.max_wait_s
            while self.queued_items < self.max_batch_items and time.perf_counter() < deadline:
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), deadline - time.perf_counter())
            jobs = self._take()
            if not jobs:
                continue
            self.in_flight_items = sum(len(j.prompts) for j in jobs)
            try:
                await self._run_jobs(jobs)
            except Exception as e:  # never let the loop die: fail these callers, keep serving
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(RuntimeError(f"batching failed: {type(e).__name__}: {e}"))
            finally:
                self.in_flight_items = 0

    async def _run_jobs(self, jobs: list[_Job]) -> None:
        prompts = [p for j in jobs for p in j.prompts]
        responses = [r for j in jobs for r in j.responses]
        t0 = time.perf_counter()
        try:
            scored, forwards = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._score_sync, prompts, responses)
        except Exception as e:
            if len(jobs) > 1:
                for job in jobs:
                    await self._run_jobs([job])
            elif not jobs[0].future.done():
                jobs[0].future.set_exception(e)
            return
        self.metrics.record_batch(len(jobs), len(prompts), forwards, time.perf_counter() - t0)
        at = 0
        for job in jobs:
            n = len(job.prompts)
            if not job.future.done():
                job.future.set_result(scored[at:at + n])
            at += n

    def _score_sync(self, prompts: list[str], responses: list[str]) -> tuple[list[Scored], list[int]]:
        """Runs in the worker thread."""
        forwards: list[int] = []
        scored = self.score_fn(prompts, responses, forwards.append)
        if len(scored) != len(prompts):
            raise RuntimeError(f"scorer returned {len(scored)} results for {len(prompts)} inputs")
        check_finite(scored)  # the RewardScorer checks too; a score_fn given to the server may not
        return scored, forwards


# ---------------------------------------------------------------- the app


def create_app(scorer, config: ServerConfig | None = None, problems: dict | None = None, model_name: str = ""):
    """The FastAPI app around one loaded `RewardScorer` (or anything with its `.score`)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    config = config or ServerConfig()
    metrics = Metrics()
    batcher = Batcher(scorer.score, metrics, config.max_wait_ms / 1000.0, config.max_batch_items,
                      config.max_queue_items)
    max_body = int(config.max_body_mb * 1024 * 1024)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="codescaler reward server", lifespan=lifespan,
                  description="Execution-free code reward model: /score, OpenRLHF /get_reward, /health, /metrics")
    app.state.metrics, app.state.batcher = metrics, batcher

    async def read_json(request: Request) -> dict:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            raise BadInput("body", f"is {int(length)} bytes, over the {max_body} byte limit (--max-body-mb)", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise BadInput("body", f"is over the {max_body} byte limit (--max-body-mb)", 413)
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            raise BadInput("body", "is empty; send a JSON object", 400)
        if size > 1 << 20:  # parse big bodies off the event loop
            return await asyncio.to_thread(decode_body, raw)
        return decode_body(raw)

    async def answer(request: Request, handler) -> JSONResponse:
        t0, path, error = time.perf_counter(), request.url.path, None
        try:
            status, content = 200, await handler(await read_json(request))
            headers = None
        except BadInput as e:
            status, content, headers = e.status, {"detail": str(e), "field": e.field_name}, None
            error = f"{status} {e}"
        except Overloaded as e:
            status, content, headers = 503, {"detail": f"overloaded: {e}; retry later"}, {"Retry-After": "1"}
            error = f"503 {e}"
        except Exception as e:  # an internal error answers 5xx with its message; the server keeps going
            status, content, headers = 500, {"detail": f"internal error: {type(e).__name__}: {e}"}, None
            error = f"500 {type(e).__name__}: {e}"
        metrics.record_request(path, status, time.perf_counter() - t0, error)
        return JSONResponse(content, status_code=status, headers=headers)

    async def do_score(body: dict) -> dict:
        prompts, responses = parse_score_request(body, problems, config.max_request_items)
        scored = await batcher.score(prompts, responses)
        return {"results": [{f.name: getattr(s, f.name) for f in fields(Scored) if f.name != "extra"}
                            for s in scored]}

    async def do_get_reward(body: dict) -> dict:
        texts, responses = parse_reward_request(body, problems, config.max_request_items)
        return openrlhf_reply(await batcher.score(texts, responses))

    @app.post("/score")
    async def score(request: Request):
        return await answer(request, do_score)

    @app.post("/get_reward")
    async def get_reward(request: Request):
        return await answer(request, do_get_reward)

    @app.get("/health")
    async def health():
        ok = batcher.alive
        body = {"status": "ok" if ok else "error", "model": model_name, "queued_items": batcher.queued_items,
                "in_flight_items": batcher.in_flight_items, "uptime_s": round(time.time() - metrics.started, 3),
                "requests": sum(metrics.requests.values()), "items_scored": metrics.items_scored}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def get_metrics():
        return JSONResponse(metrics.snapshot())

    return app


# ---------------------------------------------------------------- running it


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 = any free port), so callers know the port before serving."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(app, config: ServerConfig, log_level: str):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=config.access_log,
                                         timeout_graceful_shutdown=config.graceful_timeout_s, lifespan="on"))


class BackgroundServer:
    """The app served by uvicorn in a daemon thread of this process (tests, benchmarks, notebooks).

    `with BackgroundServer(app) as srv: RewardClient(srv.url)...`; leaving the block shuts down gracefully.
    """

    def __init__(self, app, config: ServerConfig | None = None, log_level: str = "warning"):
        self.config = config or ServerConfig(port=0)
        self.sock = bind_socket(self.config.host, self.config.port)
        self.url = _url(self.sock)
        self.server = _uvicorn_server(app, self.config, log_level)
        self._thread = threading.Thread(target=self._main, name="codescaler-serve", daemon=True)
        self._error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as e:  # surfaced by start()
            self._error = e

    def start(self, timeout: float = 60.0) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start: {self._error!r}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def serve(scorer, config: ServerConfig, problems: dict | None = None, model_name: str = "",
          log_level: str = "info", sock: socket.socket | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then finish the requests in flight and return (on `sock` when given, bound
    before the model loads so that a taken port fails in a second, not after minutes of loading)."""
    sock = sock or bind_socket(config.host, config.port)
    server = _uvicorn_server(create_app(scorer, config, problems, model_name), config, log_level)
    if config.host not in LOOPBACK_HOSTS:
        print(f"codescaler serve: warning: listening on {config.host}, reachable from other machines; "
              "the server has no authentication", file=sys.stderr)
    print(f"codescaler serve: {model_name} at {_url(sock)} (POST /score, POST /get_reward, GET /health, "
          "GET /metrics)", file=sys.stderr, flush=True)
    # uvicorn re-raises the signal it shut down on; catch that here so a clean stop exits 0.
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()


# ---------------------------------------------------------------- CLI


def add_cli(p) -> None:
    from codescaler.scorer import add_scorer_args

    from codescaler.cli import add_config_args

    add_config_args(p, ServerConfig)
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn log level")
    add_scorer_args(p)


def cli_main(args) -> int:
    from codescaler.records import read_problems
    from codescaler.scorer import RewardScorer, resolve_model, scorer_config_from_args

    from codescaler.cli import config_from_args

    config = config_from_args(ServerConfig, args)
    scorer_config = scorer_config_from_args(args)
    scorer_config.model = resolve_model(scorer_config.model)
    problems = read_problems(config.problems) if config.problems else None
    sock = bind_socket(config.host, config.port)
    t0 = time.perf_counter()
    scorer = RewardScorer(scorer_config)  # a failed load exits, and the socket with it
    print(f"codescaler serve: loaded {scorer_config.model} on {scorer.device} ({scorer.dtype}) in "
          f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
    serve(scorer, config, problems, scorer_config.model, args.log_level, sock)
    print("codescaler serve: stopped after finishing the requests in flight", file=sys.stderr)
    return 0
