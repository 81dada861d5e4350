"""The names a user picks from, in one torch-free place (the CLI reads them without importing torch)."""

SAMPLER_NAMES = ("ddpm", "ddim", "dpm++2m")
SPACINGS = ("linspace", "leading", "trailing")  # diffusers' `timestep_spacing` names
DEFAULT_STEPS = {"ddpm": None, "ddim": 50, "dpm++2m": 20}  # None: all T steps
DEFAULT_EVAL_SAMPLERS = "ddpm,ddim:20,ddim:50,dpm++2m:10,dpm++2m:20"  # what `evaluate` compares unless told
