"""Prompt sets: bundled red-team and helpful sets, seeded splits, and imports from files or datasets.

A prompt is a conversation that ends with a user turn; a plain string is a one-turn
conversation. Its id is a content hash, so importing the same file twice adds nothing.
Imports are all-or-nothing by default: a file with bad rows reports every one of them by
line and imports nothing unless the caller asks for the good rows (`allow_partial`).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cai_engine.errors import CaiError
from cai_engine.files import MAX_INPUT_BYTES, InputFileError

if TYPE_CHECKING:
    from cai_engine.store import Store


FORMATS = ("auto", "jsonl", "csv", "parquet", "hf")
ROLES = ("system", "user", "assistant")
MAX_PROMPT_CHARS = 100_000  # one prompt, all turns together
DEFAULT_SPLIT_SEED = 1234
DEFAULT_TEST_FRACTION = 0.2
MAX_REPORTED_BAD_ROWS = 50
CHUNK_ROWS = 10_000  # rows an import validates and stages at a time (bounded memory)
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    messages: list[dict]
    category: str | None = None
    split: str = "train"

    @property
    def text(self) -> str:
        """The last user turn: what the prompt asks."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


@dataclass(frozen=True)
class BadRow:
    where: str  # "line 7" or "row 7"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class ImportReport:
    name: str
    rows: int = 0  # rows read from the source
    imported: int = 0  # new prompts written to the store
    duplicates: int = 0  # exact duplicates within the source, dropped
    already_present: int = 0  # prompts the set already had
    bad_rows: list[BadRow] = field(default_factory=list)
    skipped_bad: bool = False  # True when bad rows were skipped on request
    unique: int = 0  # distinct valid prompts in the source

    def summary(self) -> str:
        parts = [f"{self.imported} imported into '{self.name}'", f"{self.rows} rows read"]
        if self.duplicates:
            parts.append(f"{self.duplicates} exact duplicates removed")
        if self.already_present:
            parts.append(f"{self.already_present} already in the set")
        if self.bad_rows:
            parts.append(f"{len(self.bad_rows)} bad rows skipped")
        return ", ".join(parts)


class PromptImportError(CaiError):
    """The source had bad rows (all listed) or could not be read at all; nothing was imported."""

    def __init__(self, source: str, bad_rows: list[BadRow] | None = None, message: str = ""):
        self.source = source
        self.bad_rows = bad_rows or []
        if not message:
            shown = self.bad_rows[:MAX_REPORTED_BAD_ROWS]
            more = len(self.bad_rows) - len(shown)
            lines = [
                f"{source}: {len(self.bad_rows)} bad rows; nothing was imported "
                "(fix them, or import the good rows with --skip-bad):"
            ]
            lines += [f"  {source}: {b}" for b in shown]
            if more:
                lines.append(f"  ... and {more} more")
            message = "\n".join(lines)
        super().__init__(message)


def prompt_id_for(messages: list[dict]) -> str:
    canon = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


def assign_split(prompt_id: str, seed: int, test_fraction: float) -> str:
    """A fixed, seeded split that does not move when other prompts are added or removed."""
    h = int(hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()[:8], 16)
    return "test" if h / 0x1_0000_0000 < test_fraction else "train"


# -- reading sources ----------------------------------------------------------------------


def detect_format(name: str) -> str:
    lower = name.lower()
    for suffix, fmt in (
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "jsonl"),
        (".csv", "csv"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
    ):
        if lower.endswith(suffix):
            return fmt
    raise PromptImportError(
        name,
        message=f"{name}: cannot tell the format from the name; pass one of "
        f"{', '.join(FORMATS[1:])}",
    )


def _lines(f: BinaryIO, label: str) -> Iterator[tuple[int, str]]:
    """`(line number, text)` of a UTF-8 file read a line at a time (split on "\n" only: JSON
    strings may hold U+2028 and friends), each line decoded as it comes, so a bad byte is
    named by its line and offset in the file. A leading byte order mark is dropped."""
    head = f.read(8192)
    if b"\x00" in head:
        raise InputFileError(f"{label}: this looks like a binary file, expected UTF-8 text")
    if not head.strip() and not f.read(1):
        raise InputFileError(f"{label}: the file is empty")
    f.seek(0)
    offset = 0
    for n, raw in enumerate(f, start=1):
        start = 3 if n == 1 and raw.startswith(codecs.BOM_UTF8) else 0
        try:
            text = raw[start:].decode("utf-8")
        except UnicodeDecodeError as e:
            at = offset + start + e.start
            raise InputFileError(
                f"{label}:{n}: not valid UTF-8 (byte 0x{raw[start + e.start]:02x} at offset "
                f"{at}); save the file as UTF-8 and try again"
            ) from None
        offset += len(raw)
        yield n, text


def _rows_jsonl(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[str, object]]:
    for n, line in lines:
        line = line.removesuffix("\n").removesuffix("\r")
        if not line.strip():
            continue
        try:
            yield f"line {n}", json.loads(line)
        except json.JSONDecodeError as e:
            yield f"line {n}", BadRow(f"line {n}", f"malformed JSON at column {e.colno}: {e.msg}")
        except RecursionError:
            yield f"line {n}", BadRow(f"line {n}", "the JSON is nested too deeply")


_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


def _rows_csv(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[str, object]]:
    # csv counts lines as `newline=""` text does: "\r", "\n" and "\r\n" each end one
    pieces = (piece for _, line in lines for piece in _LONE_CR.split(line) if piece)
    reader = csv.DictReader(pieces, strict=True)
    try:
        if reader.fieldnames is None:  # reads the header, so line_num counts from it
            return
    except csv.Error as e:
        yield "line 1", BadRow("line 1", f"CSV error in the header: {e}")
        return
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield f"line {start}", BadRow(f"line {start}", f"CSV error: {e}")
            return  # the reader cannot recover its position after a quoting error
        if None in row:
            yield (
                f"line {start}",
                BadRow(f"line {start}", "more fields than the header has columns"),
            )
            continue
        yield f"line {start}", row


def _rows_parquet(f: BinaryIO, label: str) -> Iterator[tuple[str, object]]:
    """A Parquet file's rows, `CHUNK_ROWS` at a time (a record batch each)."""
    import pyarrow.parquet as pq

    n = 0
    try:
        batches = pq.ParquetFile(f).iter_batches(batch_size=CHUNK_ROWS)
        for batch in batches:
            for rec in batch.to_pylist():
                n += 1
                yield f"row {n}", rec
    except Exception as e:  # pyarrow raises several unrelated types for bad files
        raise PromptImportError(
            label, message=f"{label}: not a readable Parquet file ({e})"
        ) from None


def _rows_hf(source: str, split: str | None) -> Iterator[tuple[str, object]]:
    """A `save_to_disk` folder, or a hub id when online; rows are read from its memory-mapped
    Arrow files one at a time."""
    import datasets

    path = Path(source)
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(source, split=split)
    except Exception as e:
        where = "folder" if path.is_dir() else "Hugging Face hub dataset (needs network access)"
        raise PromptImportError(
            source, message=f"{source}: cannot load as a {where}: {e}"
        ) from None
    parts = [(None, ds)]
    if isinstance(ds, datasets.DatasetDict):
        if split:
            if split not in ds:
                raise PromptImportError(
                    source, message=f"{source}: no split '{split}'; it has {', '.join(ds)}"
                )
            parts = [(None, ds[split])]
        else:
            parts = list(ds.items())
    n = 0
    for name, part in parts:
        for rec in part:
            n += 1
            yield f"row {n}", rec if name is None else {**rec, "__split__": name}


def _open_file(path: str) -> BinaryIO:
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: no such file")
    if p.is_dir():
        raise InputFileError(f"{p}: is a folder, expected a file")
    return open(p, "rb")


def read_rows(
    source: str | Path | tuple[str, bytes], fmt: str = "auto", hf_split: str | None = None
) -> Iterator[tuple[str, object]]:
    """Yield `(where, record_or_BadRow)` from a path, an uploaded `(filename, bytes)`, or a
    dataset, a row at a time: a file of any size is read in bounded memory. An upload is
    already in memory, so it is held to `MAX_INPUT_BYTES`."""
    if fmt not in FORMATS:
        raise PromptImportError(
            str(source), message=f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}"
        )
    if isinstance(source, tuple):
        label, data = source
        if len(data) > MAX_INPUT_BYTES:
            raise InputFileError(
                f"{label}: the file is {len(data) / 1e6:.1f} MB; the limit is {MAX_INPUT_BYTES / 1e6:.0f} MB"
            )
        opened: BinaryIO = io.BytesIO(data)
    else:
        label = str(source)
        if fmt == "hf" or (fmt == "auto" and Path(label).is_dir()):
            yield from _rows_hf(label, hf_split)
            return
        opened = _open_file(label)
    with opened as f:
        if fmt == "auto":
            fmt = detect_format(label)
        if fmt == "parquet":
            yield from _rows_parquet(f, label)
            return
        if fmt == "hf":
            raise PromptImportError(
                label, message=f"{label}: the hf format needs a folder or a hub id"
            )
        lines = _lines(f, label)
        yield from (_rows_jsonl(lines) if fmt == "jsonl" else _rows_csv(lines))


# -- normalising rows ---------------------------------------------------------------------


def _messages_from(value) -> list[dict]:
    """A prompt cell as a conversation; raises ValueError naming what is wrong."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            try:
                parsed = json.loads(stripped)
            except json.JSONDecodeError:
                parsed = None
            if (
                isinstance(parsed, list)
                and parsed
                and all(isinstance(m, dict) and "role" in m for m in parsed)
            ):
                return _messages_from(parsed)
        if not stripped:
            raise ValueError("the prompt is empty")
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        if not value:
            raise ValueError("the conversation is empty")
        out = []
        for i, m in enumerate(value):
            if (
                not isinstance(m, dict)
                or set(m) - {"role", "content"}
                or "role" not in m
                or "content" not in m
            ):
                raise ValueError(f'turn {i + 1} must be {{"role": ..., "content": ...}}')
            if m["role"] not in ROLES:
                raise ValueError(
                    f"turn {i + 1} has role '{m['role']}'; use one of {', '.join(ROLES)}"
                )
            if not isinstance(m["content"], str):
                raise ValueError(
                    f"turn {i + 1} content must be text, got {type(m['content']).__name__}"
                )
            out.append({"role": m["role"], "content": m["content"]})
        if out[-1]["role"] != "user":
            raise ValueError("a conversation prompt must end with a user turn")
        if not out[-1]["content"].strip():
            raise ValueError("the last user turn is empty")
        return out
    if value is None:
        raise ValueError("the prompt is missing (null)")
    raise ValueError(f"the prompt must be text or a list of messages, got {type(value).__name__}")


def normalise_row(record, mapping: dict[str, str]) -> dict:
    """Map a source record to `{messages, category, id, split}`; raises ValueError on bad rows."""
    if not isinstance(record, dict):
        raise ValueError(
            f"expected an object with a '{mapping['prompt']}' field, got {type(record).__name__}"
        )
    col = mapping["prompt"]
    if col not in record:
        present = ", ".join(k for k in record if k != "__split__") or "none"
        raise ValueError(
            f"missing column '{col}' (columns present: {present}); map it with --column prompt=NAME"
        )
    messages = _messages_from(record[col])
    size = sum(len(m["content"]) for m in messages)
    if size > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt is {size:,} characters; the limit is {MAX_PROMPT_CHARS:,}")
    for m in messages:
        bad = _SURROGATE.search(m["content"])
        if bad:
            raise ValueError(
                f"the text holds a lone surrogate (\\u{ord(bad.group()):04x}), half of a UTF-16 "
                "pair, which is not valid Unicode; fix the escape in the file"
            )
    out = {"messages": messages, "category": None, "id": None, "split": record.get("__split__")}
    for key in ("category", "id", "split"):
        src = mapping.get(key)
        if src is None or src not in record or record[src] is None or record[src] == "":
            continue
        value = record[src]
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError(f"column '{src}' ({key}) must be text, got {type(value).__name__}")
        out[key] = str(value).strip()
    if out["split"] is not None and out["split"] not in ("train", "test"):
        out["split"] = {"validation": "test", "eval": "test", "dev": "test"}.get(
            out["split"], out["split"]
        )
        if out["split"] not in ("train", "test"):
            raise ValueError(f"split '{out['split']}' is not 'train' or 'test'")
    return out


DEFAULT_MAPPING = {"prompt": "prompt", "category": "category", "id": "id", "split": "split"}


def _check_mapping(source, mapping: dict[str, str] | None) -> dict[str, str]:
    mapping = {**DEFAULT_MAPPING, **(mapping or {})}
    unknown = set(mapping) - set(DEFAULT_MAPPING)
    if unknown:
        raise PromptImportError(
            str(source),
            message=f"unknown mapping key(s) {', '.join(sorted(unknown))}; "
            f"use {', '.join(DEFAULT_MAPPING)}",
        )
    return mapping


def stage_prompts(
    source: str | Path | tuple[str, bytes],
    staging,
    *,
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
    split_seed: int = DEFAULT_SPLIT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    hf_split: str | None = None,
) -> ImportReport:
    """Read and validate a prompt source into `staging` (a `PromptStaging`), `CHUNK_ROWS`
    rows at a time; bad rows are collected in the report, not raised. Memory holds one chunk
    (and the bad rows), however big the source."""
    mapping = _check_mapping(source, mapping)
    report = ImportReport(name="")
    bad: list[tuple[int, BadRow]] = []  # (row number in the source, the bad row)
    chunk: list[tuple] = []
    for where, record in read_rows(source, fmt, hf_split):
        report.rows += 1
        if isinstance(record, BadRow):
            bad.append((report.rows, record))
            continue
        try:
            row = normalise_row(record, mapping)
        except ValueError as e:
            bad.append((report.rows, BadRow(where, str(e))))
            continue
        pid = row["id"] or prompt_id_for(row["messages"])
        messages = row["messages"]
        chunk.append(
            (
                report.rows,
                where,
                pid,
                next(m["content"] for m in reversed(messages) if m["role"] == "user"),
                json.dumps(messages, ensure_ascii=False),
                "\n".join(m["content"] for m in messages),
                row["category"],
                row["split"] or assign_split(pid, split_seed, test_fraction),
            )
        )
        if len(chunk) >= CHUNK_ROWS:
            staging.add(chunk)
            chunk = []
    staging.add(chunk)
    if report.rows == 0:
        label = source[0] if isinstance(source, tuple) else source
        raise PromptImportError(str(label), message=f"{label}: no rows found")
    # an id used again: the same prompt is a duplicate; another prompt is a bad row
    unique, report.duplicates, clashes = staging.settle()
    bad += [
        (seq, BadRow(where, f"id '{pid}' is already used by {first} for a different prompt"))
        for seq, where, pid, first in clashes
    ]
    report.bad_rows = [b for _, b in sorted(bad, key=lambda item: item[0])]
    report.unique = unique
    return report


def parse_prompts(
    source: str | Path | tuple[str, bytes],
    *,
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
    split_seed: int = DEFAULT_SPLIT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    hf_split: str | None = None,
) -> tuple[list[Prompt], ImportReport]:
    """Read and validate a prompt source, and return its prompts (every one in memory: for
    small sources; `import_prompt_set` streams). Bad rows are collected in the report."""
    from cai_engine.store.prompts import PromptStaging

    with tempfile.TemporaryDirectory(prefix="cai-prompts-") as folder:
        staging = PromptStaging(folder)
        try:
            report = stage_prompts(
                source,
                staging,
                fmt=fmt,
                mapping=mapping,
                split_seed=split_seed,
                test_fraction=test_fraction,
                hf_split=hf_split,
            )
            return staging.prompts(), report
        finally:
            staging.close()


def import_prompt_set(
    store: Store,
    source: str | Path | tuple[str, bytes],
    name: str,
    *,
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
    allow_partial: bool = False,
    append: bool = False,
    description: str = "",
    split_seed: int = DEFAULT_SPLIT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    hf_split: str | None = None,
) -> ImportReport:
    """Import prompts into the set `name`; see the module docstring for the all-or-nothing rule.

    The source is read in chunks into a scratch database beside the store (not the store: it
    stays free for jobs and pages while a big file is parsed), then the store takes its rows
    in one transaction, so a failure at any point changes nothing.
    """
    from cai_engine.store.prompts import PromptStaging

    if not re.match(r"^[a-z0-9][a-z0-9_-]{0,63}$", name or ""):
        raise CaiError(
            f"'{name}' is not a valid prompt set name; use lowercase letters, digits, '-' or '_'"
        )
    if not 0.0 <= test_fraction < 1.0:
        raise CaiError(f"test_fraction must be in [0, 1), got {test_fraction}")
    label = source[0] if isinstance(source, tuple) else str(source)
    exists = store.prompt_set_exists(name)
    if exists and not append:
        raise CaiError(f"prompt set '{name}' already exists; choose another name or append to it")
    scratch = Path(store.home) / "cache"  # beside the store: big imports need disk, not /tmp
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prompt-import-", dir=scratch) as folder:
        staging = PromptStaging(folder)
        try:
            report = stage_prompts(
                source,
                staging,
                fmt=fmt,
                mapping=mapping,
                split_seed=split_seed,
                test_fraction=test_fraction,
                hf_split=hf_split,
            )
            report.name = name
            if report.bad_rows and not allow_partial:
                raise PromptImportError(label, report.bad_rows)
            report.skipped_bad = bool(report.bad_rows)
            if not report.unique:
                raise PromptImportError(label, message=f"{label}: no valid prompts to import")
            rows = staging.write_parquet()
        finally:
            staging.close()
        report.imported = store.add_prompt_file(
            name,
            rows,
            description=description,
            source=label,
            split_seed=split_seed,
            test_fraction=test_fraction,
        )
    report.already_present = report.unique - report.imported
    return report


def parse_prompt_ref(ref: str) -> tuple[str, str | None]:
    """'red-team' -> ('red-team', None); 'red-team:test' -> ('red-team', 'test')."""
    name, _, split = ref.strip().partition(":")
    if split and split not in ("train", "test"):
        raise CaiError(f"'{ref}': the split after ':' must be train or test, got '{split}'")
    return name, split or None


def select_prompts(
    store: Store, ref: str, limit: int | None = None, category: str | None = None
) -> list[Prompt]:
    """The prompts a job config names, in a fixed order; an empty selection is an error."""
    name, split = parse_prompt_ref(ref)
    prompts = store.get_prompts(name, split=split, category=category, limit=limit)
    if not prompts:
        what = f"'{ref}'" + (f" in category '{category}'" if category else "")
        raise CaiError(f"prompt set {what} is empty after filtering; nothing to do")
    return prompts


def count_prompts(store: Store, ref: str, limit: int | None = None) -> int:
    """How many prompts a job config's selection holds (`select_prompts` without loading
    them); an empty selection is an error."""
    name, split = parse_prompt_ref(ref)
    n = store.count_prompts(name, split=split)
    if limit is not None:
        n = min(n, limit)
    if not n:
        raise CaiError(f"prompt set '{ref}' is empty after filtering; nothing to do")
    return n


def iter_prompts(
    store: Store, ref: str, limit: int | None = None, page: int = 1000
) -> Iterator[Prompt]:
    """The prompts of `select_prompts(store, ref, limit)`, in the same order, read a page at a
    time: a stage holds one page, however big the set."""
    name, split = parse_prompt_ref(ref)
    after, left = None, limit
    while left is None or left > 0:
        size = page if left is None else min(page, left)
        rows = store.prompt_page(name, split=split, after=after, limit=size)
        yield from rows
        if len(rows) < size:
            return
        after = rows[-1].prompt_id
        if left is not None:
            left -= len(rows)


def parse_mapping(items: list[str] | None) -> dict[str, str]:
    """Parse CLI `--column prompt=question` items into a mapping."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise CaiError(f"--column expects KEY=COLUMN (e.g. prompt=question), got '{item}'")
        out[key.strip()] = value.strip()
    return out
