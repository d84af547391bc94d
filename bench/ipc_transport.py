"""How a request should cross from an HTTP worker process to a model worker process (issue
20's multi-process tier 1): each candidate transport carries the engine's own `Call` (the
tiny Chronos workload's JSON body) one way and an `Answer` back, pickled, between real
processes; the model side only echoes, so what is measured is the transport alone.

  latency    one call in flight: round-trip p50 and p99 (what a single client adds)
  rate       64 calls in flight from one client process (one HTTP worker)
  2 clients  64 in flight from each of two client processes into one model process (the
             model worker's one queue fed by several HTTP workers)

Candidates: multiprocessing.Queue (a feeder thread and a pipe per queue), a
multiprocessing Pipe, a Unix domain socket with length-prefixed frames under asyncio (what
the HTTP workers' event loop would await directly), and ZeroMQ DEALER/ROUTER over ipc://
(when pyzmq is installed).

    ./dev bench-ipc                                    # writes bench/results/ipc_transport.*
    ./dev bench-ipc --seconds 1 --no-save
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import pickle
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_overhead import WORKLOADS, publish

from sheaf_server.engine.answer import Answer
from sheaf_server.engine.call import Call

FRAME = struct.Struct("!I")
IN_FLIGHT = 64


@dataclass
class Row:
    transport: str
    p50_us: float
    p99_us: float
    rate_one: float  # calls/s, one client process, 64 in flight
    rate_two: float  # calls/s, two client processes, 64 in flight each


def sample_call(n: int) -> Call:
    return Call("tiny", f"req-{n}", WORKLOADS["tiny"].body().encode())


def reply_to(call: Call) -> Answer:
    return Answer(call.request_id, b'{"mean": [1.0, 2.0, 3.0], "quantiles": {}}' * 8)


# -- model side: one process, echoing each call back as an answer ---------------------------

def serve_queues(requests: Any, replies: list[Any]) -> None:
    while (item := requests.get()) is not None:
        client, tag, call = item
        replies[client].put((tag, reply_to(call)))


def serve_pipes(conns: list[Any]) -> None:
    from multiprocessing.connection import wait

    open_conns = list(conns)
    while open_conns:
        for conn in wait(open_conns):
            try:
                tag, call = conn.recv()
            except EOFError:
                open_conns.remove(conn)
                continue
            conn.send((tag, reply_to(call)))


def serve_unix(path: str, ready: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = FRAME.unpack(await reader.readexactly(FRAME.size))[0]
                tag, call = pickle.loads(await reader.readexactly(size))
                data = pickle.dumps((tag, reply_to(call)), protocol=5)
                writer.write(FRAME.pack(len(data)) + data)
        except asyncio.IncompleteReadError:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_unix_server(handle, path)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def serve_zmq(address: str, ready: Any) -> None:
    import zmq

    socket = zmq.Context().socket(zmq.ROUTER)
    socket.bind(address)
    ready.set()
    while True:
        identity, payload = socket.recv_multipart()
        tag, call = pickle.loads(payload)
        socket.send_multipart([identity, pickle.dumps((tag, reply_to(call)), protocol=5)])


# -- client side: a closed loop of `in_flight` calls for `seconds` --------------------------

def client_queues(requests: Any, replies: Any, client: int, in_flight: int,
                  seconds: float) -> list[float]:
    """Calls go in through the shared queue, answers come back on this client's queue; a
    thread collects them, as an HTTP worker's loop would."""
    sent: dict[int, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    done = threading.Semaphore(in_flight)
    stop = time.monotonic() + seconds

    def collect() -> None:
        while True:
            tag, _ = replies.get()
            if tag < 0:
                return
            with lock:
                latencies.append(time.perf_counter() - sent.pop(tag))
            done.release()

    collector = threading.Thread(target=collect)
    collector.start()
    n = 0
    while time.monotonic() < stop:
        done.acquire()
        with lock:
            sent[n] = time.perf_counter()
        requests.put((client, n, sample_call(n)))
        n += 1
    for _ in range(in_flight):
        done.acquire()
    replies.put((-1, None))
    collector.join()
    return latencies


def _closed_loop(send: Callable[[tuple[int, Call]], object],
                 recv: Callable[[], tuple[int, Any]], in_flight: int,
                 seconds: float) -> list[float]:
    """`in_flight` calls outstanding until `seconds` pass: each answer sends the next."""
    sent: dict[int, float] = {}
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def next_call(n: int) -> None:
        sent[n] = time.perf_counter()
        send((n, sample_call(n)))

    n = 0
    for n in range(in_flight):
        next_call(n)
    while sent:
        tag, _ = recv()
        latencies.append(time.perf_counter() - sent.pop(tag))
        if time.monotonic() < stop:
            n += 1
            next_call(n)
    return latencies


def client_pipe(conn: Any, in_flight: int, seconds: float) -> list[float]:
    latencies = _closed_loop(conn.send, conn.recv, in_flight, seconds)
    conn.close()
    return latencies


def client_unix(path: str, in_flight: int, seconds: float) -> list[float]:
    async def main() -> list[float]:
        reader, writer = await asyncio.open_unix_connection(path)
        waiting: dict[int, asyncio.Future[Any]] = {}
        latencies: list[float] = []
        stop = time.monotonic() + seconds

        async def read_replies() -> None:
            while True:
                size = FRAME.unpack(await reader.readexactly(FRAME.size))[0]
                tag, answer = pickle.loads(await reader.readexactly(size))
                waiting.pop(tag).set_result(answer)

        async def one(first: int) -> None:
            n = first
            loop = asyncio.get_running_loop()
            while time.monotonic() < stop:
                future = loop.create_future()
                waiting[n] = future
                data = pickle.dumps((n, sample_call(n)), protocol=5)
                started = time.perf_counter()
                writer.write(FRAME.pack(len(data)) + data)
                await future
                latencies.append(time.perf_counter() - started)
                n += in_flight

        reading = asyncio.create_task(read_replies())
        await asyncio.gather(*(one(i) for i in range(in_flight)))
        reading.cancel()
        writer.close()
        return latencies

    return asyncio.run(main())


def client_zmq(address: str, in_flight: int, seconds: float) -> list[float]:
    import zmq

    socket = zmq.Context().socket(zmq.DEALER)
    socket.connect(address)
    latencies = _closed_loop(lambda item: socket.send(pickle.dumps(item, protocol=5)),
                             lambda: pickle.loads(socket.recv()), in_flight, seconds)
    socket.close(linger=0)
    return latencies


# -- running one transport ---------------------------------------------------------------

def _in_process_pool(target: Callable[..., list[float]], args_per_client: list[tuple],
                     ) -> list[list[float]]:
    """Run each client in its own process; their latencies."""
    ctx = mp.get_context("fork")
    results = ctx.Queue()

    def run(args: tuple) -> None:
        results.put(target(*args))

    procs = [ctx.Process(target=run, args=(args,)) for args in args_per_client]
    for p in procs:
        p.start()
    out = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return out


def measure(name: str, seconds: float, workdir: Path) -> Row | None:
    ctx = mp.get_context("fork")
    runs: dict[str, list[list[float]]] = {}
    for label, clients, in_flight in (("latency", 1, 1), ("one", 1, IN_FLIGHT),
                                      ("two", 2, IN_FLIGHT)):
        if name == "multiprocessing.Queue":
            requests = ctx.Queue()
            replies = [ctx.Queue() for _ in range(clients)]
            server = ctx.Process(target=serve_queues, args=(requests, replies))
            server.start()
            runs[label] = _in_process_pool(client_queues, [
                (requests, replies[c], c, in_flight, seconds) for c in range(clients)])
            requests.put(None)
        elif name == "multiprocessing.Pipe":
            pairs = [ctx.Pipe() for _ in range(clients)]
            server = ctx.Process(target=serve_pipes, args=([b for _, b in pairs],))
            server.start()
            runs[label] = _in_process_pool(client_pipe, [
                (a, in_flight, seconds) for a, _ in pairs])
            for a, b in pairs:
                a.close()
                b.close()
        else:  # a listening server (its address ready before clients connect)
            if name.startswith("ZeroMQ"):
                try:
                    import zmq  # noqa: F401
                except ImportError:
                    return None
                serve, client, address = serve_zmq, client_zmq, f"ipc://{workdir}/{label}.zmq"
            else:
                serve, client, address = serve_unix, client_unix, str(workdir / f"{label}.sock")
            ready = ctx.Event()
            server = ctx.Process(target=serve, args=(address, ready), daemon=True)
            server.start()
            ready.wait(10)
            runs[label] = _in_process_pool(client, [(address, in_flight, seconds)
                                                    for _ in range(clients)])
            server.terminate()
        server.join(10)
    latency = sorted(runs["latency"][0])
    return Row(name, statistics.median(latency) * 1e6,
               latency[int(len(latency) * 0.99)] * 1e6,
               len(runs["one"][0]) / seconds, sum(len(r) for r in runs["two"]) / seconds)


TRANSPORTS = ("multiprocessing.Queue", "multiprocessing.Pipe", "Unix socket (asyncio)",
              "ZeroMQ (ipc://)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    missing: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sheaf-ipc-", dir="/tmp") as tmp:
        for name in TRANSPORTS:
            print(f"{name} …", file=sys.stderr, flush=True)
            row = measure(name, args.seconds, Path(tmp))
            if row is None:
                missing.append(name)
            else:
                rows.append(row)
    size_call = len(pickle.dumps(sample_call(0), protocol=5))
    size_answer = len(pickle.dumps(reply_to(sample_call(0)), protocol=5))
    lines = ["| transport | round trip p50 µs | p99 µs | calls/s, 1 client x 64 | "
             "calls/s, 2 clients x 64 |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.transport} | {r.p50_us:,.0f} | {r.p99_us:,.0f} | {r.rate_one:,.0f} | "
              f"{r.rate_two:,.0f} |" for r in rows]
    body = ["", f"A pickled `Call` of {size_call} bytes one way, an `Answer` of {size_answer} "
            f"bytes back; the model side echoes. {os.cpu_count()} cores; clients and the "
            "model process share them.", "", *lines]
    if missing:
        body += ["", "Not measured (not installed): " + ", ".join(missing)]
    publish("ipc_transport", body, rows, not args.no_save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
