"""Numbered, append-only schema migrations, applied in order when the store opens.

Never edit a migration that has shipped: add a new function and append it to `MIGRATIONS`.
Each runs inside its own transaction together with the row that records it, so a crash
mid-migration leaves the schema as it was before that migration.
"""

from __future__ import annotations


def m001_initial(con) -> None:
    con.rows(
        """
        CREATE TABLE constitution_versions (
            hash         VARCHAR PRIMARY KEY,   -- sha256 of the canonical JSON body
            name         VARCHAR NOT NULL,
            seq          INTEGER NOT NULL,      -- 1, 2, 3 ... per name, for humans
            parent_hash  VARCHAR,               -- the version this one was edited from
            note         VARCHAR,
            source       VARCHAR NOT NULL,      -- bundled | studio | cli | import:<format>
            body         VARCHAR NOT NULL,      -- canonical JSON of the constitution
            created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
            UNIQUE (name, seq)
        )
        """
    )
    con.rows(
        """
        CREATE TABLE prompt_sets (
            name           VARCHAR PRIMARY KEY,
            description    VARCHAR,
            source         VARCHAR NOT NULL,
            split_seed     INTEGER NOT NULL,
            test_fraction  DOUBLE NOT NULL,
            created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )
    con.rows(
        """
        CREATE TABLE prompts (
            set_name   VARCHAR NOT NULL,
            prompt_id  VARCHAR NOT NULL,      -- content hash of the messages, or the source's id
            text       VARCHAR NOT NULL,      -- the last user turn, for display and search
            messages   VARCHAR NOT NULL,      -- JSON list of {role, content}
            content    VARCHAR NOT NULL,      -- every turn's text, newline-joined, for search
            category   VARCHAR,
            split      VARCHAR NOT NULL,      -- train | test
            PRIMARY KEY (set_name, prompt_id)
        )
        """
    )
    con.rows(
        """
        CREATE TABLE jobs (
            id           VARCHAR PRIMARY KEY,   -- <kind>-<yyyymmdd-hhmmss>-<4 hex>
            kind         VARCHAR NOT NULL,
            label        VARCHAR,
            config       VARCHAR NOT NULL,      -- the validated config, JSON
            status       VARCHAR NOT NULL,      -- queued | running | succeeded | failed | cancelled | interrupted
            pid          INTEGER,
            run_dir      VARCHAR NOT NULL,
            attempts     INTEGER NOT NULL DEFAULT 0,
            created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
            started_at   TIMESTAMP,
            finished_at  TIMESTAMP,
            error        VARCHAR
        )
        """
    )
    con.rows(
        """
        CREATE TABLE ingested_shards (
            path         VARCHAR PRIMARY KEY,   -- relative to the data home
            job_id       VARCHAR NOT NULL,
            tbl          VARCHAR NOT NULL,
            rows         INTEGER NOT NULL,
            ingested_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )
    con.rows(
        """
        CREATE TABLE generations (            -- rows of `generate` jobs: answers to prompts
            job_id             VARCHAR NOT NULL,
            prompt_set         VARCHAR NOT NULL,
            prompt_id          VARCHAR NOT NULL,
            sample             INTEGER NOT NULL,  -- 0..samples-1 for the same prompt
            model              VARCHAR NOT NULL,  -- the model spec
            sampling           VARCHAR NOT NULL,  -- JSON of SamplingParams
            seed               BIGINT NOT NULL,
            text               VARCHAR NOT NULL,
            prompt_tokens      INTEGER NOT NULL,
            completion_tokens  INTEGER NOT NULL,
            finish_reason      VARCHAR NOT NULL,
            truncated_tokens   INTEGER NOT NULL,
            latency_s          DOUBLE NOT NULL,
            PRIMARY KEY (job_id, prompt_id, sample)
        )
        """
    )
    con.rows(
        """
        CREATE TABLE traces (                 -- rows of `critique` jobs: one per step of a trace
            job_id              VARCHAR NOT NULL,
            prompt_set          VARCHAR NOT NULL,
            prompt_id           VARCHAR NOT NULL,
            sample              INTEGER NOT NULL,
            round               INTEGER NOT NULL,  -- 0 for the initial answer, then 1..rounds
            step                VARCHAR NOT NULL,  -- initial | critique | revision
            principle_id        VARCHAR,           -- the principle drawn for this round
            constitution        VARCHAR NOT NULL,  -- name
            constitution_hash   VARCHAR NOT NULL,  -- the exact version
            model               VARCHAR NOT NULL,
            sampling            VARCHAR NOT NULL,  -- JSON of SamplingParams
            seed                BIGINT NOT NULL,
            text                VARCHAR NOT NULL,
            prompt_tokens       INTEGER NOT NULL,
            completion_tokens   INTEGER NOT NULL,
            latency_s           DOUBLE NOT NULL,
            finish_reason       VARCHAR NOT NULL,
            truncated_tokens    INTEGER NOT NULL,
            few_shots_dropped   INTEGER NOT NULL,  -- oldest few-shots left out to fit the context
            flags               VARCHAR NOT NULL,  -- comma-separated: empty, skipped
            PRIMARY KEY (job_id, prompt_id, sample, round, step)
        )
        """
    )
    con.rows(
        """
        CREATE TABLE ticks (                  -- rows of the built-in `tick` job kind
            job_id  VARCHAR NOT NULL,
            i       INTEGER NOT NULL,
            value   BIGINT NOT NULL,
            PRIMARY KEY (job_id, i)
        )
        """
    )


MIGRATIONS = [m001_initial]
