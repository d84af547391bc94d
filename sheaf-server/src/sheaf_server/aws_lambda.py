"""AWS Lambda: the tier-1 app behind Mangum. Set the function's handler to
`sheaf_server.aws_lambda.handler` (`pip install 'sheaf-server[lambda]'` with your backend
packages); the config comes from `$SHEAF_CONFIG` (a file in the deployment package or a
layer), else the embedded baseline.

The models load once per cold start, when the runtime imports this module and reads
`handler` — outside any invocation, so no request pays for a load after the first. Every
invocation then runs on the event loop the engine started on (its batchers live there);
Mangum's own lifespan handling is off, since it would start and stop the app, and so load
the models, on every invocation.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from sheaf_core.errors import ConfigError
from sheaf_server.asgi.app import create_app
from sheaf_server.config_check import check_config
from sheaf_server.defaults import default_config
from sheaf_server.engine import Engine
from sheaf_server.logs import configure_logging, silence_progress_bars
from sheaf_server.settings import SheafConfig, load_config

LambdaHandler = Any  # (event: dict, context: object) -> dict


def make_handler(config: SheafConfig) -> LambdaHandler:
    """A Lambda handler serving `config`; returns once every model has loaded (a model
    that failed answers 503 `model_failed`, as on any host)."""
    from mangum import Mangum

    check_config(config)
    wanting = [spec.name for spec in config.models if spec.resources.num_gpus]
    if wanting:
        raise ConfigError(f"model {wanting[0]!r}: resources.num_gpus: AWS Lambda has no GPUs; "
                          "set it to 0, or serve this model on a GPU target (sheaf-server "
                          "build --target kubernetes|sagemaker)")
    silence_progress_bars()
    engine = Engine(config.models, config.server, pipelines=config.pipelines)
    app = create_app(engine)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(engine.start())
    loop.run_until_complete(engine.wait_loaded())
    adapter = Mangum(app, lifespan="off")

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        asyncio.set_event_loop(loop)  # where the engine's batchers wait for work
        return adapter(event, context)

    return handler


def _from_environment() -> LambdaHandler:
    path = os.environ.get("SHEAF_CONFIG") or None
    config = load_config(path) if path else default_config()
    configure_logging(os.environ.get("SHEAF_LOG_LEVEL", "info"), config.server.log_format)
    return make_handler(config)


def __getattr__(name: str) -> Any:
    """`handler` is built on first access — the runtime's import at a cold start."""
    if name == "handler":
        globals()["handler"] = built = _from_environment()
        return built
    raise AttributeError(name)
