"""The plain ASGI host: FastAPI routes over the engine, served by uvicorn."""
