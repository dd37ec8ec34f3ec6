"""The identity-control flags of `facefact generate`, parsed once (light: no torch here).

    --face PHOTO[@x0,y0,x1,y1]     photos with the same region are one person; with regions, every
                                   --face / --identity has one (several people in one image)
    --identity FILE.fid[@region]   a saved identity instead of photos
    --combine concat|mean|weighted --window START,END   --scale S | down=S,mid=S,up=S
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from facefact.errors import ConfigError


@dataclass
class Person:
    photos: list[str] = field(default_factory=list)
    identity: str | None = None     # a .fid file instead of photos
    region: tuple | None = None     # (x0, y0, x1, y1) fractions of the image


def split_region(spec: str, flag: str) -> tuple[str, tuple | None]:
    """'photo.jpg@0,0,0.5,1' -> ('photo.jpg', (0, 0, 0.5, 1)); a name with '@' but no region stays whole."""
    name, at, region = spec.rpartition("@")
    if not at:
        return spec, None
    parts = region.split(",")
    try:
        numbers = tuple(float(p) for p in parts)
    except ValueError:
        numbers = ()
    if len(parts) != 4 or len(numbers) != 4:
        if any(c.isdigit() for c in region) and "," in region:
            raise ConfigError(f"{flag} {spec}: the region after '@' must be x0,y0,x1,y1 (fractions of the image)",
                              hint=f"e.g. {flag} {name}@0,0,0.5,1 for the left half")
        return spec, None
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in numbers):
        raise ConfigError(f"{flag} {spec}: the region {region} is outside [0, 1]",
                          hint="x0,y0,x1,y1 are fractions of the image width and height")
    return name, numbers


def people(faces: list[str], identities: list[str]) -> list[Person]:
    """One Person per region (photos sharing a region are one person), or one Person without."""
    entries = [(spec, "--face") for spec in faces or []] + [(spec, "--identity") for spec in identities or []]
    if not entries:
        raise ConfigError("no reference given",
                          hint="pass --face PHOTO (repeat for more photos) or --identity FILE.fid")
    parsed = [(flag, *split_region(spec, flag)) for spec, flag in entries]
    with_region = [p for p in parsed if p[2] is not None]
    if with_region and len(with_region) != len(parsed):
        raise ConfigError("some references have a region (@x0,y0,x1,y1) and some do not",
                          hint="for several people give every --face / --identity its region; for one person none")
    if not with_region:
        if identities and faces:
            raise ConfigError("pass --face photos or one --identity, not both")
        if len(identities or []) > 1:
            raise ConfigError("several --identity files without regions",
                              hint="give each a region (FILE.fid@x0,y0,x1,y1) to put several people in one image")
        return [Person(photos=list(faces or []), identity=(identities or [None])[0])]
    groups: dict[tuple, Person] = {}
    for flag, name, region in parsed:
        person = groups.setdefault(region, Person(region=region))
        if flag == "--identity":
            if person.identity or person.photos:
                raise ConfigError(f"region {region} has a saved identity and other references",
                                  hint="one --identity, or photos, per region")
            person.identity = name
        else:
            if person.identity:
                raise ConfigError(f"region {region} has a saved identity and photos", hint="one or the other")
            person.photos.append(name)
    check_boxes([region for region in groups])
    return list(groups.values())


def check_boxes(boxes: list[tuple]) -> None:
    """Regions given on the command line: not empty, not overlapping (checked before any loading)."""
    for box in boxes:
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ConfigError(f"region {','.join(f'{v:g}' for v in box)} is empty: x1 must exceed x0, y1 y0")
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]):
                raise ConfigError(f"regions {','.join(f'{v:g}' for v in a)} and {','.join(f'{v:g}' for v in b)} "
                                  "overlap", hint="each part of the image can belong to one person only")


def parse_window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    from facefact.pipelines.settings import check_window

    try:
        start, end = (float(v) for v in text.split(","))
        return check_window((start, end))
    except (ValueError, ConfigError) as err:
        raise ConfigError(f"--window {text}: expected START,END, fractions of the steps with START before END",
                          hint="e.g. --window 0.3,1 (FACT from 30% of the steps on); --window 1,1 is the base "
                               "model") from err


def parse_scale(value) -> float | dict:
    """--scale 0.5, or per UNet level: --scale down=0.3,mid=0.5,up=0.6 (levels not named: 0)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        scale = float(value)
    elif isinstance(value, str) and "=" in value:
        levels = {}
        for part in value.split(","):
            key, _, number = part.partition("=")
            levels[key.strip()] = _scale_number(number, f"--scale {value}")
        from facefact.pipelines.settings import check_fact_scale

        return check_fact_scale(levels)  # a level name that is none: said now, not after the models load
    else:
        scale = _scale_number(value, f"--scale {value}")
    return scale


def _scale_number(text, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: not a number", hint="e.g. --scale 0.5 or --scale down=0.3,up=0.6") from None
    if not math.isfinite(value) or not 0.0 <= value <= 2.0:
        raise ConfigError(f"{where}: adapter scale {value:g} is outside 0..2", hint="0.5 is the released setting")
    return value


def analyse_people(persons: list[Person], analysis, notes: list[str], check_quality: bool = True) -> list[tuple]:
    """(person, encoder input, qualities) for each person with photos - analysed now, so a photo
    without a usable face stops the command before any weights load; saved identities: (person, None, None)."""
    from facefact.pipelines.face_tokens import analyse_photos

    analysed = []
    for person in persons:
        if person.identity is not None:  # read and checked now; against the models once they are loaded
            from facefact.pipelines.identity import read_identity

            read_identity(person.identity)
            analysed.append((person, None, None))
        else:
            analysed.append((person, *analyse_photos(analysis, person.photos, notes, check_quality)))
    return analysed


def face_arguments(pipe, analysed: list[tuple], combine: str) -> dict:
    """The pipeline call's face arguments: face_tokens= for one person, face_images= and
    face_regions= for several people in one image."""
    def tokens(person, pixels, qualities):
        if person.identity is not None:
            from facefact.pipelines.identity import load_identity

            return load_identity(pipe, person.identity)
        return pipe.encode_faces(face_pixels=pixels, qualities=qualities, combine=combine)

    if len(analysed) == 1 and analysed[0][0].region is None:
        return {"face_tokens": tokens(*analysed[0])}
    return {"face_images": [tokens(*entry) for entry in analysed],
            "face_regions": [entry[0].region for entry in analysed]}


def photo_names(persons: list[Person]) -> list[str]:
    return [photo for person in persons for photo in person.photos]
