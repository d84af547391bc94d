"""Running the `sheaf-server` executable as a user runs it, for the tests that do."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sheaf_server.testing import wait_until_ready

BIN = Path(sys.executable).parent / "sheaf-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reserved_port(*taken: int) -> int:
    """A port free now and outside the kernel's ephemeral range, for a listener that starts
    minutes later (HAProxy's, once the cluster serves) or that a test checks is free again:
    a port from the ephemeral range may by then be taken by any outgoing or auto-bound
    socket (Ray's own processes)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(20000, min(low, 32768)), 200):
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    return free_port()


#: The CLI's "serving" line in the text and the JSON log formats.
SERVING = ("sheaf-server: serving", '"logger": "sheaf-server", "message": "serving')


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str = ""
    lines: list[str] = field(default_factory=list)  # stdout and stderr so far

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def read(self) -> None:
        """Collect the process's output until it closes (a reader thread)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, text: str | tuple[str, ...], timeout: float) -> None:
        """Until `text` (or one of several) is in the output; fails with the output if the
        process exits or the time is up first."""
        deadline = time.monotonic() + timeout
        texts = (text,) if isinstance(text, str) else text
        while not any(t in self.output for t in texts):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"no {text!r} in the output:\n{self.output[-3000:]}")
            time.sleep(0.05)


@contextmanager
def served(config: Path, *options: str, env: dict[str, str] | None = None,
           timeout: float = 10, executable: Path = BIN) -> Iterator[Served]:
    """`sheaf-server serve CONFIG` on a free port, once it says it serves and /ready
    answers 200; SIGTERM when the block ends, then its output is complete. `executable`:
    another install's `sheaf-server` (the wheels' smoke tests)."""
    port = free_port()
    process = subprocess.Popen([str(executable), "serve", str(config), *options,
                                "--port", str(port)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    running = Served(process)
    reader = threading.Thread(target=running.read, daemon=True)
    reader.start()
    try:
        running.wait_for(SERVING, timeout)
        running.url = f"http://127.0.0.1:{port}"
        wait_until_ready(running.url, timeout, explain=lambda: running.output[-3000:])
        yield running
    finally:
        process.terminate()
        process.wait(timeout=max(30, timeout))
        reader.join(10)
