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

import yaml

from promptmill.core.store import Store
from promptmill.release.base import IMAGE_COLUMNS, split_sort_key

CHART_DIR = "card"
TASKS = {
    "imagefolder": ["text-to-image", "image-to-text"],
    "parquet": ["text-to-image", "image-to-text"],
    "kohya": ["text-to-image"],
    "pairs": ["text-generation"],
    "prompts": ["text-generation"],
}
PLACEHOLDERS = ('Missing values are typed placeholders, never null: `""` for text, `-1` for numbers. '
                '`tags` is comma-separated, in the tagger\'s order.')


@dataclass
class CardInfo:
    name: str
    format: str
    items: list[dict]                      # split, text, source_kind; images also tags, width, height
    item_type: str                         # 'image' or 'prompt'
    data_files: dict[str, str] = field(default_factory=dict)  # split -> path pattern
    license: str = "other"
    pretty_name: str | None = None
    params: dict = field(default_factory=dict)


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "10M<n<100M"


def _yaml_features() -> list[dict]:
    return [{"name": "image", "dtype": "image"}] + [{"name": name, "dtype": kind} for name, kind in IMAGE_COLUMNS]


def header(info: CardInfo) -> dict:
    meta: dict = {
        "license": info.license,
        "pretty_name": info.pretty_name or info.name,
        "task_categories": TASKS[info.format],
        "size_categories": [size_category(len(info.items))],
        "tags": ["promptmill", "synthetic"] if info.item_type == "image" else ["promptmill", "prompts"],
    }
    if info.data_files:
        meta["configs"] = [{"config_name": "default", "data_files": [
            {"split": split, "path": pattern} for split, pattern in info.data_files.items()]}]
    if info.format == "parquet":
        meta["dataset_info"] = {"features": _yaml_features()}
    return meta


def _ids_json(ids) -> str:
    return json.dumps(sorted(set(ids)))


def builder_runs(store: Store, info: CardInfo) -> list[dict]:
    """Every run that added or decided something about the released items."""
    if info.item_type == "image":
        ids = _ids_json(item["image_id"] for item in info.items)
        prompt_ids = _ids_json(item["prompt_id"] for item in info.items if item.get("prompt_id", -1) > 0)
        sql = """
            SELECT run_id FROM images WHERE id IN (SELECT value FROM json_each(:ids))
            UNION SELECT run_id FROM image_origins WHERE image_id IN (SELECT value FROM json_each(:ids))
            UNION SELECT run_id FROM generations WHERE image_id IN (SELECT value FROM json_each(:ids))
            UNION SELECT run_id FROM captions WHERE image_id IN (SELECT value FROM json_each(:ids))
            UNION SELECT run_id FROM scores WHERE image_id IN (SELECT value FROM json_each(:ids))
            UNION SELECT run_id FROM decisions WHERE item_type = 'image' AND item_id IN (SELECT value FROM json_each(:ids))
            UNION SELECT run_id FROM prompts WHERE id IN (SELECT value FROM json_each(:pids))
            UNION SELECT run_id FROM labels WHERE prompt_id IN (SELECT value FROM json_each(:pids))"""
        params = {"ids": ids, "pids": prompt_ids}
    else:
        sql = """
            SELECT run_id FROM prompts WHERE id IN (SELECT value FROM json_each(:pids))
            UNION SELECT run_id FROM labels WHERE prompt_id IN (SELECT value FROM json_each(:pids))
            UNION SELECT run_id FROM decisions WHERE item_type = 'prompt' AND item_id IN (SELECT value FROM json_each(:pids))"""
        params = {"pids": _ids_json(item["prompt_id"] for item in info.items)}
    return store.query(f"SELECT id, step, command, code_version, substr(started_at, 1, 10) AS day, status "
                       f"FROM runs WHERE id IN ({sql}) ORDER BY id", params)


def models_used(store: Store, info: CardInfo) -> list[tuple[str, str]]:
    """(what, model) pairs: generators, captioners, labellers, scorers of the released items."""
    if info.item_type == "image":
        ids = _ids_json(item["image_id"] for item in info.items)
        prompt_ids = _ids_json(item["prompt_id"] for item in info.items if item.get("prompt_id", -1) > 0)
    else:
        ids, prompt_ids = "[]", _ids_json(item["prompt_id"] for item in info.items)
    rows = store.execute("""
        SELECT 'generation', model FROM generations WHERE image_id IN (SELECT value FROM json_each(:ids))
        UNION SELECT 'caption (' || kind || ')', model FROM captions WHERE image_id IN (SELECT value FROM json_each(:ids))
        UNION SELECT 'score (' || kind || ')', model FROM scores WHERE image_id IN (SELECT value FROM json_each(:ids))
        UNION SELECT 'label (' || kind || ')', model FROM labels WHERE prompt_id IN (SELECT value FROM json_each(:pids))
        """, {"ids": ids, "pids": prompt_ids})
    return sorted((what, model) for what, model in rows if model)


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def charts(info: CardInfo) -> dict[str, bytes]:
    """PNG charts: caption length, items per source, and for images top tags and resolutions."""
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

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([len(item["text"].split()) for item in info.items] or [0], bins=30, color="#4c72b0")
    ax.set(title="Text length", xlabel="words", ylabel="items")
    save(fig, "text_length")

    sources = Counter(item["source_kind"] or "unknown" for item in info.items).most_common()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([name for name, _ in sources], [n for _, n in sources], color="#55a868")
    ax.set(title="Items per source", ylabel="items")
    save(fig, "sources")

    if info.item_type == "image":
        tags = Counter(tag for item in info.items for tag in item.get("tags", [])).most_common(20)
        fig, ax = plt.subplots(figsize=(6, 5))
        ax.barh([name for name, _ in reversed(tags)], [n for _, n in reversed(tags)], color="#c44e52")
        ax.set(title="Top tags", xlabel="images")
        save(fig, "top_tags")

        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter([item["width"] for item in info.items], [item["height"] for item in info.items],
                   s=8, alpha=0.5, color="#8172b2")
        ax.set(title="Resolution", xlabel="width (px)", ylabel="height (px)")
        save(fig, "resolution")
    return out


def render_card(store: Store, info: CardInfo) -> dict[str, bytes]:
    """README.md and its charts, as {relative path: bytes}."""
    split_counts = dict(sorted(Counter(item["split"] for item in info.items).items(),
                               key=lambda kv: split_sort_key(kv[0])))
    source_counts = Counter(item["source_kind"] or "unknown" for item in info.items).most_common()
    files = charts(info)
    noun = "images" if info.item_type == "image" else ("pairs" if info.format == "pairs" else "prompts")
    body = [
        f"# {info.pretty_name or info.name}",
        "",
        f"{len(info.items):,} {noun}, exported as `{info.format}` by promptmill from its provenance database.",
        "",
        "## Splits", "", _table(["split", noun], [[s, f"{n:,}"] for s, n in split_counts.items()]), "",
        "## Sources", "", _table(["source", noun], [[s, f"{n:,}"] for s, n in source_counts]), "",
    ]
    if info.item_type == "image" and info.format in ("imagefolder", "parquet"):
        body += ["## Columns", "", _table(["column", "type"], [[name, kind] for name, kind in IMAGE_COLUMNS]), "",
                 PLACEHOLDERS, ""]
    runs = builder_runs(store, info)
    body += ["## How it was built", "",
             "Export parameters: `" + json.dumps({k: v for k, v in info.params.items() if k != "out"},
                                                 sort_keys=True, default=str) + "`", "",
             _table(["run", "step", "command", "code version", "day", "status"],
                    [[r["id"], r["step"], r["command"] or "", r["code_version"] or "", r["day"], r["status"]]
                     for r in runs]), ""]
    models = models_used(store, info)
    if models:
        body += ["Models:", ""] + [f"- {what}: `{model}`" for what, model in models] + [""]
    body += ["## Charts", ""] + [f"![{path.rsplit('/', 1)[-1][:-4].replace('_', ' ')}]({path})"
                                 for path in sorted(files)] + [""]
    meta = yaml.safe_dump(header(info), sort_keys=False, allow_unicode=True)
    files["README.md"] = f"---\n{meta}---\n\n" .encode() + "\n".join(body).encode("utf-8")
    return files
