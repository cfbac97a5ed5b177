"""Label prompts with a short plain description of what the image shows, or `_no_object`.

The request is a few-shot chat built from a template file
(`schema/templates/describe.toml`). An answer of `_no_object` becomes a label of
kind `no_object`; anything else a `description`. Each label points at the
ledger row of the call that produced it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

from promptmill.core import resources
from promptmill.core.save import save_label
from promptmill.core.state import kept_prompts_sql
from promptmill.core.text import sha256_hex
from promptmill.llm.runner import Job, Unparseable, estimate_tokens

DEFAULT_TEMPLATE = resources.SCHEMA_DIR / "templates" / "describe.toml"
DEFAULT_MODEL = "gpt-4.1-mini"
NO_OBJECT = "_no_object"
MAX_DESCRIPTION_WORDS = 40


def load_template(path: str | Path = DEFAULT_TEMPLATE) -> dict:
    with open(path, "rb") as fh:
        template = tomllib.load(fh)
    if not isinstance(template.get("system"), str):
        raise ValueError(f"{path}: a `system` instruction is required")
    return template


def messages_for(template: dict, prompt: str) -> list[dict]:
    messages = [{"role": "system", "content": template["system"]}]
    for example in template.get("examples", []):
        messages.append({"role": "user", "content": example["prompt"]})
        messages.append({"role": "assistant", "content": example["answer"]})
    messages.append({"role": "user", "content": prompt})
    return messages


def unlabelled_prompts_sql() -> str:
    return kept_prompts_sql(
        "NOT EXISTS (SELECT 1 FROM labels l WHERE l.prompt_id = p.id AND l.kind IN ('description', 'no_object'))")


def count_unlabelled(store) -> int:
    return store.scalar(f"SELECT count(*) FROM ({unlabelled_prompts_sql()})")


def jobs(store, template: dict, model: str, max_tokens: int, temperature: float,
         limit: int | None = None) -> Iterator[Job]:
    """One chat request per kept prompt that has neither a description nor a `_no_object` label."""
    sql = unlabelled_prompts_sql() + (f" LIMIT {int(limit)}" if limit else "")
    rows = store.execute(sql).fetchall()  # read up front: the writer commits while we iterate
    for prompt_id, _source_id, text in rows:
        messages = messages_for(template, text)
        request = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        yield Job(request=request, item=f"prompt:{prompt_id}", item_type="prompt", item_id=prompt_id,
                  est_tokens_in=estimate_tokens(*(m["content"] for m in messages)), max_tokens_out=max_tokens)


def parse_answer(text: str, job: Job | None = None) -> tuple[str, str]:
    """(kind, text) from the model's answer: its first non-empty line, quotes and labels stripped."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise Unparseable("empty answer")
    answer = lines[0].strip(" \"'`*").removeprefix("Description:").removeprefix("description:").strip(" \"'`")
    if NO_OBJECT in answer or answer.lower() in ("no_object", "no object"):
        return "no_object", NO_OBJECT
    if not answer:
        raise Unparseable(f"no description in {text[:200]!r}")
    if len(answer.split()) > MAX_DESCRIPTION_WORDS:
        raise Unparseable(f"answer is not a short description ({len(answer.split())} words)")
    return "description", answer


def label_writer(run, model: str, template_sha: str):
    """Store a label for a job's prompt, inside the ledger's transaction."""

    def write(conn, job: Job, value: tuple[str, str], api_call_id: int):
        kind, text = value
        if save_label(conn, run, kind, text, prompt_id=job.item_id, model=model, api_call_id=api_call_id,
                      meta={"template_sha256": template_sha},
                      natural_key=f"describe:{job.item_id}:{model}:{template_sha[:16]}") is not None:
            run.add("descriptions added" if kind == "description" else "no_object labels added")

    return write


def template_sha(path: str | Path) -> str:
    return sha256_hex(Path(path).read_bytes())
