"""A hand-batched FastAPI server — what a team writes without a serving framework: one
uvicorn process, requests queued on the event loop and cut into batches of up to 32 (or
what arrived within 2 ms), each batch run in a worker thread.

    python fastapi_batched.py MODEL_DIR PORT
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from chronos_model import BoltModel
from fastapi import FastAPI, Request

MAX_BATCH, MAX_WAIT_S = 32, 0.002

model = BoltModel(sys.argv[1])
queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = asyncio.Queue()


async def batcher() -> None:
    loop = asyncio.get_running_loop()
    while True:
        batch = [await queue.get()]
        deadline = loop.time() + MAX_WAIT_S
        while len(batch) < MAX_BATCH:
            try:
                batch.append(await asyncio.wait_for(queue.get(), deadline - loop.time()))
            except TimeoutError:
                break
        try:
            answers = await asyncio.to_thread(model.predict, [body for body, _ in batch])
            for (_, future), answer in zip(batch, answers, strict=True):
                future.set_result(answer)
        except Exception as exc:
            for _, future in batch:
                future.set_exception(exc)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(batcher())
    yield
    task.cancel()


app = FastAPI(lifespan=lifespan)


@app.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    await queue.put((await request.json(), future))
    return await future


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False)
