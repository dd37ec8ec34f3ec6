"""Reading a prepared set for training: images, masks, conditions, and the per-sample decisions
(face shuffle, face drop, text drop) made reproducibly from (seed, micro-step, slot in the global batch)."""
from __future__ import annotations

import contextlib
import warnings
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from facefact.errors import ConfigError, DatasetError
from facefact.faces.image_io import DEFAULT_MAX_PIXELS
from facefact.safe_open import open_regular
from facefact.training.cache import LATENTS, TOKENS, cache_path, load_cached
from facefact.training.dataset_format import load_index
from facefact.training.micro_conditioning import FIELDS as MICRO_CONDITIONING_FIELDS, time_ids
from facefact.training.schedule import choose_condition, generator_for, micro_batch_indices, shuffle_probability


_REPAIR = "the prepared set is damaged; run the same `facefact prepare` command again to repair it"


@contextlib.contextmanager
def open_prepared_image(path: str):
    """A prepared image or mask, opened only if it is a regular file within facefact's pixel limit
    (the size is in the header: a huge mask is refused before it is decoded)."""
    with open_regular(path, DatasetError, hint=_REPAIR, missing_cls=DatasetError) as handle, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(handle)
        except UnidentifiedImageError:  # Pillow's words name the file descriptor, not the file
            raise DatasetError("a training file is not an image (damaged or overwritten)", path=path,
                               hint=_REPAIR) from None
        with opened as img:
            if img.size[0] * img.size[1] > DEFAULT_MAX_PIXELS:
                raise DatasetError(f"training file is {img.size[0]}x{img.size[1]} pixels, over facefact's limit "
                                   f"of {DEFAULT_MAX_PIXELS / 1e6:.0f} megapixels", path=path, hint=_REPAIR)
            yield img


class SampleKey(NamedTuple):
    """What the sampler hands the data set: which sample, and where in training it is drawn
    (slot: position in the global batch of all processes)."""
    index: int
    micro_step: int
    rank: int
    slot: int


class FaceTrainingSet(torch.utils.data.Dataset):
    def __init__(self, root, *, resolution: int | None = None, seed: int = 0, gradient_accumulation_steps: int = 1,
                 face_drop_prob: float = 0.1, text_drop_prob: float = 0.0, shuffle_prob_start: float = 0.0,
                 shuffle_prob_end: float = 1.0, shuffle_ramp_steps: int = 0, require_pairs: bool | None = None):
        self.root = root
        self.samples = load_index(root)  # a SampleIndex: entries read from the shards when drawn
        self.caches: dict[str, str] = {}  # kind -> expected fingerprint; set by use_caches()
        self._target_size: int | None = None
        self.resolution = resolution
        self.seed, self.accumulation = seed, gradient_accumulation_steps
        self.face_drop_prob, self.text_drop_prob = face_drop_prob, text_drop_prob
        self.shuffle = (shuffle_prob_start, shuffle_prob_end, shuffle_ramp_steps)
        if require_pairs is None:
            require_pairs = max(shuffle_prob_start, shuffle_prob_end) > 0
        counts = self.samples.photos_per_identity()
        lonely = sorted(str(name) for name, count in counts.items() if count < 2)
        if require_pairs and lonely:
            raise DatasetError(
                f"{len(lonely)} of {len(counts)} identities have only one photo "
                f"(e.g. {lonely[:3]}), so face shuffle cannot pick another photo of them", path=root,
                hint="add photos of those people, remove them from the set, or turn face shuffle off "
                     "(shuffle_prob_start: 0 and shuffle_prob_end: 0)")
        # One sample's files checked now, the rest when drawn: a set whose files are not where its
        # index says fails before any model is loaded or file written, without a stat per sample.
        self.samples.checked(0)

    def use_caches(self, caches: dict[str, str]) -> None:
        """Read VAE latents / encoder tokens from the set's cache files (facefact.training.cache) instead
        of returning the pixels they are computed from; `caches`: kind -> the fingerprint they must carry."""
        self.caches = dict(caches)

    def __len__(self) -> int:
        return len(self.samples)

    def shuffle_probability(self, micro_step: int) -> float:
        return shuffle_probability(micro_step // self.accumulation, *self.shuffle)

    def decide(self, key: SampleKey) -> dict:
        """The random choices for one draw; pure function of the key and the settings."""
        generator = generator_for(self.seed, 1, key.micro_step, key.slot)
        drop_face = torch.rand((), generator=generator).item() < self.face_drop_prob
        drop_text = torch.rand((), generator=generator).item() < self.text_drop_prob
        condition = choose_condition(key.index, self.samples.members(key.index),
                                     self.shuffle_probability(key.micro_step), generator)
        return {"drop_face": drop_face, "drop_text": drop_text, "condition_index": int(condition)}

    def __getitem__(self, key) -> dict:
        key = SampleKey(*key) if isinstance(key, tuple) else SampleKey(int(key), 0, 0, 0)
        choice = self.decide(key)
        sample, partner = self._entry(key.index), self._entry(choice["condition_index"])
        mask = self._read(sample["mask"], "L")
        condition = self._read(partner["condition"], "RGB", resize=False)
        if condition.shape[:2] != (112, 112):
            raise DatasetError(f"condition image is {condition.shape[1]}x{condition.shape[0]}, expected 112x112",
                               path=partner["condition"])
        item = {}
        if LATENTS in self.caches:  # the VAE posterior instead of the pixels
            cached = load_cached(cache_path(self.root, sample["id"], LATENTS), LATENTS, self.caches[LATENTS])
            item["latent_mean"], item["latent_std"] = cached["mean"], cached["std"]   # [4, R/8, R/8]
        else:
            item["pixel_values"] = _to_unit_range(self._read(sample["image"], "RGB"))  # [3, R, R] in [-1, 1]
        if TOKENS in self.caches:  # the encoder's tokens of the chosen condition
            item["encoder_tokens"] = load_cached(cache_path(self.root, partner["id"], TOKENS), TOKENS,
                                                 self.caches[TOKENS])["tokens"]        # [144, D]
        return {
            **item,
            "face_mask": torch.from_numpy(mask.astype(np.float32) / 255.0)[None],     # [1, R, R], 1 = face
            "condition": _to_unit_range(condition),                                   # [3, 112, 112] in [-1, 1]
            "caption": "" if choice["drop_text"] else sample["caption"],
            # SDXL's add_time_ids of the target crop (unused by SD1.5): original size, crop, target size
            "time_ids": torch.tensor(time_ids(sample, self.target_size), dtype=torch.float32),
            "drop_face": choice["drop_face"],
            "sample_index": key.index,
            "slot": key.slot,
            "condition_index": choice["condition_index"],
        }

    def own_condition(self, index: int) -> torch.Tensor:
        """Sample `index`'s own condition face, without shuffle or drop: [3, 112, 112] in [-1, 1]."""
        return _to_unit_range(self._read(self._entry(index)["condition"], "RGB", resize=False))

    def _entry(self, index: int) -> dict:
        """Sample `index`'s entry, its files checked (present, inside the set) as it is drawn."""
        return self.samples.checked(index)

    def _read(self, path: str, mode: str, resize: bool = True) -> np.ndarray:
        try:
            with open_prepared_image(path) as img:
                img = img.convert(mode)
                if resize and self.resolution and img.size != (self.resolution, self.resolution):
                    img = img.resize((self.resolution, self.resolution), Image.BICUBIC if mode == "RGB" else Image.BOX)
                return np.asarray(img)
        except DatasetError:  # ours (also a ValueError): already names the file
            raise
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            raise DatasetError(f"cannot read a training file: {err}", path=path, hint=_REPAIR) from err

    @property
    def lacks_micro_conditioning(self) -> int:
        """How many samples have no SDXL size/crop fields (prepared before they were recorded)."""
        return len(self.samples) - self.samples.entries_with(MICRO_CONDITIONING_FIELDS[0])  # no shard read

    @property
    def target_size(self) -> int:
        """The side the target crops are trained at (read once: an item must not open another file)."""
        if self._target_size is None:
            self._target_size = self.image_size
        return self._target_size

    @property
    def image_size(self) -> int:
        if self.resolution:
            return self.resolution
        path = self._entry(0)["image"]
        try:
            with open_prepared_image(path) as img:
                return img.size[0]
        except DatasetError:  # ours (also a ValueError): already names the file
            raise
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            raise DatasetError(f"cannot read a training file: {err}", path=path, hint=_REPAIR) from err


def _to_unit_range(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()


class MicroBatchSampler(torch.utils.data.Sampler):
    """Yields the SampleKeys of micro-steps [start, stop) for one process: the data position is just
    the micro-step number, so resuming at step k reads exactly what the full run read from step k."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, start: int, stop: int,
                 world_size: int = 1, rank: int = 0):
        if num_samples < 1:
            raise ConfigError("the training set is empty")
        self.args = (batch_size, num_samples, seed, world_size, rank)
        self.start, self.stop, self.rank = start, stop, rank

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self):
        for micro_step in range(self.start, self.stop):
            indices = micro_batch_indices(micro_step, *self.args)
            # slot = position in the *global* batch, so N processes x batch b draw exactly what one
            # process with batch N*b would (the basis of the DDP test and of changing GPU counts).
            first_slot = self.rank * len(indices)
            yield [SampleKey(i, micro_step, self.rank, first_slot + j) for j, i in enumerate(indices)]
