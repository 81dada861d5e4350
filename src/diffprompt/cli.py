"""The `diffprompt` command line: sub-commands grouped by part.

    diffprompt data ...        list, preview the offline data sets
    diffprompt diffusion ...   train, sample, evaluate, visualize a DDPM
    diffprompt prompting ...   zero-shot, train, evaluate, predict, compare prompts
    diffprompt demo            the main job behind `make demo`
    diffprompt report RUN...   render run folders as one self-contained HTML page

Every part adds its commands through a `register(subparsers)` function; a command's handler
is stored as `func` on its parser and returns an exit code (or None for 0). A `UserError`
anywhere becomes one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError

# Each module exposes register(subparsers).
PARTS = (
    "diffprompt.data.cli",
    "diffprompt.diffusion.cli",
    "diffprompt.prompting.cli",
    "diffprompt.demo",
    "diffprompt.report",
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep our hand-wrapped descriptions and show every default, once: an option whose default is
    None ("not given") says in its help what leaving it out means, so argparse adds nothing to it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffprompt",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=HelpFormatter,
        epilog="Run `diffprompt COMMAND --help` for what each command does and its options.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"diffprompt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in PARTS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # `diffprompt` or `diffprompt data` alone: show the relevant help.
        target = getattr(args, "_parser", parser)
        target.print_help()
        return 0 if args.command is None else 2
    try:
        code = args.func(args)
    except UserError as e:
        print(f"diffprompt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffprompt: interrupted; finished stages and the last checkpoint are kept", file=sys.stderr)
        return 130
    return int(code or 0)


def add_group(sub, name: str, help: str, description: str | None = None):
    """Add a command group (`diffprompt NAME ...`) and return its sub-parsers object."""
    p = sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)
    p.set_defaults(_parser=p, func=None)
    return p.add_subparsers(dest=f"{name}_command", metavar="COMMAND")


def add_command(group_sub, name: str, help: str, description: str | None = None, **kw) -> argparse.ArgumentParser:
    """Add one command to a group; the caller adds arguments and `set_defaults(func=...)`."""
    return group_sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter, **kw)


if __name__ == "__main__":
    sys.exit(main())
