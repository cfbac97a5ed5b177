"""The ledger and the runner behind every paid call, driven through the real openai SDK at the fake server."""

import time

import pytest
from llm_fixtures import (  # noqa: F401  (fixtures)
    FAST_RETRIES,
    example_prompts,
    fake_openai_fixture,
    fake_prices,
    ledger_rows,
    write_prompts,
)

from promptmill.llm.ledger import idempotency_key, load_prices
from promptmill.llm.openai_chat import retry_after_seconds
from promptmill.llm.runner import TokenBucket


def labelled(invoke, tmp_path, server, n, *args, expect=0):
    invoke("01_collect", "text", write_prompts(tmp_path, example_prompts(n)))
    return invoke("07_label", "describe", "--base-url", server.url + "/v1", "--model", "fake-model",
                  *FAST_RETRIES, "--concurrency", "1", *args, expect=expect)


def test_key_ignores_key_order_and_names_the_item():
    a = idempotency_key("openai", "m", {"x": 1, "y": [1, 2]}, "prompt:1")
    assert a == idempotency_key("openai", "m", {"y": [1, 2], "x": 1}, "prompt:1")
    assert a != idempotency_key("openai", "m", {"x": 1, "y": [1, 2]}, "prompt:2")
    assert a != idempotency_key("openai", "other", {"x": 1, "y": [1, 2]}, "prompt:1")


def test_price_table_override_prefix_and_unknown_model(tmp_path, capsys):
    table = load_prices(fake_prices(tmp_path, "gpt-4o-mini", 1.0, 2.0))
    assert table.cost("gpt-4o-mini-2024-07-18", 1_000_000, 500_000) == pytest.approx(2.0)
    assert table.cost("gpt-4o", 1_000_000, 0, tokens_cached=1_000_000) == pytest.approx(1.25)
    assert table.cost("mystery-model", 10, 10) is None
    assert table.cost("mystery-model", 10, 10) is None
    assert capsys.readouterr().err.count("no price for model 'mystery-model'") == 1


def test_retry_after_headers_and_token_bucket():
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after_seconds({}) is None
    bucket = TokenBucket(per_minute=60)  # one a second, ten in the bucket
    assert bucket.wait_time(1) == 0
    bucket.level -= 10
    assert bucket.wait_time(1) > 0.5


@pytest.mark.parametrize("fault", ["429", "500", "malformed"])
def test_transient_faults_are_retried_and_recorded(tmp_path, invoke, store, fake_openai, fault):
    fake_openai.fail(fault, times=2)
    # A backoff base of 30 s: the 429 case passes quickly only because retry-after-ms (50 ms) is honoured.
    started = time.monotonic()
    labelled(invoke, tmp_path, fake_openai, 2, "--backoff-base", "30" if fault == "429" else "0.01",
             "--backoff-cap", "60" if fault == "429" else "0.2")
    if fault == "429":
        assert time.monotonic() - started < 20
    calls = ledger_rows(store)
    assert [c["status"] for c in calls] == ["ok", "ok"]
    assert calls[0]["attempts"] == 3 and calls[1]["attempts"] == 1
    assert fake_openai.requests == 4 and fake_openai.billable == 2
    assert store.count("labels") == 2


def test_slow_response_times_out_and_is_retried(tmp_path, invoke, store, fake_openai):
    fake_openai.slow_seconds = 1.5
    fake_openai.fail("slow", times=1)
    labelled(invoke, tmp_path, fake_openai, 1, "--timeout", "0.4")
    call = ledger_rows(store)[0]
    assert call["status"] == "ok" and call["attempts"] == 2 and store.count("labels") == 1


def test_retries_stop_at_max_attempts(tmp_path, invoke, store, fake_openai):
    fake_openai.fail("500", times=10)
    result = labelled(invoke, tmp_path, fake_openai, 1, "--max-attempts", "3")
    call = ledger_rows(store)[0]
    assert call["status"] == "failed" and call["attempts"] == 3 and call["http_status"] == 500
    assert call["error_class"] == "server_error" and "HTTP 500" in call["error_message"]
    assert fake_openai.requests == 3 and store.count("labels") == 0
    assert "calls failed: server_error 1" in result.output


@pytest.mark.parametrize("fault, error_class", [("400", "invalid_request_error"), ("401", "invalid_request_error"),
                                                ("refusal", "refusal"), ("content_filter", "content_filter")])
def test_permanent_failures_are_not_retried_until_asked(tmp_path, invoke, store, fake_openai, fault, error_class):
    fake_openai.fail(fault, times=1)
    labelled(invoke, tmp_path, fake_openai, 2)
    failed = [c for c in ledger_rows(store) if c["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["attempts"] == 1 and failed[0]["error_class"] == error_class
    assert fake_openai.requests == 2 and store.count("labels") == 1
    if fault in ("refusal", "content_filter"):
        assert failed[0]["tokens_in"] > 0  # billed, so recorded
        assert failed[0]["resolved_model"] == "fake-model-2025-01-01"
    again = labelled(invoke, tmp_path, fake_openai, 2)
    assert fake_openai.requests == 2
    assert "skipped: failed before (use --retry-failed) 1" in again.output
    labelled(invoke, tmp_path, fake_openai, 2, "--retry-failed")
    assert fake_openai.requests == 3 and store.count("labels") == 2


def test_unparseable_answer_fails_after_parse_tries_with_tokens_summed(tmp_path, invoke, store, fake_openai):
    fake_openai.fail("empty", times=5)
    labelled(invoke, tmp_path, fake_openai, 1, "--parse-tries", "2")
    call = ledger_rows(store)[0]
    assert call["status"] == "failed" and call["error_class"] == "unparseable" and call["attempts"] == 2
    assert fake_openai.billable == 2 and call["tokens_out"] == 2  # both billed attempts add up


def test_insufficient_quota_stops_the_run_cleanly(tmp_path, invoke, store, fake_openai):
    fake_openai.fail("insufficient_quota", times=1, match=example_prompts(3)[1])
    result = labelled(invoke, tmp_path, fake_openai, 3, expect=1)
    assert "insufficient_quota" in result.output and "Traceback" not in result.output
    assert fake_openai.requests == 2  # the third prompt was never sent
    calls = ledger_rows(store)
    assert [c["status"] for c in calls] == ["ok", "failed"] and calls[1]["attempts"] == 1
    assert calls[1]["error_class"] == "insufficient_quota"
    run = store.query("SELECT status, error FROM runs WHERE command = 'describe'")[0]
    assert run["status"] == "failed" and "no quota left" in run["error"]


def test_max_cost_stops_before_the_budget_is_passed(tmp_path, invoke, store, fake_openai):
    prices = fake_prices(tmp_path)  # $1000 / $2000 per million tokens: each request costs cents to dollars
    result = labelled(invoke, tmp_path, fake_openai, 20, "--prices", prices, "--max-cost", "2.0")
    spent = store.scalar("SELECT sum(cost_usd) FROM api_calls")
    assert 0 < spent <= 2.0
    assert 0 < store.count("labels") < 20 and fake_openai.requests == store.count("api_calls")
    assert "stopped: the next request" in result.output and "--max-cost" in result.output
    run = store.query("SELECT status, counts FROM runs WHERE command = 'describe'")[0]
    assert run["status"] == "ok" and '"stopped: --max-cost reached": 1' in run["counts"]


def test_max_cost_without_a_price_is_a_bad_command(tmp_path, invoke, fake_openai):
    result = labelled(invoke, tmp_path, fake_openai, 1, "--max-cost", "1", expect=2)
    assert "needs a price for model 'fake-model'" in result.output and fake_openai.requests == 0
