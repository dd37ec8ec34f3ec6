"""Template portraits (FACT's "Fixed Template" mode): redraw chosen faces of an existing photo with
new identities, keeping every other pixel of the photo.

    from facefact.template import TemplatePortrait, TemplateSettings
    maker = TemplatePortrait(pipe)                    # a FACT inpainting-capable pipeline
    out = maker("wedding.jpg", {1: "alice.jpg", 2: "bob.jpg"}, seed=7, num_images=2)
    out.images[0].save("wedding_new.png")

Geometry, masks and control maps are pure numpy / OpenCV (``geometry``, ``masks``, ``controls``,
``prepare``); ``portrait`` runs the two diffusion passes and pastes back. See docs/template.md.
"""
# Names load on first use: `facefact --help` imports the settings only (no OpenCV, no torch).
_EXPORTS = {"SquareCrop": "geometry", "paste": "geometry", "TemplateFace": "faces", "choose_targets": "faces",
            "find_faces": "faces", "TemplateSettings": "settings", "TemplatePortrait": "portrait",
            "TemplateOutput": "portrait"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'facefact.template' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(f"facefact.template.{_EXPORTS[name]}"), name)
