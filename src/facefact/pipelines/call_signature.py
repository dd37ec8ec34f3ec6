"""What a FACT twin's `__call__` shows: its diffusers parent's signature and docs, plus FACT's arguments.

    inspect.signature(FACTStableDiffusionPipeline.__call__)   # prompt, height, ..., callback_on_step_end,
                                                             # ..., *, face_images, face_tokens, fact_scale, ...
    help(pipe.__call__)                                      # the parent's Args with FACT's added

Tools that read a pipeline's signature (diffusers' own tests and `from_pipe`, UIs, wrappers) see
the stock pipeline's parameters and FACT's keyword-only ones; nothing is hidden behind
`*args, **kwargs`. FACT's parameters and defaults come from `FACTMixin.__call__` itself (one
source); their documentation is `FACT_ARGUMENTS` below.
"""
from __future__ import annotations

import inspect
import re
import textwrap

# Each FACT keyword of `FACTMixin.__call__`, documented as diffusers documents its own arguments.
FACT_ARGUMENTS = {
    "face_images": ("`str`, `PIL.Image.Image`, `np.ndarray` or a list of them, *optional*",
                    "Reference photos (paths, PIL images or RGB arrays) of one person; a path may end in `#N` for "
                    "face N of the photo. With `face_regions`, one identity (photos or `FaceTokens`) per region. "
                    "Not given: the base model, as the parent pipeline."),
    "face_tokens": ("`FaceTokens`, `str` or `torch.Tensor`, *optional*",
                    "Instead of `face_images`: what `pipe.encode_faces(...)` returned, a saved identity (`.fid`), "
                    "or face tokens as a tensor of shape `[1,16n,C]` (16 per photo)."),
    "fact_scale": ("`float` or `dict`, *optional*",
                   "FACT's scale for this call only: a number (0 is the base model bit for bit) or per UNet level "
                   "(`{\"down\": .., \"mid\": .., \"up\": ..}`). Defaults to `set_fact_scale`'s (0.5 when loaded)."),
    "cfg_face": ("`bool`, *optional*, defaults to `True`",
                 "Under classifier-free guidance, the unconditional branch gets the null face tokens (`True`, as "
                 "FACT's release) or the face's own (`False`)."),
    "face_combine": ("`str`, *optional*, defaults to `\"concat\"`",
                     "How several photos of one person combine: `\"concat\"` (FACT's own), `\"mean\"` or "
                     "`\"weighted\"` (by face quality)."),
    "fact_window": ("`tuple[float, float]`, *optional*",
                    "`(start, end)`: FACT acts only on the steps whose place in the schedule, i / N, lies in "
                    "[start, end)."),
    "face_regions": ("`list`, *optional*",
                     "Several people in one image: one box `(x0, y0, x1, y1)` (fractions of the image) or mask per "
                     "identity of `face_images`; identity k acts only inside region k."),
}
RETURNS = ("Returns a `FACTPipelineOutput` (the parent's output plus per-image provenance, `.metadata`, "
           "`.notes` and `.save(folder)`), or the parent's tuple with `return_dict=False`.")


def fact_keywords(fact_call) -> list[inspect.Parameter]:
    """FACT's keyword-only parameters of `fact_call` (`FACTMixin.__call__`), each documented."""
    keywords = [p for p in inspect.signature(fact_call).parameters.values() if p.kind is p.KEYWORD_ONLY]
    undocumented = sorted({p.name for p in keywords} - set(FACT_ARGUMENTS))
    if undocumented:
        raise TypeError(f"FACT call arguments without documentation: {', '.join(undocumented)}")
    return keywords


def twin_signature(parent_call, keywords: list[inspect.Parameter]) -> inspect.Signature:
    """The parent's signature (with `self`) with FACT's keyword-only parameters before its `**kwargs`."""
    parent = inspect.signature(parent_call)
    taken = sorted(set(parent.parameters) & {p.name for p in keywords})
    if taken:
        raise TypeError(f"{parent_call.__qualname__} already takes {', '.join(taken)}, FACT's own argument names")
    positional = [p for p in parent.parameters.values() if p.kind is not p.VAR_KEYWORD]
    rest = [p for p in parent.parameters.values() if p.kind is p.VAR_KEYWORD]
    return parent.replace(parameters=[*positional, *keywords, *rest])


def twin_docstring(parent_doc: str | None, keywords: list[inspect.Parameter]) -> str:
    """The parent's docstring with FACT's arguments at the end of its `Args:` section (or appended)."""
    doc = parent_doc or ""
    lines = doc.splitlines()
    args_at = next((i for i, line in enumerate(lines) if line.strip() == "Args:"), None)
    indent = re.match(r"\s*", lines[args_at]).group() if args_at is not None else "        "
    entries = []
    for parameter in keywords:
        kind, text = FACT_ARGUMENTS[parameter.name]
        entries += [f"{indent}    {parameter.name} ({kind}):", *_wrapped(text, indent + " " * 8)]
    entries += ["", *_wrapped(RETURNS, indent)]
    if args_at is None:
        return "\n".join([*lines, "", f"{indent}FACT's arguments (keyword only):", *entries])
    end = args_at + 1  # the Args section ends at the next line indented no deeper than "Args:"
    while end < len(lines) and (not lines[end].strip() or len(re.match(r"\s*", lines[end]).group()) > len(indent)):
        end += 1
    while end > args_at + 1 and not lines[end - 1].strip():  # trailing blank lines stay after FACT's
        end -= 1
    return "\n".join([*lines[:end], *entries, *lines[end:]])


def _wrapped(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, width=119, initial_indent=indent, subsequent_indent=indent)
