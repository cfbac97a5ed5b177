"""Each cleaning rule's false drops, measured on prompts labelled by reading (tests/clean_labels.tsv).

For every preset and each of its rules: how many labelled prompts the rule drops and
the precision of those drops (the share labelled ``drop``), plus the labelled
non-prompts the preset keeps. With ``--all``, also how many of the 67,680 seed prompts
each rule drops. README's 02_clean section shows this table.

    python benchmarks/clean_precision.py [--all]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from promptmill.clean.prompts import load_preset  # noqa: E402

LABELS = ROOT / "tests" / "clean_labels.tsv"
SEEDS = ROOT.parent / "shared" / "data" / "seed-prompts"
PRESETS = ("basic", "kaggle-i2p", "discord")


def labelled(path: Path = LABELS) -> list[tuple[str, str]]:
    """(label, text) of every labelled prompt."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            label, _, text = line.split("\t", 2)
            rows.append((label, text))
    return rows


def rule_precision(preset_name: str, rows: list[tuple[str, str]]) -> tuple[dict, list[str]]:
    """{rule: (drops, of them labelled drop)} and the labelled non-prompts the preset keeps."""
    preset = load_preset(preset_name)
    drops: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    missed = []
    for label, text in rows:
        verdict = preset.judge(text)
        if verdict.keep:
            if label == "drop":
                missed.append(text)
            continue
        drops[verdict.rule][0] += 1
        drops[verdict.rule][1] += label == "drop"
    return dict(drops), missed


def seed_drops(preset_name: str) -> collections.Counter:
    preset = load_preset(preset_name)
    counts = collections.Counter()
    for path in sorted(SEEDS.glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                verdict = preset.judge(line)
                counts[verdict.rule if not verdict.keep else None] += 1
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--all", action="store_true", help="also count each rule's drops over every seed prompt")
    args = parser.parse_args()
    rows = labelled()
    print(f"{len(rows)} labelled prompts, {sum(label == 'drop' for label, _ in rows)} of them not prompts")
    print("| preset | rule | drops (labelled) | precision |" + (" drops (all seed prompts) |" if args.all else ""))
    print("|---|---|---|---|" + ("---|" if args.all else ""))
    for name in PRESETS:
        drops, missed = rule_precision(name, rows)
        counts = seed_drops(name) if args.all else {}
        rules = sorted(set(drops) | {rule for rule in counts if rule}, key=lambda r: -drops.get(r, [0])[0])
        for rule in rules:
            dropped, right = drops.get(rule, (0, 0))
            row = f"| {name} | {rule} | {dropped} | {f'{right / dropped:.2f}' if dropped else '-'} |"
            print(row + (f" {counts.get(rule, 0):,} |" if args.all else ""))
        print(f"| {name} | (non-prompts kept) | {len(missed)} | |" + (f" {counts.get(None, 0):,} kept |"
                                                                        if args.all else ""))


if __name__ == "__main__":
    main()
