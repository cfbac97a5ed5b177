#!/usr/bin/env python3
"""Labels per second of `07_label describe` at --concurrency 32 against --concurrency 1.

Both runs label prompts through the real runner (ledger lookups, openai SDK,
retry wrapper, one transaction per result) against the loopback OpenAI fake
answering after 200 ms, in this same process. Concurrency 1 needs 200 s for
1,000 labels, so by default its baseline is measured on a 50-prompt sample
(`--full` labels 1,000 at both settings). Every run also checks that no prompt
was paid for twice: the fake's count of billable responses equals the labels.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT / "tests"))


def label_prompts(count: int, concurrency: int, latency: float, workdir: Path) -> dict:
    from fakes.openai_server import FakeOpenAI
    from promptmill.collect.base import Collector, SourceInfo
    from promptmill.core.runs import start_run
    from promptmill.core.store import open_store
    from promptmill.label import describe
    from promptmill.llm.ledger import Price, PriceTable
    from promptmill.llm.openai_chat import OpenAIChat
    from promptmill.llm.runner import CallRunner, CallSettings

    lines = [line.strip() for line in (ROOT / "examples" / "prompts" / "diffusiondb_style.txt")
             .read_text(encoding="utf-8").splitlines() if line.strip()]
    store = open_store(workdir / f"c{concurrency}-{count}" / "promptmill.db")
    os.environ.setdefault("OPENAI_API_KEY", "sk-benchmark-not-a-real-key")
    with FakeOpenAI(latency=latency) as server, start_run(store, "bench", "describe", {}, argv=["bench"]) as run:
        collector = Collector(store, run, SourceInfo(kind="text", uri="bench", sha256=f"bench-{count}"))
        for position in range(count):
            collector.add_prompt(position, f"{lines[position % len(lines)]} #{position}")
        collector.finish(count)
        template = describe.load_template()
        provider = OpenAIChat("fake-model", describe.parse_answer, base_url=server.url + "/v1", timeout=30)
        runner = CallRunner(store, run, provider, CallSettings(concurrency=concurrency),
                            PriceTable({"fake-model": Price(0.0, 0.0, 0.0)}),
                            describe.label_writer(run, "fake-model", "bench"))
        started = time.perf_counter()
        runner.run_jobs(describe.jobs(store, template, "fake-model", 60, 0.0))
        seconds = time.perf_counter() - started
        labels = store.count("labels")
        duplicates = server.stats()["billable"] - labels
        per_prompt = store.scalar("SELECT max(n) FROM (SELECT count(*) AS n FROM labels GROUP BY prompt_id)")
    store.close()
    assert labels == count and per_prompt == 1, (labels, per_prompt)
    return {"labels": labels, "seconds": seconds, "rate": labels / seconds, "duplicates": duplicates}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=1_000, help="Labels at concurrency 32.")
    parser.add_argument("--baseline-labels", type=int, default=50, help="Labels at concurrency 1 (the baseline).")
    parser.add_argument("--full", action="store_true", help="Label --labels prompts at concurrency 1 too (200 s).")
    parser.add_argument("--latency", type=float, default=0.2, help="Seconds the fake takes per answer.")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="A smoke test of a few seconds: 96 against 5 labels.")
    args = parser.parse_args(argv)
    labels, baseline_labels = (96, 5) if args.quick else (args.labels, args.labels if args.full else args.baseline_labels)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = label_prompts(baseline_labels, 1, args.latency, Path(tmp))
        concurrent = label_prompts(labels, args.concurrency, args.latency, Path(tmp))
    ratio = concurrent["rate"] / baseline["rate"]
    duplicates = baseline["duplicates"] + concurrent["duplicates"]
    result = {
        "name": "llm_throughput",
        "figure": f"{concurrent['rate']:,.1f} labels/s ({concurrent['labels']:,} at concurrency {args.concurrency}, "
                  f"{args.latency * 1000:.0f} ms per answer, {duplicates} paid twice)",
        "baseline": f"{baseline['rate']:,.2f} labels/s ({baseline['labels']:,} at concurrency 1)",
        "ratio": round(ratio, 1),
        "target": ">= 20 and 0 paid twice",
    }
    print(f"llm_throughput: {result['figure']}; baseline {result['baseline']}; ratio {ratio:.1f}x")
    return result


if __name__ == "__main__":
    main()
