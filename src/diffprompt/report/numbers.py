"""How numbers appear on the results page: rounded to what their noise supports.

Units live in the column header ("s / image", "accuracy (%)"), so a cell holds a bare number.
A value with an error bar keeps two significant digits of the error and rounds the value to
the same decimal place ("362 ± 54", "2.109 ± 0.048"); FIDs show one decimal; accuracies are
percentages with one decimal; timings keep two significant digits (a shared machine's timings
vary by more than 1 %).
"""

from __future__ import annotations

import math

DASH = "—"


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fixed(v, decimals: int) -> str:
    """`v` rounded to `decimals` places; a negative count rounds to tens, hundreds, ..."""
    if not is_number(v):
        return DASH
    if decimals >= 0:
        return f"{v:.{decimals}f}"
    return f"{round(v, decimals):.0f}"


def _decimals(v: float, digits: int) -> int:
    """Decimal places that show `digits` significant digits of `v`."""
    return digits - 1 - math.floor(math.log10(abs(v)))


def sig(v, digits: int = 2) -> str:
    """`v` to `digits` significant digits, never in exponent notation."""
    if not is_number(v):
        return DASH
    return "0" if v == 0 else fixed(v, _decimals(v, digits))


def plus_minus(mean, err, digits: int = 2) -> str:
    """`mean ± err` with `digits` significant digits of the error; a missing error: 3 digits of the mean."""
    if not is_number(mean):
        return DASH
    if not is_number(err) or err <= 0:
        return sig(mean, 3)
    d = _decimals(err, digits)
    return f"{fixed(mean, d)} ± {fixed(err, d)}"


def one_decimal(v) -> str:
    return f"{v:.1f}" if is_number(v) else DASH


def percent(v, decimals: int = 1) -> str:
    """A fraction in [0, 1] as a percentage (the header says %)."""
    return f"{100 * v:.{decimals}f}" if is_number(v) else DASH


def percent_pm(mean, std, n: int) -> str:
    """Mean accuracy over n seeds in %, with its standard deviation where there are several."""
    if n > 1 and is_number(std):
        return f"{percent(mean)} ± {percent(std)}"
    return percent(mean)


def points(v) -> str:
    """A difference of percentages, in points with its sign."""
    return f"{100 * v:+.1f}" if is_number(v) else DASH


def times(v) -> str:
    """A ratio such as a speed-up."""
    return f"{v:.1f}×" if is_number(v) else DASH


def seconds(v) -> str:
    """A duration in seconds: whole seconds from 10 s up, else two significant digits."""
    if not is_number(v):
        return DASH
    return f"{v:.0f}" if abs(v) >= 10 else sig(v, 2)


def count(v) -> str:
    """An integer with thousands separated by thin spaces (5 000)."""
    return f"{v:,}".replace(",", "\u2009") if isinstance(v, int) and not isinstance(v, bool) else DASH
