import json

from llm_fixtures import (  # noqa: F401  (fixtures)
    FAST_RETRIES,
    example_prompts,
    fake_openai_fixture,
    fake_prices,
    ledger_rows,
    write_prompts,
)

from conftest import run_script


def collect(invoke, tmp_path, lines):
    invoke("01_collect", "text", write_prompts(tmp_path, lines))


def describe(invoke, server, *args, expect=0):
    return invoke("07_label", "describe", "--base-url", server.url + "/v1", "--model", "fake-model",
                  *FAST_RETRIES, *args, expect=expect)


def test_describe_labels_every_kept_prompt_once(tmp_path, invoke, store, fake_openai):
    lines = example_prompts(12) + ["masterpiece, best quality, no subject"]
    collect(invoke, tmp_path, lines)
    describe(invoke, fake_openai, "--concurrency", "4")
    labels = store.query("SELECT l.*, p.text AS prompt FROM labels l JOIN prompts p ON p.id = l.prompt_id")
    assert len(labels) == 13
    kinds = {row["prompt"]: (row["kind"], row["text"]) for row in labels}
    assert kinds["masterpiece, best quality, no subject"] == ("no_object", "_no_object")
    first = kinds[lines[0]]
    assert first[0] == "description" and first[1].startswith("a plain view of")
    calls = ledger_rows(store)
    assert len(calls) == 13 and {c["status"] for c in calls} == {"ok"}
    call = calls[0]
    assert call["provider"] == "openai" and call["model"] == "fake-model"
    assert call["resolved_model"] == "fake-model-2025-01-01" and call["request_id"].startswith("req_fake_")
    assert call["tokens_in"] > 0 and call["tokens_out"] > 0 and call["tokens_cached"] == 0
    assert call["latency_s"] > 0 and call["attempts"] == 1 and call["item_type"] == "prompt"
    assert call["cost_usd"] is None  # the fake model has no price in the bundled table
    assert {label["api_call_id"] for label in labels} == {c["id"] for c in calls}
    assert call["request"]["messages"][0]["role"] == "system"
    # Secrets never land: the key is in no stored request, response or run row.
    dump = json.dumps(store.query("SELECT * FROM api_calls")) + json.dumps(store.query("SELECT * FROM runs"))
    assert "sk-test-not-a-real-key" not in dump
    assert fake_openai.billable == 13
    describe(invoke, fake_openai)
    assert fake_openai.billable == 13 and store.count("labels") == 13


def test_stored_response_is_reused_not_paid_again(tmp_path, invoke, store, fake_openai):
    collect(invoke, tmp_path, example_prompts(5))
    describe(invoke, fake_openai)
    assert fake_openai.billable == 5
    # A label lost after its call was paid for (e.g. a template switched back) is rebuilt from the ledger.
    store.execute("DELETE FROM labels WHERE id IN (SELECT id FROM labels ORDER BY id LIMIT 2)")
    result = describe(invoke, fake_openai)
    assert fake_openai.billable == 5 and store.count("labels") == 5
    assert "responses reused from the ledger 2" in result.output


def test_no_key_and_no_base_url_exits_2(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = run_script("07_label", "describe", "--db", tmp_path / "x.db")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "OPENAI_API_KEY" in result.stderr
    assert "--base-url" in result.stderr


def test_dry_run_sends_nothing(tmp_path, invoke, store, fake_openai):
    collect(invoke, tmp_path, example_prompts(6))
    describe(invoke, fake_openai, "--limit", "2")
    result = describe(invoke, fake_openai, "--dry-run", "--prices", fake_prices(tmp_path))
    assert fake_openai.requests == 2
    assert "4 requests, 0 already paid for" in result.output and "4 would be sent" in result.output
    assert "estimated cost at most $" in result.output and "nothing was sent" in result.output
    assert store.count("labels") == 2 and store.count("api_calls") == 2
