#!/usr/bin/env python3
"""The Sluice benchmark: the same jobs on Spark, Sluice and the single-process limits.

For each scale factor given, it generates the data with a fixed seed, then runs every job
on every engine — Spark (`spark-submit --master local[2]`), Sluice distributed (a
scheduler and two executor processes), Sluice embedded (`sluice run`), single-process
DataFusion over the same plan (`sluice run --engine datafusion`) and DuckDB (2 threads) —
the engines interleaved run after run so that machine noise hits all alike. It measures
wall time, CPU time (user + system of every process of the engine, from `wait4`) and
peak memory (the resident set summed over all processes of the engine, sampled every
20 ms), takes the median of the runs, checks that every engine's output equals Spark's
(rows compared after sorting; numbers within a relative 1e-9) and fails loudly when one
does not, then writes `results.json`, `results.md` (ratios) and `chart.png`.

Run it through `benches/run`, which prepares the Python tools and builds Sluice; see
benches/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import yaml

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent
ENGINES = ["spark", "sluice", "sluice-embedded", "datafusion", "duckdb"]
CLAIMS_JOBS = ["claims_cleanse", "rx_monthly"]
TPCH_QUERIES = ["q01", "q03", "q05", "q06", "q09", "q18"]
SEED = 42
RUN_DATE = "2024-04-01"
# The tokenization key every engine masks with (a benchmark key, not a secret).
MASK_KEY = "sluice-bench-mask-key-0123456789"
RELATIVE_TOLERANCE = 1e-9


class BenchError(Exception):
    """A benchmark step failed; the message names the job, engine and what happened."""


# --------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    """One run of one job on one engine."""

    job: str
    engine: str
    scale: float
    run: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    # Sluice distributed only: the cluster's start (not in wall_s) and the run's profile.
    cluster_start_s: float | None = None
    profile: dict | None = None
    # The input's size, for jobs that report a throughput.
    input_mb: float | None = None


class ProcessGroupMeter:
    """Samples the resident memory summed over a set of processes and their descendants,
    and adds up their CPU time as each is reaped."""

    def __init__(self) -> None:
        self.roots: list[subprocess.Popen] = []
        self.peak_rss = 0
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def spawn(self, args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                start_new_session=True,
            )
        self.roots.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen, timeout: float | None = None) -> int:
        """Reaps `proc` with `wait4`, adding its CPU time (its own and its reaped
        children's); returns its exit code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"process {proc.args[0]} still running after {timeout} s")
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu += usage.ru_utime + usage.ru_stime
        return proc.returncode

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM, then SIGKILL after 10 s; reaped so its CPU time counts."""
        if proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            self.wait(proc, timeout=10)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            self.wait(proc)
        except ProcessLookupError:
            self.wait(proc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for proc in self.roots:
            self.stop(proc)

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for root in list(self.roots):
                if root.returncode is not None:
                    continue
                try:
                    process = psutil.Process(root.pid)
                    family = [process, *process.children(recursive=True)]
                except psutil.Error:
                    continue
                for member in family:
                    try:
                        total += member.memory_info().rss
                    except psutil.Error:
                        pass
            self.peak_rss = max(self.peak_rss, total)
            self._stop.wait(0.02)


def run_measured(argv: list[str], log: Path, env: dict, what: str) -> tuple[float, float, float]:
    """Runs one command to its end: (wall s, CPU s, peak RSS MB). Fails with the log's
    tail when it exits non-zero."""
    meter = ProcessGroupMeter()
    start = time.monotonic()
    try:
        proc = meter.spawn(argv, log, env)
        code = meter.wait(proc)
        wall = time.monotonic() - start
    finally:
        meter.close()
    if code != 0:
        raise BenchError(f"{what} exited {code}; the end of {log}:\n{tail(log)}")
    return wall, meter.cpu, meter.peak_rss / 2**20


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- engines


@dataclass
class Job:
    """One benchmark job: its Sluice definition and its parameters for one engine's
    directories; `output` is the folder whose rows are compared."""

    name: str
    definition: Path
    params: dict[str, str]
    outputs: dict[str, Path]
    spark: list[str]
    duckdb: list[str]
    # Only these engines run it (all when None); a variant of another job is checked
    # against that job's reference output (`parity_job`).
    engines: set[str] | None = None
    parity_job: str | None = None
    # The bytes it reads, for a throughput (the CSV read).
    input_bytes: int | None = None


@dataclass
class Context:
    sluice: Path
    python: Path
    spark_submit: Path
    work: Path
    logs: Path
    env: dict = field(default_factory=dict)


def sluice_params(params: dict[str, str]) -> list[str]:
    return [arg for name, value in params.items() for arg in ("-p", f"{name}={value}")]


def run_engine(ctx: Context, engine: str, job: Job, scale: float, run: int) -> Measurement:
    for out in job.outputs.values():
        shutil.rmtree(out, ignore_errors=True)
    log = ctx.logs / f"{job.name}-{engine}-s{scale:g}-r{run}.log"
    log.unlink(missing_ok=True)
    what = f"job `{job.name}` on {engine} (scale {scale:g}, run {run})"
    extra: dict = {}
    if engine == "spark":
        argv = [str(ctx.spark_submit), "--master", "local[2]", "--driver-memory", "8g",
                "--conf", "spark.ui.enabled=false", *job.spark]
        wall, cpu, rss = run_measured(argv, log, ctx.env, what)
    elif engine == "duckdb":
        argv = [str(ctx.python), *job.duckdb]
        wall, cpu, rss = run_measured(argv, log, ctx.env, what)
    elif engine == "sluice-embedded":
        argv = [str(ctx.sluice), "run", str(job.definition), *sluice_params(job.params)]
        wall, cpu, rss = run_measured(argv, log, ctx.env, what)
    elif engine == "datafusion":
        argv = [str(ctx.sluice), "run", "--engine", "datafusion", str(job.definition),
                *sluice_params(job.params)]
        wall, cpu, rss = run_measured(argv, log, ctx.env, what)
    elif engine == "sluice":
        wall, cpu, rss, extra = run_distributed(ctx, job, log, what)
    else:
        raise BenchError(f"unknown engine `{engine}`")
    return Measurement(job.name, engine, scale, run, wall, cpu, rss, **extra)


def run_distributed(ctx: Context, job: Job, log: Path, what: str):
    """A scheduler and two executors (one task slot each: two cores, as Spark's
    local[2]) started fresh for the job; the wall time is submit to done."""
    meter = ProcessGroupMeter()
    state = ctx.work / "scheduler-state"
    shutil.rmtree(state, ignore_errors=True)
    port = free_port()
    started = time.monotonic()
    try:
        meter.spawn([str(ctx.sluice), "scheduler", "--port", str(port), "--state-dir", str(state)],
                    log, ctx.env)
        health_ports = []
        for index in range(2):
            health = free_port()
            health_ports.append(health)
            work_dir = ctx.work / f"executor-{index}"
            shutil.rmtree(work_dir, ignore_errors=True)
            work_dir.mkdir(parents=True)
            meter.spawn([str(ctx.sluice), "executor", "--scheduler", f"127.0.0.1:{port}",
                         "--port", str(free_port()), "--grpc-port", str(free_port()),
                         "--health-port", str(health), "--vcores", "1",
                         "--work-dir", str(work_dir), "--executor-id", f"bench-{index}"],
                        log, ctx.env)
        wait_serving(ctx, [port, *health_ports], what)
        cluster_start = time.monotonic() - started
        submit_log = log.with_suffix(".submit.json")
        start = time.monotonic()
        with open(submit_log, "wb") as out, open(log, "ab") as err:
            proc = subprocess.Popen(
                [str(ctx.sluice), "submit", str(job.definition), *sluice_params(job.params),
                 "--wait", "--output", "json", "--scheduler", f"http://127.0.0.1:{port}"],
                stdout=out, stderr=err, env=ctx.env, cwd=ROOT)
            meter.roots.append(proc)
            code = meter.wait(proc)
        wall = time.monotonic() - start
    finally:
        meter.close()
    if code != 0:
        raise BenchError(f"{what}: submit exited {code}; the end of {log}:\n{tail(log)}")
    record = json.loads(submit_log.read_text())
    extra = {"cluster_start_s": cluster_start, "profile": record.get("profile")}
    return wall, meter.cpu, meter.peak_rss / 2**20, extra


def wait_serving(ctx: Context, ports: list[int], what: str) -> None:
    deadline = time.monotonic() + 60
    for port in ports:
        while subprocess.run(
            [str(ctx.sluice), "health", "--address", f"127.0.0.1:{port}"],
            capture_output=True, env=ctx.env,
        ).returncode != 0:
            if time.monotonic() > deadline:
                raise BenchError(f"{what}: port {port} not serving after 60 s")
            time.sleep(0.05)


# ----------------------------------------------------------------------------- parity


def load_rows(path: Path) -> tuple[pa.Table, dict[str, str]]:
    """An output folder's rows, Hive partition columns included, with types made
    comparable across engines — numbers as float64, everything else as text (timestamps in
    UTC, lists joined, source files by name), the run id and Sluice's line columns
    dropped — and each number
    column's kind (`int`, `float` or `decimal:<scale>`)."""
    files = [p for p in path.rglob("*.parquet")
             if not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)]
    if not files:
        return pa.table({}), {}
    dataset = ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=str(path))
    table = dataset.to_table()
    columns, kinds = {}, {}
    for name in sorted(table.column_names):
        # The run id differs by construction; the line, raw text and fault of a CSV row
        # are columns only Sluice's reader gives the quarantine (Spark has no line).
        if name in ("_dq_run_id", "_dq_source_line", "_dq_raw_record", "_dq_malformed"):
            continue
        column = table[name]
        kind = column.type
        if pa.types.is_dictionary(kind):
            column = column.cast(kind.value_type)
            kind = kind.value_type
        if name == "_dq_source_file":
            names = [None if v is None else v.rsplit("/", 1)[-1] for v in column.to_pylist()]
            column = pa.chunked_array([names], pa.string())
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            kinds[name] = ("int" if pa.types.is_integer(kind) else
                           "float" if pa.types.is_floating(kind) else f"decimal:{kind.scale}")
            column = column.cast(pa.float64())
        elif pa.types.is_timestamp(kind):
            if kind.tz is None:
                column = column.cast(pa.timestamp("us"))
            else:
                column = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
            column = column.cast(pa.string())
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            joined = [None if v is None else "|".join(map(str, v)) for v in column.to_pylist()]
            column = pa.chunked_array([joined], pa.string())
        else:
            column = column.cast(pa.string())
        columns[name] = column
    return pa.table(columns), kinds


def tolerance(a: str | None, b: str | None) -> tuple[float, float]:
    """(relative, absolute) tolerance between two number columns: exact for integers and
    decimals (the same decimal is the same float64), 1e-9 relative for floating point,
    and half a unit of the last digit between a decimal and a float (DuckDB's `avg` is a
    double where Spark's is a decimal of scale 6)."""
    kinds = {a, b}
    if "float" in kinds:
        scales = [int(k.split(":")[1]) for k in kinds if k and k.startswith("decimal:")]
        return RELATIVE_TOLERANCE, (0.5 * 10 ** -min(scales) if scales else 0.0)
    return 0.0, 0.0


def compare_outputs(job: str, output: str, engine: str, reference: str, got: Path, want: Path) -> None:
    """Fails loudly (naming the job, output, column and a differing row) unless `got` has
    the same rows as `want`."""
    import numpy as np

    (a, a_kinds), (b, b_kinds) = load_rows(got), load_rows(want)
    where = f"job `{job}` output `{output}`: {engine} vs {reference}"
    if a.num_rows != b.num_rows:
        raise BenchError(f"{where}: {a.num_rows} rows vs {b.num_rows}")
    if a.num_rows == 0:
        return
    if a.column_names != b.column_names:
        raise BenchError(f"{where}: columns differ: {a.column_names} vs {b.column_names}")
    keys = [(name, "ascending", "at_end") for name in a.column_names]
    a = a.take(pc.sort_indices(a, sort_keys=keys))
    b = b.take(pc.sort_indices(b, sort_keys=keys))
    for name in a.column_names:
        x, y = a[name].combine_chunks(), b[name].combine_chunks()
        if pa.types.is_floating(x.type) and pa.types.is_floating(y.type):
            rtol, atol = tolerance(a_kinds.get(name), b_kinds.get(name))
            xs = x.to_numpy(zero_copy_only=False)
            ys = y.to_numpy(zero_copy_only=False)
            same = np.isclose(xs, ys, rtol=rtol, atol=atol, equal_nan=True)
        else:
            x, y = x.cast(pa.string()), y.cast(pa.string())
            same = pc.fill_null(pc.equal(x, y), False).to_numpy(zero_copy_only=False)
            same |= (pc.is_null(x).to_numpy(zero_copy_only=False)
                     & pc.is_null(y).to_numpy(zero_copy_only=False))
        if not same.all():
            row = int((~same).nonzero()[0][0])
            raise BenchError(
                f"{where}: column `{name}` differs at sorted row {row} of {a.num_rows}: "
                f"{x[row].as_py()!r} vs {y[row].as_py()!r}; "
                f"{int((~same).sum())} rows differ in that column"
            )


# ------------------------------------------------------------------------------- jobs


def claims_jobs(ctx: Context, data: Path, engine: str) -> list[Job]:
    landing = data / "landing"
    root = ctx.work / "out" / engine
    staging, curated = root / "staging", root / "curated"
    cleanse = BENCHES / "jobs" / "claims_cleanse.yaml"
    monthly = BENCHES / "jobs" / "rx_monthly.yaml"
    return [
        Job(
            "claims_cleanse", cleanse,
            {"landing": str(landing), "staging": str(staging), "run_date": RUN_DATE},
            {"claims": staging / "claims", "quarantine": staging / "quarantine" / "claims"},
            [str(BENCHES / "spark" / "claims_cleanse.py"), "--landing", str(landing),
             "--staging", str(staging), "--run-date", RUN_DATE],
            [str(BENCHES / "duckdb" / "run.py"), str(BENCHES / "duckdb" / "claims_cleanse.sql"),
             "--threads", "2", "-p", f"landing={landing}", "-p", f"staging={staging}",
             "-p", f"run_date={RUN_DATE}"],
        ),
        Job(
            "rx_monthly", monthly,
            {"landing": str(landing), "staging": str(staging), "curated": str(curated)},
            {"rx_monthly": curated / "rx_monthly"},
            [str(BENCHES / "spark" / "rx_monthly.py"), "--landing", str(landing),
             "--staging", str(staging), "--curated", str(curated)],
            [str(BENCHES / "duckdb" / "run.py"), str(BENCHES / "duckdb" / "rx_monthly.sql"),
             "--threads", "2", "-p", f"landing={landing}", "-p", f"staging={staging}",
             "-p", f"curated={curated}"],
        ),
    ]


def tpch_jobs(ctx: Context, data: Path, engine: str) -> list[Job]:
    jobs = []
    for query in TPCH_QUERIES:
        definition = BENCHES / "tpch" / f"{query}.yaml"
        out = ctx.work / "out" / engine / "tpch"
        params = {"tpch": str(data / "tpch"), "out": str(out)}
        argv = ["--query", str(definition), "--tpch", str(data / "tpch"), "--out", str(out)]
        jobs.append(Job(
            f"tpch_{query}", definition, params, {query: out / query},
            [str(BENCHES / "spark" / "tpch.py"), *argv],
            [str(BENCHES / "duckdb" / "tpch.py"), *argv, "--threads", "2"],
        ))
    return jobs


SLUICE_ENGINES = {"sluice", "sluice-embedded", "datafusion"}


def read_jobs(ctx: Context, data: Path, engine: str) -> list[Job]:
    """The CSV read of the cleansing benchmark alone (every field of the landed claims
    decoded as text), PERMISSIVE as the cleansing job reads it, and — Sluice only — the
    same read with `mode: FAILFAST`, which has no malformed-row path."""
    landing = data / "landing"
    out = ctx.work / "out" / engine / "read"
    definition = BENCHES / "read" / "csv_decode.yaml"
    failfast = ctx.work / "csv_decode_failfast.yaml"
    spec = yaml.safe_load(definition.read_text())
    spec["name"] = "csv_decode_failfast"
    spec["sources"]["claims"]["csv"] = {"mode": "FAILFAST"}
    failfast.write_text(yaml.safe_dump(spec, sort_keys=False))
    size = sum(f.stat().st_size for f in (landing / "claims").iterdir() if f.is_file())
    argv = ["--query", str(definition), "--tpch", str(landing), "--out", str(out)]
    params = {"landing": str(landing), "out": str(out)}
    return [
        Job("csv_decode", definition, params, {"csv_decode": out / "csv_decode"},
            [str(BENCHES / "spark" / "tpch.py"), *argv],
            [str(BENCHES / "duckdb" / "tpch.py"), *argv, "--threads", "2"],
            input_bytes=size),
        Job("csv_decode_failfast", failfast, {**params, "out": str(out / "failfast")},
            {"csv_decode": out / "failfast" / "csv_decode"},
            [], [], engines=SLUICE_ENGINES, parity_job="csv_decode", input_bytes=size),
    ]


def generate(ctx: Context, scale: float, suites: list[str]) -> Path:
    """The scale's data, generated once with the fixed seed and kept for later runs."""
    data = ctx.work / "data" / f"scale-{scale:g}"
    landed = "claims" in suites or "read" in suites
    if landed and not (data / "landing" / "ground_truth.json").exists():
        rows = max(int(scale * 1_000_000), 1000)
        subprocess.run([str(ctx.sluice), "datagen", "claims", "--rows", str(rows),
                        "--seed", str(SEED), "--out", str(data)], check=True, env=ctx.env,
                       stdout=subprocess.DEVNULL)
        # datagen writes `<out>/landing/…` and the ground truth beside it.
        if not (data / "landing" / "ground_truth.json").exists() and (data / "ground_truth.json").exists():
            shutil.copy(data / "ground_truth.json", data / "landing" / "ground_truth.json")
    if "tpch" in suites and not (data / "tpch" / "_done").exists():
        tpch = data / "tpch"
        shutil.rmtree(tpch, ignore_errors=True)
        tpch.mkdir(parents=True)
        cli = ctx.python.parent / "tpchgen-cli"
        # `--parts` writes one folder per table, as a Sluice (and Spark) source is a folder.
        subprocess.run([str(cli), "parquet", "--scale-factor", f"{scale:g}", "--parts", "2",
                        "--output-dir", str(tpch)], check=True, stdout=subprocess.DEVNULL)
        (tpch / "_done").write_text("")
    return data


# ---------------------------------------------------------------------------- reports


def summarize(measurements: list[Measurement]) -> list[dict]:
    """Medians per (scale, job, engine)."""
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.scale, m.job, m.engine), []).append(m)
    rows = []
    for (scale, job, engine), ms in groups.items():
        row = {
            "scale": scale, "job": job, "engine": engine, "runs": len(ms),
            "wall_s": statistics.median(m.wall_s for m in ms),
            "cpu_s": statistics.median(m.cpu_s for m in ms),
            "peak_rss_mb": statistics.median(m.peak_rss_mb for m in ms),
        }
        if ms[0].input_mb:
            row["input_mb"] = ms[0].input_mb
        starts = [m.cluster_start_s for m in ms if m.cluster_start_s is not None]
        if starts:
            row["cluster_start_s"] = statistics.median(starts)
        profiles = [m.profile for m in ms if m.profile]
        if profiles:
            row["profile"] = profiles[len(profiles) // 2]
        rows.append(row)
    return rows


def ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def markdown(meta: dict, summary: list[dict]) -> str:
    lines = [
        f"# Benchmark results — {meta['date']}",
        "",
        f"Machine: {meta['machine']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        f"Median of {meta['runs']} runs per engine, engines interleaved. Wall time in seconds; "
        "CPU = user + system seconds over all the engine's processes; memory = peak resident "
        "set summed over them. Sluice = scheduler + 2 executor processes (wall = submit to "
        f"done, cluster start not included). Outputs checked against {meta['reference']}'s: "
        f"{meta['parity']}.",
        "",
    ]
    by_key = {(r["scale"], r["job"], r["engine"]): r for r in summary}
    for scale in sorted({r["scale"] for r in summary}):
        lines += [f"## Scale {scale:g} (claims: {int(max(scale * 1e6, 1000)):,} rows; TPC-H SF {scale:g})", ""]
        engines = [e for e in ENGINES if any(k[0] == scale and k[2] == e for k in by_key)]
        lines.append("| job | " + " | ".join(f"{e} wall s / CPU s / MB" for e in engines)
                     + " | Spark / Sluice | Sluice / DataFusion | Sluice / DuckDB | memory Sluice / Spark |")
        lines.append("|---" * (len(engines) + 5) + "|")
        for job in dict.fromkeys(r["job"] for r in summary if r["scale"] == scale):
            cells = []
            for e in engines:
                r = by_key.get((scale, job, e))
                cells.append("–" if not r else f"{r['wall_s']:.2f} / {r['cpu_s']:.1f} / {r['peak_rss_mb']:.0f}")
            get = lambda e, k: (by_key.get((scale, job, e)) or {}).get(k)  # noqa: E731
            lines.append(
                f"| {job} | " + " | ".join(cells)
                + f" | {ratio(get('spark', 'wall_s'), get('sluice', 'wall_s'))}"
                + f" | {ratio(get('sluice', 'wall_s'), get('datafusion', 'wall_s'))}"
                + f" | {ratio(get('sluice', 'wall_s'), get('duckdb', 'wall_s'))}"
                + f" | {ratio(get('sluice', 'peak_rss_mb'), get('spark', 'peak_rss_mb'))} |"
            )
        lines.append("")
        read = [r for r in summary if r["scale"] == scale and r.get("input_mb")]
        if read:
            lines += ["The CSV read alone (every field of the landed claims decoded as text): throughput "
                      "= input MB / wall s, and per core = input MB / CPU s.", "",
                      "| job | engine | input MB | MB/s | MB/s per core |", "|---|---|---|---|---|"]
            for r in read:
                lines.append(f"| {r['job']} | {r['engine']} | {r['input_mb']:.0f} | {r['input_mb'] / r['wall_s']:.0f} "
                             f"| {r['input_mb'] / max(r['cpu_s'], 1e-9):.0f} |")
            lines.append("")
            costs = []
            for e in ENGINES:
                permissive = by_key.get((scale, "csv_decode", e))
                failfast = by_key.get((scale, "csv_decode_failfast", e))
                if permissive and failfast:
                    costs.append(f"{e} {ratio(permissive['wall_s'], failfast['wall_s'])} wall, "
                                 f"{ratio(permissive['cpu_s'], failfast['cpu_s'])} CPU")
            if costs:
                lines += ["PERMISSIVE (malformed rows kept for the quarantine) against FAILFAST: "
                          + "; ".join(costs) + ".", ""]
        profiled = [r for r in summary if r["scale"] == scale and r.get("profile")]
        if profiled:
            lines += ["Sluice distributed, where the time goes (summed over tasks; a profile of the median run):", "",
                      "| job | cluster start s | submit → first task s | planning s | read | compute | shuffle | write |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in profiled:
                p = r["profile"]
                busy = sum(p.get(k, 0) for k in ("read_ms", "compute_ms", "shuffle_ms", "write_ms")) or 1
                share = lambda k: f"{100 * p.get(k, 0) / busy:.0f}%"  # noqa: E731
                lines.append(
                    f"| {r['job']} | {r.get('cluster_start_s', 0):.2f} | {p.get('first_task_ms', 0) / 1000:.2f} "
                    f"| {p.get('planning_ms', 0) / 1000:.2f} | {share('read_ms')} | {share('compute_ms')} "
                    f"| {share('shuffle_ms')} | {share('write_ms')} |")
            lines.append("")
    return "\n".join(lines)


def chart(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = sorted({r["scale"] for r in summary})
    fig, axes = plt.subplots(len(scales), 1, figsize=(12, 4.5 * len(scales)), squeeze=False)
    for ax, scale in zip(axes[:, 0], scales):
        rows = [r for r in summary if r["scale"] == scale]
        jobs = list(dict.fromkeys(r["job"] for r in rows))
        engines = [e for e in ENGINES if any(r["engine"] == e for r in rows)]
        width = 0.8 / max(len(engines), 1)
        for i, engine in enumerate(engines):
            values = [next((r["wall_s"] for r in rows if r["job"] == j and r["engine"] == engine), 0) for j in jobs]
            ax.bar([x + i * width for x in range(len(jobs))], values, width, label=engine)
        ax.set_xticks([x + width * (len(engines) - 1) / 2 for x in range(len(jobs))], jobs, rotation=20)
        ax.set_ylabel("wall time, s (median)")
        ax.set_title(f"scale {scale:g}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def versions(ctx: Context) -> dict:
    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, env=ctx.env, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    return {
        "sluice": out([str(ctx.sluice), "--version"]).removeprefix("sluice "),
        "datafusion/ballista": "55",
        "pyspark": out([str(ctx.python), "-c", "import pyspark; print(pyspark.__version__)"]),
        "duckdb": out([str(ctx.python), "-c", "import duckdb; print(duckdb.__version__)"]),
        "java": out(["java", "-version"]) or subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0],
        "python": platform.python_version(),
    }


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}, {os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.system()} {platform.release()}"


# ------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="1", help="scale factors, comma-separated: 1 = 1M claims rows and TPC-H SF 1")
    parser.add_argument("--runs", type=int, default=3, help="runs per engine and job (the median is reported)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--suites", default="claims,tpch,read",
                        help="some of claims (the pipeline), tpch, read (the CSV read alone)")
    parser.add_argument("--sluice", required=True, help="the sluice binary")
    parser.add_argument("--work", default="/var/tmp/sluice-bench", help="data and outputs (kept between runs)")
    parser.add_argument("--results", help="where results.{json,md} and chart.png go (default: benches/results/DATE)")
    parser.add_argument("--no-parity", action="store_true", help="skip the output checks")
    args = parser.parse_args()

    scales = [float(s) for s in args.scale.split(",")]
    engines = [e for e in args.engines.split(",") if e]
    suites = [s for s in args.suites.split(",") if s]
    for engine in engines:
        if engine not in ENGINES:
            parser.error(f"unknown engine `{engine}`; expected some of {', '.join(ENGINES)}")
    work = Path(args.work).resolve()
    ctx = Context(
        sluice=Path(args.sluice).resolve(), python=Path(sys.executable),
        spark_submit=Path(sys.executable).parent / "spark-submit", work=work, logs=work / "logs",
        env={**os.environ, "SLUICE_MASK_KEY": MASK_KEY, "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
             "PYSPARK_PYTHON": sys.executable},
    )
    ctx.logs.mkdir(parents=True, exist_ok=True)
    today = dt.date.today().isoformat()
    results = Path(args.results) if args.results else BENCHES / "results" / today
    results.mkdir(parents=True, exist_ok=True)

    measurements: list[Measurement] = []
    failures: list[str] = []
    # Every engine's outputs are checked against Spark's (or the first engine's).
    reference = "spark" if "spark" in engines else engines[0]
    for scale in scales:
        print(f"== scale {scale:g}: generating data", flush=True)
        data = generate(ctx, scale, suites)
        suite_jobs = []
        if "claims" in suites:
            suite_jobs.append(claims_jobs)
        if "tpch" in suites:
            suite_jobs.append(tpch_jobs)
        if "read" in suites:
            suite_jobs.append(read_jobs)
        for make_jobs in suite_jobs:
            for run in range(1, args.runs + 1):
                # Interleaved: each run goes through every engine before the next run.
                for engine in engines:
                    for job in make_jobs(ctx, data, engine):
                        if job.engines is not None and engine not in job.engines:
                            continue
                        m = run_engine(ctx, engine, job, scale, run)
                        m.input_mb = job.input_bytes / 2**20 if job.input_bytes else None
                        measurements.append(m)
                        print(f"  {job.name:15} {engine:16} run {run}: {m.wall_s:7.2f} s wall "
                              f"{m.cpu_s:7.1f} s CPU {m.peak_rss_mb:7.0f} MB", flush=True)
                if run == 1 and not args.no_parity:
                    ref_jobs = {j.name: j for j in make_jobs(ctx, data, reference)}
                    for engine in engines:
                        for job in make_jobs(ctx, data, engine):
                            if job.engines is not None and engine not in job.engines:
                                continue
                            ref_job = ref_jobs[job.parity_job or job.name]
                            if engine == reference and ref_job is ref_jobs[job.name]:
                                continue
                            for output, path in job.outputs.items():
                                try:
                                    compare_outputs(job.name, output, engine, reference, path, ref_job.outputs[output])
                                    print(f"  parity  {job.name:15} {output:12} {engine} = {reference}", flush=True)
                                except BenchError as err:
                                    print(f"  PARITY FAILED: {err}", flush=True)
                                    failures.append(str(err))

    summary = summarize(measurements)
    meta = {"date": today, "machine": machine(), "versions": versions(ctx), "runs": args.runs,
            "reference": reference,
            "scales": scales, "engines": engines, "seed": SEED,
            "parity": "skipped" if args.no_parity else ("failed" if failures else "equal"),
            "parity_failures": failures, "relative_tolerance": RELATIVE_TOLERANCE}
    (results / "results.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "measurements": [asdict(m) for m in measurements]}, indent=2))
    (results / "results.md").write_text(markdown(meta, summary))
    chart(summary, results / "chart.png")
    print(f"results: {results}/results.md")
    if failures:
        print(f"{len(failures)} output(s) differ from the reference:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        print(f"benchmark failed: {err}", file=sys.stderr)
        sys.exit(1)
