"""The harness on a fake method returning real photos: results, resume, report, errors, CLI."""
from __future__ import annotations

import csv
import json
import math
from html.parser import HTMLParser

import pytest

from facefact.errors import ConfigError, DatasetError
from facefact.evaluation import evaluate, load_identities, load_prompts, register_method, report_runs
from facefact.evaluation.methods import METHODS, MethodContext, RunSettings, parse_method


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], 0

    def handle_starttag(self, tag, attrs):
        self.tags += 1
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href") and v is not None]


def assert_self_contained(html: str):
    parser = _Links()
    parser.feed(html)
    parser.close()
    assert parser.tags > 10
    assert parser.refs, "expected inline images"
    for tag, key, value in parser.refs:
        assert value.startswith("data:") or value.startswith("#"), (tag, key, value[:60])
    for scheme in ("http://", "https://", "//cdn"):
        assert f'src="{scheme}' not in html and f'href="{scheme}' not in html
    assert "<link" not in html and "<script" not in html
    return parser


def test_run_resume_and_report(tmp_path, identities_dir, prompt_file, photo_methods):
    out = tmp_path / "run"
    res = evaluate(identities_dir, prompt_file, methods=photo_methods, seeds=2, out=out, progress=False)
    assert len(res.rows) == 2 * 2 * 2 * 2              # identities x prompts x seeds x methods
    agg = res.by_method()
    assert agg["photo"]["detection_rate"] == 1.0
    assert agg["photo"]["id_sim_sface"] == pytest.approx(1.0, abs=1e-4)
    assert agg["photo"]["id_match_sface"] == 1.0
    assert agg["photo"]["div_image_px"] == 0 and agg["photo"]["div_identity"] == pytest.approx(0, abs=1e-6)
    assert agg["pasted"]["div_image_px"] > 0                                 # the corner differs per seed
    assert agg["pasted"]["drift_outside_px"] > 0 and agg["pasted"]["drift_inside_px"] == 0
    assert math.isnan(agg["photo"]["drift_outside_px"])                      # no control of its own
    assert math.isnan(agg["photo"]["clip_t"]) and any("CLIP-T unavailable" in n for n in res.notes)
    assert {r["prompt"] for r in res.rows if r["identity"] == "hopper"} >= {"a photo of a woman on a beach"}
    assert agg["photo"]["mem_kind"] == "cpu-rss-peak" and agg["photo"]["time_s"] >= 0

    data = json.loads((out / "results.json").read_text())
    assert data["images"][0]["clip_t"] is None                               # NaN -> null
    assert not any("embedding" in k for k in data["images"][0])              # nothing identifying stored
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 16 and "drift_outside_px" in rows[0] and "id_sim_sface" in rows[0]
    assert len(list(csv.DictReader(open(out / "aggregate.csv")))) == 2
    assert not (out / "embeddings.npz").exists()

    # Resume: nothing generated again, same numbers.
    fresh = [type(m)(m.name, m.paste) for m in photo_methods]
    again = evaluate(identities_dir, prompt_file, methods=fresh, seeds=2, out=out, progress=False)
    assert sum(m.calls for m in fresh) == 0
    assert all(r["cached"] for r in again.rows)
    assert again.by_method()["pasted"]["drift_outside_px"] == agg["pasted"]["drift_outside_px"]
    # One more seed: only the new images are made.
    evaluate(identities_dir, prompt_file, methods=fresh, seeds=3, out=out, progress=False)
    assert sum(m.calls for m in fresh) == 2 * 2 * 2

    html = (out / "report.html").read_text()
    assert_self_contained(html)
    assert "pasted" in html and "astronaut" in html and "data:image/jpeg;base64," in html

    compare = report_runs([out, out], tmp_path / "compare.html")
    text = compare.read_text()
    assert_self_contained(text)
    assert "Comparison of runs" in text


def test_identities_layouts_and_errors(tmp_path, identities_dir):
    nested = load_identities(identities_dir)
    assert [i.name for i in nested] == ["astronaut", "hopper"] and nested[1].subject == "a woman"
    flat = tmp_path / "flat"
    flat.mkdir()
    for ident in nested:
        (flat / f"{ident.name}.png").write_bytes(ident.references[0].read_bytes())
    assert [i.name for i in load_identities(flat)] == ["astronaut", "hopper"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as err:
        load_identities(empty)
    assert err.value.hint and "DIR/<person>" in err.value.hint


def test_default_prompt_set_covers_the_protocol():
    prompts = load_prompts("default")
    assert 30 <= len(prompts.prompts) <= 40
    assert {p.category for p in prompts.prompts} == {"scene", "style", "clothing", "accessory", "expression", "camera"}
    assert all("{subject}" in p.text for p in prompts.prompts)
    assert len({p.id for p in prompts.prompts}) == len(prompts.prompts)
    assert prompts.negative_prompt
    with pytest.raises(DatasetError):
        load_prompts("/no/such/prompts.txt")


def test_bad_and_unavailable_methods(tmp_path, identities_dir, prompt_file):
    context = MethodContext(RunSettings())
    for bad in ("fact:abc", "fact:9", "nosuch", "base:1", "ipadapter-faceid"):
        with pytest.raises(ConfigError) as err:
            parse_method(bad, context)
        assert err.value.hint
    with pytest.warns(UserWarning, match="weights not found"):
        res = evaluate(identities_dir, prompt_file, methods=["ipadapter-faceid:/no/such.bin", _photo()],
                       seeds=1, out=tmp_path / "r", max_prompts=1, progress=False, report=False)
    assert res.skipped and "weights not found at /no/such.bin" in res.skipped[0]["reason"]
    assert [a["method"] for a in res.aggregate] == ["photo"]


def _photo():
    from eval_fakes import PhotoMethod

    return PhotoMethod("photo")


def test_cli_with_a_registered_method(tmp_path, identities_dir, prompt_file, capsys):
    from eval_fakes import PhotoMethod

    from facefact.cli.main import main

    register_method("photo", lambda arg, ctx: PhotoMethod("photo"))
    try:
        out = tmp_path / "cli"
        rc = main(["evaluate", "--identities", str(identities_dir), "--prompts", str(prompt_file), "--seeds", "1",
                   "--method", "photo", "--out", str(out), "--no-progress", "--keep-embeddings"])
        assert rc == 0, capsys.readouterr().err
        printed = capsys.readouterr().out
        assert "photo" in printed and "report:" in printed and "CLIP-T unavailable" in printed
        assert (out / "embeddings.npz").exists()
        rc = main(["evaluate", "report", str(out), str(out), "--out", str(tmp_path / "r.html")])
        assert rc == 0 and (tmp_path / "r.html").exists()
        second = tmp_path / "cli2"
        rc = main(["evaluate", "--identities", str(identities_dir), "--prompts", str(prompt_file), "--seeds", "1",
                   "--method", "photo", "--out", str(second), "--no-progress", "--compare", str(out)])
        assert rc == 0 and "Comparison of runs" in (second / "report.html").read_text()
        assert main(["evaluate", "--identities", str(identities_dir), "--method", "fact:x", "--model", "tiny",
                     "--out", str(out)]) == 2
        assert "not a number" in capsys.readouterr().err
        assert main(["evaluate", "--identities", str(tmp_path / "none"), "--model", "tiny", "--out", str(out)]) == 2
    finally:
        METHODS.pop("photo", None)


def test_cache_key_covers_everything_that_changes_pixels():
    from eval_fakes import PhotoMethod

    from facefact.evaluation.runner import image_key

    photo, pasted = PhotoMethod("photo"), PhotoMethod("pasted", paste=True)
    key = image_key(photo, "refs1", "a prompt", 0, 64)
    assert key == image_key(PhotoMethod("photo"), "refs1", "a prompt", 0, 64)
    others = [image_key(pasted, "refs1", "a prompt", 0, 64), image_key(photo, "refs2", "a prompt", 0, 64),
              image_key(photo, "refs1", "another", 0, 64), image_key(photo, "refs1", "a prompt", 1, 64),
              image_key(photo, "refs1", "a prompt", 0, 128)]
    assert len({key, *others}) == 6
    photo.uses_references = False          # e.g. 'base': the same image for every person
    assert image_key(photo, "refs1", "a prompt", 0, 64) == image_key(photo, "refs2", "a prompt", 0, 64)


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "argument --steps: 0 is out of range: it must be between 1 and 500"),
    (["--size", "0"], "argument --size: 0 is not a positive multiple of 8"),
    (["--size", "100"], "argument --size: 100 is not a positive multiple of 8"),
    (["--size", "-64"], "argument --size: -64 is not a positive multiple of 8"),
    (["--seeds", "0"], "argument --seeds: 0 is out of range: it must be between 1 and 10000"),
    (["--max-prompts", "0"], "argument --max-prompts: 0 is out of range: it must be at least 1"),
    (["--guidance", "nan"], "argument --guidance/--guidance-scale: must be a finite number"),
])
def test_cli_bad_generation_settings_are_messages(tmp_path, identities_dir, prompt_file, capsys, flags, message):
    """--steps 0 used to end in a ZeroDivisionError from the scheduler after the models were loaded."""
    from facefact.cli.main import main

    out = tmp_path / "run"
    try:  # argparse's own checks exit; the library's come back as exit code 2
        rc = main(["evaluate", "--identities", str(identities_dir), "--prompts", str(prompt_file), "--model", "tiny",
                   "--out", str(out), "--no-progress", *flags])
    except SystemExit as exited:
        rc = exited.code
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err, err
    assert not out.exists()  # refused before anything was generated


def test_library_bad_generation_settings_are_value_errors(tmp_path, identities_dir, prompt_file):
    """The same checks through the Python API, naming the setting (not a flag)."""
    with pytest.raises(ValueError, match="steps = 0 is out of range"):
        evaluate(identities_dir, prompt_file, generation={"steps": 0}, out=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="unknown generation settings keys: stepz"):
        evaluate(identities_dir, prompt_file, generation={"stepz": 2}, out=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="evaluation images are square"):
        evaluate(identities_dir, prompt_file, generation={"width": 64, "height": 128}, out=tmp_path / "run")
    with pytest.raises(ValueError, match="seeds must be at least 1"):
        evaluate(identities_dir, prompt_file, seeds=0, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_truncated_sidecar_means_not_generated(tmp_path, identities_dir, prompt_file):
    """A sidecar cut short (a crash mid-write) made every later run fail with a JSONDecodeError."""
    from eval_fakes import PhotoMethod

    out = tmp_path / "run"
    first = [PhotoMethod("photo")]
    evaluate(identities_dir, prompt_file, methods=first, seeds=1, out=out, progress=False, report=False)
    sidecars = sorted((out / "images").rglob("*.json"))
    assert len(sidecars) == 4 and first[0].calls == 4
    assert not list((out / "images").rglob("*.tmp"))  # written via a temporary file and a rename
    victim = sidecars[0]
    victim.write_text(victim.read_text()[: len(victim.read_text()) // 2])   # truncated mid-write
    again = [PhotoMethod("photo")]
    res = evaluate(identities_dir, prompt_file, methods=again, seeds=1, out=out, progress=False, report=False)
    assert again[0].calls == 1                                                # only the damaged one redone
    assert sum(not r["cached"] for r in res.rows) == 1
    assert json.loads(victim.read_text())["method"] == "photo"                # and its record rewritten whole
    assert any("unreadable" in n and victim.name in n for n in res.notes)



def test_reference_photos_stay_out_of_results_and_default_report(tmp_path, identities_dir, prompt_file, capsys):
    """Privacy: report.html used to embed every identity's reference photos, and results.json listed
    their absolute paths. Now thumbnails are opt-in and results keep identity-relative names only."""
    from eval_fakes import PhotoMethod

    from facefact.cli.main import main
    from facefact.evaluation.report import thumbnail_uri

    out = tmp_path / "run"
    evaluate(identities_dir, prompt_file, methods=[PhotoMethod("pasted", paste=True)], add_controls=False,
             seeds=1, max_prompts=1, out=out, progress=False)
    ref_thumbs = [thumbnail_uri(identities_dir / who / "ref.png") for who in ("astronaut", "hopper")]
    assert all(ref_thumbs)
    html = (out / "report.html").read_text()
    assert_self_contained(html)
    assert "data:image/jpeg;base64," in html                       # the generated images are there
    assert not any(uri in html for uri in ref_thumbs)               # the references are not
    assert "not shown; --show-references" in html
    text = (out / "results.json").read_text()
    assert [i["references"] for i in json.loads(text)["identities"]] == [["ref.png"], ["ref.png"]]
    assert str(identities_dir / "astronaut") not in text

    # Opt-in, on a fresh run and when reporting a finished run (references found via its identities folder).
    shown = tmp_path / "shown"
    evaluate(identities_dir, prompt_file, methods=[PhotoMethod("pasted", paste=True)], add_controls=False,
             seeds=1, max_prompts=1, out=shown, progress=False, show_references=True)
    assert all(uri in (shown / "report.html").read_text() for uri in ref_thumbs)
    assert main(["evaluate", "report", str(out), "--out", str(tmp_path / "r.html"), "--show-references"]) == 0
    assert all(uri in (tmp_path / "r.html").read_text() for uri in ref_thumbs)
    assert main(["evaluate", "report", str(out), "--out", str(tmp_path / "plain.html")]) == 0
    assert not any(uri in (tmp_path / "plain.html").read_text() for uri in ref_thumbs)
