"""The server's logs: lines for people (`text`), or one JSON object per line (`json`,
python-json-logger) for a log pipeline — with the request id, model, route, status and
latency as fields on access records (`sheaf.access`, when `server.access_log` is on).

With `json`, every line on stderr must parse: the CLI's own messages go through the
`sheaf-server` logger, uvicorn's `color_message` extra is dropped, and model libraries'
progress bars (transformers' "Loading weights", diffusers', huggingface_hub's downloads)
are switched off — a server logs, it does not draw bars."""

from __future__ import annotations

import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, log_format: str) -> None:
    """Send every logger (uvicorn's too) to stderr in `log_format` ("text" | "json")."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_drop_color_message)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()  # propagate to the root's format
        logging.getLogger(name).propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _drop_color_message(record: logging.LogRecord) -> bool:
    """uvicorn attaches an ANSI-coloured copy of some messages; a JSON line would carry it."""
    record.__dict__.pop("color_message", None)
    return True


def silence_progress_bars() -> None:
    """Switch off tqdm bars in this process and in the processes it starts (Ray workers
    inherit the environment): tqdm reads `TQDM_DISABLE`, huggingface_hub and transformers
    `HF_HUB_DISABLE_PROGRESS_BARS` at import. An operator's own setting wins."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
