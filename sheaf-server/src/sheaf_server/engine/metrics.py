"""Prometheus metrics of the request path (prometheus-client), and their exposition.

Series (seconds for durations, `_total` for counters, as Prometheus names them):

  sheaf_requests_total{model, route, status}      requests answered, by HTTP status
  sheaf_request_duration_seconds{model, route}    receipt to answer (streams: last event)
  sheaf_queue_wait_seconds{model}                 enqueue to the start of the request's batch
  sheaf_batch_size{model}                         requests per backend call
  sheaf_batch_duration_seconds{model}             one backend call
  sheaf_queue_depth{model}                        requests waiting for a batch
  sheaf_model_load_seconds{model}                 the last load (or hot swap) of the model
  sheaf_cache_hits_total{model}, sheaf_cache_misses_total{model}

Every process of a server records into its own registry; with PROMETHEUS_MULTIPROC_DIR set
(the Ray host sets it for its ingress and model replicas on a node), the exposition sums
the files every process writes there, so one scrape sees the whole server.
"""

from __future__ import annotations

import glob
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Where this process's values live, decided once, now, as prometheus-client decided how to
#: store them: a library that sets the variable later (Feast's import does) must not switch
#: the scrape to files these series never write.
MULTIPROC_DIR = os.environ.get(MULTIPROC_ENV) or None
if MULTIPROC_DIR:  # before any value is created in this process
    os.makedirs(MULTIPROC_DIR, exist_ok=True)
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           30.0, 60.0, 120.0, 300.0, 600.0)

REQUESTS = Counter("sheaf_requests", "Requests answered, by model, route and HTTP status.",
                   ["model", "route", "status"])
REQUEST_SECONDS = Histogram("sheaf_request_duration_seconds", "Time from receiving a "
                            "request to its answer (a stream: to its last event).",
                            ["model", "route"], buckets=SECONDS)
QUEUE_WAIT = Histogram("sheaf_queue_wait_seconds", "Time a request waited in its model's "
                       "queue before its batch started.", ["model"], buckets=SECONDS)
BATCH_SIZE = Histogram("sheaf_batch_size", "Requests per backend call.", ["model"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096))
BATCH_SECONDS = Histogram("sheaf_batch_duration_seconds", "Time of one backend call.",
                          ["model"], buckets=SECONDS)
QUEUE_DEPTH = Gauge("sheaf_queue_depth", "Requests waiting in the model's queue.", ["model"],
                    multiprocess_mode="livesum")
LOAD_SECONDS = Gauge("sheaf_model_load_seconds", "Time the model's last load or hot swap "
                     "took.", ["model"], multiprocess_mode="max")
CACHE_HITS = Counter("sheaf_cache_hits", "Requests answered from the response cache.",
                     ["model"])
CACHE_MISSES = Counter("sheaf_cache_misses", "Cacheable requests the cache did not hold.",
                       ["model"])


class ModelMetrics:
    """One model's series, their labels bound once (cheap to update on the hot path)."""

    def __init__(self, model: str) -> None:
        self.queue_wait = QUEUE_WAIT.labels(model)
        self.batch_size = BATCH_SIZE.labels(model)
        self.batch_seconds = BATCH_SECONDS.labels(model)
        self.queue_depth = QUEUE_DEPTH.labels(model)
        self.load_seconds = LOAD_SECONDS.labels(model)
        self.cache_hits = CACHE_HITS.labels(model)
        self.cache_misses = CACHE_MISSES.labels(model)


def exposition() -> tuple[bytes, str]:
    """The text a scrape of GET /metrics gets, and its content type."""
    directory = MULTIPROC_DIR
    if directory:
        _forget_dead_processes(directory)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def _forget_dead_processes(directory: str) -> None:
    """Live gauges (queue depth) of replicas that exited must not count: drop their files.
    Counters and histograms of exited processes stay — that work was done."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = int(path.rsplit("_", 1)[1].removesuffix(".db"))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:
            pass  # alive, another user's

