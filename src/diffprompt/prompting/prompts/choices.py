"""The names a user picks the prompt parts by (torch-free: the CLI and the configs read them)."""

from __future__ import annotations

from ...errors import UserError

AUTO = "auto"  # --verbalizer auto: label words searched on the training examples (run/label_search.py)
CALIBRATIONS = ("none", "content-free", "domain")  # --calibrate (calibration.py)
DEMOS = ("none", "random", "similar")  # --demos (demonstrations.py)
PROMPT_ENCODERS = ("lstm", "mlp")  # --prompt-encoder (prompt_encoder.py)


def check_calibration(kind: str) -> str:
    if kind not in CALIBRATIONS:
        raise UserError(f"--calibrate must be one of {', '.join(CALIBRATIONS)}; got {kind!r}")
    return kind
