"""Tier 1 on every core: HTTP worker processes in front of one worker process per model
(`server.workers`, a model's `replicas`), no Ray. `supervisor.ProcessHost` runs them;
`process_engine` is an HTTP worker's view of the models; `model_worker` serves one model
to all HTTP workers, so its batches fill from all of their requests; `link` and `frames`
carry the calls between them. docs/deployment.md says when to use it."""
