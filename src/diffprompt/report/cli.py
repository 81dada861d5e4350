"""`diffprompt report RUN_DIR...`: the command line of the results page."""

from __future__ import annotations

from ..cli import HelpFormatter


def _cmd_report(args) -> int:
    from .page import render_report  # imported here: the page's modules import torch and matplotlib

    print(render_report(args.runs, out=args.out, allow_incomplete=args.allow_incomplete))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="render run folders as one self-contained report.html",
        description=("Render one or more run folders (diffusion, prompting, or the demo's runs/demo) as a\n"
                     "single HTML results page: headline findings first, then pictures and metric tables,\n"
                     "then the configs and raw JSON. Every picture is inlined: open it offline, mail it.\n\n"
                     "example:\n  diffprompt report runs/demo\n  diffprompt report runs/ddpm runs/compare --out both.html"),
        formatter_class=HelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (each holds config.json)")
    p.add_argument("--out", default=None, help="output file (default: RUN_DIR/report.html of the first run)")
    p.add_argument("--allow-incomplete", action="store_true", help="render runs without a DONE marker too")
    p.set_defaults(func=_cmd_report)
