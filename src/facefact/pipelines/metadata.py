"""Provenance inside the PNGs facefact writes, and safe (atomic, non-clobbering) writing.

Every image carries, as PNG text chunks:
- `facefact`   JSON: prompt, seed, every setting, model ids and hashes, notes, `ai_generated: true`;
- `parameters` the one-line-per-field summary AUTOMATIC1111-style tools read and show;
- `Software`, `Description`, `Comment`: plain statements that the picture is AI-generated;
- `XML:com.adobe.xmp`: an XMP packet with IPTC DigitalSourceType `trainedAlgorithmicMedia`, the
  vocabulary news and stock sites use to label synthetic images.
Nothing about the reference photos is stored beyond their count: not their names, not the faces,
not the embeddings.
"""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from facefact.atomic import naming_failed_writes, temporary_sibling

AI_STATEMENT = "AI-generated image (FaceChain-FACT via facefact); not a photograph of a real scene."
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
XMP_KEY = "XML:com.adobe.xmp"

SCHEDULER_NAMES = {"pndm": "PNDM", "ddim": "DDIM", "dpm++": "DPM++ 2M", "dpm++karras": "DPM++ 2M Karras",
                   "unipc": "UniPC", "euler": "Euler", "euler_a": "Euler a",
                   # diffusers' class names, as a library call records them
                   "PNDMScheduler": "PNDM", "DDIMScheduler": "DDIM", "DPMSolverMultistepScheduler": "DPM++ 2M",
                   "UniPCMultistepScheduler": "UniPC", "EulerDiscreteScheduler": "Euler",
                   "EulerAncestralDiscreteScheduler": "Euler a"}


def a1111_parameters(meta: dict) -> str:
    """The `parameters` text: prompt, `Negative prompt: ...`, then `Key: value, ...`."""
    base = meta.get("models", {}).get("base_model", {})
    fields = {
        "Steps": meta.get("steps"), "Sampler": SCHEDULER_NAMES.get(meta.get("scheduler"), meta.get("scheduler")),
        "CFG scale": meta.get("guidance_scale"), "Seed": meta.get("seed"),
        "Size": f"{meta.get('width')}x{meta.get('height')}",
        # Only the whole single checkpoint file's hash: sites such as Civitai look a model up by it. A
        # UNet-only hash or a hub revision would match no file there (they stay in the facefact JSON).
        "Model hash": (base.get("sha256") or "")[:10] or None,
        "Model": base.get("id"),
        "Lora": ", ".join(f"{entry.get('id')}:{entry.get('weight')}" for entry in meta.get("models", {}).get("loras", []))
                or None,
        "FACT scale": meta.get("fact_scale"), "FACT cfg face": meta.get("cfg_face"),
        "FACT photos": meta.get("num_reference_photos"), "Version": meta.get("generator"),
    }
    line = ", ".join(f"{k}: {v}" for k, v in fields.items() if v is not None)
    text = meta.get("prompt", "")
    if meta.get("negative_prompt"):
        text += f"\nNegative prompt: {meta['negative_prompt']}"
    return f"{text}\n{line}"


def xmp_packet(meta: dict) -> str:
    description = escape(f"{AI_STATEMENT} Prompt: {meta.get('prompt', '')}")
    tool = escape(str(meta.get("generator", "facefact")))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        f'    Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}"\n'
        f'    xmp:CreatorTool="{tool}">\n'
        f'   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{description}</rdf:li></rdf:Alt></dc:description>\n'
        '  </rdf:Description>\n'
        ' </rdf:RDF>\n'
        '</x:xmpmeta>\n'
        '<?xpacket end="r"?>')


def metadata_json(meta: dict) -> str:
    """The provenance as strict JSON: a NaN or infinity (invalid JSON, unreadable by other tools)
    is refused with the name of the setting that holds it, never written."""
    from facefact.validation import check_finite_tree

    check_finite_tree(meta, "metadata")
    return json.dumps(meta, ensure_ascii=False, sort_keys=True, allow_nan=False)


def png_info(meta: dict) -> PngInfo:
    info = PngInfo()
    # iTXt (UTF-8) for anything that may hold a prompt; tEXt is Latin-1 only.
    info.add_itxt("facefact", metadata_json(meta))
    info.add_itxt("parameters", a1111_parameters(meta))
    info.add_text("Software", str(meta.get("generator", "facefact")))
    info.add_text("Description", AI_STATEMENT)
    info.add_text("Comment", AI_STATEMENT)
    info.add_itxt(XMP_KEY, xmp_packet(meta))
    return info


def png_bytes(image: Image.Image, meta: dict) -> bytes:
    """PNG bytes with facefact's provenance, exactly what `write_png` puts in a file."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(meta))
    return buffer.getvalue()


def read_png_metadata(path: str | Path) -> dict:
    """The `facefact` JSON of a PNG written by facefact ({} if there is none)."""
    with Image.open(path) as image:
        text = image.info.get("facefact")
    return json.loads(text) if text else {}


# ---- file names and writing -------------------------------------------------------------------
def slug(text: str, max_len: int = 32) -> str:
    """A short, filesystem-safe name part: lowercase words joined by '-'."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    out = ""
    for word in words:
        if len(out) + len(word) + 1 > max_len:
            break
        out = f"{out}-{word}" if out else word
    return out or "image"


def write_png(image: Image.Image, path: str | Path, meta: dict, overwrite: bool = False) -> Path:
    """Write `image` with provenance to `path` atomically, never replacing a file unless asked.

    The PNG is written to a temporary file in the same folder, then published under its name: with
    os.link, which fails if the name exists (no check-then-write race), or os.replace when
    `overwrite`. If the name is taken, `<stem>-1.png`, `<stem>-2.png`... is used instead.
    Returns the path actually written."""
    path = Path(path)
    with temporary_sibling(path, suffix=".png.tmp") as tmp:
        with naming_failed_writes(path), open(tmp, "wb") as f:
            image.save(f, format="PNG", pnginfo=png_info(meta))
        if overwrite:
            os.replace(tmp, path)
            return path
        for attempt in range(10000):
            target = path if attempt == 0 else path.with_name(f"{path.stem}-{attempt}{path.suffix}")
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                continue
            except OSError:  # a filesystem without hard links: best effort check, then rename
                if target.exists():
                    continue
                os.replace(tmp, target)
                return target
        raise FileExistsError(f"too many files named {path.stem}-N.png in {path.parent}")


def contact_sheet(images: list[Image.Image], columns: int | None = None, gap: int = 4,
                  labels: list[str] | None = None) -> Image.Image:
    """All images on one white sheet, in order, about square; each with its label (e.g. "seed 7")
    printed under it when ``labels`` are given, so a picture on the sheet can be made again."""
    from PIL import ImageDraw, ImageFont

    columns = columns or max(1, round(len(images) ** 0.5 + 0.49))
    rows = (len(images) + columns - 1) // columns
    w = max(im.width for im in images)
    h = max(im.height for im in images)
    font_px = max(10, min(24, w // 12))
    strip = font_px + gap if labels else 0  # the label line under each image
    cell_h = h + strip
    sheet = Image.new("RGB", (columns * w + (columns + 1) * gap, rows * cell_h + (rows + 1) * gap), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=font_px)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        x, y = gap + c * (w + gap), gap + r * (cell_h + gap)
        sheet.paste(im.convert("RGB"), (x, y))
        if labels:
            draw.text((x, y + h + gap // 2), str(labels[i]), fill="black", font=font)
    return sheet


def sheet_metadata(metas: list[dict]) -> dict:
    """The sheet's provenance: the shared settings, and every image's seed in sheet order."""
    meta = {k: v for k, v in metas[0].items() if k != "seed"}
    meta["seeds"] = [m["seed"] for m in metas]
    meta["contact_sheet"] = True
    return meta
