"""04_augment openai against the fake OpenAI server: style prompts, links, dedup on arrival, resume."""

import json

import pytest
from llm_fixtures import (  # noqa: F401  (fixtures)
    FAST_RETRIES,
    example_prompts,
    fake_openai_fixture,
    fake_prices,
    write_prompts,
)

import paths
from conftest import run_script
from promptmill.augment.fewshot import parse_prompts
from promptmill.llm.runner import Unparseable

SEEDS = paths.SCHEMA_DIR / "templates" / "augment_seeds.txt"


def augment(invoke, server, *args, expect=0):
    return invoke("04_augment", "openai", "--base-url", server.url + "/v1", "--model", "fake-model",
                  "--seeds", SEEDS, *FAST_RETRIES, *args, expect=expect)


def augment_rows(store):
    return store.query("SELECT p.* FROM prompts p JOIN sources s ON s.id = p.source_id "
                       "WHERE s.kind = 'augment' ORDER BY p.id")


@pytest.mark.parametrize("reply, expected", [
    ("1. a red fox in snow\n2) a blue whale at dusk\n3. a tiny house on stilts",
     ["a red fox in snow", "a blue whale at dusk", "a tiny house on stilts"]),
    ("Sure! Here are prompts:\n- \"a red fox in snow\"\n* a blue whale at dusk\n",
     ["a red fox in snow", "a blue whale at dusk"]),
    ('```json\n{"prompts": ["a red fox in snow", "a blue whale at dusk"]}\n```',
     ["a red fox in snow", "a blue whale at dusk"]),
    ('["a red fox in snow", "a blue whale at dusk", 3]', ["a red fox in snow", "a blue whale at dusk"]),
    ("a red fox in snow\na blue whale at dusk", ["a red fox in snow", "a blue whale at dusk"]),
])
def test_parse_prompts_reads_lists_and_json(reply, expected):
    assert parse_prompts(reply) == expected


def test_parse_prompts_rejects_replies_without_prompts():
    with pytest.raises(Unparseable):
        parse_prompts("Sorry:\n\n")


def test_augment_writes_linked_unique_prompts_up_to_target(tmp_path, invoke, store, fake_openai):
    invoke("01_collect", "text", write_prompts(tmp_path, example_prompts(30)))
    result = augment(invoke, fake_openai, "--per-call", "5", "--target", "12", "--concurrency", "1",
                     "--k1", "3", "--k2", "2", "--avoid", "mushroom,jellyfish")
    rows = augment_rows(store)
    assert len(rows) == 15 and fake_openai.billable == 3
    calls = {c["id"]: c for c in store.query("SELECT * FROM api_calls")}
    for row in rows:
        meta = json.loads(row["meta"])
        assert calls[meta["api_call_id"]]["status"] == "ok"
    request = json.loads(calls[json.loads(rows[0]["meta"])["api_call_id"]]["request"])
    assert "mushroom, jellyfish" in request["messages"][1]["content"]
    assert request["response_format"]["type"] == "json_schema"
    links = store.query("SELECT l.prompt_id, s.uri, s.kind FROM prompt_links l JOIN prompts p "
                        "ON p.id = l.related_prompt_id JOIN sources s ON s.id = p.source_id "
                        "WHERE l.relation = 'example'")
    per_prompt = {}
    for link in links:
        per_prompt.setdefault(link["prompt_id"], []).append(link["uri"])
    assert set(per_prompt) == {row["id"] for row in rows}
    assert all(sum(uri.endswith("augment_seeds.txt") for uri in uris) == 3 and len(uris) == 5
               for uris in per_prompt.values())
    assert "unique prompts added 15" in result.output
    # Same options, target already met: nothing is sent.
    augment(invoke, fake_openai, "--per-call", "5", "--target", "12", "--concurrency", "1",
            "--k1", "3", "--k2", "2", "--avoid", "mushroom,jellyfish")
    assert fake_openai.requests == 3


def test_a_higher_target_resends_the_same_requests_through_the_ledger(tmp_path, invoke, store, fake_openai):
    args = ("--per-call", "4", "--concurrency", "1", "--plain")
    augment(invoke, fake_openai, *args, "--target", "8")
    first = [c["idempotency_key"] for c in store.query("SELECT idempotency_key FROM api_calls ORDER BY id")]
    assert len(first) == 2 and "response_format" not in fake_openai.seen[0]["body"]
    augment(invoke, fake_openai, *args, "--target", "16")
    keys = [c["idempotency_key"] for c in store.query("SELECT idempotency_key FROM api_calls ORDER BY id")]
    assert keys[:2] == first and len(keys) == 4 and fake_openai.requests == 4
    assert len(augment_rows(store)) == 16


def test_duplicates_are_dropped_on_arrival_and_not_counted(tmp_path, invoke, store, monkeypatch):
    existing = example_prompts(20)
    long_prompt = max(existing, key=len)
    near = long_prompt.replace(",", " ;")  # a different text, the same words
    replies = iter([
        json.dumps({"prompts": [existing[0], near, "a lighthouse keeper feeding seagulls at dawn",
                                "a lighthouse keeper feeding seagulls at dawn!", "a mushroom village in fog"]}),
        json.dumps({"prompts": ["a tram crossing a flooded square in venice", "a glass greenhouse on the moon",
                                "a knitted octopus reading a newspaper"]}),
    ])
    from fakes.openai_server import FakeOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-123456")
    invoke("01_collect", "text", write_prompts(tmp_path, existing))
    with FakeOpenAI(answer=lambda text, serial: next(replies)) as server:
        result = augment(invoke, server, "--per-call", "5", "--target", "4", "--concurrency", "1",
                         "--avoid", "mushroom")
    decisions = {d["item_id"]: d for d in store.query("SELECT * FROM decisions")}
    rows = {row["text"]: row["id"] for row in augment_rows(store)}
    assert decisions[rows[existing[0]]]["rule"] == "exact"
    assert decisions[rows[near]]["rule"] == "simhash" and decisions[rows[near]]["score"] <= 3
    assert decisions[rows["a lighthouse keeper feeding seagulls at dawn!"]]["rule"] == "exact"
    assert decisions[rows["a mushroom village in fog"]]["rule"] == "avoid"
    assert decisions[rows[existing[0]]]["representative_id"] < min(rows.values())
    kept = store.query("SELECT text FROM prompt_state WHERE source_kind = 'augment' AND state = 'keep'")
    assert len(kept) == 4 and "unique prompts in the source 4" in result.output


def test_augment_without_endpoint_exits_2_and_dry_run_sends_nothing(tmp_path, invoke, monkeypatch, fake_openai):
    result = augment(invoke, fake_openai, "--per-call", "5", "--target", "20", "--dry-run",
                     "--prices", fake_prices(tmp_path))
    assert fake_openai.requests == 0 and "4 would be sent" in result.output
    monkeypatch.delenv("OPENAI_API_KEY")
    bad = run_script("04_augment", "openai", "--db", tmp_path / "x.db", "--target", "3")
    assert bad.returncode == 2 and "OPENAI_API_KEY" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_concurrency_does_not_pay_for_requests_the_target_does_not_need(tmp_path, invoke, store, fake_openai):
    """Target 20 at 10 per call needs 2 answers: the other workers wait for them instead of paying."""
    augment(invoke, fake_openai, "--per-call", "10", "--target", "20", "--concurrency", "8")
    assert len(augment_rows(store)) >= 20
    assert fake_openai.stats()["billable"] <= 3
