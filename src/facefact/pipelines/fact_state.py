"""FACT as it is loaded into a UNet, shared by every pipeline built on that UNet.

diffusers pipelines share their models: `Cls(**pipe.components)` and `Cls.from_pipe(pipe)` hold
the very UNet of `pipe`. FACT lives with that UNet: the adapter is attached to it (diffusers'
GLIGEN slots, see FaceAdapter.attach), and what `load_fact_adapter` loaded with it - the face
encoder, the face analysis, the provenance of both files - is kept on the attached adapter
(`FaceAdapter.pipeline_state`). Every pipeline looks it up through its own `self.unet` each time
(`loaded_fact`), so every pipeline on the UNet generates with the same adapter, unloading from any
of them unloads it for all, and no pipeline keeps a copy that could go stale.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from facefact.errors import ConfigError
from facefact.model import FaceAdapter


@dataclass
class LoadedFACT:
    adapter: FaceAdapter
    encoder: object                      # TransFaceEncoder, float32, frozen
    analysis: object = None              # FaceAnalysis, made on first use when not given
    models: dict = field(default_factory=dict)  # role -> provenance entry ({"id": ...})
    files: dict = field(default_factory=dict)   # role -> local file, hashed where images are written
    # True: load_fact_adapter attached the adapter, so unloading detaches it. False: it came attached
    # (training's validation images); whoever attached it detaches it.
    attached_by_load: bool = True


def loaded_fact(unet) -> LoadedFACT | None:
    """What is loaded into `unet` (None: no FACT, or an adapter attached outside any pipeline)."""
    adapter = FaceAdapter.attached_to(unet) if unet is not None else None
    return adapter.pipeline_state if adapter is not None else None


def unload(unet) -> None:
    """Detach the FACT loaded into `unet`, for every pipeline on it (as before, bit for bit)."""
    loaded = loaded_fact(unet)
    if loaded is None:
        return
    if loaded.attached_by_load:
        loaded.adapter.detach()
    else:
        loaded.adapter.pipeline_state = None


def attach_for_load(unet, adapter: FaceAdapter, default_scale) -> bool:
    """Attach `adapter` to `unet` for load_fact_adapter (FACT loaded before is unloaded by then).
    Returns whether it was attached here (False: it already was, by its owner)."""
    present = FaceAdapter.attached_to(unet)
    if present is adapter:
        return False
    if present is not None:
        raise ConfigError("this UNet carries a FACT adapter attached outside a pipeline (FaceAdapter.attach)",
                          hint="detach() that adapter first, or pass it to load_fact_adapter")
    adapter.attach(unet)  # to the UNet's device and dtype
    adapter.set_scale(default_scale)
    return True

