"""Constitutions: principles plus few-shot banks, validated, content-hashed and diffable.

A constitution is the user's text. It loads through pydantic models with `extra="forbid"`,
so a misspelt key is an error, and every error names the file, the line and the field.
A version's identity is the sha256 of its canonical JSON (defaults left out, keys sorted),
so saving the same text twice adds nothing and adding an optional field later does not
change the hashes of existing versions.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cai_engine.errors import CaiError
from cai_engine.files import decode_user_bytes, read_user_bytes

SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_TEXT = 20_000  # characters in any one text field
MAX_YAML_NODES = 200_000  # after alias expansion; stops "billion laughs" documents

Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Slug = Annotated[str, Field(pattern=SLUG)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="after")
    def _no_blank_text(self):
        required = type(self)._required_text()
        blank = [n for n, v in self if n in required and isinstance(v, str) and not v.strip()]
        if blank:  # every blank field at once, not just the first
            raise ValueError("; ".join(f"'{n}' must not be blank" for n in blank))
        return self

    @classmethod
    def _required_text(cls) -> set[str]:
        return {n for n, f in cls.model_fields.items() if f.annotation is str and f.is_required()}


class Message(_Model):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_TEXT)]


class Principle(_Model):
    id: Slug = Field(description="Stable slug, unique within the constitution.")
    title: Annotated[str, Field(min_length=1, max_length=200)]
    critique_request: Text = Field(description="Asks the model to critique its own last answer.")
    revision_request: Text = Field(description="Asks the model to rewrite that answer.")
    preference_question: Text = Field(description="The RL-CAI multiple-choice instruction.")
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = []
    enabled: bool = True
    weight: float = Field(
        1.0,
        gt=0,
        le=1e6,
        allow_inf_nan=False,
        description="Sampling weight; use enabled: false to drop one.",
    )
    # Optional, so that constitutions written before them keep their hashes (canonical JSON
    # leaves defaults out); `contrastive.contrastive_prompts` derives an absent one.
    positive_prompt: Text | None = Field(
        None,
        description="Contrastive pairs: the system prompt asking for the answer this principle "
        "favours (derived from its preference question when absent).",
    )
    negative_prompt: Text | None = Field(
        None,
        description="Contrastive pairs: the system prompt asking for the answer this principle "
        "disfavours (derived from its preference question when absent).",
    )

    @field_validator("positive_prompt", "negative_prompt")
    @classmethod
    def _no_blank_prompt(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                "must not be blank; leave it out to derive it from the principle's "
                "preference question"
            )
        return value


class FewShotRound(_Model):
    """An earlier critique→revision round of a multi-round few-shot, requests as written."""

    critique_request: Text
    critique: Text
    revision_request: Text
    revision: Text


class FewShot(_Model):
    """A critique→revision example: the conversation ends with the answer being critiqued.

    A multi-round example (llm-swarm chats with several rounds) lists its earlier rounds in
    `earlier_rounds`; the last round's critique and revision are `critique` and `revision`,
    and each round critiques the revision before it. The optional fields are left out of
    canonical JSON when unset, so adding them changed no constitution's hash.
    """

    principle: Slug | None = None
    conversation: list[Message] = Field(min_length=2)
    earlier_rounds: list[FewShotRound] = Field(
        [], description="Earlier critique→revision rounds, oldest first (multi-round few-shots)."
    )
    critique_request: Text | None = Field(
        None,
        description="The critique request as written, when it is not the principle's own "
        "(kept from an imported chat).",
    )
    critique: Text
    revision_request: Text | None = Field(
        None,
        description="The revision request as written, when it is not the principle's own.",
    )
    revision: Text

    @property
    def answer(self) -> str:
        """The answer that the last round critiques."""
        if self.earlier_rounds:
            return self.earlier_rounds[-1].revision
        return self.conversation[-1].content

    @property
    def no_change(self) -> bool:
        """The paper's "no change needed" case: the revision keeps the answer as it was."""
        return self.revision.strip() == self.answer.strip()


class ComparisonFewShot(_Model):
    """A labelled comparison for the feedback model; the conversation ends with a user turn."""

    principle: Slug | None = None
    conversation: list[Message] = Field(min_length=1)
    response_a: Text
    response_b: Text
    preferred: Literal["A", "B"]
    reasoning: Annotated[str, Field(max_length=MAX_TEXT)] = ""


class Constitution(_Model):
    name: Slug
    description: Annotated[str, Field(max_length=MAX_TEXT)] = ""
    principles: list[Principle] = Field(min_length=1)
    few_shots: list[FewShot] = []
    comparison_few_shots: list[ComparisonFewShot] = []

    @model_validator(mode="after")
    def _semantics(self, info: ValidationInfo):
        if not (info.context or {}).get("defer_semantics"):
            problems = semantic_problems(self)
            if problems:
                raise ValueError("; ".join(f"{p.where}: {p.message}" for p in problems))
        return self

    def principle(self, principle_id: str) -> Principle:
        for p in self.principles:
            if p.id == principle_id:
                return p
        raise KeyError(principle_id)

    @property
    def enabled_principles(self) -> list[Principle]:
        return [p for p in self.principles if p.enabled]

    def canonical_json(self) -> str:
        return canonical_json(self)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def warnings(self) -> list[str]:
        """Advice that does not block saving."""
        out = []
        if not self.enabled_principles:
            out.append("every principle is disabled; critique and label jobs will refuse it")
        if self.few_shots and not any(f.no_change for f in self.few_shots):
            out.append(
                "no few-shot shows a 'no change needed' case (revision identical to the answer); "
                "without one the model learns to always rewrite"
            )
        return out


# Which model a location in the document refers to, with list indices removed.
_MODEL_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): Constitution,
    ("principles",): Principle,
    ("few_shots",): FewShot,
    ("few_shots", "conversation"): Message,
    ("few_shots", "earlier_rounds"): FewShotRound,
    ("comparison_few_shots",): ComparisonFewShot,
    ("comparison_few_shots", "conversation"): Message,
}


@dataclass(frozen=True)
class Problem:
    where: str  # e.g. "principles[2].critique_request"
    message: str
    line: int | None = None


class ConstitutionError(CaiError):
    """A constitution that does not validate. `problems` lists every fault found."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = []
        for p in problems:
            at = f"{source}:{p.line}" if p.line else source
            where = f" {p.where}:" if p.where else ""
            lines.append(f"{at}:{where} {p.message}")
        super().__init__("\n".join(lines))


def semantic_problems(c: Constitution) -> list[Problem]:
    """Cross-field checks: unique principle ids, and few-shots that name real principles."""
    return _semantic_problems(c.model_dump(mode="json"))


def _semantic_problems(data: dict) -> list[Problem]:
    """The cross-field checks on raw data, so that they run even when some field is invalid.

    Each check looks only at values of the right type; a value of the wrong type is already
    reported by pydantic, and guessing around it would only add noise.
    """
    problems = []
    seen: dict[str, int] = {}
    principles = data.get("principles")
    for i, p in enumerate(principles if isinstance(principles, list) else []):
        pid = p.get("id") if isinstance(p, dict) else None
        if not isinstance(pid, str) or not pid:
            continue
        if pid in seen:
            problems.append(
                Problem(
                    f"principles[{i}].id",
                    f"duplicate principle id '{pid}' (also used by principles[{seen[pid]}]); "
                    "ids must be unique",
                )
            )
        seen.setdefault(pid, i)
    for bank, last_role, what in (
        ("few_shots", "assistant", "the assistant answer that the critique is about"),
        ("comparison_few_shots", "user", "the user turn that both responses answer"),
    ):
        shots = data.get(bank)
        for i, shot in enumerate(shots if isinstance(shots, list) else []):
            if not isinstance(shot, dict):
                continue
            ref = shot.get("principle")
            if isinstance(ref, str) and isinstance(principles, list) and ref not in seen:
                problems.append(
                    Problem(
                        f"{bank}[{i}].principle",
                        f"unknown principle '{ref}'; known ids: {', '.join(seen)}",
                    )
                )
            turns = shot.get("conversation")
            last = turns[-1] if isinstance(turns, list) and turns else None
            role = last.get("role") if isinstance(last, dict) else None
            if role in ("system", "user", "assistant") and role != last_role:
                problems.append(Problem(f"{bank}[{i}].conversation", f"must end with {what}"))
    return problems


def _in_document_order(problems: list[Problem]) -> list[Problem]:
    """Sort by section (in schema order), then by item index; stable within one item."""
    sections = list(Constitution.model_fields)

    def key(p: Problem) -> tuple[int, int]:
        loc = _parse_loc(p.where)
        section = sections.index(loc[0]) if loc and loc[0] in sections else -1
        index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else -1
        return section, index

    return sorted(problems, key=key)


def canonical_json(c: Constitution) -> str:
    body = c.model_dump(mode="json", exclude_defaults=True)
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# -- loading ------------------------------------------------------------------------------


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_of(node, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at `loc`, or of its nearest existing parent."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            child = next((v for k, v in node.value if k.value == part), None)
            if child is None:  # an unknown key: point at the key itself
                child = next((k for k, _ in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if 0 <= part < len(node.value) else None
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _describe(err: dict) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind == "extra_forbidden":
        model = _MODEL_AT.get(tuple(p for p in loc[:-1] if isinstance(p, str)))
        allowed = ", ".join(model.model_fields) if model else "see the docs"
        return f"unknown key '{loc[-1]}'; allowed keys here: {allowed}"
    if kind == "string_pattern_mismatch":
        return (
            "must be a slug: lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )
    if kind == "too_short" and loc and loc[-1] == "principles":
        return "a constitution needs at least one principle"
    if kind == "string_too_long":
        return f"too long ({len(err['input'])} characters); {err['msg'].lower()}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    got = type(err.get("input")).__name__
    if kind.endswith("_type"):
        return f"{msg} (got {got})"
    return msg


def _expanded_size(node, memo: dict, depth: int = 0) -> int:
    if depth > 200:
        raise RecursionError
    key = id(node)
    if key in memo:
        return memo[key]
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(
            _expanded_size(k, memo, depth + 1) + _expanded_size(v, memo, depth + 1)
            for k, v in node.value
        )
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo, depth + 1) for v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def _parse_document(text: str, source: str):
    """Parse YAML (JSON is a subset) into (data, node tree), with errors that name the line."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader)
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConstitutionError(
                source,
                [
                    Problem(
                        "",
                        f"the document expands to over {MAX_YAML_NODES:,} nodes through "
                        "YAML aliases; write the content out instead of using anchors",
                    )
                ],
            )
        duplicate = _duplicate_key(node) if node is not None else None
        if duplicate:
            key, line, first = duplicate
            raise ConstitutionError(
                source,
                [
                    Problem(
                        "",
                        f"duplicate key '{key}' (first on line {first}); YAML would keep only "
                        "the last value, so remove one of them",
                        line,
                    )
                ],
            )
        data = yaml.load(text, Loader=loader)
    except RecursionError:
        raise ConstitutionError(
            source, [Problem("", "the document is nested too deeply")]
        ) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = " ".join(x for x in (e.context, e.problem) if x)
        if e.context_mark and e.problem_mark and e.context_mark.line != e.problem_mark.line:
            what += f" (the construct starts on line {e.context_mark.line + 1})"
        raise ConstitutionError(source, [Problem("", f"YAML syntax error: {what}", line)]) from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        char = e.character if isinstance(e.character, str) else chr(e.character)
        raise ConstitutionError(
            source,
            [
                Problem(
                    "",
                    f"character #x{ord(char):04x} is not allowed: control characters are not "
                    "allowed in YAML text; remove it",
                    line,
                )
            ],
        ) from None
    except yaml.YAMLError as e:
        raise ConstitutionError(source, [Problem("", f"YAML error: {e}")]) from None
    return data, node


def _duplicate_key(node, seen: set | None = None):
    """(key, line, first line) of the first key repeated within one mapping, or None."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias: already checked
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                if k.value in lines:
                    return k.value, k.start_mark.line + 1, lines[k.value]
                lines[k.value] = k.start_mark.line + 1
            found = _duplicate_key(v, seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            found = _duplicate_key(v, seen)
            if found:
                return found
    return None


def parse_constitution(text: str, source: str = "<text>") -> Constitution:
    """Validate a constitution written as YAML or JSON text.

    Raises:
        `ConstitutionError`: listing every problem with its line and field.
    """
    data, node = _parse_document(text, source)
    return constitution_from_data(data, source, node)


def constitution_from_data(data, source: str = "<data>", node=None) -> Constitution:
    """Validate already-parsed data; `node` (a YAML node tree) adds line numbers to errors."""
    if not isinstance(data, dict):
        got = "nothing" if data is None else type(data).__name__
        raise ConstitutionError(
            source,
            [
                Problem(
                    "",
                    f"expected a mapping with keys name, description, principles, few_shots; got {got}",
                )
            ],
        )
    # Field checks (pydantic) and cross-field checks (ids, references) both run, so one save
    # lists every problem: a blank id in one row must not hide a duplicate id in another.
    problems = []
    try:
        c = Constitution.model_validate(data, context={"defer_semantics": True})
    except ValidationError as e:
        c = None
        for err in e.errors():
            loc = tuple(err["loc"])
            problems.append(Problem(_format_loc(loc), _describe(err), _line_of(node, loc)))
    flagged = {p.where for p in problems}
    problems += [
        Problem(p.where, p.message, _line_of(node, _parse_loc(p.where)))
        for p in _semantic_problems(data)
        if p.where not in flagged
    ]
    if problems:
        raise ConstitutionError(source, _in_document_order(problems))
    return c


def _parse_loc(where: str) -> tuple:
    return tuple(int(x) if x.isdigit() else x for x in re.findall(r"[A-Za-z_]+|\d+", where))


def load_constitution(path) -> Constitution:
    """Load and validate a constitution file (YAML or JSON, UTF-8, at most 10 MB)."""
    return parse_constitution(decode_user_bytes(read_user_bytes(path), str(path)), str(path))


# -- tables (the studio's principle editor) -----------------------------------------------

PRINCIPLE_COLUMNS = [
    "id",
    "title",
    "critique_request",
    "revision_request",
    "preference_question",
    "tags",
    "enabled",
    "weight",
    "positive_prompt",
    "negative_prompt",
]  # fmt: skip  (a blank positive/negative prompt cell: derived, see `contrastive`)


def principles_to_rows(c: Constitution) -> list[dict]:
    """One flat row per principle; tags as comma-separated text."""
    return [{**p.model_dump(), "tags": ", ".join(p.tags)} for p in c.principles]


def _cell(value):
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        value = value.item()
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def principle_renames(base: Constitution, edited_ids: dict[int, object]) -> dict[str, str]:
    """`{old id: new id}` for the principles of `base` whose id cell was changed.

    Args:
        base (`Constitution`): the version the table was loaded from.
        edited_ids (`dict[int, object]`): the id cell of each row still in the table, keyed by
            the row's index in `base.principles` (rows added in the table have no old id and
            are ignored, as are cleared ids and ids that are not valid slugs: references can
            follow only to a valid id).
    """
    renames = {}
    for index, new in edited_ids.items():
        new = _cell(new)
        if 0 <= index < len(base.principles) and isinstance(new, str):
            old, new = base.principles[index].id, new.strip()
            if new != old and re.match(SLUG, new):
                renames[old] = new
    return renames


def principle_references(c: Constitution, ids) -> list[tuple[str, str]]:
    """`(where, id)` for every few-shot that names one of `ids`, e.g.
    `("comparison_few_shots[2].principle", "harm")`, in document order."""
    ids = set(ids)
    return [
        (f"{bank}[{i}].principle", shot.principle)
        for bank in ("few_shots", "comparison_few_shots")
        for i, shot in enumerate(getattr(c, bank))
        if shot.principle in ids
    ]


def constitution_from_rows(
    rows: list[dict],
    base: Constitution,
    *,
    description: str | None = None,
    source: str = "table",
    renames: dict[str, str] | None = None,
) -> Constitution:
    """Rebuild `base` with its principles replaced by edited table rows.

    Blank cells count as missing, so an empty required field reports "missing required key".
    A row with no text at all (a freshly added row, whose checkbox and number cells hold the
    editor's defaults) is dropped. `renames` (`{old id: new id}`, see `principle_renames`)
    also renames the few-shots' references to those principles; without it, a reference to
    a renamed id is reported as unknown.
    """
    principles = []
    for row in rows:
        p = {k: v for k, v in ((k, _cell(v)) for k, v in row.items()) if v is not None}
        if "tags" in p:
            p["tags"] = [t.strip() for t in str(p["tags"]).split(",") if t.strip()]
        if any(isinstance(v, str) or (k == "tags" and v) for k, v in p.items()):
            principles.append(p)
    data = base.model_dump(mode="json", exclude_defaults=True)
    data["principles"] = principles
    for bank in ("few_shots", "comparison_few_shots"):
        for shot in data.get(bank, []):
            if shot.get("principle") in (renames or {}):
                shot["principle"] = renames[shot["principle"]]
    if description is not None:
        data["description"] = description
    return constitution_from_data(data, source)


# -- writing ------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    pass


_ODD_BREAKS = ("\r", "\x85", "\u2028", "\u2029")  # YAML folds these; escape them instead


def _str_presenter(dumper, value: str):
    if any(b in value for b in _ODD_BREAKS):
        style = '"'
    else:
        style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(c: Constitution) -> str:
    """The constitution as YAML, fields in schema order, defaults left out."""
    body = c.model_dump(mode="json", exclude_defaults=True)
    return yaml.dump(body, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


# -- diffs --------------------------------------------------------------------------------


@dataclass
class ConstitutionDiff:
    """What changed from `old` to `new`: principles by id, field by field; banks by content."""

    added: list[str] = field(default_factory=list)  # principle ids
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[tuple[str, object, object]]] = field(default_factory=dict)
    meta: list[tuple[str, object, object]] = field(default_factory=list)  # name, description
    few_shots: tuple[int, int] = (0, 0)  # (added, removed)
    comparison_few_shots: tuple[int, int] = (0, 0)
    reordered: bool = False

    @property
    def is_empty(self) -> bool:
        return not (
            self.added
            or self.removed
            or self.changed
            or self.meta
            or self.reordered
            or any(self.few_shots)
            or any(self.comparison_few_shots)
        )

    def render(self) -> str:
        if self.is_empty:
            return "no differences"
        out = []
        for name, old, new in self.meta:
            out.append(f"~ {name}: {old!r} -> {new!r}")
        out += [f"+ principle '{pid}'" for pid in self.added]
        out += [f"- principle '{pid}'" for pid in self.removed]
        for pid, fields in self.changed.items():
            out.append(f"~ principle '{pid}'")
            for name, old, new in fields:
                out.append(f"    {name}:")
                out.append(f"      - {old}")
                out.append(f"      + {new}")
        if self.reordered:
            out.append("~ principles reordered")
        for label, (plus, minus) in (
            ("few-shot", self.few_shots),
            ("comparison few-shot", self.comparison_few_shots),
        ):
            if plus:
                out.append(f"+ {plus} {label} example(s)")
            if minus:
                out.append(f"- {minus} {label} example(s)")
        return "\n".join(out)


def diff_constitutions(old: Constitution, new: Constitution) -> ConstitutionDiff:
    d = ConstitutionDiff()
    for name in ("name", "description"):
        if getattr(old, name) != getattr(new, name):
            d.meta.append((name, getattr(old, name), getattr(new, name)))
    before = {p.id: p for p in old.principles}
    after = {p.id: p for p in new.principles}
    d.added = [pid for pid in after if pid not in before]
    d.removed = [pid for pid in before if pid not in after]
    for pid in after:
        if pid in before and before[pid] != after[pid]:
            a, b = before[pid].model_dump(), after[pid].model_dump()
            d.changed[pid] = [(k, a[k], b[k]) for k in a if a[k] != b[k]]
    common_old = [pid for pid in before if pid in after]
    common_new = [pid for pid in after if pid in before]
    d.reordered = common_old != common_new

    def bank_delta(xs, ys) -> tuple[int, int]:
        a = [x.model_dump_json() for x in xs]
        b = [y.model_dump_json() for y in ys]
        return sum(1 for y in b if y not in a), sum(1 for x in a if x not in b)

    d.few_shots = bank_delta(old.few_shots, new.few_shots)
    d.comparison_few_shots = bank_delta(old.comparison_few_shots, new.comparison_few_shots)
    return d


# A word, a run of spaces or one punctuation mark: the units a word diff marks.
_WORD = re.compile(r"\w+|\s+|[^\w\s]")

Line = list[tuple[bool, str]]  # (changed, text) segments; no segment holds a newline


def word_diff(old: str, new: str) -> tuple[list[Line], list[Line]]:
    """Both texts as lines of `(changed, text)` segments: what `new` removed, marked in
    `old`'s lines, and what it added, marked in `new`'s.

    Lines are matched first; only lines that were replaced are compared word by word, so a
    long text with one edited sentence marks that sentence and nothing else.

    Example: `word_diff("the cat sat", "the dog sat")` is
    `([[(False, "the "), (True, "cat"), (False, " sat")]],
    [[(False, "the "), (True, "dog"), (False, " sat")]])`.
    """
    a, b = old.split("\n"), new.split("\n")
    old_lines: list[Line] = []
    new_lines: list[Line] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            old_lines += [[(False, x)] if x else [] for x in a[i1:i2]]
            new_lines += [[(False, x)] if x else [] for x in b[j1:j2]]
        elif op == "replace":
            old_words, new_words = _word_marks("\n".join(a[i1:i2]), "\n".join(b[j1:j2]))
            old_lines += _as_lines(old_words)
            new_lines += _as_lines(new_words)
        else:  # a whole-line delete or insert
            old_lines += [[(True, x)] if x else [] for x in a[i1:i2]]
            new_lines += [[(True, x)] if x else [] for x in b[j1:j2]]
    return old_lines, new_lines


def _word_marks(old: str, new: str) -> tuple[list[tuple[bool, str]], list[tuple[bool, str]]]:
    a, b = _WORD.findall(old), _WORD.findall(new)
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    old_marks: list[tuple[bool, str]] = []
    new_marks: list[tuple[bool, str]] = []
    for k, (op, i1, i2, j1, j2) in enumerate(ops):
        changed = op != "equal"
        # A lone space kept between two changes reads as part of one change: "red fox" ->
        # "blue cat" marks the whole phrase, not two words with an unmarked gap.
        if not changed and 0 < k < len(ops) - 1 and all(t.isspace() for t in a[i1:i2]):
            changed = "\n" not in "".join(a[i1:i2])
        old_marks += [(changed, t) for t in a[i1:i2]]
        new_marks += [(changed, t) for t in b[j1:j2]]
    return old_marks, new_marks


def _as_lines(marks: list[tuple[bool, str]]) -> list[Line]:
    """Split marked tokens at newlines and merge neighbours with the same mark."""
    lines: list[Line] = [[]]
    for changed, token in marks:
        parts = token.split("\n")
        for n, part in enumerate(parts):
            if n:
                lines.append([])
            if not part:
                continue
            line = lines[-1]
            if line and line[-1][0] == changed:
                line[-1] = (changed, line[-1][1] + part)
            else:
                line.append((changed, part))
    return lines


# -- versions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConstitutionVersion:
    """One stored, immutable version of a named constitution."""

    name: str
    seq: int
    hash: str
    parent_hash: str | None
    note: str | None
    source: str
    created_at: object  # datetime
    body: str  # canonical JSON

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.seq}"

    @property
    def pinned(self) -> str:
        """The reference a submitted job keeps: this exact version, even after newer ones."""
        return pinned_ref(self.name, self.hash)

    @property
    def constitution(self) -> Constitution:
        return Constitution.model_validate_json(self.body, context={"defer_semantics": True})

    @property
    def label(self) -> str:
        """How a picker shows it: `harmless@2 · 2026-12-03 14:05 · <note> · 1a2b3c4d5e6f`."""
        when = getattr(self.created_at, "strftime", None)
        parts = [self.ref, when("%Y-%m-%d %H:%M") if when else str(self.created_at)]
        if self.note:
            parts.append(self.note if len(self.note) <= 60 else self.note[:59] + "…")
        return " · ".join([*parts, self.short_hash])


def pinned_ref(name: str, content_hash: str) -> str:
    """`NAME@HASHPREFIX`: the reference that pins one version (see `parse_ref`)."""
    return f"{name}@{content_hash[:12]}"


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split 'harmless', 'harmless@3', 'harmless@v3', 'harmless@1a2b3c' or 'harmless@latest'.

    Returns `(name, selector)` where selector is None for the latest version.
    """
    name, _, selector = ref.strip().partition("@")
    if not re.match(SLUG, name):
        raise CaiError(
            f"'{ref}' is not a constitution reference; use NAME, NAME@SEQ (e.g. harmless@2) "
            "or NAME@HASHPREFIX"
        )
    selector = selector.strip() or None
    if selector in (None, "latest"):
        return name, None
    return name, selector
