"""What a client sees when part of a Ray deployment dies under load, and how long until
traffic is answered again.

For each victim — one model replica, then the ingress replica — `sheaf-server serve
--runtime ray` serves the tiny Chronos-Bolt (bench/serve_overhead.py's workload) to
`--clients` concurrent clients posting back to back; `--kill-after` seconds in, the
victim's process gets SIGKILL. Every request is recorded: when it was sent and answered,
its status (or the transport error), whether an error named its request id. Printed:

  in flight      requests sent before the kill and answered after it
  answered       of those, how many got an HTTP answer (and with which statuses)
  longest        the longest any request took (a hang would show here: the client gives up
                 at the model's deadline plus 10 s)
  recovered      seconds from the kill until 20 answers in a row were 200
  errors        non-200 answers after the kill, by status, and transport errors (connection
                 reset/refused: the ingress's connections die with it)

    ./dev bench-faults                      # writes bench/results/ray_faults.*
    ./dev bench-faults --clients 8 --no-save
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from ray_serving import running
from serve_overhead import WORKLOADS, publish

DEADLINE_S = 30.0  # the server's default request_timeout_s
VICTIMS = {"model replica": "ServeReplica:sheaf:tiny",
           "ingress replica": "ServeReplica:sheaf:SheafIngress"}


@dataclass
class Outcome:
    sent: float
    done: float
    status: int | None  # None: a transport error
    error: str = ""
    named_id: bool = False


@dataclass
class Result:
    victim: str
    pid: int
    in_flight: int = 0
    in_flight_answered: int = 0
    in_flight_statuses: dict[str, int] = field(default_factory=dict)
    longest_s: float = 0.0
    recovered_s: float | None = None
    after_kill: dict[str, int] = field(default_factory=dict)
    errors_without_id: int = 0
    total: int = 0


async def client_loop(url: str, body: bytes, stop: asyncio.Event,
                      outcomes: list[Outcome]) -> None:
    async with httpx.AsyncClient(timeout=DEADLINE_S + 10) as http:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                reply = await http.post(url, content=body,
                                        headers={"content-type": "application/json"})
                named = reply.status_code == 200 or bool(
                    reply.headers.get("x-request-id") and "request_id" in reply.text)
                outcomes.append(Outcome(sent, time.monotonic(), reply.status_code,
                                        named_id=named))
            except httpx.HTTPError as exc:
                outcomes.append(Outcome(sent, time.monotonic(), None, type(exc).__name__))
                await asyncio.sleep(0.05)  # a dead connection: do not spin


def victim_pid(title: str) -> int:
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(title in part for part in process.info["cmdline"] or []):
            return int(process.info["pid"])
    raise RuntimeError(f"no process titled {title!r}")


async def run_one(url: str, body: bytes, victim: str, clients: int, kill_after: float,
                  watch: float) -> Result:
    outcomes: list[Outcome] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client_loop(url, body, stop, outcomes))
             for _ in range(clients)]
    await asyncio.sleep(kill_after)
    pid = victim_pid(VICTIMS[victim])
    killed = time.monotonic()
    psutil.Process(pid).kill()
    await asyncio.sleep(watch)
    stop.set()
    await asyncio.gather(*tasks)
    result = Result(victim, pid, total=len(outcomes))
    in_flight = [o for o in outcomes if o.sent < killed < o.done]
    result.in_flight = len(in_flight)
    result.in_flight_answered = sum(o.status is not None for o in in_flight)
    result.in_flight_statuses = dict(Counter(str(o.status or o.error) for o in in_flight))
    result.longest_s = max(o.done - o.sent for o in outcomes)
    after = sorted((o for o in outcomes if o.done > killed), key=lambda o: o.done)
    result.after_kill = dict(Counter(str(o.status or o.error) for o in after
                                     if o.status != 200))
    result.errors_without_id = sum(o.status not in (None, 200) and not o.named_id
                                   for o in after)
    streak = 0
    for outcome in after:
        streak = streak + 1 if outcome.status == 200 else 0
        if streak == 20:
            result.recovered_s = round(outcome.done - killed, 2)
            break
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kill-after", type=float, default=5.0)
    parser.add_argument("--watch", type=float, default=45.0,
                        help="seconds of load after the kill")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    workload = WORKLOADS["tiny"]

    from sheaf_backend_chronos import testing

    results = []
    with tempfile.TemporaryDirectory(prefix="sheaf-faults-") as tmp:
        workdir = Path(tmp)
        model_dir = getattr(testing, workload.build)(workdir / workload.name)
        for victim in VICTIMS:
            print(f"[{victim}] …", file=sys.stderr, flush=True)
            with running("sheaf on Ray", workload, model_dir, workdir) as (url, _):
                results.append(asyncio.run(run_one(url, workload.body().encode(), victim,
                                                   args.clients, args.kill_after,
                                                   args.watch)))
    publish("ray_faults", render(results, args), results, not args.no_save)
    return 0


def render(results: list[Result], args: argparse.Namespace) -> list[str]:
    lines = [
        f"{args.clients} clients posting back to back to `sheaf-server serve --runtime ray` "
        f"(the tiny model, save_tiny_bolt; one replica of each deployment, the defaults); "
        f"SIGKILL to the victim's process {args.kill_after:g} s in; {args.watch:g} s of load "
        "watched after. A restart of a whole node or cluster is out of scope.", "",
        "| victim | in flight at the kill | of them answered (statuses) | longest request s | "
        "recovered after s | non-200 after the kill | error bodies without the request id |",
        "|---|---:|---|---:|---:|---|---:|"]
    for r in results:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r.in_flight_statuses.items()))
        after = ", ".join(f"{k}: {v}" for k, v in sorted(r.after_kill.items())) or "none"
        recovered = "not within the watch" if r.recovered_s is None else f"{r.recovered_s:g}"
        lines.append(f"| {r.victim} | {r.in_flight} | {r.in_flight_answered} ({statuses}) | "
                     f"{r.longest_s:.2f} | {recovered} | {after} | {r.errors_without_id} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
