"""The dataset card: README.md with the Hub's YAML header, counts, how the release was built, and charts.

The YAML header carries what the Hub reads (license, task categories, size
category, ``configs`` so the viewer and ``load_dataset`` find the splits,
``dataset_info`` for parquet). The body names the runs and models behind the
items, straight from the database. Everything is a pure function of the
items and the database, so exporting again renders identical bytes (the
charts carry no timestamp or software metadata).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from promptmill.core.store import Store
from promptmill.release.items import split_sort_key

CHART_DIR = "card"
DEFAULT_LICENSE_NAME = "mixed-sources"
LICENSE_SECTION = "license"
MAX_SIZES = 2_000  # distinct resolutions kept for the chart


@dataclass
class CardStats:
    """Counts the card is drawn from, gathered item by item as an export writes them."""

    items: int = 0
    without_text: int = 0
    item_type: str = ""
    splits: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    words: Counter = field(default_factory=Counter)   # words per text -> items
    tags: Counter = field(default_factory=Counter)
    sizes: Counter = field(default_factory=Counter)   # "WxH" -> images
    header: dict = field(default_factory=dict)        # the exporter's dataset_info
    data_files: dict = field(default_factory=dict)    # split -> path patterns (the card's configs)

    def add(self, item: dict):
        self.items += 1
        self.item_type = item["item_type"]
        self.splits[item["split"]] += 1
        self.sources[item.get("source_kind") or "unknown"] += 1
        self.words[len((item.get("text") or "").split())] += 1
        if item["item_type"] == "image":  # the rest is about images only
            self.without_text += bool(item.get("no_text"))
            if item.get("tags"):
                self.tags.update(item["tags"])
            if item.get("width", -1) > 0:
                self.sizes[f"{item['width']}x{item['height']}"] += 1

    def to_json(self) -> dict:
        return {"items": self.items, "without_text": self.without_text, "item_type": self.item_type,
                "splits": dict(self.splits), "sources": dict(self.sources),
                "words": {str(k): v for k, v in self.words.items()}, "tags": dict(self.tags.most_common(100)),
                "sizes": dict(self.sizes.most_common(MAX_SIZES)), "header": self.header,
                "data_files": self.data_files}

    @classmethod
    def from_json(cls, data: dict) -> CardStats:
        return cls(items=data["items"], without_text=data["without_text"], item_type=data["item_type"],
                   splits=Counter(data["splits"]), sources=Counter(data["sources"]),
                   words=Counter({int(k): v for k, v in data["words"].items()}), tags=Counter(data["tags"]),
                   sizes=Counter(data["sizes"]), header=data["header"], data_files=data["data_files"])

    def split_names(self) -> list[str]:
        return sorted(self.splits, key=split_sort_key)


@dataclass
class CardInfo:
    name: str
    exporter: object                       # the release's Exporter
    out: Path
    stats: CardStats
    scope_sql: str                         # SELECT of the released item ids
    settings: object                       # base.CardSettings


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "10M<n<100M"


def header(info: CardInfo) -> dict:
    settings, stats, exporter = info.settings, info.stats, info.exporter
    meta: dict = {"license": settings.license}
    if settings.license == "other":
        meta["license_name"] = settings.license_name or DEFAULT_LICENSE_NAME
        meta["license_link"] = settings.license_link or f"README.md#{LICENSE_SECTION}"
    meta.update({
        "pretty_name": settings.pretty_name or info.name,
        "task_categories": list(exporter.tasks),
        "size_categories": [size_category(stats.items)],
        "tags": ["promptmill", "synthetic"] if stats.item_type == "image" else ["promptmill", "prompts"],
    })
    data_files = stats.data_files
    if data_files:
        meta["configs"] = [{"config_name": "default", "data_files": [
            {"split": split, "path": paths[0] if len(paths) == 1 else paths} for split, paths in data_files.items()]}]
    if stats.header:
        meta["dataset_info"] = stats.header
    return meta


def _scope_params(info: CardInfo) -> tuple[str, str]:
    """SQL of the released image ids and of the prompt ids behind them (or of the released prompt ids)."""
    if info.stats.item_type == "image":
        return info.scope_sql, (f"SELECT prompt_id FROM image_origins WHERE image_id IN ({info.scope_sql}) "
                                f"UNION SELECT prompt_id FROM generations WHERE image_id IN ({info.scope_sql})")
    return "SELECT NULL WHERE 0", info.scope_sql


def builder_runs(store: Store, info: CardInfo) -> list[dict]:
    """Every run that added or decided something about the released items."""
    images, prompts = _scope_params(info)
    sql = f"""
        SELECT run_id FROM images WHERE id IN ({images})
        UNION SELECT run_id FROM image_origins WHERE image_id IN ({images})
        UNION SELECT run_id FROM generations WHERE image_id IN ({images})
        UNION SELECT run_id FROM captions WHERE image_id IN ({images})
        UNION SELECT run_id FROM scores WHERE image_id IN ({images})
        UNION SELECT run_id FROM decisions WHERE item_type = 'image' AND item_id IN ({images})
        UNION SELECT run_id FROM prompts WHERE id IN ({prompts})
        UNION SELECT run_id FROM labels WHERE prompt_id IN ({prompts})
        UNION SELECT run_id FROM decisions WHERE item_type = 'prompt' AND item_id IN ({prompts})"""
    return store.query(f"SELECT id, step, command, code_version, substr(started_at, 1, 10) AS day, status "
                       f"FROM runs WHERE id IN ({sql}) ORDER BY id")


def models_used(store: Store, info: CardInfo) -> list[tuple[str, str]]:
    """(what, model) pairs: generators, captioners, labellers, scorers of the released items."""
    images, prompts = _scope_params(info)
    rows = store.execute(f"""
        SELECT 'generation', model FROM generations WHERE image_id IN ({images})
        UNION SELECT 'caption (' || kind || ')', model FROM captions WHERE image_id IN ({images})
        UNION SELECT 'score (' || kind || ')', model FROM scores WHERE image_id IN ({images})
        UNION SELECT 'label (' || kind || ')', model FROM labels WHERE prompt_id IN ({prompts})""")
    return sorted((what, model) for what, model in rows if model)


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def charts(stats: CardStats) -> dict[str, bytes]:
    """PNG charts: text length, items per source, and for images top tags and resolutions."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out = {}

    def save(fig, name):
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
        plt.close(fig)
        out[f"{CHART_DIR}/{name}.png"] = buffer.getvalue()

    words = sorted(stats.words.items()) or [(0, 1)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([w for w, _ in words], weights=[n for _, n in words], bins=30, color="#4c72b0")
    ax.set(title="Text length", xlabel="words", ylabel="items")
    save(fig, "text_length")

    sources = stats.sources.most_common()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([name for name, _ in sources], [n for _, n in sources], color="#55a868")
    ax.set(title="Items per source", ylabel="items")
    save(fig, "sources")

    if stats.item_type == "image":
        tags = stats.tags.most_common(20)
        fig, ax = plt.subplots(figsize=(6, 5))
        ax.barh([name for name, _ in reversed(tags)], [n for _, n in reversed(tags)], color="#c44e52")
        ax.set(title="Top tags", xlabel="images")
        save(fig, "top_tags")

        sizes = [(*map(int, size.split("x")), n) for size, n in sorted(stats.sizes.items())]
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter([w for w, _, _ in sizes], [h for _, h, _ in sizes], s=[min(8 * n, 200) for _, _, n in sizes],
                   alpha=0.5, color="#8172b2")
        ax.set(title="Resolution", xlabel="width (px)", ylabel="height (px)")
        save(fig, "resolution")
    return out


def render_card(store: Store, info: CardInfo) -> dict[str, bytes]:
    """README.md and its charts, as {relative path: bytes}."""
    stats, exporter = info.stats, info.exporter
    files = charts(stats) if exporter.charts else {}
    noun = "images" if stats.item_type == "image" else ("pairs" if exporter.name == "pairs" else "prompts")
    body = [
        f"# {info.settings.pretty_name or info.name}",
        "",
        f"{stats.items:,} {noun}, exported as `{exporter.name}` by promptmill from its provenance database.",
        "",
        "## Load it", "", exporter.how_to_load(info.out), "",
        "## Splits", "", _table(["split", noun], [[s, f"{stats.splits[s]:,}"] for s in stats.split_names()]), "",
        "## Sources", "", _table(["source", noun], [[s, f"{n:,}"] for s, n in stats.sources.most_common()]), "",
    ]
    body += exporter.card_sections()
    runs = builder_runs(store, info)
    body += ["## How it was built", "",
             "Export parameters: `" + json.dumps({k: v for k, v in exporter.params.items() if k != "out"},
                                                 sort_keys=True, default=str) + "`", "",
             _table(["run", "step", "command", "code version", "day", "status"],
                    [[r["id"], r["step"], r["command"] or "", r["code_version"] or "", r["day"], r["status"]]
                     for r in runs]), ""]
    models = models_used(store, info)
    if models:
        body += ["Models:", ""] + [f"- {what}: `{model}`" for what, model in models] + [""]
    if info.settings.license == "other":
        body += ["## License", "", f"`{info.settings.license_name or DEFAULT_LICENSE_NAME}`"
                 + (f": see {info.settings.license_link}." if info.settings.license_link else
                    ": each item keeps the terms of the source it came from (see Sources)."), ""]
    if files:
        body += ["## Charts", ""] + [f"![{path.rsplit('/', 1)[-1][:-4].replace('_', ' ')}]({path})"
                                     for path in sorted(files)] + [""]
    meta = yaml.safe_dump(header(info), sort_keys=False, allow_unicode=True)
    files["README.md"] = f"---\n{meta}---\n\n".encode() + "\n".join(body).encode("utf-8")
    return files
