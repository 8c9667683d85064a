"""Store queries for constitution versions. Versions are immutable; saving adds a new one."""

from __future__ import annotations

from dataclasses import dataclass

from cai_engine.constitution import Constitution, ConstitutionVersion, parse_ref
from cai_engine.errors import CaiError, NotFoundError
from cai_engine.store.core import StoreCore

_VERSION_COLUMNS = "name, seq, hash, parent_hash, note, source, created_at, body"


@dataclass(frozen=True)
class ConstitutionSummary:
    name: str
    description: str
    versions: int
    latest_seq: int
    latest_hash: str
    principles: int
    updated_at: object


class ConstitutionQueries(StoreCore):
    def save_constitution(
        self,
        c: Constitution,
        *,
        note: str | None = None,
        source: str = "cli",
        parent_hash: str | None = None,
    ) -> tuple[ConstitutionVersion, bool]:
        """Store `c` as the next version of `c.name`.

        Returns:
            `(version, created)`: `created` is False when an identical version already exists,
            in which case that version is returned and nothing is written.
        """
        body = c.canonical_json()
        digest = c.hash
        with self.transaction() as con:
            row = con.one(
                f"SELECT {_VERSION_COLUMNS} FROM constitution_versions WHERE hash = ?", [digest]
            )
            if row:
                return ConstitutionVersion(*row), False
            seq = con.scalar(
                "SELECT coalesce(max(seq), 0) + 1 FROM constitution_versions WHERE name = ?",
                [c.name],
            )
            con.rows(
                "INSERT INTO constitution_versions"
                " (hash, name, seq, parent_hash, note, source, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [digest, c.name, seq, parent_hash, note or None, source, body],
            )
            row = con.one(
                f"SELECT {_VERSION_COLUMNS} FROM constitution_versions WHERE hash = ?", [digest]
            )
        return ConstitutionVersion(*row), True

    def list_constitutions(self) -> list[ConstitutionSummary]:
        with self.connect() as con:
            rows = con.rows(
                """
                SELECT name,
                       arg_max(body, seq) AS body,
                       count(*) AS versions,
                       max(seq) AS latest_seq,
                       arg_max(hash, seq) AS latest_hash,
                       max(created_at) AS updated_at
                FROM constitution_versions
                GROUP BY name
                ORDER BY name
                """
            )
        out = []
        for name, body, versions, seq, digest, updated in rows:
            c = Constitution.model_validate_json(body, context={"defer_semantics": True})
            out.append(
                ConstitutionSummary(
                    name, c.description, versions, seq, digest, len(c.principles), updated
                )
            )
        return out

    def list_versions(self, name: str) -> list[ConstitutionVersion]:
        with self.connect() as con:
            rows = con.rows(
                f"SELECT {_VERSION_COLUMNS} FROM constitution_versions WHERE name = ? ORDER BY seq",
                [name],
            )
        return [ConstitutionVersion(*r) for r in rows]

    def get_version(self, ref: str) -> ConstitutionVersion:
        """Resolve NAME, NAME@SEQ, NAME@vSEQ, NAME@HASHPREFIX or NAME@latest."""
        name, selector = parse_ref(ref)
        versions = self.list_versions(name)
        if not versions:
            known = ", ".join(s.name for s in self.list_constitutions()) or "none yet"
            raise NotFoundError(f"no constitution named '{name}'; known: {known}")
        if selector is None:
            return versions[-1]
        sel = selector[1:] if selector[:1] == "v" and selector[1:].isdigit() else selector
        if sel.isdigit() and len(sel) < 4:
            match = [v for v in versions if v.seq == int(sel)]
        else:
            if len(sel) < 4:
                raise CaiError(f"'{ref}': a hash prefix needs at least 4 characters")
            match = [v for v in versions if v.hash.startswith(sel.lower())]
        if len(match) != 1:
            have = ", ".join(f"{v.seq} ({v.short_hash})" for v in versions)
            what = "is ambiguous" if match else "does not exist"
            raise NotFoundError(f"version '{selector}' of '{name}' {what}; versions: {have}")
        return match[0]
