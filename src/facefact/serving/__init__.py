"""`facefact serve`: an HTTP API and a web UI over one bounded job queue (docs/serving.md).

Layers: `schemas` (pydantic request/response models), `engine` (the only contact with the
pipeline), `jobs` (in-process queue, one worker thread per device), `redis_jobs` (the same
interface over Redis + RQ for many workers), `api` (FastAPI), `ui` (Gradio), `limits`, `metrics`.
Only the CLI imports this package; it needs the `serve` extra (fastapi, gradio, ...).
"""
