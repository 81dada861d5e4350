"""Mutation scores per module from the last `mutmut run` (`make mutate`; configuration: pyproject.toml's
[tool.mutmut]): killed / (killed + survived + no tests), the mutants listed as equivalent in
benchmarks/mutation_equivalent.tsv left out of the denominator, every survivor named.

    .venv/bin/python benchmarks/mutation_scores.py     # after `make mutate`
    .venv/bin/python benchmarks/mutation_scores.py --forget-survivors [MODULE]   # after adding tests: re-check survivors

Writes benchmarks/results/mutation_scores.md.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EQUIVALENT_FILE = ROOT / "benchmarks" / "mutation_equivalent.tsv"  # mutant name <TAB> why no test can tell it apart


def equivalent() -> dict[str, str]:
    """{mutant name: why it is equivalent} from EQUIVALENT_FILE (one per line; # starts a comment)."""
    rows = [line.split("\t", 1) for line in EQUIVALENT_FILE.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    return {name.strip(): why.strip() for name, why in rows}


EQUIVALENT = equivalent()


def statuses() -> dict[str, str]:
    """{mutant name: status} from `mutmut results --all true`."""
    out = subprocess.run([str(Path(sys.executable).parent / "mutmut"), "results", "--all", "true"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.strip().split(": ", 1) for line in out.splitlines() if ": " in line]
    return {name.strip(): status.strip() for name, status in rows}


def module_of(mutant: str) -> str:
    return mutant.split(".x_")[0].split(".xǁ")[0]


def render(found: dict[str, str]) -> str:
    per = collections.defaultdict(collections.Counter)
    alive = ("survived", "no tests")
    for name, status in found.items():  # a listed mutant that a test kills counts as killed
        per[module_of(name)]["equivalent" if name in EQUIVALENT and status in alive else status] += 1
    lines = ["Mutation scores (`make mutate`): killed / (killed + survived + no tests), a timeout counting as "
             "killed; \"no tests\": no selected test runs the mutated function; equivalent mutants and those not "
             "run yet (an interrupted run resumes) are left out.", "",
             "| module | mutants | killed | survived | no tests | equivalent | not run yet | score |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for module, c in sorted(per.items()):
        killed = c["killed"] + c["timeout"]
        counted = killed + c["survived"] + c["no tests"]
        score = f"{100 * killed / counted:.1f} %" if counted else "–"
        lines.append(f"| `{module}` | {sum(c.values())} | {killed} | {c['survived']} | {c['no tests']} | "
                     f"{c['equivalent']} | {c['not checked']} | {score} |")
    lines += ["", "Survivors and mutants no test reaches:", ""]
    lines += [f"- `{n}`: {s}" for n, s in sorted(found.items()) if s in alive and n not in EQUIVALENT]
    lines += ["", "Equivalent:", ""] + [f"- `{n}`: {why}" for n, why in EQUIVALENT.items() if found.get(n) in alive]
    stale = [n for n in EQUIVALENT if found.get(n) not in alive]
    if stale:  # killed now, renumbered or gone: the list needs mending
        lines += ["", "Listed in mutation_equivalent.tsv but not a live mutant (remove them):", ""]
        lines += [f"- `{n}`: {found.get(n, 'no such mutant')}" for n in stale]
    return "\n".join(lines) + "\n"


def forget_survivors(mutants: Path = ROOT / "mutants", prefix: str = "") -> int:
    """Clear the results of mutants (whose names start with `prefix`) that survived, reached no test
    or timed out, and the test-coverage stats, so the next `make mutate` re-checks them with the tests
    as they are now (mutmut itself re-runs a mutant only when its function changes). Returns how many
    were cleared."""
    cleared = 0
    for meta in mutants.rglob("*.meta"):
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        for name, code in codes.items():
            if code is not None and code != 1 and name.startswith(prefix):  # 1: a test failed: killed
                codes[name] = None
                cleared += 1
        meta.write_text(json.dumps(data, indent=4))
    (mutants / "mutmut-stats.json").unlink(missing_ok=True)
    return cleared


def main() -> None:
    if sys.argv[1:2] == ["--forget-survivors"]:  # optionally followed by a module, e.g. diffprompt.diffusion.samplers
        print(f"cleared {forget_survivors(prefix=''.join(sys.argv[2:3]))} results; run `make mutate` to re-check them")
        return
    text = render(statuses())
    (RESULTS / "mutation_scores.md").write_text(text)
    print(text.split("\n\nSurvivors")[0])


if __name__ == "__main__":
    main()
