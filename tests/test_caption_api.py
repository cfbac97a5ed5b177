"""06_caption gemini and vlm through the real google-genai and openai clients at loopback fakes."""

import asyncio
import io
import json

import pytest
from llm_fixtures import FAST_RETRIES, fake_openai_fixture, ledger_rows  # noqa: F401  (fixtures)
from PIL import Image

from conftest import run_script
from fakes.gemini_server import FakeGemini
from promptmill.collect.base import Collector, SourceInfo
from promptmill.llm.runner import Job


def add_images(store, run, n):
    collector = Collector(store, run, SourceInfo(kind="imagefolder", uri="test", sha256=f"test-images-{n}"))
    for position in range(n):
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (position * 40 % 256, 90, 160)).save(buffer, "PNG")
        collector.add_image(position, buffer.getvalue(), f"img{position}.png")
    collector.finish(n)


@pytest.fixture
def fake_gemini(monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "AIza-test-not-a-real-key-0123456789")
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    with FakeGemini() as server:
        yield server


def gemini(invoke, server, *args, expect=0):
    return invoke("06_caption", "gemini", "--base-url", server.url, *FAST_RETRIES, "--concurrency", "1", *args,
                  expect=expect)


def test_gemini_api_key_mode_captions_every_image_once(store, run, invoke, fake_gemini):
    add_images(store, run, 3)
    gemini(invoke, fake_gemini)
    captions = store.query("SELECT * FROM captions WHERE kind = 'gemini' ORDER BY image_id")
    assert len(captions) == 3 and captions[0]["text"].startswith("a small test image")
    assert captions[0]["model"] == "gemini-2.5-flash" and captions[0]["natural_key"].startswith("gemini:")
    calls = ledger_rows(store)
    assert [c["status"] for c in calls] == ["ok"] * 3
    call = calls[0]
    assert call["provider"] == "gemini" and call["resolved_model"] == "gemini-fake-001"
    assert call["request_id"].startswith("resp-fake-") and call["tokens_reasoning"] == 7
    assert call["tokens_in"] >= 258 and call["tokens_out"] > 7 and call["cost_usd"] > 0
    assert len(call["request"]["image_sha256"]) == 64 and "Subject; Setting; Style" in call["request"]["instruction"]
    seen = fake_gemini.seen[0]
    assert seen["path"].endswith("/models/gemini-2.5-flash:generateContent")
    assert seen["headers"].get("x-goog-api-key") == "AIza-test-not-a-real-key-0123456789"
    parts = seen["body"]["contents"][0]["parts"]
    assert parts[0]["inlineData"].get("mimeType", parts[0]["inlineData"].get("mime_type")) == "image/png"
    assert "AIza-test" not in json.dumps(store.query("SELECT * FROM api_calls"))
    gemini(invoke, fake_gemini)
    assert fake_gemini.billable == 3 and store.count("captions") == 3


@pytest.mark.parametrize("fault, status, error_class", [
    ("429", "ok", None), ("500", "ok", None), ("malformed", "ok", None), ("slow", "ok", None),
    ("refusal", "failed", "content_filter"), ("content_filter", "failed", "content_filter"),
    ("400", "failed", "INVALID_ARGUMENT")])
def test_gemini_faults(store, run, invoke, fake_gemini, fault, status, error_class):
    add_images(store, run, 1)
    fake_gemini.slow_seconds = 1.5
    fake_gemini.fail(fault, times=1)
    gemini(invoke, fake_gemini, "--timeout", "0.5")
    call = ledger_rows(store)[0]
    assert call["status"] == status and call["error_class"] == error_class
    assert call["attempts"] == (2 if status == "ok" else 1)
    assert store.count("captions") == (1 if status == "ok" else 0)


def test_gemini_daily_quota_stops_the_run(store, run, invoke, fake_gemini):
    add_images(store, run, 2)
    fake_gemini.fail("insufficient_quota", times=1)
    result = gemini(invoke, fake_gemini, expect=1)
    assert "quota is used up" in result.output and fake_gemini.requests == 1


def test_gemini_vertex_mode_builds_vertex_urls(store, run, fake_gemini):
    """Vertex AI needs Application Default Credentials, which can't be had offline: here the SDK gets
    ready-made credentials, and the request it builds is checked at the fake."""
    from google.oauth2.credentials import Credentials

    from promptmill.caption import api as reverse_prompt
    from promptmill.llm import gemini as gemini_api

    add_images(store, run, 1)
    client = gemini_api.make_client("demo-project", "europe-west4", fake_gemini.url, 10.0,
                                    credentials=Credentials(token="ya29.test-token"))
    provider = gemini_api.GeminiGenerate("gemini-2.5-flash", client, reverse_prompt.parse_caption,
                                         {"max_output_tokens": 50})
    job: Job = next(reverse_prompt.gemini_jobs(store, "gemini-2.5-flash", "describe it", {"max_output_tokens": 50}))
    reply = asyncio.run(provider.send(job))
    assert provider.parse(reply.response, job).startswith("a small test image")
    seen = fake_gemini.seen[0]
    assert seen["path"] == ("/v1beta1/projects/demo-project/locations/europe-west4/publishers/google/models/"
                            "gemini-2.5-flash:generateContent")
    assert seen["headers"]["authorization"] == "Bearer ya29.test-token"


def test_gemini_without_project_or_key_exits_2_and_dry_run_sends_nothing(tmp_path, store, run, invoke, fake_gemini,
                                                                         monkeypatch):
    add_images(store, run, 2)
    result = gemini(invoke, fake_gemini, "--dry-run")
    assert "2 requests" in result.output and fake_gemini.requests == 0
    monkeypatch.delenv("GOOGLE_API_KEY")
    bad = run_script("06_caption", "gemini", "--db", tmp_path / "x.db", env={"GOOGLE_API_KEY": "",
                                                                              "GOOGLE_CLOUD_PROJECT": ""})
    assert bad.returncode == 2 and "GOOGLE_API_KEY" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_vlm_sends_data_urls_and_stores_sha256(store, run, invoke, fake_openai):
    add_images(store, run, 2)
    invoke("06_caption", "vlm", "--base-url", fake_openai.url + "/v1", "--model", "joycaption", *FAST_RETRIES)
    captions = store.query("SELECT * FROM captions WHERE kind = 'vlm'")
    assert len(captions) == 2 and all(c["api_call_id"] for c in captions)
    sent = fake_openai.seen[0]["body"]["messages"][0]["content"]
    assert sent[1]["image_url"]["url"].startswith("data:image/png;base64,")
    stored = ledger_rows(store)[0]["request"]["messages"][0]["content"]
    assert stored[1]["image_url"]["url"].startswith("sha256:") and len(stored[1]["image_url"]["url"]) == 71
    invoke("06_caption", "vlm", "--base-url", fake_openai.url + "/v1", "--model", "joycaption")
    assert fake_openai.requests == 2
