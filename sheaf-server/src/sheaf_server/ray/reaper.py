"""Leave no process behind when a Ray host that started its own cluster stops — even when
it is killed.

A local cluster shares its driver's fate only in part: Ray's HAProxy is a child of an
actor's worker, and once that worker is gone it is nobody's child, so it outlives the
cluster holding its ports (seen: 9101 and 8404 still taken after the server was killed).
So the host starts a reaper beside it: a small process in a session of its own that, every
`INTERVAL_S`, notes the processes `ray.init` started (GCS, raylet, ...) and every process
descending from them — only those: the host's other children are not the cluster's. When
the host exits — stopped, or killed with SIGKILL — or asks it to (SIGTERM, after a clean
shutdown), the reaper terminates whatever it noted that still runs (SIGTERM, then SIGKILL
after `GRACE_S`). A process is known by its PID and start time, so a reused PID is never
hit.

Run as ``python -m sheaf_server.ray.reaper HOST_PID CLUSTER_PID...``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from types import FrameType

import psutil

INTERVAL_S = 0.5
GRACE_S = 5.0

#: (pid, start time) of each process seen descending from the host.
Seen = dict[int, float]


def start(host_pid: int, cluster_pids: list[int]) -> subprocess.Popen[bytes]:
    """The reaper of the cluster processes `cluster_pids` started by `host_pid`, running."""
    return subprocess.Popen([sys.executable, "-m", "sheaf_server.ray.reaper", str(host_pid),
                             *map(str, cluster_pids)],
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop(reaper: subprocess.Popen[bytes], timeout_s: float = GRACE_S + 5) -> None:
    """Ask `reaper` to terminate what is left now, and wait for it."""
    with contextlib.suppress(ProcessLookupError):
        reaper.terminate()
    try:
        reaper.wait(timeout_s)
    except subprocess.TimeoutExpired:
        reaper.kill()


def note(roots: list[psutil.Process], seen: Seen) -> None:
    """Add `roots` and their descendants (never this reaper) to `seen`."""
    for root in roots:
        with contextlib.suppress(psutil.Error):
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    if process.pid != os.getpid():
                        seen.setdefault(process.pid, process.create_time())


def alive(process: psutil.Process) -> bool:
    """Running, and not a zombie waiting for its parent to read its exit."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def terminate(seen: Seen, grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM every process of `seen` still running as itself, SIGKILL those left after
    `grace_s`. Returns the PIDs it signalled."""
    alive = []
    for pid, started in seen.items():
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.create_time() == started:
                alive.append(process)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, left = psutil.wait_procs(alive, timeout=grace_s)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return [process.pid for process in alive]


def main(host_pid: int, cluster_pids: list[int]) -> None:
    try:
        host = psutil.Process(host_pid)
    except psutil.NoSuchProcess:
        return
    roots = []
    for pid in cluster_pids:
        with contextlib.suppress(psutil.Error):
            roots.append(psutil.Process(pid))
    seen: Seen = {}
    asked = False

    def ask(_signum: int, _frame: FrameType | None) -> None:
        nonlocal asked
        asked = True

    signal.signal(signal.SIGTERM, ask)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the host
    while not asked and alive(host):
        note(roots, seen)
        time.sleep(INTERVAL_S)
    note(roots, seen)  # what started since the last look
    terminate(seen)


if __name__ == "__main__":
    main(int(sys.argv[1]), [int(pid) for pid in sys.argv[2:]])
