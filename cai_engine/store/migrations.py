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


def m002_feedback(con) -> None:
    """RL-CAI: pairs of answers, the feedback model's soft labels, and human reviews."""
    con.rows(
        """
        CREATE TABLE pairs (                  -- rows of `pairs` jobs: two answers to compare
            job_id        VARCHAR NOT NULL,
            prompt_set    VARCHAR NOT NULL,
            prompt_id     VARCHAR NOT NULL,
            pair          INTEGER NOT NULL,   -- 0, 1, ... per prompt
            source        VARCHAR NOT NULL,   -- samples | critique
            source_job    VARCHAR,            -- the critique job the answers came from
            a_ref         VARCHAR NOT NULL,   -- where response A came from: sample 0, initial, ...
            b_ref         VARCHAR NOT NULL,
            response_a    VARCHAR NOT NULL,
            response_b    VARCHAR NOT NULL,
            model         VARCHAR NOT NULL,   -- the model spec that wrote both answers
            sampling      VARCHAR NOT NULL,   -- JSON of SamplingParams
            seed_a        BIGINT NOT NULL,
            seed_b        BIGINT NOT NULL,
            constitution_hash VARCHAR,        -- critique pairs: the constitution of the traces
            flags         VARCHAR NOT NULL,   -- comma-separated: identical, empty
            PRIMARY KEY (job_id, prompt_id, pair)
        )
        """
    )
    con.rows(
        """
        CREATE TABLE labels (                 -- rows of `label` jobs: one AI label per pair
            job_id             VARCHAR NOT NULL,
            pairs_job          VARCHAR NOT NULL,
            prompt_set         VARCHAR NOT NULL,
            prompt_id          VARCHAR NOT NULL,
            pair               INTEGER NOT NULL,
            principle_id       VARCHAR NOT NULL,  -- drawn at random for this comparison
            constitution       VARCHAR NOT NULL,
            constitution_hash  VARCHAR NOT NULL,
            model              VARCHAR NOT NULL,  -- the feedback model spec
            mode               VARCHAR NOT NULL,  -- logprob | cot
            few_shots          INTEGER NOT NULL,  -- labelled comparisons prepended
            p_a_ab             DOUBLE,            -- P(A better), shown in the order A, B
            p_a_ba             DOUBLE,            -- P(A better), shown swapped (B first); NULL: one order
            soft_label         DOUBLE,            -- P(A better), averaged over the orders scored
            winner             VARCHAR,           -- A | B | tie
            confidence         DOUBLE,            -- |soft_label - 0.5| * 2
            consistent         BOOLEAN,           -- both orders prefer the same response
            cot_ab             VARCHAR,           -- chain-of-thought text per order (cot mode)
            cot_ba             VARCHAR,
            prompt_tokens      INTEGER NOT NULL,  -- tokens the feedback model read
            cot_tokens         INTEGER NOT NULL,  -- tokens it wrote (cot mode)
            latency_s          DOUBLE NOT NULL,   -- this label's share of its batch's wall time
            truncated_turns    INTEGER NOT NULL,  -- middle conversation turns left out to fit
            flags              VARCHAR NOT NULL,  -- identical, empty, truncated, clamped, overflow
            PRIMARY KEY (job_id, prompt_id, pair)
        )
        """
    )
    con.rows(
        """
        CREATE TABLE reviews (                -- human spot-checks; appended, never updated
            id             VARCHAR PRIMARY KEY,
            labels_job     VARCHAR NOT NULL,
            prompt_id      VARCHAR NOT NULL,
            pair           INTEGER NOT NULL,
            reviewer       VARCHAR NOT NULL,
            verdict        VARCHAR NOT NULL,  -- A | B | tie | both_bad | skip (about A, B as stored)
            display_order  VARCHAR NOT NULL,  -- AB | BA: what the reviewer saw first
            note           VARCHAR,
            created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )


def m003_models(con) -> None:
    """Trained models, with where they came from."""
    con.rows(
        """
        CREATE TABLE models (
            name        VARCHAR PRIMARY KEY,   -- use as model:<name>
            kind        VARCHAR NOT NULL,      -- sft | reward | dpo | rl
            job_id      VARCHAR NOT NULL,
            path        VARCHAR NOT NULL,
            base_model  VARCHAR NOT NULL,
            data        VARCHAR,               -- the export folder or prompt set trained on
            constitution_hash VARCHAR,         -- from the data's manifest, when it has one
            lineage     VARCHAR NOT NULL,      -- JSON: config, manifest, final metrics
            created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )


def m004_evals(con) -> None:
    """Evaluation jobs: each model's answers, the judge's verdicts, and the summary metrics."""
    con.rows(
        """
        CREATE TABLE eval_answers (           -- rows of `eval` jobs: one answer per model and prompt
            job_id             VARCHAR NOT NULL,
            model              VARCHAR NOT NULL,  -- the model spec
            fingerprint        VARCHAR NOT NULL,  -- what the spec pointed at (weights' sizes and times)
            prompt_set         VARCHAR NOT NULL,
            prompt_id          VARCHAR NOT NULL,
            sampling           VARCHAR NOT NULL,  -- JSON of SamplingParams (with the seed)
            text               VARCHAR NOT NULL,
            prompt_tokens      INTEGER NOT NULL,
            completion_tokens  INTEGER NOT NULL,
            latency_s          DOUBLE NOT NULL,
            finish_reason      VARCHAR NOT NULL,
            reused_from        VARCHAR,           -- the eval job whose answer this is, if reused
            PRIMARY KEY (job_id, model, prompt_set, prompt_id)
        )
        """
    )
    con.rows(
        """
        CREATE TABLE eval_judgements (        -- the judge's verdict on one answer or pair
            job_id        VARCHAR NOT NULL,
            metric        VARCHAR NOT NULL,   -- harmless | helpful | refusal | revision
            model         VARCHAR NOT NULL,   -- the model judged (revision: the critique job)
            prompt_set    VARCHAR NOT NULL,
            prompt_id     VARCHAR NOT NULL,
            item          INTEGER NOT NULL,   -- 0; revision: sample * 1000 + round
            judge         VARCHAR NOT NULL,   -- the judge's model spec
            principle_id  VARCHAR,            -- the principle drawn for a comparison
            p_first       DOUBLE,             -- the judge's probability, order as given
            p_second      DOUBLE,             -- ... and swapped (NULL: one order)
            value         DOUBLE,             -- P(model better) or P(refusal), averaged
            rule          VARCHAR,            -- refusal: the rule that matched, if any
            consistent    BOOLEAN,            -- both orders agree
            prompt_tokens INTEGER NOT NULL,   -- tokens the judge read
            latency_s     DOUBLE NOT NULL,
            flags         VARCHAR NOT NULL,
            PRIMARY KEY (job_id, metric, model, prompt_set, prompt_id, item)
        )
        """
    )
    con.rows(
        """
        CREATE TABLE eval_results (           -- one number per model and metric, with its interval
            job_id        VARCHAR NOT NULL,
            model         VARCHAR NOT NULL,
            metric        VARCHAR NOT NULL,
            eval_set      VARCHAR NOT NULL,   -- prompt set and split, e.g. red-team:test
            judge         VARCHAR,
            reference     VARCHAR,            -- win rates: the model compared against
            value         DOUBLE,
            low           DOUBLE,
            high          DOUBLE,
            n             INTEGER NOT NULL,
            method        VARCHAR NOT NULL,   -- wilson | bootstrap | total
            detail        VARCHAR NOT NULL,   -- JSON: counts, lineage
            PRIMARY KEY (job_id, model, metric)
        )
        """
    )


def m005_trace_summaries(con) -> None:
    """Pages read one page of traces at a time: one summary row per trace, kept up to date as
    shards are ingested, and each revision's edit size stored with it (difflib, not SQL)."""
    from cai_engine.store.traces import SUMMARY_DDL, backfill_edit_sizes, refresh_trace_summaries

    con.rows("ALTER TABLE traces ADD COLUMN edit_size DOUBLE")  # revisions: share of words changed
    con.rows("ALTER TABLE traces ADD COLUMN changed BOOLEAN")  # revisions: text differs from before
    backfill_edit_sizes(con)
    con.rows(SUMMARY_DDL)
    for (job_id,) in con.rows("SELECT DISTINCT job_id FROM traces"):
        refresh_trace_summaries(con, job_id)


def m006_judge_checks(con) -> None:
    """Judge qualification: each gold pair a judge check scored, one summary per check, and
    which check every label or eval job used (see `cai_engine/judge_check.py`)."""
    con.rows(
        """
        CREATE TABLE judge_check_items (      -- one gold pair as the judge scored it
            job_id        VARCHAR NOT NULL,   -- the judge-check job, or the label/eval job that ran it
            gold_id       VARCHAR NOT NULL,
            category      VARCHAR NOT NULL,
            topic         VARCHAR NOT NULL,
            preferred     VARCHAR NOT NULL,   -- the gold side: A | B
            principle_id  VARCHAR NOT NULL,   -- drawn for this comparison, as label jobs draw it
            p_a_ab        DOUBLE,             -- P(A better), shown A first
            p_a_ba        DOUBLE,             -- P(A better), shown B first
            soft_label    DOUBLE,             -- their average; NULL: the pair did not fit
            correct       BOOLEAN NOT NULL,   -- the average favours the gold side (0.5: wrong)
            consistent    BOOLEAN,            -- both orders favour the same side
            tokens        INTEGER NOT NULL,   -- tokens the judge read (and wrote: CoT)
            latency_s     DOUBLE NOT NULL,
            flags         VARCHAR NOT NULL,
            PRIMARY KEY (job_id, gold_id)
        )
        """
    )
    con.rows(
        """
        CREATE TABLE judge_checks (           -- one finished check: its numbers and verdict
            job_id            VARCHAR PRIMARY KEY,
            model             VARCHAR NOT NULL,   -- the judge's model spec
            fingerprint       VARCHAR NOT NULL,   -- what the spec pointed at (models.local)
            constitution      VARCHAR NOT NULL,   -- the pinned reference, e.g. harmless@3
            constitution_hash VARCHAR NOT NULL,
            gold_hash         VARCHAR NOT NULL,
            gold_sources      VARCHAR NOT NULL,   -- in words, with each source's pair count
            settings          VARCHAR NOT NULL,   -- the reuse key: few-shots, mode, clamp, seed
            few_shots         INTEGER NOT NULL,
            cot               BOOLEAN NOT NULL,
            clamp_low         DOUBLE NOT NULL,
            clamp_high        DOUBLE NOT NULL,
            seed              INTEGER NOT NULL,
            n                 INTEGER NOT NULL,   -- gold pairs
            correct           INTEGER NOT NULL,
            accuracy          DOUBLE,
            accuracy_low      DOUBLE,             -- Wilson 95%
            accuracy_high     DOUBLE,
            per_category      VARCHAR NOT NULL,   -- JSON {category: {n, correct, accuracy}}
            orders            INTEGER NOT NULL,   -- orders scored (two per pair)
            first_wins        INTEGER NOT NULL,   -- orders whose P(first shown) > 0.5
            second_wins       INTEGER NOT NULL,   -- ... < 0.5
            first_share       DOUBLE,
            first_p           DOUBLE NOT NULL,    -- exact two-sided binomial test of 0.5
            both_orders       INTEGER NOT NULL,   -- pairs scored in both orders
            consistent        INTEGER NOT NULL,   -- ... whose orders agree
            consistency       DOUBLE,
            position_bias     DOUBLE,             -- mean logit of P(first shown)
            calibrated_accuracy    DOUBLE,        -- after position calibration, 2-fold
            calibrated_consistency DOUBLE,
            ece               DOUBLE,             -- expected calibration error
            bins              VARCHAR NOT NULL,   -- JSON reliability bins
            tokens            BIGINT NOT NULL,
            seconds           DOUBLE NOT NULL,
            threshold         DOUBLE NOT NULL,
            alpha             DOUBLE NOT NULL,
            qualified         BOOLEAN NOT NULL,
            created_at        TIMESTAMP NOT NULL
        )
        """
    )
    con.rows(
        "CREATE INDEX judge_checks_key ON judge_checks"
        " (fingerprint, constitution_hash, gold_hash, settings)"
    )
    con.rows(
        """
        CREATE TABLE judge_check_uses (       -- the check a label or eval job's judge was given
            job_id         VARCHAR PRIMARY KEY,
            check_job      VARCHAR NOT NULL,  -- judge_checks.job_id
            reused         BOOLEAN NOT NULL,  -- found stored (else run by this job)
            threshold      DOUBLE NOT NULL,   -- the job's bar, and its verdict under it
            alpha          DOUBLE NOT NULL,
            qualified      BOOLEAN NOT NULL,
            calibrate      VARCHAR NOT NULL,  -- none | position
            position_bias  DOUBLE,            -- the bias subtracted (calibrate = position)
            created_at     TIMESTAMP NOT NULL
        )
        """
    )


def m007_contrastive(con) -> None:
    """Contrastive pairs (RLCD) and labels by construction. Old rows read as before: their
    pairs have no preferred side, and their labels came from a judge ('ai')."""
    con.rows("ALTER TABLE pairs ADD COLUMN preferred VARCHAR")  # A | B by construction; else NULL
    con.rows(
        "ALTER TABLE pairs ADD COLUMN principle_id VARCHAR"
    )  # the principle drawn (contrastive)
    # contrastive: whether a system prompt was derived from the principle's texts
    con.rows("ALTER TABLE pairs ADD COLUMN prompts_derived BOOLEAN")
    # ai (a judge scored it) | contrastive (by construction); a human verdict overrides either
    con.rows("ALTER TABLE labels ADD COLUMN label_source VARCHAR DEFAULT 'ai'")


def m008_imports(con) -> None:
    """Preference data brought in from elsewhere (`cai import`): HH-RLHF transcripts, TRL
    preference sets, annotated pairs. Each import is a pairs job (`pairs.source = 'dataset'`)
    plus one label job per annotator (`labels.label_source = 'dataset'`); this records where
    the file came from. Old rows read as before: no import, no external id."""
    con.rows("ALTER TABLE pairs ADD COLUMN external_id VARCHAR")  # the source's comparison id
    con.rows(
        """
        CREATE TABLE imports (                -- one imported file: its pairs job and its source
            pairs_job   VARCHAR PRIMARY KEY,
            file        VARCHAR NOT NULL,     -- the path as given
            format      VARCHAR NOT NULL,     -- hh | prefs | annotated
            sha256      VARCHAR NOT NULL,     -- of the file (a folder: of its files, in order)
            rows        INTEGER NOT NULL,     -- rows (comparisons) read
            pairs       INTEGER NOT NULL,     -- pairs imported
            skipped     INTEGER NOT NULL,     -- bad rows left out (--skip-bad)
            prompt_set  VARCHAR NOT NULL,     -- the prompt set made from the conversations
            metadata    VARCHAR,              -- JSON: the source's own metadata (annotated pairs)
            created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )
    con.rows(
        """
        CREATE TABLE import_annotators (      -- who gave an imported label job's labels
            labels_job   VARCHAR PRIMARY KEY,
            pairs_job    VARCHAR NOT NULL,    -- imports.pairs_job
            annotator_id VARCHAR NOT NULL,    -- the source's id (annotated pairs), else 'dataset'
            name         VARCHAR,
            description  VARCHAR NOT NULL,
            type         VARCHAR NOT NULL     -- human | principle | unknown | dataset | ...
        )
        """
    )


MIGRATIONS = [
    m001_initial,
    m002_feedback,
    m003_models,
    m004_evals,
    m005_trace_summaries,
    m006_judge_checks,
    m007_contrastive,
    m008_imports,
]
