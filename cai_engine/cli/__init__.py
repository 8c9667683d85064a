"""The `cai` command line. Each command is a thin shell around an engine function.

One module per command group (`cli/critique.py` is `cai critique`), each with its handlers and
a `register(sub, full)` that adds its parser beside them. A stage's flags come from its pydantic
config (`common.add_config_flags`), so defaults, bounds and help live in one place.

Heavy modules are imported inside the handlers, and a command's config only when the command
line names that command (`full`), so `cai --help` stays instant. A `CaiError` becomes one clear
line on stderr and exit status 1; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cai_engine.cli.common import add_config_flags, command_of, config_from_args, flag_table, follow

# In `cai --help` order. Each module registers the command of its name (studio: init and studio;
# `import`, a Python keyword, is `cli/imports.py`).
GROUPS = (
    "studio",
    "constitution",
    "prompts",
    "jobs",
    "models",
    "generate",
    "critique",
    "pairs",
    "label",
    "judge",
    "demo",
    "eval",
    "review",
    "import",
    "export",
    "train",
    "vllm",
)

MODULES = {"import": "imports"}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The CLI. A command's config flags are added when `argv` names that command (or when there
    is no `argv`: the whole parser), so `cai --help` imports no config."""
    parser = argparse.ArgumentParser(
        prog="cai", description="CAI Studio: a Constitutional AI workbench."
    )
    parser.add_argument(
        "--home",
        help="data home (default: $CAI_HOME, else storage/ in a checkout, or ~/.local/share/cai-studio when installed)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    selected = None if argv is None else command_of(argv)
    for name in GROUPS:
        module = importlib.import_module(f"cai_engine.cli.{MODULES.get(name, name)}")
        module.register(sub, full=argv is None or selected == name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        from cai_engine.errors import CaiError

        if isinstance(e, CaiError):
            print(f"error: {e}", file=sys.stderr)
        else:
            print(
                f"error: {type(e).__name__}: {e} (run with --debug for the traceback)",
                file=sys.stderr,
            )
        return 1


__all__ = [
    "GROUPS",
    "add_config_flags",
    "build_parser",
    "command_of",
    "config_from_args",
    "flag_table",
    "follow",
    "main",
]
