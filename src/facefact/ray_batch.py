"""Batch work on a Ray cluster, for `facefact prepare --ray` and `facefact evaluate --ray`.

    with ray_cluster("auto" | "HOST:PORT") as resources:
        for row in map_rows(items, PhotoActor, {"settings": {...}}, workers=4, resources={"num_cpus": 1}):
            ...                            # one output row per input item, as it finishes

The work is Ray Data's `map_batches` over an actor pool: each actor builds its models once (from
paths and JSON-able settings, never from objects pickled on the driver) and turns one input row
into one output row of JSON text and bytes; the driver writes every file, so the outputs land on
the machine that runs the command. A worker or node that dies is restarted by Ray and its rows
are run again (Ray Data's actor pools restart actors and retry their rows on system failures;
an exception raised by our code is not retried but ends the run with its message); the caller keys
results by item, so a row seen twice is written once. `auto` starts a private Ray instance on this
machine (facefact.ray_local).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from typing import Iterator

from facefact.errors import ConfigError, FacefactError
from facefact.logfilters import dropped_log_messages

RAY_HINT = 'install Ray Data: pip install -e ".[ray]" (or pip install "ray[data]")'


class RayRunError(FacefactError, RuntimeError):
    """The cluster could not finish the work (workers lost beyond the retries, cluster gone)."""


def require_ray():
    """The `ray` module with Ray Data, or a ConfigError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"running on a Ray cluster needs the ray package with Ray Data, which cannot be "
                          f"imported ({err})",
                          hint=RAY_HINT, setting="ray") from None
    return ray


@contextlib.contextmanager
def ray_cluster(address: str = "auto") -> Iterator[dict]:
    """Connect this process to a Ray cluster for the block, then disconnect; yields its resources
    ({"CPU": .., "GPU": ..}). 'auto': the cluster in RAY_ADDRESS if set (Ray's convention), else a
    private instance on this machine (loopback only, no dashboard, no usage reporting), stopped
    afterwards. A process already connected (ray.init by the caller) is used as it is and left
    connected."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    with contextlib.ExitStack() as stack:
        if address == "auto" and os.environ.get("RAY_ADDRESS"):
            address = os.environ["RAY_ADDRESS"]  # Ray's own convention: the cluster this shell uses
        elif address == "auto":
            from facefact.ray_local import private_cluster

            address = stack.enter_context(private_cluster())
        _check_reachable(address)
        try:
            with _signal_handlers_kept():
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                         configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise ConfigError(f"cannot connect to the Ray cluster at {address}: {_first_line(err)}", setting="ray",
                              hint="start one with `ray start --head` and pass the address it prints "
                                   "(HOST:PORT), or 'auto' for a private instance on this machine") from None
        stack.callback(ray.shutdown)
        yield ray.cluster_resources()


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Refuse a HOST:PORT nothing listens at now: ray.init would retry it for many minutes."""
    if "://" in address:
        return  # ray:// (Ray Client) and other schemes: Ray's own connection handling
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"'{address}' is not a Ray cluster address (HOST:PORT)", setting="ray",
                          hint="pass the address `ray start --head` prints, e.g. 10.0.0.5:6379, or 'auto'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise ConfigError(f"no Ray cluster answers at {address} ({err.strerror or err})", setting="ray",
                          hint="start one with `ray start --head --port=6379` on the head node and pass the "
                               "address it prints, or use 'auto' for a private instance on this machine") from None


@contextlib.contextmanager
def _signal_handlers_kept():
    """ray.init replaces the process's SIGTERM handler (by one that exits at once); the caller's is
    put back, so a stopped command still unwinds as it does without Ray (facefact's CLI: the files
    written so far are complete, exit code 130)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)


def worker_resources(resources: dict, *, gpus: bool) -> dict:
    """Per-actor resources: one GPU when the cluster has GPUs and the work wants them, else one CPU."""
    if gpus and resources.get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": 1}


def default_workers(resources: dict, per_worker: dict) -> int:
    """As many actors as the cluster can hold at once with these per-actor resources."""
    if per_worker.get("num_gpus"):
        return max(1, int(resources.get("GPU", 1)))
    return max(1, int(resources.get("CPU", 1)))


def map_rows(items: list[dict], actor_class, constructor_kwargs: dict, *, workers: int,
             resources: dict) -> Iterator[dict]:
    """Run `actor_class(**constructor_kwargs)(batch)` over `items` on an actor pool of `workers`
    actors with `resources` each; yield the output rows as they finish (in any order). Each batch
    holds one item; items travel in blocks of a few, so progress is fine-grained and a lost worker
    costs only its block."""
    ray = require_ray()
    if not items:
        return
    # Start with the actors the cluster can hold now (a pool that waits for more would wait
    # forever on a fixed cluster), grow to `workers` if the cluster grows.
    capacity = default_workers(ray.cluster_resources(), resources)
    per_block = max(1, min(32, len(items) // (workers * 4)))
    dataset = ray.data.from_items(items, override_num_blocks=-(-len(items) // per_block))
    dataset = dataset.map_batches(actor_class, batch_size=1, batch_format="numpy",
                                  compute=ray.data.ActorPoolStrategy(min_size=min(workers, capacity),
                                                                     max_size=workers),
                                  fn_constructor_kwargs=constructor_kwargs, **resources)
    context = dataset.context  # this dataset's own copy: the caller's progress bar is the one shown
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.verbose_stats_logs = False
    context.raise_original_map_exception = True  # our FacefactError itself, not Ray Data's wrapper
    try:
        # Ray Data's own log lines (execution started / finished, and its copy of an error we raise
        # below with our message) say nothing the command does not say
        with dropped_log_messages("ray.data", lambda record: record.levelno < logging.CRITICAL):
            yield from dataset.iter_rows()
    except Exception as err:  # noqa: BLE001 - Ray wraps the workers' errors in its own types
        cause = _facefact_cause(err)
        if cause is not None:
            raise cause from None
        raise RayRunError(f"the Ray cluster could not finish the work ({type(err).__name__}: {_first_line(err)})",
                          hint="outputs finished so far are kept; run the same command again to do the rest") from None


class ItemActor:
    """Base of the actors `map_rows` runs: `setup(**constructor_kwargs)` builds the models once,
    `process(batch)` maps one batch. A FacefactError in `setup` (a model missing or damaged on that
    node) is raised by the first call instead: Ray hands back an error in an actor's constructor as
    text only, one in a call whole (its message and hint, for the command's one-line error)."""

    def __init__(self, **kwargs):
        self._failure: FacefactError | None = None
        try:
            self.setup(**kwargs)
        except FacefactError as err:
            self._failure = err

    def setup(self, **kwargs) -> None:
        raise NotImplementedError

    def process(self, batch: dict) -> dict:
        raise NotImplementedError

    def __call__(self, batch: dict) -> dict:
        if self._failure is not None:
            raise self._failure
        return self.process(batch)


def _facefact_cause(err: BaseException) -> FacefactError | None:
    """The FacefactError a worker raised (a bad setting, a model missing on a node), if that is
    what stopped the run. Ray hands it back as `.cause` of its own error type (a class made from
    both, whose text is the worker's traceback): the original is the one with our message."""
    seen = set()
    stack = [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(current, FacefactError) and not isinstance(cause, BaseException):
            return current
        stack.extend([cause, current.__cause__, current.__context__])
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
