"""The sample index of a prepared set: JSON-Lines shards and a small manifest, read lazily.

    OUT/index/manifest.json                 format, version, sample count, per file: name, samples, bytes, sha256;
                                            per field: how many entries have it
    OUT/index/shard-00000-<sha>.jsonl       SHARD_SIZE samples per shard, one JSON object per line (`SampleRecord`)
    OUT/index/identities-<sha>.json         every sample's identity, run-length coded: {"names": [...],
                                            "runs": [[name number, count], ...]} (photos of a person are adjacent)

Why shards (as WebDataset, MosaicML MDS and HF datasets shard theirs): `facefact train` on a million
samples must start in seconds. Start-up reads the manifest and the identities (what face shuffle needs:
who else is this person) and checks each shard's size with one `stat`; nothing per sample. A shard is
read by the process that first needs one of its samples: memory-mapped (the page cache is shared by
DataLoader workers), its checksum checked once, its line starts found, then one line is parsed per
sample drawn: random access by (shard, line), so a global per-epoch shuffle costs nothing extra.
The sample's own files are checked when it is read (as a damaged image is), not all at start-up.

Shard names carry their content's hash, so prepare writes the new shards beside the old ones and
switches by renaming one manifest in: a reader sees the old index or the new one, never a mix; the
files the new manifest does not name are removed after. A set prepared before shards (one
`index.jsonl`) is read as one shard. JSON only, never pickle.
"""
from __future__ import annotations

import bisect
from collections import Counter
import hashlib
import json
import mmap
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facefact.atomic import atomic_write_bytes
from facefact.errors import DatasetError
from facefact.training.micro_conditioning import field_problem

INDEX_DIR = "index"
MANIFEST_NAME = "manifest.json"
LEGACY_INDEX_NAME = "index.jsonl"  # the single-file index of sets prepared before shards
INDEX_FORMAT = "facefact.sample-index"
INDEX_VERSION = 1
SHARD_SIZE = 10_000  # ~6 MB of JSON per shard: one read and checksum when first needed
ENTRY_FILES = ("image", "condition", "mask")
REPAIR = "the prepared set is damaged or was edited; run the same `facefact prepare` command again to repair it"


# ---- writing (facefact prepare) ----------------------------------------------------------------------
def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()


def _file_entry(folder: Path, stem: str, suffix: str, data: bytes, **extra) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    name = f"{stem}-{digest[:16]}{suffix}"
    atomic_write_bytes(folder / name, data)
    return {"name": name, "bytes": len(data), "sha256": digest, **extra}


def identity_runs(identities) -> dict:
    """{"names": distinct identities in order of appearance, "runs": [[name number, count], ...]}."""
    numbers: dict = {}
    runs: list[list[int]] = []
    for identity in identities:
        number = numbers.setdefault(identity, len(numbers))
        if runs and runs[-1][0] == number:
            runs[-1][1] += 1
        else:
            runs.append([number, 1])
    return {"names": list(numbers), "runs": runs}


def write_sample_index(root: str | Path, entries: list[dict], shard_size: int = SHARD_SIZE) -> dict:
    """Write `entries` (relative file paths, any further keys kept as they are) as shards, the
    identities and the manifest (last, atomically); then remove index files it does not name and
    the single-file index of an older facefact. Returns the manifest."""
    root = Path(root)
    folder = root / INDEX_DIR
    folder.mkdir(parents=True, exist_ok=True)
    shards = [_file_entry(folder, f"shard-{number:05d}", ".jsonl", _jsonl(entries[start:start + shard_size]),
                          samples=len(entries[start:start + shard_size]))
              for number, start in enumerate(range(0, len(entries), shard_size))]
    runs = identity_runs(entry["identity"] for entry in entries)
    identities = _file_entry(folder, "identities", ".json", (json.dumps(runs, sort_keys=True) + "\n").encode(),
                             names=len(runs["names"]))
    fields = Counter(key for entry in entries for key in entry)  # a later field's coverage, known without a scan
    manifest = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "samples": len(entries), "shard_size": shard_size,
                "shards": shards, "identities": identities, "fields": dict(sorted(fields.items()))}
    atomic_write_bytes(folder / MANIFEST_NAME, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    named = {MANIFEST_NAME, identities["name"], *(shard["name"] for shard in shards)}
    for path in folder.iterdir():
        if path.name not in named and path.suffix in (".jsonl", ".json") and not path.name.startswith("."):
            path.unlink(missing_ok=True)
    (root / LEGACY_INDEX_NAME).unlink(missing_ok=True)
    return manifest


def has_index(root: str | Path) -> bool:
    root = Path(root)
    return (root / INDEX_DIR / MANIFEST_NAME).is_file() or (root / LEGACY_INDEX_NAME).is_file()


# ---- checking one entry ----------------------------------------------------------------------------
def check_entry(entry, where: str, path: Path) -> None:
    """An index line is an object with an id, an identity, a caption and the sample's files as relative
    paths inside the set (an absolute path or '..' would make training read any file on the machine).
    String checks only: no file is touched."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{where} is not a JSON object", path=path, hint=REPAIR)
    missing = [k for k in ("id", "identity", *ENTRY_FILES) if k not in entry]
    if missing:
        raise DatasetError(f"{where} lacks {missing}", path=path, hint=REPAIR)
    if not isinstance(entry.get("caption", ""), str) or not isinstance(entry["identity"], (str, int)):
        raise DatasetError(f"{where} has a caption or identity that is not text", path=path, hint=REPAIR)
    problem = field_problem(entry)  # SDXL's size/crop fields (optional: older sets lack them)
    if problem:
        raise DatasetError(f"{where} {problem}", path=path, hint=REPAIR)
    if not isinstance(entry["id"], str) or not entry["id"] or "/" in entry["id"] or entry["id"] in (".", ".."):
        raise DatasetError(f"{where} has an id that is not a file name", path=path, hint=REPAIR)
    for key in ENTRY_FILES:
        value = entry[key]
        # string operations, not Path objects: this runs for every sample of an older set at start-up
        parts = value.replace("\\", "/").split("/") if isinstance(value, str) else []
        if not isinstance(value, str) or not value or os.path.isabs(value) or ".." in parts:
            raise DatasetError(f"{where}: {key} {value!r} is not a path inside the training set", path=path,
                               hint=REPAIR)


def check_sample_files(root: Path, entry: dict, where: str, index_path: Path) -> None:
    """The sample's files exist and (symlinks followed) stay inside the set: checked when it is read."""
    resolved_root = root.resolve()
    for key in ENTRY_FILES:
        value = entry[key]
        try:
            inside = (root / value).resolve().is_relative_to(resolved_root)
        except (OSError, RuntimeError):  # a symlink loop
            inside = False
        if not inside:
            raise DatasetError(f"{where}: {key} {value!r} points outside the training set", path=index_path,
                               hint=REPAIR)
        if not (root / value).is_file():
            raise DatasetError(f"{where}: the {key} file {value} is missing", path=index_path, hint=REPAIR)


# ---- reading (facefact train) ----------------------------------------------------------------------
class _Shard:
    """One shard: its manifest entry, and once first needed its bytes (memory-mapped) and line starts."""

    def __init__(self, path: Path, samples: int, size: int | None = None, sha256: str | None = None,
                 rows: list | None = None):
        self.path, self.samples, self.size, self.sha256 = path, samples, size, sha256
        self.rows = rows  # parsed already (the single-file index of an older facefact)
        self._data = self._starts = None

    def __getstate__(self) -> dict:  # a DataLoader worker maps the file again itself
        return {**self.__dict__, "_data": None, "_starts": None}

    def line(self, offset: int):
        """The parsed JSON value of line `offset` (0-based)."""
        if self.rows is not None:
            return self.rows[offset]
        if self._data is None:
            self._open()
        raw = self._data[self._starts[offset]:self._starts[offset + 1]]
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise DatasetError(f"line {offset + 1} is not valid JSON ({err})", path=self.path, hint=REPAIR) from None

    def _open(self) -> None:
        from facefact.safe_open import open_regular

        with open_regular(self.path, DatasetError, hint=REPAIR, missing_cls=DatasetError) as handle:
            try:
                data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except (ValueError, OSError) as err:  # empty, or not mappable
                raise DatasetError(f"cannot read the index shard ({err})", path=self.path, hint=REPAIR) from None
        if len(data) != self.size or hashlib.sha256(data).hexdigest() != self.sha256:
            raise DatasetError("the index shard does not match its checksum in the manifest (damaged or edited)",
                               path=self.path, hint=REPAIR)
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
        if len(ends) != self.samples or ends[-1] != len(data):
            raise DatasetError(f"the index shard has {len(ends)} lines, the manifest says {self.samples}",
                               path=self.path, hint=REPAIR)
        self._starts = np.concatenate([[0], ends]).tolist()
        self._data = data


class SampleIndex(Sequence):
    """The samples of a prepared set, by global number; `index[i]` is sample i's entry with its file
    paths made absolute (parsed and checked on each access; nothing is kept per sample)."""

    def __init__(self, root: Path, shards: list[_Shard], identities: dict, fields: dict[str, int]):
        self.root = root
        self.shards = shards
        self.fields = fields  # field name -> how many entries have it
        self.first = np.cumsum([0] + [s.samples for s in shards]).tolist()  # sample number of each shard's line 0
        names, runs = identities["names"], np.asarray(identities["runs"], dtype=np.int64).reshape(-1, 2)
        self.identity_names = names
        self.identity_codes = np.repeat(runs[:, 0], runs[:, 1])          # [N]: number of each sample's identity
        self._by_identity = np.argsort(self.identity_codes, kind="stable")  # samples grouped, ascending inside
        self._identity_start = np.concatenate([[0], np.cumsum(np.bincount(self.identity_codes,
                                                                           minlength=len(names)))])

    def __len__(self) -> int:
        return self.first[-1]

    def locate(self, number: int) -> tuple[_Shard, int]:
        number = int(number)
        if not 0 <= number < len(self):
            raise IndexError(number)
        shard = bisect.bisect_right(self.first, number) - 1
        return self.shards[shard], number - self.first[shard]

    def where(self, number: int) -> str:
        shard, offset = self.locate(number)
        return f"{shard.path.name} line {offset + 1}"

    def __getitem__(self, number) -> dict:
        return self._entry(number, check_files=False)

    def checked(self, number: int) -> dict:
        """Sample `number`'s entry after checking its files exist and stay inside the set (a
        DatasetError naming its index line otherwise): what training does as it draws a sample."""
        return self._entry(number, check_files=True)

    def _entry(self, number, check_files: bool) -> dict:
        shard, offset = self.locate(number)
        entry, where = shard.line(offset), f"{shard.path.name} line {offset + 1}"
        check_entry(entry, where, shard.path)
        if check_files:
            check_sample_files(self.root, entry, where, shard.path)
        return {**entry, **{key: str(self.root / entry[key]) for key in ENTRY_FILES}}

    def members(self, number: int) -> np.ndarray:
        """The sample numbers of sample `number`'s identity (itself included), ascending."""
        code = self.identity_codes[number]
        return self._by_identity[self._identity_start[code]:self._identity_start[code + 1]]

    def entries_with(self, field: str) -> int:
        """How many entries have `field` (e.g. one an older prepare did not write), from the manifest."""
        return self.fields.get(field, 0)

    def fingerprint(self) -> str:
        """Names what this index holds without reading it: the shards' checksums (sharded), or
        the single file's name and size (an older facefact's index.jsonl)."""
        parts = [f"{s.path.name}:{s.sha256 or s.path.stat().st_size}" for s in self.shards]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def first_of_each_identity(self) -> list[int]:
        """The first sample of each identity, identities in order of appearance."""
        return self._by_identity[self._identity_start[:-1]].tolist()

    def photos_per_identity(self) -> dict:
        counts = np.diff(self._identity_start)
        return {name: int(count) for name, count in zip(self.identity_names, counts)}


def written_entries(root: str | Path) -> list[dict]:
    """Every entry as prepare wrote it (file paths relative to the set), reading every shard: for
    tools and tests that rewrite an index, never for training's start-up."""
    index = open_sample_index(root)
    return [shard.line(offset) for shard in index.shards for offset in range(shard.samples)]


def open_sample_index(root: str | Path) -> SampleIndex:
    """The index of the prepared set in `root` (sharded, or an older facefact's index.jsonl as one
    shard); clear DatasetErrors for a missing, empty, foreign or damaged index."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"training set not found: {root}", path=root,
                           hint="run `facefact prepare PHOTOS --out DIR` first and pass DIR")
    if (root / INDEX_DIR / MANIFEST_NAME).is_file():
        index = _open_sharded(root)
    elif (root / LEGACY_INDEX_NAME).is_file():
        index = _open_single_file(root)
    else:
        raise DatasetError(f"{root} has no sample index ({INDEX_DIR}/{MANIFEST_NAME}, or {LEGACY_INDEX_NAME} of "
                           "an older facefact); it is not a prepared training set", path=root,
                           hint="run `facefact prepare PHOTOS --out DIR` (an interrupted run writes the index "
                                "when it finishes; run it again to complete it)")
    if not len(index):
        raise DatasetError(f"the training set {root} is empty: no photo passed preparation", path=root,
                           hint=f"see {root / 'rejected.jsonl'} for why each photo was rejected")
    return index


def _read_json(path: Path, what: str):
    from facefact.safe_open import read_text_file

    try:
        return json.loads(read_text_file(path, DatasetError, what=what, max_bytes=1 << 30, hint=REPAIR))
    except json.JSONDecodeError as err:
        raise DatasetError(f"the {what} is not valid JSON ({err.msg}, line {err.lineno})", path=path,
                           hint=REPAIR) from None


def _open_sharded(root: Path) -> SampleIndex:
    folder = root / INDEX_DIR
    manifest_path = folder / MANIFEST_NAME
    manifest = _read_json(manifest_path, "index manifest")
    try:
        if manifest["format"] != INDEX_FORMAT:
            raise ValueError("not a facefact sample index")
        if int(manifest["version"]) > INDEX_VERSION:
            raise DatasetError(f"the index is version {manifest['version']}; this facefact reads up to "
                               f"{INDEX_VERSION}", path=manifest_path, hint="upgrade facefact")
        shards = [_Shard(folder / _plain_name(s["name"]), int(s["samples"]), int(s["bytes"]), str(s["sha256"]))
                  for s in manifest["shards"]]
        ident = manifest["identities"]
        ident_path, ident_size, ident_sha = folder / _plain_name(ident["name"]), int(ident["bytes"]), ident["sha256"]
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"the index manifest is not a facefact sample index ({err})", path=manifest_path,
                           hint=REPAIR) from None
    for shard in shards:  # one stat per shard: a missing or truncated shard is found before any model loads
        try:
            size = os.stat(shard.path).st_size
        except OSError:
            raise DatasetError("an index shard named in the manifest is missing", path=shard.path,
                               hint=REPAIR) from None
        if size != shard.size:
            raise DatasetError(f"the index shard is {size} bytes, the manifest says {shard.size} (damaged or "
                               "edited)", path=shard.path, hint=REPAIR)
    data = ident_path.read_bytes() if ident_path.is_file() else b""
    if len(data) != ident_size or hashlib.sha256(data).hexdigest() != ident_sha:
        raise DatasetError("the identities file is missing or does not match its checksum in the manifest",
                           path=ident_path, hint=REPAIR)
    identities = json.loads(data)
    total = sum(s.samples for s in shards)
    if sum(count for _, count in identities["runs"]) != total or total != manifest["samples"]:
        raise DatasetError("the manifest's sample counts do not add up", path=manifest_path, hint=REPAIR)
    fields = manifest.get("fields")
    if not isinstance(fields, dict):
        raise DatasetError("the index manifest lacks its field counts", path=manifest_path, hint=REPAIR)
    return SampleIndex(root, shards, identities, fields)


def _plain_name(name) -> str:
    if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"{name!r} is not a file name")
    return name


def read_jsonl(path: Path) -> list:
    """The JSON values of a JSON-lines file (blank lines skipped); a line that is not JSON is a
    DatasetError naming the line."""
    from facefact.safe_open import read_text_file

    text = read_text_file(path, DatasetError, what="JSON-lines file", max_bytes=1 << 30,
                          hint="run `facefact prepare` again to rebuild it")
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DatasetError(f"line {number} is not valid JSON ({err.msg})", path=path,
                               hint="the index is damaged; run `facefact prepare` again to rebuild it") from err
    return rows



def _open_single_file(root: Path) -> SampleIndex:
    """An older facefact's index.jsonl: parsed whole (as it always was), every line checked."""
    path = root / LEGACY_INDEX_NAME
    rows = read_jsonl(path)
    for number, entry in enumerate(rows, 1):
        check_entry(entry, f"{LEGACY_INDEX_NAME} line {number}", path)
    shard = _Shard(path, len(rows), rows=rows)
    fields = Counter(key for entry in rows for key in entry)
    return SampleIndex(root, [shard], identity_runs(entry["identity"] for entry in rows), dict(fields))
