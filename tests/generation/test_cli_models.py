"""`facefact models`: locations and their origins, validation + checksum manifest, downloads through ModelScope's client."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facefact.pipelines.registry import KNOWN_MODELS, read_manifest

ADAPTER = KNOWN_MODELS["maj"].filename
ENCODER = KNOWN_MODELS["transface-s"].filename


@pytest.fixture(scope="module")
def released_files(tmp_path_factory):
    """Tiny models written in the released layouts (.ckpt / .pt pickles of flat tensor dicts)."""
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines.tiny import tiny_sd_pipeline

    root = tmp_path_factory.mktemp("released")
    torch.save(tiny_face_adapter(tiny_sd_pipeline().unet).released_state_dict(), root / ADAPTER)
    torch.save(tiny_encoder().state_dict(), root / ENCODER)
    return root


def online(monkeypatch) -> None:
    """Downloads from this machine's own stand-in server are tested with the offline switches off (the
    suite runs with HF_HUB_OFFLINE=1); "0", not unset, so that nothing the CLI sets outlives the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("FACEFACT_OFFLINE", "0")


STUB = """
import os, shutil
from pathlib import Path
CALLS = []

def model_file_download(model_id, file_path, revision=None, *, local_dir=None, **kwargs):
    CALLS.append((model_id, file_path, revision))
    source = Path(os.environ["STUB_MODELSCOPE_FILES"]) / file_path
    if not source.is_file():
        raise FileNotFoundError(f"{model_id}: no file {file_path}")
    target = Path(local_dir) / file_path
    shutil.copyfile(source, target)
    return str(target)
"""


@pytest.fixture
def modelscope(released_files, tmp_path, monkeypatch):
    """A stand-in for ModelScope's client package (its `model_file_download` contract), serving the
    tiny released-layout files; yields the list of calls it got."""
    import importlib
    import sys

    package = tmp_path / "stub" / "modelscope"
    (package / "hub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "hub" / "__init__.py").write_text("")
    (package / "hub" / "file_download.py").write_text(STUB)
    monkeypatch.syspath_prepend(str(tmp_path / "stub"))
    for name in [m for m in sys.modules if m == "modelscope" or m.startswith("modelscope.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("STUB_MODELSCOPE_FILES", str(released_files))
    online(monkeypatch)
    yield importlib.import_module("modelscope.hub.file_download").CALLS
    for name in [m for m in sys.modules if m == "modelscope" or m.startswith("modelscope.")]:
        sys.modules.pop(name)


def test_list_shows_locations_and_where_they_come_from(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEFACT_ENCODER", str(tmp_path / "enc.pt"))
    config = tmp_path / "c.yaml"
    config.write_text(f"adapter: {tmp_path / 'from_config.ckpt'}\n")
    code, out, err = cli("models", "list", "--config", config, "--base-model", tmp_path / "base", "--json")
    assert code == 0, err
    needed = {row["setting"]: row for row in json.loads(out)["needed"]}
    assert needed["base_model"]["from"] == "flag --base-model"
    assert needed["adapter"]["from"].startswith("config") and needed["adapter"]["status"] == "missing"
    assert needed["encoder"]["from"] == "env FACEFACT_ENCODER"
    code, out, _ = cli("models")  # no action: list, as text
    assert code == 0 and ADAPTER in out and "FACEFACT_HOME" in out


def test_check_names_each_missing_file_and_how_to_point_to_it(cli, tmp_path):
    code, out, err = cli("models", "check", "maj", "transface-s")
    assert code == 3  # ExitCode.PROBLEM_FOUND
    assert f"missing: {tmp_path / 'home' / ADAPTER}" in out and "FACEFACT_ADAPTER" in out and "--encoder" in out


def test_download_goes_through_modelscope_validates_records_then_check_verifies(cli, modelscope, tmp_path,
                                                                                 released_files):
    from facefact.pipelines.registry import MODELSCOPE_REPO, MODELSCOPE_REVISION

    home = tmp_path / "home"
    code, out, err = cli("models", "download", "maj", "transface-s")
    assert code == 0, err
    assert modelscope == [(MODELSCOPE_REPO, ADAPTER, MODELSCOPE_REVISION), (MODELSCOPE_REPO, ENCODER, MODELSCOPE_REVISION)]
    assert (home / ADAPTER).read_bytes() == (released_files / ADAPTER).read_bytes()
    assert sorted(p.name for p in home.iterdir()) == sorted([ADAPTER, ENCODER, "manifest.json"])  # no leftovers
    manifest = read_manifest(home)
    assert set(manifest) == {ADAPTER, ENCODER} and len(manifest[ADAPTER]["sha256"]) == 64

    code, out, err = cli("models", "check", "maj", "transface-s")
    assert code == 0, out
    assert out.count("sha256 verified") == 2
    assert cli("models", "download", "maj")[0] == 0 and len(modelscope) == 2  # verified copy: not fetched again
    code, out, err = cli("models", "download", "--base-model", tmp_path, "--json")  # local base: left alone
    assert code == 0 and "not downloaded" in out and len(modelscope) == 2, err

    # A file that changes after it was recorded (here: another valid adapter) is reported.
    from facefact.model.tiny import tiny_face_adapter
    from facefact.pipelines.tiny import tiny_sd_pipeline
    torch.save(tiny_face_adapter(tiny_sd_pipeline().unet, seed=5).released_state_dict(), home / ADAPTER)
    code, out, _ = cli("models", "check", "maj")
    assert code == 3 and "differs from the one recorded" in out


def test_a_download_that_does_not_load_leaves_nothing(cli, modelscope, tmp_path, released_files):
    (released_files / ENCODER).rename(released_files / "keep.pt")
    (released_files / ENCODER).write_bytes(b"not a checkpoint")
    try:
        code, _, err = cli("models", "download", "transface-s")
    finally:
        (released_files / "keep.pt").replace(released_files / ENCODER)
    assert code == 2 and "does not load" in err and "Traceback" not in err
    assert not (tmp_path / "home").exists() or not [p for p in (tmp_path / "home").iterdir() if p.name != "manifest.json"]


def test_check_reports_files_that_do_not_load(cli, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 100)
    code, out, err = cli("models", "check", "--adapter", bad, "--encoder", bad)
    assert code == 3 and "Traceback" not in err
    assert out.count("does not load") == 2


def test_check_accepts_a_local_base_folder(cli, tiny_model_files):
    base, adapter, encoder = tiny_model_files
    code, out, err = cli("models", "check", "--base-model", base, "--adapter", adapter, "--encoder", encoder)
    assert code == 0, out
    assert "sha256 recorded" in out


def test_download_errors_say_what_is_missing_and_how_to_point(cli, monkeypatch, tmp_path):
    import sys

    online(monkeypatch)
    monkeypatch.setitem(sys.modules, "modelscope", None)  # the client is not installed
    code, out, err = cli("models", "download", "maj")
    assert code == 2 and "Traceback" not in err
    assert f"could not download {ADAPTER}" in err and "facefact[modelscope]" in err
    assert str(tmp_path / "home" / ADAPTER) in err and "FACEFACT_ADAPTER" in err
    monkeypatch.setenv("FACEFACT_OFFLINE", "1")
    code, _, err = cli("models", "download", "maj")
    assert code == 2 and "offline" in err and str(tmp_path / "home" / ADAPTER) in err
    code, _, err = cli("models", "download", "sd15")
    assert code == 2 and "offline" in err and "--base-model" in err


def test_example_config_loads_and_relative_paths_follow_the_config_file(cli, tmp_path, monkeypatch):
    from facefact.cli.config import load_config, resolve_setting

    config, path = load_config(Path(__file__).resolve().parents[2] / "examples" / "facefact.yaml")
    assert config["generate"]["scheduler"] == "pndm"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "a.ckpt").write_bytes(b"x")
    (tmp_path / "c.yaml").write_text("adapter: weights/a.ckpt\nencoder: transface-s\nmodels_dir: /srv/m\n")
    config, path = load_config(tmp_path / "c.yaml")
    assert resolve_setting("adapter", None, config, path).path == tmp_path / "weights" / "a.ckpt"
    assert str(resolve_setting("encoder", None, config, path).path).startswith(str(tmp_path / "home"))  # env wins
    monkeypatch.delenv("FACEFACT_HOME")
    assert str(resolve_setting("encoder", None, config, path).path) == f"/srv/m/{ENCODER}"


@pytest.mark.parametrize("env, expected", [
    ({}, False), ({"FACEFACT_OFFLINE": "1"}, True), ({"HF_HUB_OFFLINE": "1"}, True),
    ({"FACEFACT_OFFLINE": "0", "HF_HUB_OFFLINE": "false"}, False), ({"FACEFACT_OFFLINE": "yes"}, True),
])
def test_one_offline_switch_for_every_hub_access(monkeypatch, env, expected):
    """FACEFACT_OFFLINE and HF_HUB_OFFLINE mean the same everywhere: `models`, loading a hub base
    for `generate`, and reading a hub base's UNet config (`convert --check-base`, `models check`)."""
    import diffusers

    from facefact.errors import ModelNotFoundError
    from facefact.pipelines import loading, registry

    for name in ("FACEFACT_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert registry.offline() is expected
    seen = {}

    def from_pretrained(location, **kwargs):
        seen["pipeline"] = kwargs.get("local_files_only")
        raise OSError("stop here")

    def load_config(location, **kwargs):
        seen["unet_config"] = kwargs.get("local_files_only")
        raise OSError("stop here")

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", from_pretrained)
    monkeypatch.setattr(diffusers.UNet2DConditionModel, "load_config", load_config)
    with pytest.raises(ModelNotFoundError):
        loading.load_base_pipeline("some-org/some-model", torch.float32)
    with pytest.raises(ModelNotFoundError):
        loading.base_unet_config("some-org/some-model")
    assert seen == {"pipeline": expected, "unet_config": expected}


def test_an_unknown_hub_id_is_a_hub_id_not_a_missing_path(cli, monkeypatch, tmp_path):
    from facefact.cli.config import resolve_setting
    from facefact.pipelines.registry import looks_like_hub_id

    monkeypatch.chdir(tmp_path)
    hub_id = "some-org/some-model"
    code, out, err = cli("models", "list", "--base-model", hub_id, "--json")
    assert code == 0, err
    assert {row["setting"]: row for row in json.loads(out)["needed"]}["base_model"]["status"] == "not cached"
    code, out, err = cli("models", "check", "--base-model", hub_id, "--adapter", tmp_path / "a", "--encoder",
                         tmp_path / "e", "--json")
    rows = {row["setting"]: row for row in json.loads(out)["models"]}
    assert code == 3 and "not in the hub cache" in rows["base_model"]["detail"]
    monkeypatch.setenv("FACEFACT_OFFLINE", "1")
    code, _, err = cli("models", "download", "--base-model", hub_id)
    assert code == 2 and f"offline: cannot download the base model {hub_id}" in err

    # a local folder of that name, a path-like value, or an adapter/encoder are never hub ids
    assert looks_like_hub_id(hub_id)
    assert not looks_like_hub_id("./org/model") and not looks_like_hub_id("/org") and not looks_like_hub_id("a/b/c")
    (tmp_path / "some-org" / "some-model").mkdir(parents=True)
    assert not looks_like_hub_id(hub_id)
    assert resolve_setting("base_model", hub_id, {}).path == Path(hub_id)
    assert resolve_setting("adapter", "org/adapter", {}).path == Path("org/adapter")


CLI_DIR = Path(__file__).resolve().parents[2] / "src" / "facefact" / "cli"
# The sub-commands: the modules that register one (`def register(subparsers)`); the other modules of
# facefact.cli (main, --threads, help formatting...) are the CLI's own shared helpers.
COMMANDS = sorted(p.stem for p in CLI_DIR.glob("*.py") if "\ndef register(" in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", COMMANDS)
def test_cli_commands_share_code_through_pipelines_not_each_other(name):
    import ast

    assert {"generate", "models", "convert", "faces"} <= set(COMMANDS)
    tree = ast.parse((CLI_DIR / f"{name}.py").read_text(encoding="utf-8"))
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    assert not [m for m in imported if m.startswith("facefact.cli.") and m.rsplit(".", 1)[1] in COMMANDS], name


def test_quiet_libraries_lets_an_explicit_verbosity_win(monkeypatch):
    import transformers

    from facefact.pipelines.loading import quiet_libraries

    before = transformers.logging.get_verbosity()
    try:
        monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
        transformers.logging.set_verbosity_info()
        quiet_libraries()
        assert transformers.logging.get_verbosity() == transformers.logging.INFO
        monkeypatch.delenv("TRANSFORMERS_VERBOSITY")
        quiet_libraries()
        assert transformers.logging.get_verbosity() == transformers.logging.ERROR
    finally:
        transformers.logging.set_verbosity(before)


@pytest.mark.parametrize("env,expected", [({"FACEFACT_OFFLINE": "1"}, "True"), ({"FACEFACT_OFFLINE": "0"}, "False"),
                                          ({"FACEFACT_OFFLINE": "1", "HF_HUB_OFFLINE": "0"}, "False")])
def test_facefact_offline_turns_huggingface_hub_offline_in_the_cli_process(env, expected):
    """huggingface_hub makes requests of its own unless HF_HUB_OFFLINE is set before it is imported;
    the CLI sets it from FACEFACT_OFFLINE (an explicit HF_HUB_OFFLINE wins)."""
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("FACEFACT_OFFLINE", "HF_HUB_OFFLINE")}
    code = ("import facefact.cli.main, huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)")
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
