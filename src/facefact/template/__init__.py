"""Template portraits (FACT's "Fixed Template" mode): redraw chosen faces of an existing photo with
new identities, keeping every other pixel of the photo.

    from facefact.template import TemplatePortrait, TemplateSettings
    maker = TemplatePortrait(pipe)                    # a FACT inpainting-capable pipeline
    out = maker("wedding.jpg", {1: "alice.jpg", 2: "bob.jpg"}, seed=7, num_images=2)
    out.images[0].save("wedding_new.png")

Geometry, masks and control maps are pure numpy / OpenCV (``geometry``, ``masks``, ``controls``,
``prepare``); ``portrait`` runs the two diffusion passes and pastes back. See docs/template.md.
"""
from facefact.template.faces import TemplateFace, choose_targets, find_faces
from facefact.template.geometry import SquareCrop, paste
from facefact.template.settings import TemplateSettings

__all__ = ["SquareCrop", "TemplateFace", "TemplateSettings", "choose_targets", "find_faces", "paste"]
