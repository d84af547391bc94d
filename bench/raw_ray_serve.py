"""The baseline sheaf on Ray is compared with: Chronos-Bolt on Ray Serve written by hand, as
Ray's documentation shows it — one deployment, `@serve.batch` with sheaf's batch settings
(32, 2 ms), the same backend class and the same pydantic contract for parsing and encoding.

    python bench/raw_ray_serve.py MODEL_DIR PORT [--throughput-optimized]

Starts a local Ray cluster, deploys at http://127.0.0.1:PORT/ and serves until SIGTERM.
`--throughput-optimized` starts the cluster with the flags sheaf sets (HAProxy, direct
ingress): what a hand-written deployment gets when its author knows them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def main() -> int:
    model_dir, port = sys.argv[1], int(sys.argv[2])
    if "--throughput-optimized" in sys.argv:
        os.environ.update({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                           "RAY_SERVE_ENABLE_HA_PROXY": "1"})
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    from sheaf_backend_chronos.backend import ChronosBackend
    from sheaf_core.contracts.time_series import TimeSeriesRequest

    @serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
    class Chronos:
        def __init__(self, model_dir: str) -> None:
            self.backend = ChronosBackend(model_id=model_dir)
            self.backend.load()

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
        async def predict(self, requests: list[TimeSeriesRequest]) -> list[bytes]:
            return [r.model_dump_json().encode() for r in self.backend.predict(requests)]

        async def __call__(self, http: Request) -> Response:
            request = TimeSeriesRequest.model_validate_json(await http.body())
            return Response(await self.predict(request), media_type="application/json")

    ray.init(include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Chronos.bind(model_dir), name="raw", route_prefix="/")
    print("raw Ray Serve app ready", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
