"""A short, stable fingerprint of a model's weights (what caches and saved identities are tied to)."""
from __future__ import annotations

import hashlib


def fingerprint(module, prefixes: tuple[str, ...] = ()) -> str:
    """SHA-256 (first 16 hex digits) over the named weights (float32 bytes), in name order."""
    import torch  # here, not at import: callers such as `facefact prepare` load torch only when hashing

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if prefixes and not name.startswith(prefixes):
            continue
        value = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(value.shape)}\n".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()[:16]
