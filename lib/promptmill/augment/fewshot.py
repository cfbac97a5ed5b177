"""Write new prompts with an LLM in the style of example prompts, deduplicated as they arrive.

Request number i shows the model K1 examples from a seed file and K2 collected
prompts, drawn with a random generator seeded by (seed, i): a resumed run builds
the same requests again, so the ledger answers them and nothing is paid twice.
Each returned prompt becomes a `prompts` row of the run's `augment` source,
linked to its API call (meta `api_call_id`) and to its examples (`prompt_links`,
relation `example`). A prompt whose text (exact) or word simhash (near) matches
any prompt already in the database gets a dedup `drop` decision, so `--target`
counts only new unique prompts.
"""

from __future__ import annotations

import json
import random
import re
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from promptmill.collect.base import Collector, SourceInfo
from promptmill.core import resources
from promptmill.core.save import save_decisions
from promptmill.core.state import kept_prompts
from promptmill.core.text import normalize, sha256_hex, text_hash
from promptmill.dedup import fingerprints
from promptmill.llm.runner import Job, Unparseable, estimate_tokens

DEFAULT_TEMPLATE = resources.SCHEMA_DIR / "templates" / "augment.toml"
DEFAULT_SEEDS = resources.SCHEMA_DIR / "templates" / "augment_seeds.txt"
DEFAULT_MODEL = "gpt-4.1-mini"
MIN_WORDS = 3
PROMPTS_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "prompts", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "required": ["prompts"],
        "properties": {"prompts": {"type": "array", "items": {"type": "string"}}}}},
}
_LIST_MARK = re.compile(r"^\s*(?:\d{1,3}\s*[.):\]]|[-*•+]|#\d+[.:]?)\s+")
_CODE_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.M)


@dataclass
class Settings:
    model: str
    seeds_source_sha: str
    k_seeds: int
    k_collected: int
    per_call: int
    avoid: list[str]
    seed: int
    template_sha: str
    structured: bool
    temperature: float
    max_tokens: int

    def source_info(self) -> SourceInfo:
        options = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return SourceInfo(kind="augment", uri=f"openai:{self.model}", sha256=sha256_hex(json.dumps(
            options, sort_keys=True)), options=options)


def load_template(path: str | Path = DEFAULT_TEMPLATE) -> dict:
    with open(path, "rb") as fh:
        template = tomllib.load(fh)
    for name in ("system", "user"):
        if not isinstance(template.get(name), str):
            raise ValueError(f"{path}: `{name}` is required")
    template["user"].format(n=1, examples="", avoid="")  # fails early on a bad placeholder
    return template


def parse_avoid(text: str | None) -> list[str]:
    return [topic.strip() for topic in (text or "").split(",") if topic.strip()]


def parse_prompts(text: str, job: Job | None = None) -> list[str]:
    """Prompts from a reply: JSON ({"prompts": [...]} or a list), else a numbered or dashed list, else lines."""
    stripped = _CODE_FENCE.sub("", text.strip()).strip()
    found: list[str] = []
    for opening, closing in (("{", "}"), ("[", "]")):
        start, end = stripped.find(opening), stripped.rfind(closing)
        if start == -1 or end <= start:
            continue
        try:
            data = json.loads(stripped[start:end + 1])
        except ValueError:
            continue
        if isinstance(data, dict):
            data = data.get("prompts") or next((v for v in data.values() if isinstance(v, list)), [])
        if isinstance(data, list):
            found = [item for item in data if isinstance(item, str)]
            break
    if not found:
        lines = [line for line in stripped.splitlines() if line.strip()]
        marked = [line for line in lines if _LIST_MARK.match(line)]
        found = [_LIST_MARK.sub("", line) for line in (marked or lines)]
    prompts = []
    for prompt in found:
        prompt = prompt.strip().strip("\"'`").strip()
        prompt = re.sub(r"^\*\*(.+)\*\*$", r"\1", prompt).strip()
        if len(prompt.split()) >= MIN_WORDS and not prompt.endswith(":"):
            prompts.append(prompt)
    if not prompts:
        raise Unparseable(f"no prompts found in {text[:200]!r}")
    return prompts


@dataclass
class Pools:
    """The example pools requests sample from, as (prompt id, text) in id order."""

    seeds: list[tuple[int, str]]
    collected: list[tuple[int, str]]


def load_pools(store, seeds_source_id: int) -> Pools:
    seeds = [(pid, text) for pid, text in store.execute(
        "SELECT id, text FROM prompts WHERE source_id = ? ORDER BY id", (seeds_source_id,))]
    collected = [(pid, text) for pid, source_id, text in kept_prompts(
        store, "s.kind != 'augment' AND p.source_id != ?", (seeds_source_id,))]
    return Pools(seeds, collected)


def request_for(index: int, settings: Settings, pools: Pools, template: dict) -> tuple[dict, list[int]]:
    """The chat request number INDEX and the ids of the example prompts it shows; the same every run."""
    rng = random.Random(f"{settings.seed}:{index}")
    examples = rng.sample(pools.seeds, min(settings.k_seeds, len(pools.seeds)))
    examples += rng.sample(pools.collected, min(settings.k_collected, len(pools.collected)))
    rng.shuffle(examples)
    user = template["user"].format(n=settings.per_call, examples="\n".join(f"- {text}" for _, text in examples),
                                   avoid=", ".join(settings.avoid) or "none")
    request = {"model": settings.model, "messages": [{"role": "system", "content": template["system"]},
                                                     {"role": "user", "content": user}],
               "max_tokens": settings.max_tokens, "temperature": settings.temperature}
    if settings.structured:
        request["response_format"] = PROMPTS_SCHEMA
    return request, [pid for pid, _ in examples]


def jobs(settings: Settings, pools: Pools, template: dict, max_requests: int) -> Iterator[Job]:
    for index in range(max_requests):
        request, example_ids = request_for(index, settings, pools, template)
        yield Job(request=request, item=f"augment-request:{index}",
                  est_tokens_in=estimate_tokens(*(m["content"] for m in request["messages"])),
                  max_tokens_out=settings.max_tokens, context={"index": index, "examples": example_ids})


@dataclass
class NearDuplicateIndex:
    """Every prompt's normalised-text hash and word simhash, with a block index for Hamming <= k lookups."""

    bits: int
    seen: int = 0                     # the highest prompt id looked at
    exact: dict[int, int] = field(default_factory=dict)
    blocks: list[dict[int, list[tuple[int, int]]]] = field(default_factory=list)

    def __post_init__(self):
        self.masks = fingerprints.block_masks(self.bits)
        self.blocks = [{} for _ in self.masks]

    def add(self, prompt_id: int, norm_hash: int, fingerprint: int):
        self.exact.setdefault(norm_hash, prompt_id)
        for table, (shift, mask) in zip(self.blocks, self.masks):
            table.setdefault((fingerprint >> shift) & mask, []).append((fingerprint, prompt_id))

    def find(self, norm_hash: int, fingerprint: int) -> tuple[str, int, int] | None:
        """('exact', id, 0) or ('simhash', id, distance) of a prompt this one duplicates, else None."""
        if norm_hash in self.exact:
            return "exact", self.exact[norm_hash], 0
        best = None
        for table, (shift, mask) in zip(self.blocks, self.masks):
            for other, prompt_id in table.get((fingerprint >> shift) & mask, ()):
                distance = (other ^ fingerprint).bit_count()
                if distance <= self.bits and (best is None or (distance, prompt_id) < best[1:]):
                    best = ("simhash", prompt_id, distance)
        return best


def fingerprint(text: str) -> int:
    return int(fingerprints.fingerprints([normalize(text)], "word")[0])


def build_index(store, bits: int) -> NearDuplicateIndex:
    """Index every prompt in the database except those already dropped as duplicates on arrival."""
    index = NearDuplicateIndex(bits)
    index_prompts(index, store.conn)
    return index


def index_prompts(index: NearDuplicateIndex, conn, run_id: int | None = None):
    """Add the prompts not seen yet (and not written by RUN_ID) to INDEX."""
    rows = conn.execute(
        "SELECT id, text, norm_hash FROM prompts WHERE id > ? AND run_id IS NOT ? AND id NOT IN (SELECT item_id "
        "FROM decisions WHERE item_type = 'prompt' AND stage = 'dedup' AND scope LIKE 'augment-arrival:%') "
        "ORDER BY id", (index.seen, run_id)).fetchall()
    values = fingerprints.fingerprints([normalize(text) for _, text, _ in rows], "word") if rows else []
    for (prompt_id, _, norm_hash), value in zip(rows, values):
        index.add(prompt_id, norm_hash, int(value))
    index.seen = max([index.seen, *(row[0] for row in rows)])


class PromptWriter:
    """Stores the prompts of each reply with their links and arrival dedup decisions; counts unique ones."""

    def __init__(self, store, run, source_id: int, settings: Settings, index: NearDuplicateIndex):
        self.run = run
        self.source_id = source_id
        self.settings = settings
        self.index = index
        self.scope = f"augment-arrival:simhash-word-{index.bits}"
        self.avoid_scope = f"augment-avoid:{sha256_hex(json.dumps(settings.avoid))[:16]}"
        self.avoid = [(topic, re.compile(rf"\b{re.escape(topic)}", re.I)) for topic in settings.avoid]
        self.unique = self.count_unique(store.conn)

    def count_unique(self, conn) -> int:
        """Unique prompts in the source, whichever run wrote them."""
        return conn.execute(
            "SELECT count(*) FROM prompts p WHERE p.source_id = ? AND NOT EXISTS (SELECT 1 FROM decisions d "
            "WHERE d.item_type = 'prompt' AND d.item_id = p.id AND d.verdict = 'drop' AND d.scope IN (?, ?))",
            (self.source_id, self.scope, self.avoid_scope)).fetchone()[0]

    def catch_up(self, conn):
        """Index what other runs on this database stored since we last looked, and recount."""
        index_prompts(self.index, conn, self.run.id)
        self.unique = self.count_unique(conn)

    def __call__(self, conn, job: Job, prompts: list[str], api_call_id: int):
        request_index = job.context["index"]
        self.catch_up(conn)
        for offset, text in enumerate(prompts[:self.settings.per_call]):
            position = request_index * self.settings.per_call + offset
            if conn.execute("SELECT 1 FROM prompts WHERE source_id = ? AND position = ?",
                            (self.source_id, position)).fetchone():
                continue  # stored by an earlier run from this same paid response
            norm = normalize(text)
            if not norm:
                continue
            meta = {"api_call_id": api_call_id, "request_index": request_index}
            prompt_id = conn.execute(
                "INSERT INTO prompts (source_id, position, locator, text, norm_hash, meta, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self.source_id, position, f"request {request_index} #{offset + 1}", text, text_hash(norm),
                 json.dumps(meta), self.run.id)).lastrowid
            conn.executemany(
                "INSERT INTO prompt_links (prompt_id, related_prompt_id, relation, run_id) VALUES (?, ?, 'example', ?) "
                "ON CONFLICT DO NOTHING", [(prompt_id, example, self.run.id) for example in job.context["examples"]])
            self.run.add("prompts added")
            self._judge(conn, prompt_id, text, norm)

    def _judge(self, conn, prompt_id: int, text: str, norm: str):
        norm_hash, value = text_hash(norm), fingerprint(text)
        duplicate = self.index.find(norm_hash, value)
        if duplicate:
            rule, other, distance = duplicate
            reason = f"same text as prompt {other}" if rule == "exact" else \
                f"near-duplicate of prompt {other} ({distance} of 64 simhash bits differ)"
            self._drop(conn, prompt_id, "dedup", self.scope, rule, reason, distance, other)
            self.run.add(f"duplicates dropped ({rule})")
            return
        self.index.add(prompt_id, norm_hash, value)
        topic = next((topic for topic, pattern in self.avoid if pattern.search(text)), None)
        if topic:
            self._drop(conn, prompt_id, "clean", self.avoid_scope, "avoid", f"mentions an avoided topic ({topic})")
            self.run.add("dropped (avoided topic)")
            return
        self.unique += 1
        self.run.add("unique prompts added")

    def _drop(self, conn, prompt_id, stage, scope, rule, reason, score=None, representative=None):
        save_decisions(conn, self.run, [{"item_type": "prompt", "item_id": prompt_id, "stage": stage,
                                         "verdict": "drop", "scope": scope, "rule": rule, "reason": reason,
                                         "score": score, "representative_id": representative}])


class InFlightElsewhere:
    """What other runs on the database add to the same source: their unique prompts (into the writer's
    count) and their requests in flight. Looked up at most every REFRESH_S seconds."""

    REFRESH_S = 0.2

    def __init__(self, store, writer: PromptWriter, runner):
        self.store = store
        self.writer = writer
        self.runner = runner
        self.count = 0
        self.looked = 0.0

    def refresh(self):
        moment = time.monotonic()
        if moment - self.looked < self.REFRESH_S:
            return
        self.looked = moment
        self.count = self.runner.ledger.claimed_elsewhere(self.runner.claim_scope)
        self.writer.unique = self.writer.count_unique(self.store.conn)


def collect_seeds(store, run, path: Path) -> int:
    """Import the seed file as a `text` source (once), so examples can be linked as prompts; its id."""
    from promptmill.collect import textfile

    collector = Collector(store, run, textfile.source_info(path))
    if not collector.completed:
        collector.finish(textfile.collect_lines(collector, path))
    return collector.source_id


def open_source(store, run, settings: Settings) -> int:
    return Collector(store, run, settings.source_info()).source_id
