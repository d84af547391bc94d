"""Stopping a backend's work once nobody waits for it.

A batch runs in a worker thread, and a thread cannot be killed: a backend computing past
its requests' deadline keeps the model busy for callers that have already had their 504.
So hosts tell the work its deadline — the latest of its requests', after which every one
of them has been answered — with `running_until`, and backends check it wherever their work
has steps:

- `check_deadline()` between the steps of a loop (a weather rollout's steps);
- `stop_at_deadline(module)` before every call of a torch module: an autoregressive
  chunk or generated token of a forecaster, a denoising step of a diffusion model.

Past the deadline they raise `DeadlinePassed`; the host answers 504 and the worker takes the
next batch. A single module call or library routine is never interrupted midway (e.g. a
VAE decode): a request's work stops at its next step. Without a deadline (offline batch
jobs) the checks do nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sheaf_core.errors import DeadlineExceeded

_deadline: ContextVar[float | None] = ContextVar("sheaf_deadline", default=None)


#: The work's deadline passed: every request it served has been answered already. The
#: same class as `sheaf_core.errors.DeadlineExceeded` (one concept, one class); this is the
#: name backends know.
DeadlinePassed = DeadlineExceeded


@contextmanager
def running_until(deadline: float | None) -> Iterator[None]:
    """Work done in this block (this thread, and contexts copied from it) stops at its
    next check after `deadline` (`time.monotonic()` seconds; None: never)."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def check_deadline() -> None:
    """Raise `DeadlinePassed` if the current work's deadline has passed."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlinePassed("the requests' deadline passed; the work was stopped")


def stop_at_deadline(module: Any) -> None:
    """Check the deadline before every call of `module` (a `torch.nn.Module`): the model
    of one autoregressive step or one denoising step."""
    module.register_forward_pre_hook(_check_before_call)


def _check_before_call(_module: Any, _args: Any) -> None:
    check_deadline()
