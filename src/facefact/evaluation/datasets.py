"""What an evaluation runs on: identities (reference photos per person) and prompts.

Identities folder layouts (both accepted, so users can point at whatever they have):

* ``DIR/<identity>/*.jpg`` - one sub-folder per person, one or more reference photos each;
* ``DIR/*.jpg`` - a flat folder; each photo is its own identity, named after the file.

Prompts: ``"default"`` (the set shipped in ``facefact/data/prompts/default.yaml``), a ``.txt``
file (one prompt a line, ``#`` comments), or a ``.yaml`` file in the same format as the default.
Prompts use ``{subject}`` for the person ("a man", "a woman", "a person"); it is filled per identity
when the identity folder has a ``subject.txt``, else with ``DEFAULT_SUBJECT``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from facefact.errors import DatasetError
from facefact.faces.image_io import IMAGE_SUFFIXES
from facefact.safe_open import read_text_file

DEFAULT_SUBJECT = "a person"


@dataclass
class Identity:
    name: str
    references: list[Path]
    subject: str = DEFAULT_SUBJECT

    def content_hash(self) -> str:
        """Hash of the reference files' bytes: a cached image is reused only for the same photos."""
        digest = hashlib.sha256()
        for path in self.references:
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]


@dataclass
class Prompt:
    text: str                       # may contain {subject}
    category: str = "custom"
    id: str = ""                    # short stable name used in file names and reports

    def for_subject(self, subject: str) -> str:
        return self.text.replace("{subject}", subject)


@dataclass
class PromptSet:
    name: str
    prompts: list[Prompt]
    negative_prompt: str | None = None
    notes: list[str] = field(default_factory=list)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def load_identities(directory: str | Path) -> list[Identity]:
    """Identities found in ``directory`` (sorted by name, so runs are deterministic)."""
    root = Path(directory)
    if not root.is_dir():
        raise DatasetError("identities folder not found", path=root,
                           hint="pass a folder with one sub-folder of reference photos per person, "
                                "or a folder of photos (one person each)")
    identities = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = _images_in(sub)
        if photos:
            subject_file = sub / "subject.txt"
            subject = read_text_file(subject_file, DatasetError, what="subject file", max_bytes=4096).strip() \
                if subject_file.exists() else DEFAULT_SUBJECT
            identities.append(Identity(sub.name, photos, subject or DEFAULT_SUBJECT))
    # Loose photos at the top level are identities of their own (the flat layout, or a mix).
    taken = {i.name for i in identities}
    for photo in _images_in(root):
        name = photo.stem if photo.stem not in taken else f"{photo.stem}{photo.suffix.replace('.', '_')}"
        identities.append(Identity(name, [photo]))
    if not identities:
        raise DatasetError("no reference photos found", path=root,
                           hint=f"put photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in DIR/<person>/ "
                                "or directly in DIR")
    return identities


def _prompt_id(index: int, category: str) -> str:
    return f"p{index:02d}-{category}"[:24]


_PROMPT_HINT = "one prompt per line (.txt), a 'prompts:' list (.yaml), or a JSON list of prompts (.json)"


def _from_records(records, name: str, path) -> PromptSet:
    if isinstance(records, dict):
        negative = records.get("negative_prompt")
        items = records.get("prompts", [])
        if negative is not None and not isinstance(negative, str):
            raise DatasetError(f"negative_prompt must be a text, not {negative!r}", path=path, hint=_PROMPT_HINT)
    elif isinstance(records, list):
        negative, items = None, records
    elif records is None:
        negative, items = None, []
    else:  # a bare YAML/JSON string or number would otherwise be split into one-character prompts
        raise DatasetError(f"the prompt file holds a single {type(records).__name__}, not a list of prompts",
                           path=path, hint=_PROMPT_HINT)
    if not isinstance(items, list):
        raise DatasetError(f"'prompts' must be a list, not a {type(items).__name__}", path=path, hint=_PROMPT_HINT)
    prompts = []
    for item in items:
        if isinstance(item, str):
            text, category = item, "custom"
        elif isinstance(item, dict) and isinstance(item.get("prompt"), str):
            text, category = item["prompt"], str(item.get("category", "custom"))
        else:
            raise DatasetError(f"cannot read prompt entry {item!r}"[:200], path=path,
                               hint="each entry is a string or a mapping with 'prompt' (and 'category')")
        if text.strip():
            prompts.append(Prompt(text.strip(), category, _prompt_id(len(prompts), category)))
    if not prompts:
        raise DatasetError("the prompt file has no prompts", path=path, hint=_PROMPT_HINT)
    return PromptSet(name, prompts, negative)


def default_prompts_path() -> Path:
    return Path(str(resources.files("facefact").joinpath("data/prompts/default.yaml")))


def load_prompts(source: str | Path = "default", *, limit: int | None = None) -> PromptSet:
    """The prompt set named by ``source`` ("default" or a .txt/.yaml/.json file); ``limit`` keeps the first N."""
    import yaml

    if str(source) == "default":
        path, name = default_prompts_path(), "default"
    else:
        path = Path(source)
        name = path.stem
    if not path.exists() and not path.is_symlink():
        raise DatasetError("prompt file not found", path=path,
                           hint="use 'default' (the shipped set), or a .txt file with one prompt per line",
                           setting="prompts")
    text = read_text_file(path, DatasetError, what="prompt file", max_bytes=16 * 1024 * 1024, hint=_PROMPT_HINT)
    suffix = path.suffix.lower()
    if suffix in {".yaml", ".yml"}:
        try:
            records = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise DatasetError(f"invalid YAML ({err})", path=path, hint="check indentation and quoting") from err
    elif suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"invalid JSON ({err.msg}, line {err.lineno})", path=path, hint=_PROMPT_HINT) from err
    else:
        records = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    prompt_set = _from_records(records, name, path)
    if limit is not None:
        prompt_set.prompts = prompt_set.prompts[:limit]
    return prompt_set
