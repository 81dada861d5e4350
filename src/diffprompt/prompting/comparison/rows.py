"""The rows of a comparison: a row is a method plus options, e.g. `prompt-ft+demos-similar`.

A row name is `BASE[+OPTION...]`. BASE is a method of the registry (`zero-shot`, `prompt-ft`,
`soft`, `hybrid`, `finetune`, `pet`, `prefix-tuning`, `p-tuning-v2`, and the reference
`embedding-logreg`, which is not a prompting method) or `pet-distilled`; each OPTION sets one run
setting:

| option             | run setting                                   |
| ------------------ | --------------------------------------------- |
| `demos-random`     | `demos = "random"` (LM-BFF demonstrations)    |
| `demos-similar`    | `demos = "similar"`                           |
| `auto`             | `verbalizer = "auto"` (automatic label words) |
| `cal-content-free` | `calibrate = "content-free"`                  |
| `cal-domain`       | `calibrate = "domain"`                        |

A row reads one number of its run's results.json: its method's `metric` (the registry's;
`test_accuracy`, but `ensemble_test_accuracy` for `pet`); `pet-distilled` reads the distilled
model's `test_accuracy`. Rows that differ only in what they read share one run: `pet` and
`pet-distilled` are one PET run per cell, its folder named by the row's `run` (`pet`).
Torch-free: the CLI parses rows at import speed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UserError
from ..methods.registry import METHOD_NAMES, get_method

OPTIONS: dict[str, tuple[str, str]] = {  # row option -> (run setting, value)
    "demos-random": ("demos", "random"),
    "demos-similar": ("demos", "similar"),
    "auto": ("verbalizer", "auto"),
    "cal-content-free": ("calibrate", "content-free"),
    "cal-domain": ("calibrate", "domain"),
}
# bases that are not methods: (method, the results.json number the row reads)
ALIASES: dict[str, tuple[str, str]] = {"pet-distilled": ("pet", "test_accuracy")}
BASES = (*METHOD_NAMES, *ALIASES)


@dataclass(frozen=True)
class Row:
    name: str  # as written, e.g. "pet-distilled+auto"
    method: str  # the method the run trains
    options: tuple[str, ...]  # the row options, in the order given
    metric: str  # the results.json key this row shows

    @property
    def run(self) -> str:
        """The run (cell folder) name: the method and the options; rows with the same run share it."""
        return "+".join((self.method, *self.options))

    def settings(self) -> dict[str, str]:
        """The run settings its options set, by RunConfig field name."""
        return dict(OPTIONS[o] for o in self.options)


def parse_row(name: str) -> Row:
    """A row from its name; an unknown base or option, or one option twice, is a one-line UserError."""
    base, *options = [part.strip() for part in str(name).strip().split("+")]
    if base in ALIASES:
        method, metric = ALIASES[base]
    elif base in METHOD_NAMES:
        method, metric = base, get_method(base).metric
    else:
        raise UserError(f"unknown method {base!r} in row {name!r}; a row is METHOD[+OPTION...], METHOD one of "
                        f"{', '.join(BASES)}, OPTION one of {', '.join(OPTIONS)}")
    for o in options:
        if o not in OPTIONS:
            raise UserError(f"unknown option {o!r} in row {name!r}; options: {', '.join(OPTIONS)}")
    fields = [OPTIONS[o][0] for o in options]
    if len(set(fields)) != len(fields):
        raise UserError(f"row {name!r} sets {', '.join(sorted({f for f in fields if fields.count(f) > 1}))} twice")
    return Row(str(name).strip(), method, tuple(options), metric)


def parse_rows(text: str) -> list[str]:
    """Comma-separated row names, each checked (`--rows`)."""
    names = [s.strip() for s in str(text).split(",") if s.strip()]
    if not names:
        raise UserError("no row given; choose from: " + ", ".join(BASES) + " (with +OPTION: " + ", ".join(OPTIONS) + ")")
    for n in names:
        parse_row(n)
    return names
