"""The samplers facefact offers, by the short name used on the command line and in config files.

Plain data, no torch or diffusers import: the CLI's parsers list these names as choices, and
``facefact --help`` must not load the heavy libraries. ``loading.make_scheduler`` builds them.
"""
from __future__ import annotations

# name -> (diffusers scheduler class name, config overrides)
SCHEDULERS = {
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),  # what the FACT release used
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
}

SCHEDULER_NAMES = tuple(SCHEDULERS)
