#!/usr/bin/env python3
"""Rows per second of `01_collect text` against a plain sqlite3.executemany of the same raw rows.

The file is built from the real prompts in examples/prompts plus variants (suffixes,
case, extra spaces, some non-ASCII), so normalisation does real work. Our figure
covers everything `text` does (hash the file, read, decode, normalise, hash each
line, insert into `prompts` with its unique index, record the run and source, close
the database with its last WAL checkpoint);
the baseline only inserts the already-split (source_id, position, text) rows into
an unindexed table in a fresh database in this same process.

``--discord N`` also imports an N-message DiscordChatExporter JSON export (written by
tests/dce_export.py the way DCE writes it: Midjourney results with mentions, human
chat, replies) with `01_collect discord` in a subprocess, and reports its peak memory
(Linux VmHWM of that process; the export streams: the target is under 150 MB for 200,000 messages).
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_MEMORY_TARGET_MB = 150
# Runs a script and, as it exits, prints its own peak resident memory (Linux VmHWM). Not ru_maxrss:
# that counts the benchmark process too, whose pages the child shares from fork until exec.
PEAK_REPORTER = ("import atexit, runpy, sys; atexit.register(lambda: sys.stderr.write(next(line for line in "
                 "open('/proc/self/status') if line.startswith('VmHWM')))); "
                 "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")

SUFFIXES = [", trending on artstation", ", 4k", ", highly detailed", ", octane render", " — café au lait",
            ", by greg rutkowski", "  ,  cinematic lighting", ", ﬁne art"]


def build_lines(count: int, seed: int = 7) -> list[str]:
    base = []
    for file in sorted((ROOT / "examples" / "prompts").glob("*.txt")):
        base += [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        prompt, roll = rng.choice(base), rng.random()
        if roll < 0.3:
            prompt += rng.choice(SUFFIXES)
        elif roll < 0.4:
            prompt = prompt.upper()
        elif roll < 0.45:
            prompt = "  " + prompt.replace(" ", "  ") + " ."
        lines.append(prompt)
    return lines


def collect_seconds(path: Path, db_path: Path, worker: bool | None) -> tuple[float, int]:
    from promptmill.collect import textfile
    from promptmill.collect.base import Collector
    from promptmill.core.runs import start_run
    from promptmill.core.store import open_store

    started = time.perf_counter()
    store = open_store(db_path)
    with start_run(store, "01_collect", "text", {"files": [str(path)]}, argv=["bench"]) as run:
        collector = Collector(store, run, textfile.source_info(path))
        collector.finish(textfile.collect_lines(collector, path, worker=worker))
    store.close()  # the last WAL checkpoint is part of the work
    seconds = time.perf_counter() - started
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT count(*) FROM prompts").fetchone()[0]
    return seconds, rows


def baseline_seconds(lines: list[str], db_path: Path) -> float:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("CREATE TABLE raw (source_id INTEGER, position INTEGER, text TEXT)")
    started = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO raw VALUES (?, ?, ?)", ((1, i, t) for i, t in enumerate(lines, 1)))
    conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def discord_messages(count: int, lines: list[str]):
    """Messages as a Midjourney channel has them: results that mention their author, chat, replies."""
    sys.path.insert(0, str(ROOT / "tests"))
    from dce_export import Message, User

    bot = User("936929561302675456", "Midjourney Bot", is_bot=True)
    users = [User(str(800_000_000_000_000_000 + i), f"user{i}", f"User {i}") for i in range(500)]
    rng = random.Random(11)
    for index in range(count):
        user, prompt = rng.choice(users), lines[index % len(lines)]
        roll = rng.random()
        if roll < 0.6:
            yield Message(str(10**18 + index), bot, f"**{prompt} --ar 3:2 --v 6.0** - <@{user.id}> (fast)",
                          mentions=[user], minute=index // 60)
        elif roll < 0.8:
            yield Message(str(10**18 + index), user, prompt, minute=index // 60)
        else:
            yield Message(str(10**18 + index), user, "that one is great", type="Reply",
                          reference=str(10**18 + index - 1), minute=index // 60)


def discord_import(count: int, lines: list[str], tmp: Path) -> dict:
    """Seconds and peak memory (VmHWM of the import process) of importing a COUNT-message export."""
    sys.path.insert(0, str(ROOT / "tests"))
    from dce_export import Export

    path = Export(channel="midjourney-results", parent=None).write_json(
        tmp / "export.json", messages=discord_messages(count, lines))
    env = {**os.environ, "PROMPTMILL_PROGRESS": "0", "PYTHONPATH": str(ROOT / "lib")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_REPORTER, str(ROOT / "steps" / "01_collect.py"), "discord",
                           str(path), "--format", "midjourney", "--db", str(tmp / "discord" / "promptmill.db")],
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    lines = done.stderr.strip().splitlines()
    if done.returncode or not lines or not lines[-1].startswith("VmHWM:"):
        raise RuntimeError(f"01_collect discord failed: {done.stderr.strip()[-500:]}")
    peak_mb = int(lines[-1].split()[1]) / 1024
    summary = lines[:-1]
    with sqlite3.connect(tmp / "discord" / "promptmill.db") as conn:
        prompts = conn.execute("SELECT count(*) FROM prompts").fetchone()[0]
    return {"name": "01_collect discord (DCE JSON)",
            "figure": f"{count / seconds:,.0f} messages/s ({count:,} messages, {path.stat().st_size / 2**20:,.0f} MB, "
                      f"{prompts:,} prompts, {seconds:.1f} s)",
            "peak memory": f"{peak_mb:,.0f} MB", "peak_mb": round(peak_mb, 1),
            "target": f"< {PEAK_MEMORY_TARGET_MB} MB", "summary": summary[-1]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="Best of N for both sides, interleaved (a shared machine is noisy)")
    parser.add_argument("--worker", choices=["auto", "on", "off"], default="auto",
                        help="Parse in a worker process (auto: for files over a few blocks)")
    parser.add_argument("--quick", action="store_true", help="50,000 lines once: a smoke test of a few seconds")
    parser.add_argument("--discord", type=int, default=0, metavar="N",
                        help="Also import an N-message DiscordChatExporter JSON export and report its peak memory")
    args = parser.parse_args(argv)
    count, repeat = (50_000, 1) if args.quick else (args.lines, args.repeat)
    worker = {"auto": None, "on": True, "off": False}[args.worker]
    lines = build_lines(count)
    ours = base = float("inf")
    with tempfile.TemporaryDirectory(prefix="collect-bench-") as tmp:
        tmp = Path(tmp)
        path = tmp / "prompts.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        for attempt in range(repeat):
            seconds, rows = collect_seconds(path, tmp / f"db{attempt}" / "promptmill.db", worker)
            assert rows == count, (rows, count)
            ours = min(ours, seconds)
            base = min(base, baseline_seconds(lines, tmp / f"baseline{attempt}.db"))
    result = {
        "name": "01_collect text",
        "figure": f"{count / ours:,.0f} rows/s ({count:,} lines in {ours:.2f} s)",
        "baseline": f"{count / base:,.0f} rows/s (plain executemany, {base:.2f} s)",
        "ratio": round(base / ours, 2),
        "target": ">= 0.5",
    }
    for key, value in result.items():
        print(f"{key:>9}: {value}")
    if args.discord:
        with tempfile.TemporaryDirectory(prefix="collect-bench-discord-") as tmp:
            result["discord"] = discord_import(args.discord, lines, Path(tmp))
        for key, value in result["discord"].items():
            print(f"{key:>11}: {value}")
    return result


if __name__ == "__main__":
    main()
