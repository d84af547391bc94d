"""sheaf's log records in a Ray replica go where Serve's own go: the replica's log file.

Serve configures only its `ray.serve` logger in a replica (a file per replica under the
session's logs/serve/, JSON lines with `logging_config: {encoding: JSON}`, which the app
gets from `server.log_format: json`); records of other loggers reach the worker's stderr
file in Ray's text format. Giving the `sheaf` logger Serve's handlers puts the access
records (`sheaf.access`: request id, model, route, status, latency) and the engine's
records in that file, formatted alike, with their fields as JSON keys.
"""

from __future__ import annotations

import logging


def route_to_serve_logs() -> None:
    """Called at replica start (Serve has configured its logger by then)."""
    serve_logger = logging.getLogger("ray.serve")
    if not serve_logger.handlers:
        return  # not in a replica: leave the process's logging as it is
    sheaf = logging.getLogger("sheaf")
    sheaf.handlers = list(serve_logger.handlers)
    sheaf.setLevel(serve_logger.level)
    sheaf.propagate = False
