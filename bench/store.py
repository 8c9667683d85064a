"""Benchmark: the store at real dataset sizes (issue 13, targets P4 and P5).

Builds a data home with a critique job of N trace rows (default 1,000,000: N/5 traces of an
initial answer and two rounds) through the engine's own path (a prompt set imported, Parquet
shards in the job's run folder, `jobs.ingest`), then measures, in this process:
- ingest rows/s (target >= 50,000);
- p50/p95 of each query the Traces page makes (target p95 < 100 ms): the first page, a
  filtered page, a page deep in the job (keyset), a trace opened, the statistics panel, the
  filter choices, the export offers, and a text search (common and rare words; measured,
  not a target: a search reads every step's text);
- the baseline: what the page did before, reading the whole job (`store.traces` and
  `group_traces`), measured once in the same process (at most 200,000 rows: it grows with N),
  and the first page's ratio against it;
- with --browser: the Traces page's first render in a real `streamlit run` driven by
  Playwright (time to the table being visible; target < 1.5 s) and the studio's peak RSS
  (target < 1 GB).

    .venv/bin/python bench/store.py [--rows 1000000] [--repeat 20] [--browser]
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import synthetic  # noqa: E402
from bench.machine import describe  # noqa: E402

BASELINE_MAX_ROWS = 200_000


def timed(fn, repeat: int) -> tuple[float, float]:
    """(p50, p95) of `fn`'s wall time over `repeat` calls, in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def page_queries(store, job_id: str) -> dict:
    """The Traces page's queries, as the page makes them."""
    from cai_engine import export
    from cai_engine.traces import TraceFilter

    first, _ = store.trace_page(job_id, limit=50)
    facets = store.trace_facets(job_id)
    deep_after = None
    # a page about two thirds into the job: walk there once with big pages, then time it
    walked = 0
    while walked < facets["traces"] * 2 // 3:
        page, _ = store.trace_page(job_id, after=deep_after, limit=5000)
        if not page:
            break
        deep_after, walked = (page[-1]["prompt_id"], page[-1]["sample"]), walked + len(page)
    pick = first[7]
    crime = TraceFilter(principle=synthetic.PRINCIPLES[3], round=2, category="crime")
    return {
        "first page (50 of all)": lambda: store.trace_page(job_id, limit=50),
        "filtered page (principle, round, category)": lambda: store.trace_page(
            job_id, crime, limit=50
        ),
        "cut-off filter page": lambda: store.trace_page(
            job_id, TraceFilter(cut_off=True), limit=50
        ),
        "deep page (keyset, 2/3 in)": lambda: store.trace_page(job_id, after=deep_after, limit=50),
        "trace opened (its steps)": lambda: store.trace_steps(
            job_id, pick["prompt_id"], pick["sample"]
        ),
        "statistics panel": lambda: store.trace_principle_stats(job_id),
        "filter choices": lambda: store.trace_facets(job_id),
        "export offers": lambda: export.offers(store, job_id),
        "search, common word (measured only)": lambda: store.trace_page(
            job_id, TraceFilter(search="cannot"), limit=50
        ),
        "search, absent word (measured only)": lambda: store.trace_page(
            job_id, TraceFilter(search="zebra"), limit=50
        ),
    }


def _empty_unit(store) -> None:
    with store.connect():
        pass


def label_queries(store, made: dict) -> dict:
    """The Labels page's queries, as the page makes them."""
    from cai_engine import export
    from cai_engine.review import LabelFilter

    job_id = made["job"]
    first, _ = store.label_page(job_id, limit=50)
    pick = first[7]
    principle = store.label_facets(job_id)["principles"][3]
    queries = {
        "first page (50 of all)": lambda: store.label_page(job_id, limit=50),
        "filtered page (principle, inconsistent)": lambda: store.label_page(
            job_id, LabelFilter(principle=principle, inconsistent=True), limit=50
        ),
        "not yet reviewed by one reviewer": lambda: store.label_page(
            job_id, LabelFilter(reviewed=False, reviewer="ann"), limit=50
        ),
        "label opened (both answers)": lambda: store.label_detail(
            job_id, pick["prompt_id"], pick["pair"]
        ),
        "filter choices": lambda: store.label_facets(job_id),
        "agreement panel": lambda: store.agreement(job_id),
        "export counts": lambda: export.labelled_prefs_counts(store, job_id),
    }
    for strategy in ("random", "stratified", "least_confident", "inconsistent"):
        queries[f"next review item ({strategy})"] = functools.partial(
            store.next_review, job_id, "ann", strategy, 200
        )
    queries["search, common word (measured only)"] = lambda: store.label_page(
        job_id, LabelFilter(search="cannot"), limit=50
    )
    return queries


def eval_queries(store, made: dict) -> dict:
    """The Eval page's queries, as the page makes them."""
    job_id, models, prompt_set = made["job"], made["models"], made["prompt_set"]
    ref = models[0]
    first, _ = store.eval_answer_page(job_id, models, prompt_set, reference=ref, limit=50)
    pick = first[7]["prompt_id"]
    return {
        "first page (50, most disagreement first)": lambda: store.eval_answer_page(
            job_id, models, prompt_set, reference=ref, limit=50
        ),
        "a page two thirds in": lambda: store.eval_answer_page(
            job_id, models, prompt_set, reference=ref, offset=len(made["prompts"]) * 2 // 3
        ),
        "two of the models": lambda: store.eval_answer_page(
            job_id, models[:2], prompt_set, reference=ref, limit=50
        ),
        "prompt opened (every model's answer)": lambda: store.eval_prompt_detail(
            job_id, prompt_set, pick, models, reference=ref
        ),
        "metrics table": lambda: store.eval_results(job_id),
        "search, common word (measured only)": lambda: store.eval_answer_page(
            job_id, models, prompt_set, reference=ref, search="cannot", limit=50
        ),
    }


def job_queries(store) -> dict:
    """The Jobs page's, Home's and the pickers' queries, and `cai jobs list`."""
    import contextlib
    import io

    from cai_engine import cli, jobs

    first, _ = store.job_page(limit=50)
    deep = first[-1]
    for _ in range(60):  # about 3,000 jobs in
        page, _ = store.job_page(after=(deep[8], deep[0]), limit=50, count=False)
        deep = page[-1] if page else deep

    def cli_list():
        with contextlib.redirect_stdout(io.StringIO()):
            cli.main(["--home", str(store.home), "jobs", "list"])

    return {
        "first page (50 of all)": lambda: store.job_page(limit=50),
        "filtered page (kind, status)": lambda: store.job_page(
            kind="eval", statuses=["failed"], limit=50
        ),
        "a page 3,000 jobs in (keyset)": lambda: store.job_page(after=(deep[8], deep[0]), limit=50),
        "counts by status and kind (Home)": lambda: store.job_counts(),
        "a picker (critique jobs)": lambda: jobs.list_jobs(
            store, kind="critique", reconcile_first=False
        ),
        "search by id or label": lambda: store.job_page(search="label 99", limit=50),
        "`cai jobs list`, in process": cli_list,
    }


def measure(title: str, queries: dict, store, repeat: int) -> dict[str, float]:
    """Time each query inside one store session, as the pages run them; print a table."""
    print(f"\n{title:52s} {'p50 ms':>8s} {'p95 ms':>8s}  target p95 < 100 ms")
    results = {}
    with store.session():
        for name, fn in queries.items():
            p50, p95 = timed(fn, repeat)
            results[name] = p95
            measured_only = "measured only" in name or "empty unit" in name
            verdict = "" if measured_only else ("ok" if p95 < 100 else "MISSED")
            print(f"{name:52s} {p50:8.1f} {p95:8.1f}  {verdict}")
    return results


# Each page: a text only it shows once its data is in (the pager's caption, a metric's
# label), then what its user reads first. The text keeps a table left over from the page before
# from passing for the new one.
PAGE_READY = {
    "Traces": (r"^Traces 1–50 of", "[data-testid=stDataFrame]"),
    "Labels": (r"^Agreement with AI", "[data-testid=stMetric]"),
    "Eval": (r"^Reference for win rates", "[data-testid=stDataFrame]"),
    "Jobs": (r"^Jobs 1–50 of", "[data-testid=stDataFrame]"),
}


def browser_first_render(home: Path, pages: list[str]) -> dict[str, float]:
    """In a real `streamlit run` driven by Playwright: seconds from following each page's
    sidebar link to its first table (or metric) being visible, in a fresh browser (Streamlit
    fetches the page's JavaScript chunks the first time, then serves them as immutable, so a
    browser loads them once) and again in the same browser profile reopened (a returning
    user); then the Traces page's next page (a rerun of its live section) and the studio's
    peak RSS in MB."""
    from playwright.sync_api import sync_playwright

    from tests.ui.studio import CHROMIUM, CHROMIUM_ARGS, running_studio, wait_for_app

    out = {}
    profile = tempfile.mkdtemp(prefix="cai-bench-browser-")
    with running_studio(home) as url, sync_playwright() as p:
        for visit in ("fresh browser", "returning browser"):
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000},
            )
            page = context.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{url}/")  # the server's first script run (imports) is not the page's
            wait_for_app(page)
            # a user sees Home drawn, its Recent jobs table included, before following a link
            page.locator("[data-testid=stDataFrame]").first.wait_for()
            for title in pages:
                start = time.perf_counter()
                page.get_by_role("link", name=title, exact=True).first.click()
                text, element = PAGE_READY[title]
                page.get_by_text(re.compile(text)).first.wait_for()
                page.locator(element).first.wait_for()
                out[f"{title}, {visit}"] = time.perf_counter() - start
                wait_for_app(page)
            if visit == "returning browser" and "Traces" in pages:
                page.get_by_role("link", name="Traces", exact=True).first.click()
                page.get_by_text(re.compile(r"^Traces 1–50 of")).wait_for()  # the page is drawn
                wait_for_app(page)
                start = time.perf_counter()
                page.get_by_role("button", name="Next →").click()
                page.get_by_text(re.compile(r"^Traces 51–100 of")).wait_for()
                out["Traces next page (its live section reruns)"] = time.perf_counter() - start
            context.close()
        port = url.rsplit(":", 1)[1]
        peaks = [_peak_rss_mb(pid) for pid in _pids_with(f"--server.port\0{port}\0")]
    out["studio peak RSS MB"] = max(peaks, default=0.0)
    return out


def _pids_with(argv_part: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and argv_part.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                found.append(int(name))
        except OSError:
            pass
    return found


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="trace rows (5 per trace)")
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=10_000, help="extra jobs for the Jobs page")
    ap.add_argument("--repeat", type=int, default=20, help="timed calls per query")
    ap.add_argument("--browser", action="store_true", help="also time the page in Chromium")
    ap.add_argument("--home", help="data home to build in (default: a temporary folder)")
    args = ap.parse_args()

    from cai_engine.bundled import install_bundled
    from cai_engine.store import Store
    from cai_engine.traces import group_traces

    print(describe())
    home = Path(args.home or tempfile.mkdtemp(prefix="cai-bench-store-")) / "store-home"
    store = Store(home)
    install_bundled(store)
    traces = max(args.rows // 5, 10)
    start = time.perf_counter()
    made = synthetic.critique_job(store, traces, rounds=2, shards=args.shards)
    built = time.perf_counter() - start
    rate = made["rows"] / made["ingest_s"]
    print(
        f"data home: {home}\njob {made['job']}: {made['rows']:,} trace rows ({traces:,} traces)"
        f" in {args.shards} shards; built in {built:.1f} s"
    )
    print(f"ingest: {made['ingest_s']:.2f} s, {rate:,.0f} rows/s (target >= 50,000)")

    results = measure("Traces page (query)", page_queries(store, made["job"]), store, args.repeat)
    print(f"{'empty unit of work (open, check, close; outside a session)':52s}", end=" ")
    print("{:8.1f} {:8.1f}".format(*timed(lambda: _empty_unit(store), args.repeat)))

    if made["rows"] <= BASELINE_MAX_ROWS:
        start = time.perf_counter()
        group_traces(store.traces(made["job"]))
        whole = (time.perf_counter() - start) * 1000
        first = results["first page (50 of all)"]
        print(
            f"\nbaseline (the page before: store.traces + group_traces, whole job): {whole:,.0f} ms"
            f"\nfirst page p95 / baseline = {first / whole:.4f} ({whole / first:,.0f}x faster)"
        )
    else:
        print(
            f"\nbaseline skipped above {BASELINE_MAX_ROWS:,} rows (it reads the whole job; "
            "measured at 1,000,000 rows: 38.6 s and 4.6 GB, in issue 13)"
        )
    labels = max(args.rows // 5, 40)
    made_labels = synthetic.label_job(store, labels, labels // 10, shards=args.shards)
    rate = made_labels["rows"] / made_labels["ingest_s"]
    print(
        f"\nlabel job {made_labels['job']}: {labels:,} labels with {made_labels['reviews']:,}"
        f" human verdicts; ingest {rate:,.0f} rows/s (pairs and labels)"
    )
    measure("Labels page (query)", label_queries(store, made_labels), store, args.repeat)

    answers = max(args.rows // 100, 40)
    made_eval = synthetic.eval_job(store, answers // 3, 3, shards=args.shards)
    made_eval["prompts"] = range(answers // 3)
    print(
        f"\neval job {made_eval['job']}: {answers // 3 * 3:,} answers ({answers // 3:,} prompts"
        f" x 3 models) and their verdicts"
    )
    measure("Eval page (query)", eval_queries(store, made_eval), store, args.repeat)

    synthetic.many_jobs(store, args.jobs)
    print(f"\n{args.jobs:,} more jobs in the store")
    measure("Jobs, Home and pickers (query)", job_queries(store), store, args.repeat)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"this process's peak RSS: {peak:,.0f} MB (building the job included)")

    if args.browser:
        seen = browser_first_render(home, ["Traces", "Labels", "Eval", "Jobs"])
        rss = seen.pop("studio peak RSS MB")
        for what, seconds in seen.items():
            target = 0.5 if "next page" in what else 1.5
            print(f"browser: {what}: {seconds:.2f} s (target < {target} s)")
        print(f"studio peak RSS: {rss:,.0f} MB (target < 1,024 MB)")
    if not args.home:
        print(f"(left in {home.parent}; delete it when done)")


if __name__ == "__main__":
    main()
