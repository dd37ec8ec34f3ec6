"""Load generator for `facefact serve`: offered load vs. throughput, latency, outcomes, peak memory.

    python bench/bench_serve.py                       # starts `facefact serve --model tiny` itself
    python bench/bench_serve.py --url http://127.0.0.1:7860 --pid 1234 --rates 0.5,1,2 --steps 30 --size 512

Open loop: for each rate, requests (POST /v1/generate, synchronous) start at RATE per second for
--duration seconds, whether or not earlier ones have finished. Bounded: at most --max-requests per
rate and --duration + 120 s of waiting. Only 127.0.0.1 is accepted as a target. Prints one row per
rate: offered and achieved rate, outcomes (200 / 429 / other), latency p50/p95 of the 200s and the
429s, the server's peak RSS (sampled from /proc, when its pid is known). Asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

REPO = Path(__file__).resolve().parents[1]


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


async def offered_load(url: str, photo: bytes, settings: dict, rate: float, duration: float, max_requests: int,
                       pid: int | None) -> dict:
    results: list[tuple[int, float]] = []
    peak = [rss_mib(pid) or 0.0]
    async with httpx.AsyncClient(timeout=duration + 120) as client:
        async def one() -> None:
            started = time.monotonic()
            try:
                answer = await client.post(url + "/v1/generate", files=[("photos", ("p.jpg", photo, "image/jpeg"))],
                                           data={"settings": json.dumps(settings)})
                results.append((answer.status_code, time.monotonic() - started))
            except httpx.HTTPError:
                results.append((-1, time.monotonic() - started))

        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], rss_mib(pid) or 0.0)
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        tasks, start = [], time.monotonic()
        while time.monotonic() - start < duration and len(tasks) < max_requests:
            tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration + 120)
        elapsed = time.monotonic() - start
        sampler.cancel()
    ok = [t for code, t in results if code == 200]
    busy = [t for code, t in results if code == 429]
    return {"rate": rate, "sent": len(results), "ok": len(ok), "busy": len(busy),
            "other": len(results) - len(ok) - len(busy), "goodput": len(ok) / elapsed,
            "ok_p50": percentile(ok, 50), "ok_p95": percentile(ok, 95),
            "busy_p50": percentile(busy, 50), "peak_rss_mib": peak[0] or None}


def start_tiny_server(port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "facefact.cli.main", "serve", "--model", "tiny", "--port",
                               str(port), "--queue-size", "4", "--no-ui"], env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server on 127.0.0.1 (default: start a tiny one)")
    parser.add_argument("--pid", type=int, help="the server's process id, for its memory")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--rates", default="0.5,1,2,4", help="offered loads, requests per second")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=200)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--photo", default=str(REPO / "examples" / "astronaut.jpg"))
    args = parser.parse_args()

    server = None
    url, pid = args.url, args.pid
    if url is None:
        server = start_tiny_server(args.port)
        url, pid = f"http://127.0.0.1:{args.port}", server.pid
    if urlparse(url).hostname != "127.0.0.1":
        raise SystemExit("bench_serve only loads a server on 127.0.0.1")
    settings = {"prompt": "a portrait", "steps": args.steps, "width": args.size, "height": args.size}
    photo = Path(args.photo).read_bytes()
    try:
        print("| offered /s | sent | 200 | 429 | other | goodput /s | 200 p50 s | 200 p95 s | 429 p50 s | peak RSS MiB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for rate in (float(r) for r in args.rates.split(",")):
            row = asyncio.run(offered_load(url, photo, settings, rate, args.duration, args.max_requests, pid))
            cells = [row["rate"], row["sent"], row["ok"], row["busy"], row["other"], row["goodput"], row["ok_p50"],
                     row["ok_p95"], row["busy_p50"], row["peak_rss_mib"]]
            print("| " + " | ".join("-" if c is None else (f"{c:.2f}" if isinstance(c, float) else str(c))
                                    for c in cells) + " |", flush=True)
            assert httpx.get(url + "/health", timeout=5).status_code == 200
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
