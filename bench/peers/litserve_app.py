"""The same model on LitServe: its batching (max 32, 2 ms), an inference worker process
fed by `api_servers` HTTP processes (LitServe's own multi-process design).

    python litserve_app.py MODEL_DIR PORT API_SERVERS
"""

from __future__ import annotations

import sys
from typing import Any

import litserve as ls
from chronos_model import BoltModel


class BoltAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = BoltModel(sys.argv[1])

    def decode_request(self, request):  # type: ignore[no-untyped-def]
        # Unannotated on purpose: LitServe reads this annotation to build its endpoint, and
        # `dict` (a string here, under future annotations) would become a query parameter.
        return request

    def batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return inputs

    def predict(self, x: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.model.predict(x)

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


if __name__ == "__main__":
    server = ls.LitServer(BoltAPI(max_batch_size=32, batch_timeout=0.002), accelerator="cpu",
                          workers_per_device=1, fast_queue=True)
    server.run(port=int(sys.argv[2]), num_api_servers=int(sys.argv[3]), log_level="warning",
               generate_client_file=False)
