"""LoRA beside FACT: diffusers' own loading, with clear errors and true provenance.

`LoraProvenanceMixin.load_lora_weights` is diffusers' `load_lora_weights` (same arguments, same
activation rules), with failures turned into CheckpointErrors that name the file - including the
silent one, a file with no key for this model - and each LoRA's file name, short sha256 and
current weight recorded for the images' metadata (`set_adapters` keeps the weights true).
"""
from __future__ import annotations

from pathlib import Path

from facefact.errors import CheckpointError, ConfigError, ModelNotFoundError
from facefact.pipelines.loading import describe_file
from facefact.pipelines.registry import looks_like_hub_id


class LoraProvenanceMixin:
    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name=None, **kwargs):
        records = self._lora_records()
        name = adapter_name or f"lora{len(records) + 1}"
        if name in records:
            raise ConfigError(f"a LoRA named '{name}' is loaded already", hint="pass another adapter_name")
        lora = pretrained_model_name_or_path_or_dict
        load_lora_into(self, lora, name, load=super().load_lora_weights, **kwargs)
        # Named now, hashed where images are written (FACTPipelineOutput.save): loading writes nothing
        file = lora_file(lora, kwargs.get("weight_name"), kwargs.get("subfolder"))
        entry = {"id": file.name if file is not None else ("<state dict>" if isinstance(lora, dict) else str(lora))}
        if file is None and kwargs.get("weight_name"):
            entry["weight_name"] = "/".join(p for p in (kwargs.get("subfolder"), kwargs["weight_name"]) if p)
        records[name] = {"entry": entry, "file": file, "weight": 1.0}

    def set_adapters(self, adapter_names, adapter_weights=None):
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        records = self._lora_records()
        unknown = [n for n in names if n not in records and n not in self._all_lora_names()]
        if unknown:
            raise ConfigError(f"no LoRA named {', '.join(unknown)} is loaded",
                              hint=f"loaded: {', '.join(records) or 'none'}")
        super().set_adapters(names, adapter_weights)
        weights = adapter_weights if isinstance(adapter_weights, (list, tuple)) else [adapter_weights] * len(names)
        for name, weight in zip(names, weights):
            if name in records:
                records[name]["weight"] = 1.0 if weight is None else (float(weight) if isinstance(weight, (int, float))
                                                                       else weight)

    def unload_lora_weights(self, *args, **kwargs):
        super().unload_lora_weights(*args, **kwargs)
        self._lora_records().clear()

    def delete_adapters(self, adapter_names):
        super().delete_adapters(adapter_names)
        for name in [adapter_names] if isinstance(adapter_names, str) else adapter_names:
            self._lora_records().pop(name, None)

    def lora_provenance(self) -> list[dict]:
        """The LoRAs acting now, each {id, sha256 (when a file), weight}."""
        records = self._lora_records()
        if not records:
            return []
        active = set(self.get_active_adapters())
        return [{**r["entry"], "adapter_name": name, "weight": r["weight"]} for name, r in records.items()
                if name in active]

    def lora_files(self) -> dict:
        """"lora:<adapter name>" -> the local file, for hashes where images are written."""
        return {f"lora:{name}": r["file"] for name, r in self._lora_records().items() if r["file"] is not None}

    def _lora_records(self) -> dict:
        if getattr(self, "_facefact_loras", None) is None:
            self._facefact_loras = {}
        return self._facefact_loras

    def _all_lora_names(self) -> set:
        return {n for names in self.get_list_adapters().values() for n in names}


def require_peft() -> None:
    """diffusers loads LoRA through peft; without it `load_lora_weights` fails with a bare ValueError."""
    import diffusers.utils

    if not getattr(diffusers.utils, "USE_PEFT_BACKEND", False):
        raise ConfigError("loading a LoRA needs the peft package (diffusers loads LoRA through it), and peft is "
                          "not installed or too old for this diffusers",
                          hint="pip install -U peft (and transformers), then run the command again")


def lora_file(lora, weight_name: str | None = None, subfolder: str | None = None) -> Path | None:
    """The local file `load_lora_weights` reads for these arguments (None: a hub id or a dict)."""
    if isinstance(lora, dict):
        return None
    local = Path(str(lora)).expanduser()
    if weight_name and local.is_dir():
        local = local / (subfolder or "") / weight_name
    return local if local.is_file() else None


def describe_lora(lora, weight_name: str | None = None, subfolder: str | None = None) -> dict:
    """Provenance of a LoRA: the file's name and short sha256 (never its folder), or a hub id.

    With a folder plus `weight_name` (and `subfolder`), as `load_lora_weights` takes them: that
    one file, not every weight file in the folder; for a hub id, `weight_name` is kept beside it."""
    if isinstance(lora, dict):
        return {"id": "<state dict>"}
    local = Path(str(lora)).expanduser()
    if weight_name and local.is_dir():
        lora = local / (subfolder or "") / weight_name
    info = describe_file(lora)
    if weight_name and not local.exists():  # a hub id: which file of the repository
        info["weight_name"] = "/".join(part for part in (subfolder, weight_name) if part)
    return {k: v for k, v in info.items() if k != "bytes"}


def load_lora_into(sd_pipeline, lora, adapter_name: str, load=None, **kwargs) -> None:
    """`load(lora)` (default `sd_pipeline.load_lora_weights`) with diffusers' failures turned into CheckpointErrors
    that name the file - including the silent one: a file with no key for this UNet or text
    encoder, which diffusers only logs about and skips."""
    from safetensors import SafetensorError

    require_peft()
    load = load or sd_pipeline.load_lora_weights
    name = "the LoRA state dict" if isinstance(lora, dict) else str(lora)
    if not isinstance(lora, dict):
        path = Path(str(lora)).expanduser()
        if path.is_dir() and not kwargs.get("weight_name"):
            raise ConfigError(f"LoRA {path} is a folder", path=path,
                              hint="pass the LoRA file inside it (e.g. pytorch_lora_weights.safetensors)")
        if not path.exists() and not looks_like_hub_id(str(lora)):
            raise ModelNotFoundError(f"LoRA file not found: {path}", path=path,
                                     hint="check the path; a LoRA is a .safetensors file", setting="lora")
        lora = str(path) if path.exists() else str(lora)
    hint = ("it must be a LoRA made for Stable Diffusion 1.5-family models (diffusers, kohya or PEFT format), "
            "not a full model, a LoRA for another family (SDXL, SD2, Flux...) or another kind of file")
    try:
        load(lora, adapter_name=adapter_name, **kwargs)
    except (ValueError, RuntimeError, KeyError, OSError, SafetensorError) as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()] or [type(err).__name__]
        mismatch = next((line for line in lines if line.startswith("size mismatch")), None)
        reason = lines[0][:200] + (f" ({mismatch[:300]})" if mismatch else "")
        raise CheckpointError(f"{name} is not a LoRA for this model: {reason}", hint=hint) from err
    loaded = {n for names in sd_pipeline.get_list_adapters().values() for n in names}
    if adapter_name not in loaded:
        raise CheckpointError(f"{name} holds no LoRA weights for this model's UNet or text encoder", hint=hint)


