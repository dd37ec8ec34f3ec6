"""LoRA beside FACT: diffusers' own loading, with clear errors and true provenance.

`LoraProvenanceMixin.load_lora_weights` is diffusers' `load_lora_weights` (same arguments, same
activation rules), with failures turned into CheckpointErrors that name the file - including the
silent one, a file with no key for this model - and each LoRA's file name, short sha256 and
current weight recorded for the images' metadata (`set_adapters` keeps the weights true).

The records live with the models that carry the LoRA (the UNet, the text encoders: each one's
`_facefact_lora_records`), as FACT lives with its UNet: every pipeline built on those models
(`from_pipe`, `Cls(**pipe.components)`) lists the LoRAs that really act in its images, whichever
pipeline loaded them. Whether a LoRA is fused is read from the models' LoRA layers; a fused LoRA
stays listed (`"fused": true`, at the weight it was fused with) after `unload_lora_weights`, since
its weights are then part of the model's own.
"""
from __future__ import annotations

from pathlib import Path

from facefact.errors import CheckpointError, ConfigError, ModelNotFoundError
from facefact.pipelines.loading import describe_file
from facefact.pipelines.registry import looks_like_hub_id

RECORDS = "_facefact_lora_records"  # attribute of each model carrying a LoRA: adapter name -> record


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
        record = {"entry": entry, "file": file, "weight": 1.0, "fused_scale": None, "baked": False}
        for component, names in self.get_list_adapters().items():  # one record, on every model it went into
            if name in names:
                _model_records(getattr(self, component))[name] = record

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

    def fuse_lora(self, components=None, lora_scale: float = 1.0, safe_fusing: bool = False, adapter_names=None,
                  **kwargs):
        before = self._merged_lora_names()
        if components is None:
            super().fuse_lora(lora_scale=lora_scale, safe_fusing=safe_fusing, adapter_names=adapter_names, **kwargs)
        else:
            super().fuse_lora(components, lora_scale, safe_fusing, adapter_names, **kwargs)
        for name in self._merged_lora_names() - before:
            if name in self._lora_records():
                self._lora_records()[name]["fused_scale"] = float(lora_scale)

    def unload_lora_weights(self, *args, **kwargs):
        fused = self._merged_lora_names()
        super().unload_lora_weights(*args, **kwargs)
        for model in self._lora_models():
            records = getattr(model, RECORDS, {})
            for name in list(records):
                if name in fused or records[name]["baked"]:
                    records[name]["baked"] = True  # fused into the weights, which stay: still acting
                else:
                    del records[name]

    def delete_adapters(self, adapter_names):
        super().delete_adapters(adapter_names)
        for name in [adapter_names] if isinstance(adapter_names, str) else adapter_names:
            for model in self._lora_models():
                getattr(model, RECORDS, {}).pop(name, None)

    def lora_provenance(self) -> list[dict]:
        """The LoRAs acting now, each {id, sha256 (when a file), weight}, fused ones with "fused": true."""
        records = self._lora_records()
        if not records:
            return []
        active, merged = set(self.get_active_adapters()), self._merged_lora_names()
        out = []
        for name, r in records.items():
            fused = r["baked"] or name in merged
            if fused or name in active:
                weight = r["weight"] * r["fused_scale"] if fused and r["fused_scale"] is not None else r["weight"]
                out.append({**r["entry"], "adapter_name": name, "weight": weight, **({"fused": True} if fused else {})})
        return out

    def lora_files(self) -> dict:
        """"lora:<adapter name>" -> the local file, for hashes where images are written."""
        return {f"lora:{name}": r["file"] for name, r in self._lora_records().items() if r["file"] is not None}

    def _lora_models(self) -> list:
        """The models of this pipeline a LoRA can go into (UNet, text encoders) that are there."""
        names = getattr(self, "_lora_loadable_modules", None) or ("unet", "text_encoder")
        return [m for m in (getattr(self, n, None) for n in names) if m is not None]

    def _lora_records(self) -> dict:
        """Adapter name -> record, from this pipeline's models (a view: records live on the models)."""
        out: dict = {}
        for model in self._lora_models():
            for name, record in getattr(model, RECORDS, {}).items():
                out.setdefault(name, record)
        return out

    def _merged_lora_names(self) -> set:
        """The LoRAs fused into this pipeline's models now (read from their LoRA layers)."""
        names: set = set()
        for model in self._lora_models():
            for module in model.modules() if hasattr(model, "modules") else ():
                names.update(getattr(module, "merged_adapters", None) or ())
        return names

    def _all_lora_names(self) -> set:
        return {n for names in self.get_list_adapters().values() for n in names}


def _model_records(model) -> dict:
    if getattr(model, RECORDS, None) is None:
        setattr(model, RECORDS, {})
    return getattr(model, RECORDS)


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


