"""`facefact serve --model tiny` as a user starts it: a real process, offline, no outside network use."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from PIL import Image
from serve_helpers import REPO, SMALL, free_port

pytest.importorskip("gradio")

# Logs every name lookup and connection that is not to this machine, in every Python process it is loaded in.
AUDIT = textwrap.dedent("""
    import os, sys
    LOG = os.environ["FACEFACT_TEST_NET_LOG"]
    LOCAL = ("127.0.0.1", "localhost", "::1", "0.0.0.0", None)
    def hook(event, args):
        if event == "socket.getaddrinfo" and args[0] not in LOCAL:
            open(LOG, "a").write(f"lookup {args[0]}\\n")
        elif event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple) and address[0] not in LOCAL:
                open(LOG, "a").write(f"connect {address}\\n")
    sys.addaudithook(hook)
""")


@pytest.mark.slow
def test_serve_tiny_offline_round_trip(tmp_path, astronaut_bytes):
    (tmp_path / "sitecustomize.py").write_text(AUDIT)
    log = tmp_path / "network.log"
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE",
                                                            "HF_HUB_DISABLE_TELEMETRY")}
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO / 'src'}", OMP_NUM_THREADS="1",
               FACEFACT_TEST_NET_LOG=str(log), GRADIO_TEMP_DIR=str(tmp_path / "gradio"))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "facefact.cli.main", "serve", "--model", "tiny", "--port",
                               str(port), "--queue-size", "2"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "facefact serve did not come up"
            time.sleep(0.3)
        assert httpx.get(url + "/health").json()["queue_size"] == 2
        page = httpx.get(url + "/", follow_redirects=True)
        assert page.status_code == 200 and "facefact" in page.text
        answer = httpx.post(url + "/v1/generate", files=[("photos", ("a.jpg", astronaut_bytes, "image/jpeg"))],
                            data={"settings": json.dumps({**SMALL, "seed": 5})}, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["images"][0]["metadata"]["seed"] == 5
        openai_client_round_trip(url, astronaut_bytes)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/ui/" in output
    assert "Traceback" not in output
    assert not log.exists(), log.read_text()  # no lookup or connection beyond this machine


def openai_client_round_trip(url: str, photo: bytes) -> None:
    """The official OpenAI client's images.edit against the CLI's server (where the client is installed)."""
    try:
        from openai import OpenAI
    except ImportError:
        return  # tests/serving/test_openai_api.py says why it skips
    answer = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120).images.edit(
        model="facefact", image=[("a.jpg", photo, "image/jpeg")], prompt="a portrait", n=2, size="64x64",
        extra_body={"steps": 2, "seed": 5})
    seeds = [json.loads(Image.open(io.BytesIO(base64.b64decode(image.b64_json))).info["facefact"])["seed"]
             for image in answer.data]
    assert seeds == [5, 6]


def test_worker_refuses_several_devices(capsys):
    from facefact.cli.main import main

    assert main(["worker", "--redis", "redis://127.0.0.1:1/0", "--model", "tiny", "--device", "cpu,cpu"]) == 2
    assert "one device" in capsys.readouterr().err


@pytest.mark.parametrize("flags, words", [(["--queue-size", "0"], "--queue-size"),
                                          (["--result-ttl", "-1"], "--result-ttl"),
                                          (["--port", "70000"], "not a TCP port"),
                                          (["--max-batch", "0"], "--max-batch must be 1 to 16")])
def test_serve_refuses_bad_limits_before_loading(capsys, flags, words):
    from facefact.cli.main import main

    assert main(["serve", "--model", "tiny", *flags]) == 2
    assert words in capsys.readouterr().err


def test_serve_refuses_a_taken_port_before_loading_models(capsys, monkeypatch):
    import socket

    from facefact.cli import serve
    from facefact.cli.main import main

    def no_loading(args):
        raise AssertionError("models were loaded for a port that cannot be used")

    monkeypatch.setattr(serve, "load_engines", no_loading)
    with socket.socket() as other:  # another process's server on the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert main(["serve", "--model", "tiny", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"facefact serve: error: port {port} on 127.0.0.1 is already in use by another "
                                "process", "  hint: stop that process, or choose another --port"]


def test_batching_is_on_only_where_every_device_is_a_gpu():
    from facefact.cli.serve import default_max_batch

    assert default_max_batch(["cuda:0", "cuda:1"]) == 4
    assert default_max_batch(["cpu"]) == default_max_batch(["cuda:0", "cpu"]) == default_max_batch(["mps"]) == 1


def test_compile_is_off_by_default_and_prepares_a_warm_up(capsys):
    """--compile wraps each engine's UNet and plans its warm-up (batch 1 and --max-batch); the warm-up
    itself runs in the engine's worker (tests/serving/test_compile_warmup.py)."""
    import argparse

    from facefact.cli.main import build_parser, main
    from facefact.cli.serve import compile_engines
    from facefact.pipelines import FACTStableDiffusionPipeline
    from facefact.serving.engine import Engine

    parser = build_parser()
    assert parser.parse_args(["serve", "--model", "tiny"]).compile is None
    assert parser.parse_args(["serve", "--compile"]).compile == "default"
    assert parser.parse_args(["worker", "--redis", "redis://x", "--compile", "max-autotune"]).compile == "max-autotune"
    assert main(["serve", "--model", "tiny", "--compile", "--compile-backend", "nope"]) == 2
    assert "--compile-backend 'nope' is not a torch.compile backend" in capsys.readouterr().err
    engine = Engine(FACTStableDiffusionPipeline.tiny())
    compile_engines([engine], argparse.Namespace(compile=None), 4)
    assert engine.ready.is_set() and not engine.warm_up_batches
    compile_engines([engine], argparse.Namespace(compile="default", compile_backend="eager"), 4)
    assert type(engine.pipeline.unet).__name__ == "OptimizedModule" and engine.warm_up_batches == (1, 4)
    assert not engine.ready.is_set()
    assert engine.pipeline.fact_adapter is not None  # FACT is found through the compiled wrapper
