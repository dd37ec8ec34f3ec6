"""What a FACT pipeline returns: diffusers' output plus provenance that survives saving.

    out = pipe("a portrait", face_images=["me.jpg"], generator=g)
    out.images[0]          # PIL image, as with diffusers
    out.metadata[0]        # its provenance: settings, seed, model ids, "ai_generated": True
    out.save("outputs/")   # PNGs that carry it (JSON, A1111 line, IPTC "trained algorithmic media")

`image.save(...)` on a PIL image writes no metadata (PIL does not write what it was not given);
`out.save` does, and adds the model files' hashes - hashing happens here, where files are
written, never when a model is loaded.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput


@dataclass
class FACTPipelineOutput(StableDiffusionPipelineOutput):
    metadata: list | None = None   # one provenance dict per image, in order
    notes: list | None = None      # what the user should know (several faces, a cut prompt...)
    model_files: dict | None = None  # role -> local file or folder, for hashes at save time (not written)

    def save(self, folder: str | Path, name: str = "facefact", overwrite: bool = False,
             with_hashes: bool = True) -> list[Path]:
        """Write every image as `<folder>/<name>_<seed>.png` (`_<seed>-<k>` for image k of a batch made
        from one generator, `_image-<k>` without a known seed) with
        its provenance; a taken name gets `-1`, `-2`... unless `overwrite`. Returns the paths."""
        from facefact.pipelines.metadata import write_png

        if self.images is None or len(self.images) == 0 or not hasattr(self.images[0], "save"):
            raise ValueError("only PIL images can be saved with their provenance: call the pipeline with "
                             "output_type='pil' (the default)")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        metadata = self.metadata_with_hashes() if with_hashes else (self.metadata or [{}] * len(self.images))
        written = []
        for index, (image, meta) in enumerate(zip(self.images, metadata)):
            tag = meta.get("seed") if isinstance(meta.get("seed"), int) else "image"
            if "batch_index" in meta or tag == "image":  # one generator for the batch: seed and place in it
                tag = f"{tag}-{meta.get('batch_index', index)}"
            written.append(write_png(image, folder / f"{name}_{tag}.png", meta, overwrite=overwrite))
        return written

    def metadata_with_hashes(self) -> list[dict]:
        """The metadata with each local model file's short sha256 added (see `describe_file`)."""
        from facefact.pipelines.loading import describe_file

        described = {role: describe_file(path) for role, path in (self.model_files or {}).items()}
        out = []
        for meta in self.metadata or [{}] * len(self.images):
            meta = copy.deepcopy(meta)
            models = meta.setdefault("models", {})
            for role, info in described.items():
                hashes = {k: v for k, v in info.items() if k not in ("id", "bytes")}
                if role.startswith("lora:"):
                    for entry in models.get("loras", []):
                        if entry.get("adapter_name") == role[len("lora:"):]:
                            entry.update(hashes)
                elif role.startswith("controlnet:"):
                    entries, index = models.get("controlnet") or [], int(role.split(":", 1)[1])
                    if isinstance(entries, list) and index < len(entries):
                        entries[index].update(hashes)
                elif isinstance(models.get(role), dict):
                    models[role].update(hashes)
            out.append(meta)
        return out
