"""Tier 1 as several processes (`server.workers`, a model's `replicas`): what only shows
with more than one process — batches formed from every HTTP worker's requests, a model
worker killed mid-request, metrics summed over processes, the drain on SIGTERM, and no
process outliving the server. The rest of the HTTP behaviour runs on this host too (the
`multi` host of the HTTP suite)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from cli_support import free_port
from hosts import Flag, wait_until_ready
from server_support import ScriptedPlugin

from sheaf_core import ModelSpec
from sheaf_server import ModelServer
from sheaf_server.engine import Engine
from sheaf_server.settings import ServedModelSpec, ServerSettings, SheafConfig
from sheaf_server.workers import supervisor
from sheaf_server.workers.link import exit_note_path
from sheaf_server.workers.model_worker import ModelWorker
from sheaf_server.workers.process_engine import ProcessEngine

BODY = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}
HERE = Path(__file__).parent


@contextmanager
def serving(*specs: ModelSpec, **settings: object) -> Iterator[tuple[ModelServer, str]]:
    settings.setdefault("workers", 2)
    config = SheafConfig(models=list(specs), server=ServerSettings(**settings))
    with ModelServer(config, port=0, plugins=[ScriptedPlugin()], log_level="warning") as server:
        assert server.url is not None
        with httpx.Client(base_url=server.url, timeout=30) as client:
            wait_until_ready(client)
        yield server, server.url


def http_workers(server: ModelServer) -> list[int]:
    return [pid for label, pid in server.processes().items() if label.startswith("HTTP")]


def serving_pid(client: httpx.Client, workers: list[int]) -> int:
    """The HTTP worker holding this client's (open) connection."""
    client.get("/health")
    ports = set()
    for pid in workers:
        for connection in psutil.Process(pid).net_connections(kind="tcp"):
            if connection.raddr and connection.status == psutil.CONN_ESTABLISHED:
                ports.add((connection.raddr.port, pid))
    mine = {port for port, _ in ports} & _local_ports()
    (pid,) = {pid for port, pid in ports if port in mine and port in _client_port(client)}
    return pid


def _local_ports() -> set[int]:
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")}


def _client_port(client: httpx.Client) -> set[int]:
    """The local port of the client's one pooled connection."""
    pool = client._transport._pool  # type: ignore[attr-defined]
    ports = set()
    for connection in pool.connections:
        stream = connection._connection._network_stream
        ports.add(stream.get_extra_info("socket").getsockname()[1])
    return ports


def test_batches_fill_from_every_http_worker(flag: Flag) -> None:
    """16 clients, each one request over its own connection, spread over two HTTP workers,
    send while a first request's batch runs: they queue in the model's one batcher, so the
    next batch holds more requests than either HTTP worker had clients."""
    spec = ModelSpec(name="m", backend="test", warmup=False,
                     backend_kwargs={"delay_s": 0.5, "fast_after": flag("fast")})
    with serving(spec) as (server, url):
        clients = [httpx.Client(base_url=url, timeout=30) for _ in range(16)]
        try:
            workers = http_workers(server)
            owners = [serving_pid(client, workers) for client in clients]
            per_worker = {pid: owners.count(pid) for pid in workers}
            assert all(per_worker.values()), f"a worker got no connection: {per_worker}"
            with ThreadPoolExecutor(17) as pool:
                first = pool.submit(httpx.post, f"{url}/m/predict", json=BODY, timeout=30)
                time.sleep(0.2)  # its batch runs (0.5 s): the next requests queue
                answers = list(pool.map(lambda c: c.post("/m/predict", json=BODY), clients))
            assert [a.status_code for a in [first.result(), *answers]] == [200] * 17
            stats = clients[0].get("/models/m").json()["stats"]
        finally:
            for client in clients:
                client.close()
    assert stats["requests"] == 17
    assert stats["max_batch_size"] > max(per_worker.values()), (stats, per_worker)


def test_a_killed_model_worker_is_replaced_and_its_requests_answered_503(flag: Flag) -> None:
    slow = ModelSpec(name="m", backend="test", warmup=False,
                     backend_kwargs={"delay_s": 30, "fast_after": flag("fast")})
    other = ModelSpec(name="other", backend="test")
    with serving(slow, other) as (server, url), httpx.Client(base_url=url, timeout=60) as c:
        victim = server.processes()["model 'm' worker 1"]
        answers: list[httpx.Response] = []
        caller = threading.Thread(target=lambda: answers.append(
            c.post("/m/predict", json=BODY, headers={"X-Request-ID": "held-1"})))
        caller.start()
        deadline = time.monotonic() + 10
        while not _in_flight(url) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(victim, signal.SIGKILL)
        caller.join(10)
        assert not caller.is_alive(), "a request held by a killed worker must be answered"
        (answer,) = answers
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "1"
        assert answer.json()["error"] == "model_not_ready"
        assert answer.json()["request_id"] == "held-1"
        # The other model never stopped serving.
        assert c.post("/other/predict", json=BODY).status_code == 200
        Path(flag("fast")).touch()
        wait_until_ready(c, 60)
        assert c.post("/m/predict", json=BODY).status_code == 200
        replacement = server.processes()["model 'm' worker 1"]
        assert replacement != victim
        assert c.get("/models/m").json()["processes"][0]["pid"] == replacement


def test_a_model_worker_restarted_after_a_hot_swap_serves_the_new_spec_as_its_generation(
        ) -> None:
    """The supervisor hands a restarted model worker the latest spec and the number of hot
    swaps before it: after an update and a crash, the model answers as updated and its
    description still says generation 1."""
    v1 = ModelSpec(name="m", backend="test")
    with serving(v1) as (server, url), httpx.Client(base_url=url, timeout=60) as client:
        server.update(v1.model_copy(update={"backend_kwargs": {"bias": 1.0}, "timeout_s": 7.0}))
        updated = client.post("/m/predict", json=BODY).json()["mean"]
        victim = server.processes()["model 'm' worker 1"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while server.processes().get("model 'm' worker 1") in (None, victim):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        wait_until_ready(client, 60)
        assert client.post("/m/predict", json=BODY).json()["mean"] == updated
        info = client.get("/models/m").json()
        assert (info["generation"], info["timeout_s"]) == (1, 7.0)


def test_a_model_worker_that_keeps_dying_at_start_is_reported_failed() -> None:
    """A model whose process dies while loading (here: SIGKILL, as the OOM killer does) is
    `failed` once it has died 3 times in a row — not `loading` for ever — and the other
    model serves meanwhile."""
    crashing = ModelSpec(name="m", backend="test", backend_kwargs={"crash_load": True})
    with serving(crashing, ModelSpec(name="other", backend="test"),
                 ready_when="any") as (server, url), httpx.Client(base_url=url) as client:
        deadline = time.monotonic() + 60
        while server.model_states()["m"]["state"] != "failed":
            assert time.monotonic() < deadline, server.model_states()
            time.sleep(0.1)
        assert "keeps exiting" in server.model_states()["m"]["reason"]
        ready = client.get("/ready")
        assert ready.json()["models"]["m"]["state"] == "failed"
        assert "signal 9" in ready.json()["models"]["m"]["reason"]
        refused = client.post("/m/predict", json=BODY)
        assert (refused.status_code, refused.json()["error"]) == (503, "model_failed")
        assert client.post("/other/predict", json=BODY).status_code == 200


def test_an_http_worker_listens_only_once_its_model_workers_accept(tmp_path: Path) -> None:
    """An HTTP worker's engine starts (so uvicorn listens) only when every model worker has
    accepted its link, or the supervisor has reported that worker failed: a worker that
    listened first answered 503 for a moment while a sibling's /ready said ready."""
    served, failing = str(tmp_path / "m.sock"), str(tmp_path / "broken.sock")
    specs = [ModelSpec(name="m", backend="test"), ModelSpec(name="broken", backend="test")]
    settings = ServerSettings(workers=1)

    async def scenario() -> None:
        http_side = ProcessEngine(specs, {"m": [served], "broken": [failing]}, settings,
                                  plugins=[ScriptedPlugin()], connect_at_start_s=30)
        starting = asyncio.ensure_future(http_side.start())
        await asyncio.sleep(0.5)
        assert not starting.done()  # no model worker listens yet

        model_side = Engine(specs[:1], settings, plugins=[ScriptedPlugin()])
        await model_side.start()
        listener = await asyncio.get_running_loop().create_unix_server(
            ModelWorker(model_side).connection, path=served)
        await asyncio.sleep(0.5)
        assert not starting.done()  # "broken" is neither reachable nor reported failed

        Path(exit_note_path(failing)).write_text(json.dumps(
            {"failed": True, "reason": "its worker process keeps exiting"}))
        await asyncio.wait_for(starting, 5)
        states = http_side.readiness()[1]
        assert states["m"]["state"] == "ready"
        assert states["broken"]["state"] == "failed"
        await http_side.stop()
        listener.close()
        await model_side.stop()

    asyncio.run(scenario())


def _in_flight(url: str) -> bool:
    info = httpx.get(f"{url}/models/m", timeout=10).json()
    return any(p["in_flight"] for p in info["processes"]) or bool(info["stats"]
                                                                 and info["stats"]["queued"])


def test_a_killed_http_worker_is_replaced_while_the_other_serves() -> None:
    with serving(ModelSpec(name="m", backend="test")) as (server, url):
        victim = http_workers(server)[0]
        os.kill(victim, signal.SIGKILL)
        for _ in range(20):  # new connections each: the kernel routes to a live worker
            assert httpx.post(f"{url}/m/predict", json=BODY, timeout=30).status_code == 200
        deadline = time.monotonic() + 30
        while victim in http_workers(server) or len(http_workers(server)) < 2:
            assert time.monotonic() < deadline, server.processes()
            time.sleep(0.1)


def test_metrics_count_every_process() -> None:
    with serving(ModelSpec(name="m", backend="test")) as (_, url):
        clients = [httpx.Client(base_url=url, timeout=30) for _ in range(8)]
        try:
            for client in clients:
                for _ in range(3):
                    assert client.post("/m/predict", json=BODY).status_code == 200
            text = clients[0].get("/metrics").text
        finally:
            for client in clients:
                client.close()
    assert _value(text, 'sheaf_requests_total{model="m",route="predict",status="200"}') == 24
    assert _value(text, 'sheaf_batch_size_sum{model="m"}') == 24  # the model worker's


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"no {series} in:\n{text[:2000]}"
    return float(match.group(1))


def test_replicas_serve_one_model_from_several_processes() -> None:
    spec = ServedModelSpec(name="m", backend="test", replicas=2)
    with serving(spec, workers=1) as (server, url):
        assert {"model 'm' worker 1", "model 'm' worker 2", "HTTP worker 1"} == set(
            server.processes())
        info = httpx.get(f"{url}/models/m", timeout=10).json()
        assert [p["state"] for p in info["processes"]] == ["ready", "ready"]
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: httpx.post(f"{url}/m/predict", json=BODY,
                                                       timeout=30).status_code, range(32)))
        assert codes == [200] * 32


def test_no_process_outlives_stop() -> None:
    with serving(ModelSpec(name="m", backend="test")) as (server, _):
        pids = list(server.processes().values())
        assert len(pids) == 3
    assert not [pid for pid in pids if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


@contextmanager
def server_process(tmp_path: Path, spec: dict[str, object]) -> Iterator[
        tuple[subprocess.Popen[str], str]]:
    config = tmp_path / "sheaf.yaml"
    config.write_text(yaml.safe_dump({"server": {"workers": 2, "drain_timeout_s": 10},
                                      "models": [spec]}))
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "process_server.py"), str(config),
                                str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, cwd=HERE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # until it listens
            try:
                httpx.get(f"{url}/health", timeout=10)
                break
            except httpx.ConnectError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        wait_until_ready(httpx.Client(base_url=url, timeout=10), 60)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def _children(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_sigterm_drains_every_process(tmp_path: Path) -> None:
    """SIGTERM mid-request: the request is answered, every process exits, the server's
    exit status is 0."""
    spec = {"name": "m", "backend": "test", "warmup": False, "backend_kwargs": {"delay_s": 2}}
    with server_process(tmp_path, spec) as (process, url):
        children = _children(process.pid)
        assert len(children) == 3
        answers: list[httpx.Response] = []
        caller = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{url}/m/predict", json=BODY, timeout=30)))
        caller.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        caller.join(30)
        assert process.wait(60) == 0
        output = process.stdout.read() if process.stdout else ""
    assert [a.status_code for a in answers] == [200], output
    assert "stopped" in output
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves the supervisor no chance to stop its children: they notice (their
    stdin closes) and stop themselves."""
    with server_process(tmp_path, {"name": "m", "backend": "test"}) as (process, _):
        children = _children(process.pid)
        process.kill()
        process.wait(10)
        _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.pid for p in alive]


@pytest.mark.parametrize(("cores", "replicas", "expected"), [
    (1, [1], 1), (2, [1], 1), (2, [1, 1], 1),  # too few cores: one process
    (4, [1], 3), (8, [2, 1], 5), (16, [1], 15), (64, [1], 32)])
def test_auto_leaves_a_core_per_model_process(monkeypatch: pytest.MonkeyPatch, cores: int,
                                              replicas: list[int], expected: int) -> None:
    monkeypatch.setattr(supervisor, "available_cores", lambda: cores)
    config = SheafConfig(models=[ServedModelSpec(name=f"m{i}", backend="test", replicas=r)
                                 for i, r in enumerate(replicas)])
    assert config.server.workers == "auto"  # the default
    assert supervisor.http_workers(config) == expected
    assert supervisor.uses_processes(config) == (expected > 1 or sum(replicas) > len(replicas))


def test_a_number_of_workers_is_taken_as_given() -> None:
    config = SheafConfig(models=[ModelSpec(name="m", backend="test")],
                         server=ServerSettings(workers=3))
    assert supervisor.http_workers(config) == 3


@pytest.mark.parametrize("workers", [0, -1, 300])
def test_workers_must_be_positive_or_auto(workers: int) -> None:
    with pytest.raises(ValueError, match="workers must be from 1 to 256, or auto"):
        ServerSettings(workers=workers)
