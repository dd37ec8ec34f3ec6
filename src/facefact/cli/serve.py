"""`facefact serve`: the web UI and the HTTP API over one bounded queue; `facefact worker` for scale-out.

    facefact serve --model tiny                      # offline, seconds: http://127.0.0.1:7860/ui/
    facefact serve --base-model ... --adapter ... --encoder ... --api-key KEY --host 0.0.0.0
    facefact serve --redis redis://host:6379/0       # stateless API; GPUs run `facefact worker`
    facefact worker --redis redis://host:6379/0 --device cuda:0 [model flags]

Models are loaded with `generate`'s own loader, once, before the port opens. Heavy imports
(torch, diffusers, gradio, fastapi) happen inside `run`, so `facefact --help` stays fast.
"""
from __future__ import annotations

import os
import sys

from facefact.errors import ConfigError
from facefact.logfilters import prompts_kept_out_of_logs

LOOPBACK = ("127.0.0.1", "localhost", "::1")
STOP_GRACE_S = 3  # on Ctrl-C / SIGTERM: how long open requests and a running job's step may take to end


def add_model_arguments(parser) -> None:
    """The model flags of `facefact generate` (same names, same meaning)."""
    from facefact.cli.model_flags import add_model_flags

    m = add_model_flags(parser, "models (as in `facefact generate`)",
                        device_help="cuda, cuda:1, mps or cpu; several, comma-separated (cuda:0,cuda:1), give one "
                                    "GPU worker each")
    m.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]",
                   help="a LoRA users may pick (by its file name) at WEIGHT (default 1.0, used when a request "
                        "names none); repeat for several")


def add_limit_arguments(parser) -> None:
    g = parser.add_argument_group("queue and limits")
    g.add_argument("--queue-size", dest="queue_size", type=int, default=8, help="jobs that may wait (default 8); "
                   "more get 429 + Retry-After")
    g.add_argument("--job-timeout", dest="job_timeout", type=float, default=600, help="seconds a job may run")
    g.add_argument("--result-ttl", dest="result_ttl", type=float, default=600,
                   help="seconds results are kept after a job ends, then deleted (default 600)")


def add_batch_argument(parser) -> None:
    parser.add_argument("--max-batch", dest="max_batch", type=int, default=None, metavar="N",
                        help="run up to N queued portrait jobs of the same settings (all but prompt, seed and "
                             "person) as one UNet batch (default: 4 on a GPU, 1 on the CPU, where batching "
                             "gains nothing; not with --redis: each worker runs one job at a time)")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def add_compile_arguments(parser) -> None:
    g = parser.add_argument_group("compilation (off by default)")
    g.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile the UNet (MODE: " + ", ".join(COMPILE_MODES) + "; default 'default') and warm it "
                        "up at start for the default size and each batch size, so no request pays a compile; "
                        "/health says ready (200) only then. Any FACT scale, person or window reuses the graphs")
    g.add_argument("--compile-backend", dest="compile_backend", default="inductor", metavar="NAME",
                   help="torch.compile backend (default inductor; 'eager' checks the capture without compiling)")


def check_compile_backend(args) -> None:
    """--compile-backend names one of torch.compile's backends (checked before any model loads)."""
    if not args.compile:
        return
    import torch._dynamo

    known = set(torch._dynamo.list_backends(exclude_tags=())) | {"inductor"}
    if args.compile_backend not in known:
        raise ConfigError(f"--compile-backend {args.compile_backend!r} is not a torch.compile backend",
                          hint=f"use one of: {', '.join(sorted(known))}")


def compile_engines(engines, args, max_batch: int) -> None:
    """With --compile: each engine's UNet compiled, warmed up (by its worker) for batch 1 and max_batch
    (dynamo makes the batch size dynamic on the second, so the sizes between reuse that graph)."""
    if not args.compile:
        return
    mode = None if args.compile == "default" or args.compile_backend != "inductor" else args.compile
    for engine in engines:
        engine.compile_unet(batch_sizes=(1, max_batch), mode=mode, backend=args.compile_backend)


def default_max_batch(devices: list[str | None]) -> int:
    """4 where every engine is on a GPU, else 1: a CPU is already busy with one image's layers."""
    return 4 if devices and all(d is not None and d.startswith("cuda") for d in devices) else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="web UI + HTTP API over one bounded job queue",
                              description="Serve the web UI (/ui) and the HTTP API (/v1, docs at /docs) with the "
                                          "models loaded once. Binds 127.0.0.1 unless --host says otherwise.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="TCP port to listen on (default 7860)")
    add_model_arguments(p)
    add_limit_arguments(p)
    add_batch_argument(p.add_argument_group("batching"))
    add_compile_arguments(p)
    g = p.add_argument_group("access")
    g.add_argument("--max-upload-mb", dest="max_upload_mb", type=float, default=20.0,
                   help="largest request body, checked while it streams (default 20)")
    g.add_argument("--max-photo-megapixels", dest="max_photo_mp", type=float, default=16.0,
                   help="largest photo accepted, in megapixels (default 16)")
    g.add_argument("--api-key", dest="api_key", default=None,
                   help="require this key (X-API-Key or Bearer; the UI's password); default: FACEFACT_API_KEY")
    g.add_argument("--cors-origin", dest="cors_origins", action="append", default=[], metavar="ORIGIN",
                   help="allow browser calls from this origin (repeatable; CORS is off by default)")
    g.add_argument("--no-ui", dest="ui", action="store_false", help="the API only")
    g.add_argument("--redis", metavar="URL", help="use a shared Redis queue; GPUs run `facefact worker --redis URL`")
    p.set_defaults(func=run)

    w = subparsers.add_parser("worker", help="a GPU worker for `facefact serve --redis URL`",
                              description="Load the models once and run jobs from the Redis queue, one at a time "
                                          "(an RQ SimpleWorker: no fork per job). One process per GPU.")
    w.add_argument("--redis", metavar="URL", required=True, help="the Redis queue `facefact serve --redis URL` uses")
    w.add_argument("--name", help="worker name (default: RQ's; shown in job status)")
    w.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    add_model_arguments(w)
    add_compile_arguments(w)
    w.set_defaults(func=run_worker)


def quiet_network_defaults() -> None:
    """No analytics, no telemetry, no hub calls unless the user set these themselves (an explicit value wins)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def require_serve_extra() -> None:
    import importlib.util

    missing = [name for name in ("fastapi", "uvicorn", "gradio", "multipart", "prometheus_client", "fastapi_swagger")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"facefact serve needs {', '.join(missing)}", hint='pip install -e ".[serve]"')


def load_engines(args):
    """One Engine per device in --device (comma-separated), each a pipeline from generate's loader."""
    import argparse

    import torch

    from facefact.cli.model_flags import is_tiny, load_pipeline
    from facefact.faces import FaceAnalysis
    from facefact.cli import extras as lora_extras
    from facefact.cli import config as cli_config
    from facefact.pipelines.loading import quiet_libraries
    from facefact.serving.engine import Engine

    quiet_libraries()
    extras = lora_extras.check_settings(args.lora, tiny=is_tiny(args))
    lora_extras.check_files(extras)
    config, config_path = cli_config.load_config(args.config)
    devices = [d.strip() for d in args.device.split(",")] if args.device else [None]
    if is_tiny(args):  # 32-channel layers gain nothing from threads and lose a lot on a busy machine
        torch.set_num_threads(1)
    engines = []
    for index, device in enumerate(devices):
        one = argparse.Namespace(**{**vars(args), "device": device})
        pipe = load_pipeline(one, config, config_path, FaceAnalysis())
        engines.append(Engine(pipe, name=device or f"engine{index}", lora_weights=load_loras(pipe, extras)))
    return engines


def load_loras(pipe, extras) -> dict[str, float]:
    """Each --lora under its file name (made unique), all active at their weights: {name: weight}."""
    from facefact.cli.extras import quiet_diffusers

    weights: dict[str, float] = {}
    with quiet_diffusers():
        for path, weight in extras.loras:
            name, k = path.stem, 1
            while name in weights:
                k += 1
                name = f"{path.stem}-{k}"
            pipe.load_lora_weights(path, adapter_name=name)
            weights[name] = weight
    if weights:
        pipe.set_adapters(list(weights), list(weights.values()))
    return weights


def run(args) -> int:
    quiet_network_defaults()
    require_serve_extra()
    import uvicorn

    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.photos import FaceChecker

    api_key = args.api_key or os.environ.get("FACEFACT_API_KEY") or None
    check_limits(args)
    check_compile_backend(args)
    listening = bind_port(args.host, args.port)  # before any model loads: a taken port is said at once
    if args.host not in LOOPBACK and api_key is None:
        print(f"facefact serve: warning: listening on {args.host} without --api-key: anyone who can reach "
              "this port can use the GPU", file=sys.stderr)
    config = ServerConfig(queue_size=args.queue_size, max_upload_mb=args.max_upload_mb,
                          max_photo_pixels=int(args.max_photo_mp * 1e6), job_timeout_s=args.job_timeout,
                          result_ttl_s=args.result_ttl, api_key=api_key, cors_origins=args.cors_origins, ui=args.ui)
    with listening:
        jobs = make_jobs(args, config)
        with prompts_kept_out_of_logs():  # entered after loading: diffusers' and transformers' handlers exist
            try:
                app = create_app(jobs, FaceChecker(), config)
                print(f"facefact serve: http://{args.host}:{args.port}/" + ("ui/" if args.ui else "docs"),
                      file=sys.stderr)
                # Ctrl-C / SIGTERM: uvicorn stops (open requests get STOP_GRACE_S), then raises the signal
                # again, which ends the command as an interrupt (exit 130).
                server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                                       timeout_graceful_shutdown=STOP_GRACE_S))
                server.run(sockets=[listening])
            finally:
                jobs.close(wait_s=STOP_GRACE_S)  # a running job stops at its next step
    return 0


def bind_port(host: str, port: int):
    """The listening socket, bound now (uvicorn serves on it later), or a ConfigError naming the flag."""
    import errno
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use by another process",
                              hint="stop that process, or choose another --port", setting="port") from None
        if err.errno == errno.EACCES:
            raise ConfigError(f"port {port} needs administrator rights on this machine",
                              hint="choose a --port above 1023", setting="port") from None
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror or err})",
                          hint="--host must be an address of this machine (127.0.0.1, 0.0.0.0, ::)",
                          setting="host") from None
    return sock


def check_limits(args) -> None:
    """Limits that make no sense are refused before any model is loaded."""
    if args.queue_size < 1:
        raise ConfigError("--queue-size must be at least 1")
    if args.max_batch is not None and not 1 <= args.max_batch <= 16:
        raise ConfigError(f"--max-batch must be 1 to 16 (got {args.max_batch})", hint="1 runs every job alone")
    for flag, value in (("--max-upload-mb", args.max_upload_mb), ("--max-photo-megapixels", args.max_photo_mp),
                        ("--job-timeout", args.job_timeout), ("--result-ttl", args.result_ttl)):
        if not value > 0:
            raise ConfigError(f"{flag} must be a positive number (got {value})")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a TCP port (1-65535)")


def make_jobs(args, config):
    if args.redis:
        from facefact.serving.redis_jobs import RedisJobs

        from facefact.cli.model_flags import TINY_MODELS

        if args.model != "fact" or args.base_model or args.adapter or args.encoder or args.device:
            print("facefact serve: note: with --redis the models load in `facefact worker`; model flags here "
                  "are not used (the workers say which base family they serve)", file=sys.stderr)
        # until a worker reports its model: the tiny models' size for --model tiny*, else SD1.5's
        tiny = args.model in TINY_MODELS
        return RedisJobs(args.redis, queue_size=config.queue_size, job_timeout_s=config.job_timeout_s,
                         result_ttl_s=config.result_ttl_s, default_size=128 if tiny else 512,
                         base_family=("sdxl" if args.model == "tiny-sdxl" else "sd15") if tiny else None)
    from facefact.serving.jobs import LocalJobs

    engines = load_engines(args)
    max_batch = args.max_batch or default_max_batch([str(engine.pipeline.device) for engine in engines])
    compile_engines(engines, args, max_batch)  # warmed up by each engine's worker thread before its first job
    return LocalJobs(engines, queue_size=config.queue_size, job_timeout_s=config.job_timeout_s,
                     result_ttl_s=config.result_ttl_s, max_batch=max_batch)


def run_worker(args) -> int:
    quiet_network_defaults()
    from redis import Redis

    from facefact.serving.redis_jobs import QUEUE_NAME, FacefactWorker

    if args.device and "," in args.device:
        raise ConfigError("one `facefact worker` runs one device", hint="start one worker per GPU: --device cuda:1")
    check_compile_backend(args)
    engine, = load_engines(args)
    compile_engines([engine], args, 1)
    if engine.warm_up_batches:
        print("facefact worker: warming up the compiled UNet", file=sys.stderr)
        engine.warm_up()
    connection = Redis.from_url(args.redis)
    worker = FacefactWorker([QUEUE_NAME], engine, connection=connection, name=args.name)
    print(f"facefact worker {worker.name}: waiting for jobs", file=sys.stderr)
    try:
        with prompts_kept_out_of_logs():
            worker.work(burst=args.burst, with_scheduler=False, logging_level="WARNING")
    except SystemExit:
        pass  # RQ's cold stop (a second Ctrl-C while a step runs): the job is failed, the worker gone
    if worker.stop_signal is not None:
        raise KeyboardInterrupt  # Ctrl-C or SIGTERM: reported and exited as every command does (130)
    return 0
