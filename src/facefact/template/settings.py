"""Every knob of the template mode in one dataclass; the defaults are the released ones."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from facefact.errors import ConfigError

# The release's fixed prompts (app.py), with the comma it forgot after "(low quality:2)" put back.
RELEASE_PROMPT = ("raw photo, masterpiece, simple background, solo, medium shot, high detail face, "
                  "photorealistic, best quality, wearing T-shirt")
RELEASE_NEGATIVE_PROMPT = ("nsfw, paintings, sketches, (worst quality:2), (low quality:2), lowers, normal quality, "
                           "((monochrome)), ((grayscale)), logo, word, character")
CONTROL_KINDS = ("face_pose", "canny")
LANDMARK_SOURCES = ("face_photo", "template")
FACE_POINTS = ("five", "dlib68")


@dataclass
class TemplateSettings:
    """How one template portrait is made. Field groups: faces and crop; main pass; controls; mask;
    refine pass; paste. ``controls`` names the maps given to the pipeline's ControlNets, in the
    ControlNets' order (ignored by a pipeline without ControlNet)."""

    prompt: str = RELEASE_PROMPT
    negative_prompt: str = RELEASE_NEGATIVE_PROMPT
    # faces and crop
    max_faces: int | None = None          # keep the N largest template faces (None: all)
    min_face_px: float = 48.0             # a smaller target face is refused (the crop would be mostly upscaling)
    face_fraction: float = 0.7            # face box side / crop side (crop ~1.43x the face)
    crop_size: int = 512                  # the crop the pipeline works on
    black_out_others: bool = True         # other kept faces are black in the pipeline's input
    # main pass
    strength: float = 0.6
    guidance_scale: float = 5.0
    steps: int = 50
    scheduler: str = "pndm"
    fact_scale: float = 0.55
    cfg_face: bool = True
    # controls
    controls: tuple[str, ...] = CONTROL_KINDS
    control_scales: tuple[float, ...] = (1.0, 0.2)
    canny_low: int = 100
    canny_high: int = 200
    canny_face_grow: float = 0.05         # edges removed from the face, grown below the eyes by this
    face_points: str = "five"             # "five" (detector) or "dlib68" (OpenPose's 70; non-commercial model)
    landmark_source: str = "face_photo"   # map the new person's landmarks onto the face, or keep the template's
    # pose stage (the release's optional first step: a text-to-image portrait for the face shape)
    pose_stage: bool = False
    pose_fact_scale: float = 0.5
    pose_steps: int | None = None         # None: the main pass's steps
    # inpaint mask
    mask_grow: float = 0.04               # kernel side / sqrt(face area), everywhere
    mask_grow_below_eyes: float = 0.1     # again below the eye line, into the face or the new face only
    # refine pass
    refine: bool = True
    refine_strength: float = 0.1
    refine_control_scales: tuple[float, ...] = (0.8, 0.8)
    refine_mask_grow: float = 0.02
    refine_steps: int | None = None       # None: the main pass's steps
    extra: dict = field(default_factory=dict)  # passed on to the pipeline call as is

    def __post_init__(self):
        self.controls = tuple(self.controls)
        self.control_scales = tuple(float(s) for s in self.control_scales)
        self.refine_control_scales = tuple(float(s) for s in self.refine_control_scales)

    def validate(self) -> "TemplateSettings":
        _range("strength", self.strength, 0.0, 1.0, low_open=True)
        _range("refine_strength", self.refine_strength, 0.0, 1.0, low_open=True)
        _range("fact_scale", self.fact_scale, 0.0, 2.0)
        _range("pose_fact_scale", self.pose_fact_scale, 0.0, 2.0)
        if self.pose_steps is not None and self.pose_steps < 1:
            raise ConfigError("pose_steps must be at least 1")
        _range("face_fraction", self.face_fraction, 0.1, 1.0)
        for name in ("mask_grow", "mask_grow_below_eyes", "refine_mask_grow", "canny_face_grow"):
            _range(name, getattr(self, name), 0.0, 1.0)
        if self.crop_size < 64 or self.crop_size % 8:
            raise ConfigError(f"crop_size {self.crop_size} must be a multiple of 8, at least 64",
                              hint="512 is SD1.5's size")
        if self.steps < 1 or (self.refine_steps is not None and self.refine_steps < 1):
            raise ConfigError("steps must be at least 1")
        for name, strength, steps in (("main", self.strength, self.steps),
                                      ("refine", self.refine_strength, self.refine_steps or self.steps)):
            if (name == "main" or self.refine) and int(steps * strength) < 1:
                raise ConfigError(f"the {name} pass would run no step: {steps} steps x strength {strength} < 1",
                                  hint=f"use at least {int(1 / strength) + 1} steps (diffusers runs "
                                       f"int(steps * strength) of them)")
        unknown = [c for c in self.controls if c not in CONTROL_KINDS]
        if unknown:
            raise ConfigError(f"unknown control '{unknown[0]}'", hint=f"choose from: {', '.join(CONTROL_KINDS)}")
        for name in ("control_scales", "refine_control_scales"):
            if len(getattr(self, name)) != len(self.controls):
                raise ConfigError(f"{name} has {len(getattr(self, name))} values for {len(self.controls)} controls "
                                  f"({', '.join(self.controls)})", hint="give one scale per control")
        if self.face_points not in FACE_POINTS:
            raise ConfigError(f"unknown face_points '{self.face_points}'", hint=f"choose from: {', '.join(FACE_POINTS)}")
        if self.landmark_source not in LANDMARK_SOURCES:
            raise ConfigError(f"unknown landmark_source '{self.landmark_source}'",
                              hint=f"choose from: {', '.join(LANDMARK_SOURCES)}")
        if self.max_faces is not None and self.max_faces < 1:
            raise ConfigError("max_faces must be at least 1 (or None for all faces)")
        return self

    def as_dict(self) -> dict:
        out = asdict(self)
        out["controls"], out["control_scales"] = list(self.controls), list(self.control_scales)
        out["refine_control_scales"] = list(self.refine_control_scales)
        return out


def _range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    bad = value <= low if low_open else value < low
    if bad or value > high:
        raise ConfigError(f"{name} {value} is outside {'(' if low_open else '['}{low}, {high}]")
