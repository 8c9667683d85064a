"""Run folders: the files a job writes while it works, so that it never holds the database.

`<home>/runs/<job_id>/` holds:
- `config.json`: the validated job config, written once at submit;
- `status.json`: the job's live state, replaced atomically (temp file + `os.replace`);
- `events.jsonl` and `metrics.jsonl`: one JSON object per line, flushed per line;
- `run.log`: the process's stdout and stderr;
- `shards/<table>/<seq>.parquet`: data, each file written whole under a temp name, then renamed.

Readers (the CLI, the studio) only ever see complete files: a half-written shard or status
never has its final name.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

SHARD_NAME = re.compile(r"^(\d{6})\.parquet$")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    """Complete lines only: a line still being written (no newline yet) is left for later."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = []
    for line in text.split("\n")[:-1]:  # the last piece has no newline: incomplete or empty
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write; everything after it is still read
    return out[-limit:] if limit else out


class RunFolder:
    """One job's run folder. Safe to read from any process while the job writes it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- paths ----------------------------------------------------------------------------

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def log_path(self) -> Path:
        return self.path / "run.log"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def shard_dir(self, table: str) -> Path:
        return self.path / "shards" / table

    # -- writing (the job process) --------------------------------------------------------

    def create(self, config: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path / "config.json", json.dumps(config, indent=2).encode())

    def write_status(self, **status) -> dict:
        """Replace status.json with `status` plus an `updated_at` timestamp."""
        status = {**status, "updated_at": time.time()}
        _atomic_write(self.status_path, json.dumps(status).encode())
        return status

    def _append(self, path: Path, record: dict) -> None:
        line = json.dumps({"time": time.time(), **record}, ensure_ascii=False, default=str) + "\n"
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()

    def event(self, name: str, /, **data) -> None:
        self._append(self.events_path, {"event": name, **data})

    def metric(self, **values) -> None:
        self._append(self.metrics_path, values)

    def truncate_metrics(self, after_step: int) -> int:
        """Drop metric rows logged after `after_step` (a resume redoes those steps), so the
        curves stay contiguous; rows without a step are kept. Returns the rows kept."""
        rows = _read_jsonl(self.metrics_path)
        kept = [r for r in rows if not isinstance(r.get("step"), int) or r["step"] <= after_step]
        body = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in kept)
        _atomic_write(self.metrics_path, body.encode())
        return len(kept)

    def write_shard(self, table: str, rows: list[dict], schema=None) -> Path:
        """Write `rows` as the next shard of `table`; returns its final path."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = self.shard_dir(table)
        folder.mkdir(parents=True, exist_ok=True)
        seq = max((n for n, _ in self.shards(table)), default=0) + 1
        final = folder / f"{seq:06d}.parquet"
        tmp = folder / f".{seq:06d}.parquet.{os.getpid()}.tmp"
        table_ = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table_, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        return final

    # -- reading (anyone) -----------------------------------------------------------------

    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    def status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def events(self, limit: int | None = None) -> list[dict]:
        return _read_jsonl(self.events_path, limit)

    def metrics(self, limit: int | None = None) -> list[dict]:
        return _read_jsonl(self.metrics_path, limit)

    def shards(self, table: str) -> list[tuple[int, Path]]:
        """Complete shards of `table`, in order."""
        folder = self.shard_dir(table)
        if not folder.exists():
            return []
        found = [
            (int(m[1]), folder / name)
            for name in os.listdir(folder)
            if (m := SHARD_NAME.match(name))
        ]
        return sorted(found)

    def remove_partial_shards(self) -> int:
        """Delete the temporary files of shards a killed attempt never finished (they are
        never read or ingested; only the job's own process writes shards). Returns how many."""
        root = self.path / "shards"
        partial = list(root.glob("*/.*.parquet.*.tmp")) if root.exists() else []
        for path in partial:
            path.unlink(missing_ok=True)
        return len(partial)

    def tables(self) -> list[str]:
        root = self.path / "shards"
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []

    def read_shard_rows(self, table: str) -> list[dict]:
        """Every row of every complete shard of `table` (for resuming)."""
        import pyarrow.parquet as pq

        rows: list[dict] = []
        for _, path in self.shards(table):
            rows += pq.read_table(path).to_pylist()
        return rows

    def log_tail(self, max_bytes: int = 20_000) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
        text = data.decode("utf-8", errors="replace")
        if size > max_bytes:  # drop the first, probably partial, line
            text = text.split("\n", 1)[-1]
        return text
