"""diffprompt: denoising diffusion models and prompt-based learning, faithful to the papers."""

__version__ = "0.1.0"
