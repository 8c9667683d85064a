"""What the command groups share: the store, tables, following a job, YAML, and the flags a
stage config generates.

Nothing here imports pydantic, torch or the store at module level: `cai --help` loads only
argparse. A config class reaches `add_config_flags` only when the command line names its command.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import types
import typing
from typing import TYPE_CHECKING

from cai_engine.fields import config_field, field_bounds, sampling_with

if TYPE_CHECKING:
    from cai_engine.jobs import Job
    from cai_engine.store import Store


# -- output ---------------------------------------------------------------------------------


def open_store(args):
    from cai_engine.store import Store

    return Store(args.home)


def table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def one_line(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_text(job: Job) -> str:
    """The job's counts, e.g. "12/36 pairs (33%)" or "step 6/40 (15%)"."""
    from cai_engine.progress import counts

    text = counts(job.done, job.total, job.unit)
    return text + (f" ({100 * job.done / job.total:.0f}%)" if job.total else "")


def time_left(job: Job) -> str:
    """ "about 3 min 20 s" for a running job with a pace; "" for any other."""
    from cai_engine.progress import format_duration

    left = job.eta
    return f"about {format_duration(left)}" if left else ""


def command_line(args) -> str:
    """The command line that ran, for manifests (quoted so it can be pasted back)."""
    import shlex

    return shlex.join(["cai", *args.argv])


# -- jobs -----------------------------------------------------------------------------------


def follow(store: Store, job: Job, stream=None) -> int:
    """Show a job's progress until it ends; returns 0 if it succeeded, else 1."""
    from cai_engine import jobs
    from cai_engine.progress import describe, fraction, shown_phase

    stream = stream or sys.stdout
    tty = stream.isatty()
    width = shutil.get_terminal_size().columns - 1
    last = [None]

    def show(j):
        # the same line the studio shows: what it is doing while nothing is counted yet,
        # then its counts and the time left, with a bar while the total is known
        bar = ""
        if j.total:
            filled = int(30 * fraction(j))
            bar = "[" + "#" * filled + "." * (30 - filled) + "] "
        line = f"{j.id} {j.status}: {bar}{describe(j, rate=True, status=False)}"
        if tty:  # one line, redrawn in place: cut to the terminal, the rest of it cleared
            print("\r" + line[:width] + "\x1b[K", end="", file=stream, flush=True)
            return
        # a log file gets a line when something but the clock changed
        state = (j.status, j.done, j.total, shown_phase(j))
        if state != last[0]:
            print(line, file=stream, flush=True)
        last[0] = state

    try:
        final = jobs.wait(store, job.id, poll=0.5, on_update=show)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; the job goes on. `cai jobs cancel {job.id}` stops it.",
            file=stream,
        )
        return 130
    if tty:
        print(file=stream)
    print(f"{final.id} {final.status}" + (f": {final.error}" if final.error else ""), file=stream)
    return 0 if final.status == "succeeded" else 1


def submit_and_follow(args, submit, config: dict, then=None) -> int:
    """Submit a job with `submit(store, config, label)`, print its id, and with --wait follow it
    (then call `then(store, job_id)`, e.g. to print its results)."""
    store = open_store(args)
    job = submit(store, config, args.label)
    print(f"submitted {job.id}")
    if not args.wait:
        return 0
    code = follow(store, job)
    if then is not None:
        then(store, job.id)
    return code


def add_job_flags(parser, wait_help: str = "follow it until it ends") -> None:
    """--label and --wait, which every job-submitting command takes."""
    parser.add_argument("--label", help="a label to show beside the job id")
    parser.add_argument("--wait", action="store_true", help=wait_help)


# -- YAML and --set -------------------------------------------------------------------------


def load_yaml(text: str, source: str):
    """YAML from a config file or a --set value; a syntax error names the source and line."""
    import yaml

    from cai_engine.errors import CaiError

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = " ".join(x for x in (e.context, e.problem) if x)
        where = f"{source}:{line}" if line else source
        raise CaiError(f"{where}: YAML syntax error: {what} (line {line})") from None
    except yaml.YAMLError as e:
        raise CaiError(f"{source}: not valid YAML: {e}") from None


def load_config_file(path: str | None, what: str = "config keys") -> dict:
    """The mapping a --config YAML file holds ({} without a file)."""
    from cai_engine.errors import CaiError
    from cai_engine.files import read_user_text

    if not path:
        return {}
    loaded = load_yaml(read_user_text(path), path)
    if not isinstance(loaded, dict):
        raise CaiError(f"{path}: expected a mapping of {what}")
    return loaded


def parse_sets(items: list[str] | None) -> dict:
    """`--set KEY=VALUE` options as a dict; each value is read as YAML."""
    from cai_engine.errors import CaiError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CaiError(f"--set expects KEY=VALUE, got '{item}'")
        out[key.strip()] = load_yaml(value, f"--set {key.strip()}") if value.strip() else None
    return out


def add_set_flags(parser, config_help: str) -> None:
    """--config FILE and --set KEY=VALUE: config keys from a YAML file and one by one."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="set a config key (repeatable)"
    )


# -- flags from a config --------------------------------------------------------------------
#
# A stage's pydantic config is the one place its defaults, bounds and help live. Each field
# becomes a flag whose argparse default is SUPPRESS: a flag left out is absent from `args`, so
# the config's own default applies when the job validates its config. Bounds are shown in the
# help, not enforced here, so a bad value gets the job config's one-line error (exit status 1).

_SIGNS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def command_of(argv: list[str]) -> str | None:
    """The command an argv names: its first word after the global options (--home X, --debug)."""
    words = iter(argv)
    for word in words:
        if len(word) > 3 and "--home".startswith(word):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _plain_type(annotation):
    """`int | None` → int; other annotations as they are."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _optional(field) -> bool:
    return type(None) in typing.get_args(field.annotation)


def _shown(value) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def _skips_with_none(field) -> bool:
    """An optional text field with a default: 'none' on the command line sets it to None."""
    return _optional(field) and _plain_type(field.annotation) is str and field.default is not None


def field_help(field, default=None) -> str:
    """A field's description, then "(required)" or "(default: ...)", then its bounds."""
    text = field.description or ""
    if field.is_required():
        text += " (required)"
    else:
        default = field.get_default(call_default_factory=True) if default is None else default
        if default is not None:
            text += f" (default: {_shown(default)}" + (
                "; 'none' skips it)" if _skips_with_none(field) else ")"
            )
    bounds = [f"{_SIGNS[key]}{value}" for key, value in field_bounds(field).items()]
    if bounds:
        text += f" [{', '.join(bounds)}]"
    return text.strip().replace("%", "%%")


def _add_field_flag(parser, flag, field, *, dest=None, default=None, required=False, **extra):
    annotation = _plain_type(field.annotation)
    kwargs = {"default": argparse.SUPPRESS, "help": field_help(field, default), **extra}
    if dest:
        kwargs["dest"] = dest
    if required and field.is_required():
        kwargs["required"] = True
    origin = typing.get_origin(annotation)
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is typing.Literal:
        kwargs["choices"] = list(typing.get_args(annotation))
    elif annotation in (int, float):
        kwargs["type"] = annotation
    elif origin is list:
        kwargs["nargs"] = "+"
    elif origin is tuple:
        kwargs.setdefault("metavar", "LOW,HIGH")
    parser.add_argument(flag, **kwargs)


def add_config_flags(
    parser,
    model_cls,
    *,
    sampling: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    required: bool = False,
    metavars: dict[str, str] | None = None,
    defaults: dict | None = None,
) -> None:
    """One flag per field of `model_cls`, with the field's description, default and bounds as
    its help (one source). A flag the parser already has is left alone, so a command can define
    its own form of a field first.

    Args:
        sampling (`tuple[str, ...]`, *optional*):
            Fields of the nested `sampling: SamplingParams` to expose as flags (e.g.
            `("max_new_tokens", "temperature", "seed")`); their defaults come from the config's
            `default_factory`. A config with its own `seed` takes `--seed` for both.
        skip (`tuple[str, ...]`, *optional*):
            Fields that get no flag.
        required (`bool`, *optional*, defaults to `False`):
            Make argparse require the fields without a default (not for `cai train`, whose
            `--config` file may give them).
        metavars (`dict[str, str]`, *optional*):
            A metavar per field name, e.g. `{"pairs": "JOB"}`.
        defaults (`dict`, *optional*):
            Defaults the command applies instead of the config's, shown in the help.
    """
    from pydantic import BaseModel

    metavars, defaults = metavars or {}, defaults or {}
    have = {s for a in parser._actions for s in a.option_strings}
    # The class's own fields first, then those it shares through a base (e.g. the judge
    # check's settings): pydantic lists inherited fields first.
    own = model_cls.__dict__.get("__annotations__", {})
    fields = sorted(model_cls.model_fields.items(), key=lambda item: item[0] not in own)
    for name, field in fields:
        flag = "--" + name.replace("_", "-")
        kind = _plain_type(field.annotation)
        if flag in have or name in skip or (isinstance(kind, type) and issubclass(kind, BaseModel)):
            continue
        extra = {"metavar": metavars[name]} if name in metavars else {}
        _add_field_flag(parser, flag, field, required=required, default=defaults.get(name), **extra)
    for name in sampling:
        flag = "--" + name.replace("_", "-")
        if flag not in {s for a in parser._actions for s in a.option_strings}:
            field, default = config_field(model_cls, f"sampling.{name}")
            _add_field_flag(
                parser, flag, field, dest=f"sampling.{name}", default=default, metavar=name.upper()
            )


def config_from_args(args, model_cls, sampling: tuple[str, ...] = ()) -> dict:
    """The config keys the command line gave (flags left out keep the config's defaults).

    Nested sampling flags are merged into the config's default sampling, and a config's own
    `seed` seeds its sampling too.
    """
    from cai_engine.errors import CaiError

    given = vars(args)
    config = {}
    for name, field in model_cls.model_fields.items():
        if name not in given:
            continue
        value = given[name]
        if _skips_with_none(field) and value in ("", "none"):
            value = None
        elif typing.get_origin(_plain_type(field.annotation)) is tuple and isinstance(value, str):
            size = len(typing.get_args(_plain_type(field.annotation)))
            flag, example = "--" + name.replace("_", "-"), _shown(field.default)
            try:
                value = [float(x) for x in value.split(",")]
            except ValueError:
                value = []
            if len(value) != size:
                raise CaiError(f"{flag} takes LOW,HIGH such as {example}, not '{given[name]}'")
        config[name] = value
    chosen = {k: given[f"sampling.{k}"] for k in sampling if f"sampling.{k}" in given}
    if "seed" in sampling and "seed" in config:
        chosen["seed"] = config["seed"]
    if chosen:
        config["sampling"] = sampling_with(model_cls, **chosen)
    return config


def flag_table(model_cls, **flag_options) -> str:
    """A Markdown table of the flags `add_config_flags(parser, model_cls, **flag_options)`
    makes, each with its help (description, default, bounds): for the README."""
    parser = argparse.ArgumentParser(add_help=False)
    add_config_flags(parser, model_cls, **flag_options)
    rows = ["| flag | help |", "| --- | --- |"]
    for action in parser._actions:
        flags = ", ".join(f"`{s}`" for s in action.option_strings)
        help_ = action.help.replace("%%", "%").replace("|", "\\|")
        rows.append(f"| {flags} | {help_} |")
    return "\n".join(rows)


def add_command(sub, name: str, func, help: str, **kwargs):
    """A subcommand whose handler is `func`."""
    parser = sub.add_parser(name, help=help, **kwargs)
    parser.set_defaults(func=func)
    return parser


__all__ = [
    "add_command",
    "add_config_flags",
    "add_job_flags",
    "add_set_flags",
    "command_line",
    "command_of",
    "config_from_args",
    "duration",
    "field_help",
    "flag_table",
    "follow",
    "load_config_file",
    "load_yaml",
    "one_line",
    "open_store",
    "parse_sets",
    "progress_text",
    "submit_and_follow",
    "table",
    "time_left",
]
