"""The sharded sample index: what prepare writes, what train reads, an older set's index.jsonl,
damage named by file, and start-up that touches no sample file. No models: entries only."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from facefact.errors import DatasetError
from facefact.training.sample_index import (INDEX_DIR, LEGACY_INDEX_NAME, MANIFEST_NAME, open_sample_index,
                                            write_sample_index, written_entries)


def _entries(count: int, people: list[str]) -> list[dict]:
    """Entries as prepare writes them (relative paths), photos of a person adjacent except the last,
    who comes back at the end (a manifest may list people in any order)."""
    rows = []
    for n in range(count):
        person = people[min(n * len(people) // count, len(people) - 1)] if n < count - 1 else people[0]
        sid = f"{n:016x}"
        rows.append({"id": sid, "identity": person, "caption": f"photo {n}", "image": f"samples/{sid[:2]}/{sid}.image.jpg",
                     "condition": f"samples/{sid[:2]}/{sid}.cond.png", "mask": f"samples/{sid[:2]}/{sid}.mask.png",
                     "original_size": [640 + n, 480], "crops_coords_top_left": [n, 0],  # later fields: kept
                     "target_size": [128, 128]})
    return rows


def _expected_members(rows: list[dict]) -> dict[str, list[int]]:
    members: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        members.setdefault(row["identity"], []).append(i)
    return members


def test_shards_read_back_every_entry_and_identity(tmp_path):
    rows = _entries(23, ["ann", "bob", "cy"])
    manifest = write_sample_index(tmp_path, rows, shard_size=5)
    assert [s["samples"] for s in manifest["shards"]] == [5, 5, 5, 5, 3] and manifest["samples"] == 23
    files = sorted(p.name for p in (tmp_path / INDEX_DIR).iterdir())
    assert files == sorted([MANIFEST_NAME, manifest["identities"]["name"], *(s["name"] for s in manifest["shards"])])
    index = open_sample_index(tmp_path)
    assert len(index) == 23
    for i in (22, 0, 7, 13, 5, 4):  # any order: random access by (shard, line)
        assert index[i] == {**rows[i], **{k: str(tmp_path / rows[i][k]) for k in ("image", "condition", "mask")}}
    expected = _expected_members(rows)
    for i, row in enumerate(rows):
        assert index.members(i).tolist() == expected[row["identity"]]
    assert index.photos_per_identity() == {k: len(v) for k, v in expected.items()}
    assert index.first_of_each_identity() == [v[0] for v in expected.values()]
    with pytest.raises(IndexError):
        index[23]
    for field in ("original_size", "crops_coords_top_left", "target_size"):
        rows[0].pop(field)  # an older prepare's entry, mixed in: counted without reading a shard
    write_sample_index(tmp_path, rows, shard_size=5)
    index = open_sample_index(tmp_path)
    assert (index.entries_with("original_size"), index.entries_with("id"), index.entries_with("nope")) == (22, 23, 0)


def test_an_older_sets_index_jsonl_reads_as_one_shard_and_prepare_replaces_it(tmp_path):
    rows = _entries(9, ["ann", "bob"])
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    (old / LEGACY_INDEX_NAME).write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_sample_index(new, rows, shard_size=4)
    a, b = open_sample_index(old), open_sample_index(new)
    assert len(a) == len(b) == 9
    for i in range(9):
        assert {k: v for k, v in a[i].items() if k not in ("image", "condition", "mask")} == \
               {k: v for k, v in b[i].items() if k not in ("image", "condition", "mask")}
        assert a.members(i).tolist() == b.members(i).tolist()
    assert a.entries_with("original_size") == b.entries_with("original_size") == 9
    assert a.where(3) == "index.jsonl line 4" and b.where(5) == f"{b.shards[1].path.name} line 2"
    write_sample_index(old, rows)  # what a re-run of prepare does to an older set
    assert not (old / LEGACY_INDEX_NAME).exists() and len(open_sample_index(old)) == 9


def test_rewriting_keeps_only_the_new_manifests_files(tmp_path):
    write_sample_index(tmp_path, _entries(12, ["ann", "bob"]), shard_size=3)
    (tmp_path / INDEX_DIR / ".notes.txt").write_text("a user's file is left alone")
    manifest = write_sample_index(tmp_path, _entries(4, ["ann", "bob"]), shard_size=3)
    left = sorted(p.name for p in (tmp_path / INDEX_DIR).iterdir())
    assert left == sorted([".notes.txt", MANIFEST_NAME, manifest["identities"]["name"],
                           *(s["name"] for s in manifest["shards"])])
    assert len(open_sample_index(tmp_path)) == 4


def test_start_up_reads_no_shard_and_touches_no_sample_file(tmp_path, monkeypatch):
    rows = _entries(50, ["ann", "bob", "cy", "dee"])
    write_sample_index(tmp_path, rows, shard_size=10)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **k: (opened.append(Path(path).name), real_open(path, *a, **k))[1])
    index = open_sample_index(tmp_path)
    assert not any(name.startswith("shard-") for name in opened)  # counts come from the manifest
    index[37]
    assert [name for name in opened if name.startswith("shard-")] == [index.shards[3].path.name]  # that one only
    assert not list(tmp_path.glob("samples"))  # no sample file exists, and none was needed
    with pytest.raises(DatasetError, match="line 8: the image file .* is missing"):
        index.checked(37)


def test_damaged_index_files_are_named(tmp_path):
    write_sample_index(tmp_path, _entries(12, ["ann", "bob"]), shard_size=5)
    shard = open_sample_index(tmp_path).shards[1].path
    data = bytearray(shard.read_bytes())
    data[10] ^= 0x01  # same size, other bytes: found by the checksum when the shard is first read
    shard.write_bytes(bytes(data))
    index = open_sample_index(tmp_path)
    index[0]  # other shards still read
    with pytest.raises(DatasetError, match="checksum") as caught:
        index[6]
    assert caught.value.path == str(shard)
    shard.write_bytes(bytes(data[:-7]))  # truncated: found at start-up by the size in the manifest
    with pytest.raises(DatasetError, match="bytes, the manifest says") as caught:
        open_sample_index(tmp_path)
    assert caught.value.path == str(shard)
    shard.unlink()
    with pytest.raises(DatasetError, match="missing") as caught:
        open_sample_index(tmp_path)
    assert caught.value.path == str(shard)
    (tmp_path / INDEX_DIR / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(DatasetError, match="manifest is not valid JSON"):
        open_sample_index(tmp_path)


def test_entries_pointing_outside_the_set_are_refused_when_read(tmp_path):
    rows = _entries(3, ["ann"])
    rows[2]["mask"] = "../../etc/hostname"
    write_sample_index(tmp_path, rows, shard_size=2)
    index = open_sample_index(tmp_path)
    index[1]
    with pytest.raises(DatasetError, match=r"line 1: mask '\.\./\.\./etc/hostname' is not a path inside"):
        index[2]


def test_identity_codes_are_compact_for_a_large_set(tmp_path):
    rows = _entries(3000, [f"p{n}" for n in range(300)])
    manifest = write_sample_index(tmp_path, rows, shard_size=1000)
    identities = json.loads((tmp_path / INDEX_DIR / manifest["identities"]["name"]).read_text())
    assert len(identities["runs"]) == 301  # adjacent photos of a person are one run (the last returns)
    index = open_sample_index(tmp_path)
    assert np.array_equal(index.members(2999), index.members(0)) and index.members(0)[-1] == 2999


def test_training_draws_the_same_items_from_shards_as_from_an_older_index(tmp_path, prepared):
    import shutil

    import torch

    from facefact.training.data import FaceTrainingSet, MicroBatchSampler

    older = tmp_path / "older"
    shutil.copytree(prepared, older)
    rows = written_entries(prepared)
    shutil.rmtree(older / INDEX_DIR)
    (older / LEGACY_INDEX_NAME).write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert written_entries(older) == rows
    sets = [FaceTrainingSet(root, resolution=64, seed=3, shuffle_prob_start=1.0, face_drop_prob=0.2)
            for root in (prepared, older)]
    for keys in MicroBatchSampler(len(sets[0]), 2, seed=3, start=0, stop=4):
        for key in keys:
            a, b = (data[key] for data in sets)
            assert a.keys() == b.keys()
            for name in a:
                assert torch.equal(a[name], b[name]) if torch.is_tensor(a[name]) else a[name] == b[name], name
