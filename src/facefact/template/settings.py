"""Every knob of the template mode in one dataclass; the defaults are the released ones. Each field's
help and range (`setting(...)`) make `facefact template`'s flags (facefact.cli.settings_flags)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from facefact.errors import ConfigError
from facefact.pipelines.scheduler_names import SCHEDULER_NAMES
from facefact.pipelines.settings import setting

# The release's fixed prompts (app.py), with the comma it forgot after "(low quality:2)" put back.
RELEASE_PROMPT = ("raw photo, masterpiece, simple background, solo, medium shot, high detail face, "
                  "photorealistic, best quality, wearing T-shirt")
RELEASE_NEGATIVE_PROMPT = ("nsfw, paintings, sketches, (worst quality:2), (low quality:2), lowers, normal quality, "
                           "((monochrome)), ((grayscale)), logo, word, character")
CONTROL_KINDS = ("face_pose", "canny")
LANDMARK_SOURCES = ("face_photo", "template")
FACE_POINTS = ("five", "dlib68")
# The face crop each base family works at, its native image size: the crop size unless one is set.
FAMILY_CROP_SIZES = {"sd15": 512, "sdxl": 1024}


@dataclass
class TemplateSettings:
    """How one template portrait is made. Field groups: faces and crop; main pass; controls; mask;
    refine pass; paste. ``controls`` names the maps given to the pipeline's ControlNets, in the
    ControlNets' order (ignored by a pipeline without ControlNet)."""

    prompt: str = setting(RELEASE_PROMPT, "text prompt", shown="the release's fixed portrait prompt")
    negative_prompt: str = setting(RELEASE_NEGATIVE_PROMPT, "what the images should not show",
                                   shown="the release's negative prompt")
    # faces and crop
    max_faces: int | None = setting(None, "keep only the N largest template faces (default: all)", low=1)
    min_face_px: float = setting(48.0, "smallest face to redraw, in px (a smaller one would be mostly upscaling)",
                                 low=1.0)
    face_fraction: float = setting(0.7, "face box side / crop side (the crop is ~1.43x the face)", low=0.1, high=1.0)
    crop_size: int | None = setting(None, "the face crop the model works on, a multiple of 8 (default: the base "
                                          "model's own size, 512 for SD1.5, 1024 for SDXL)", low=64, high=2048)
    black_out_others: bool = setting(True, "paint the other kept faces black in the model's input (they are never "
                                           "pasted over either way)")
    # main pass
    strength: float = setting(0.6, "denoising strength of the main pass (strength x steps are run)", low=0.0, high=1.0)
    guidance_scale: float = setting(5.0, "classifier-free guidance scale", low=0.0, high=100.0)
    steps: int = setting(50, "nominal denoising steps; strength x steps are run", low=1, high=500)
    scheduler: str = setting("pndm", "sampler (pndm: the release's)", choices=SCHEDULER_NAMES)
    fact_scale: float = setting(0.55, "FACT adapter scale of the main pass", low=0.0, high=2.0)
    cfg_face: bool = setting(True, "the unconditional branch of guidance uses the null face tokens")
    # controls
    controls: tuple[str, ...] = setting(CONTROL_KINDS, "maps for the ControlNets, in their order (face_pose, canny)",
                                        metavar="MAP,...")
    control_scales: tuple[float, ...] = setting((1.0, 0.2), "main-pass strength of each control", metavar="X,...",
                                                shown="1.0,0.2: the release's face / Canny")
    canny_low: int = setting(100, "Canny's lower threshold", low=0, high=1000)
    canny_high: int = setting(200, "Canny's upper threshold", low=0, high=1000)
    canny_face_grow: float = setting(0.05, "edges removed from the face, grown below the eyes by this x sqrt(area)",
                                     low=0.0, high=1.0)
    face_points: str = setting("five", "landmarks in the face map: the detector's 5, or OpenPose's 70 from dlib's "
                                       "68-point model (non-commercial licence)", choices=FACE_POINTS)
    landmark_source: str = setting("face_photo", "map the new person's landmarks onto the face, or keep the "
                                                 "template's", choices=LANDMARK_SOURCES)
    # pose stage (the release's optional first step: a text-to-image portrait for the face shape)
    pose_stage: bool = setting(False, "first draw a text-to-image portrait of the person and take the new face's "
                                      "landmarks from it (the release's first step), not from the face photo")
    pose_fact_scale: float = setting(0.5, "FACT scale of the pose stage", low=0.0, high=2.0)
    pose_steps: int | None = setting(None, "steps of the pose stage (default: the main pass's)", low=1, high=500)
    # inpaint mask
    mask_grow: float = setting(0.04, "mask growth everywhere, x sqrt(face area)", low=0.0, high=1.0)
    mask_grow_below_eyes: float = setting(0.1, "further growth below the eye line, into the face or the new face "
                                               "only, x sqrt(face area)", low=0.0, high=1.0)
    # refine pass
    refine: bool = setting(True, "the release's light second pass over the face")
    refine_strength: float = setting(0.1, "denoising strength of the refine pass", low=0.0, high=1.0)
    refine_control_scales: tuple[float, ...] = setting((0.8, 0.8), "refine-pass strength of each control",
                                                       metavar="X,...")
    refine_mask_grow: float = setting(0.02, "refine mask growth, x sqrt(face area)", low=0.0, high=1.0)
    refine_steps: int | None = setting(None, "nominal steps of the refine pass (default: the main pass's)", low=1, high=500)
    extra: dict = field(default_factory=dict, metadata={"cli": False})  # passed on to the pipeline call as is

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
        if self.crop_size is not None and (self.crop_size < 64 or self.crop_size % 8):
            raise ConfigError(f"crop_size {self.crop_size} must be a multiple of 8, at least 64",
                              hint="512 is SD1.5's size, 1024 SDXL's", setting="crop_size")
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

    def for_family(self, family: str) -> "TemplateSettings":
        """These settings for a base of ``family`` ("sd15" / "sdxl"): the crop size, where none is
        set, that family's own (FAMILY_CROP_SIZES)."""
        if family not in FAMILY_CROP_SIZES:
            raise ConfigError(f"unknown base family '{family}'", hint=f"one of: {', '.join(FAMILY_CROP_SIZES)}")
        if self.crop_size is not None:
            return self
        return replace(self, crop_size=FAMILY_CROP_SIZES[family])

    def as_dict(self) -> dict:
        out = asdict(self)
        out["controls"], out["control_scales"] = list(self.controls), list(self.control_scales)
        out["refine_control_scales"] = list(self.refine_control_scales)
        return out


def _range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    bad = value <= low if low_open else value < low
    if bad or value > high:
        raise ConfigError(f"{name} {value} is outside {'(' if low_open else '['}{low}, {high}]")
