import json

from conftest import ROOT, run_script
from promptmill.core.text import hash_author

EXAMPLES = ROOT / "examples" / "discord"


def test_dreambot_results_keep_prompt_args_and_provenance(invoke, store):
    invoke("01_collect", "discord", EXAMPLES / "dreambot.json", "--format", "dreambot")
    export = json.loads((EXAMPLES / "dreambot.json").read_text(encoding="utf-8"))
    results = [m for m in export["messages"] if m["author"]["isBot"] and "/dream prompt:" in m["content"]]
    rows = store.query("SELECT * FROM prompts ORDER BY position")
    assert len(rows) == len(results) == 24
    first, message = rows[0], results[0]
    assert first["locator"] == message["id"] and first["created_at"] == message["timestamp"]
    assert "negative_prompt" not in first["text"] and "seed:" not in first["text"]
    assert message["content"].split("prompt:", 1)[1].startswith(first["text"])
    meta = json.loads(first["meta"])
    assert meta["channel"] == "dream-results" and isinstance(meta["seed"], int) and meta["negative_prompt"]
    assert meta["attachments"] == [message["attachments"][0]["url"]]
    assert first["author"] == hash_author(message["mentions"][0]["id"])
    assert message["mentions"][0]["id"] not in json.dumps(rows)


def test_midjourney_and_plain_messages(invoke, store):
    invoke("01_collect", "discord", EXAMPLES / "midjourney.json", "--format", "midjourney")
    rows = store.query("SELECT text, author, meta FROM prompts")
    assert len(rows) == 30
    assert all("**" not in r["text"] and " --" not in r["text"] and r["author"] for r in rows)
    assert any(json.loads(r["meta"]).get("parameters", "").startswith("--") for r in rows)
    invoke("01_collect", "discord", EXAMPLES / "messages.json", "--format", "messages")
    humans = store.query("SELECT p.text FROM prompts p JOIN sources s ON s.id = p.source_id "
                         "WHERE s.options LIKE '%messages%'")
    assert len(humans) == 30 and not any(r["text"].startswith("Saved your prompt") for r in humans)


def test_folder_import_twice_adds_nothing(invoke, store):
    invoke("01_collect", "discord", EXAMPLES, "--format", "dreambot")
    before = store.count("prompts")
    result = invoke("01_collect", "discord", EXAMPLES, "--format", "dreambot")
    assert store.count("prompts") == before == 24
    assert "sources already imported 3" in result.output


def test_csv_export(tmp_path, invoke, store):
    path = tmp_path / "export.csv"
    path.write_text('AuthorID,Author,Date,Content,Attachments,Reactions\n'
                    '"1","ann","2023-01-01T10:00:00+00:00","a lighthouse in a storm, oil painting",'
                    '"https://cdn.example/a.png,https://cdn.example/b.png",""\n'
                    '"2","bob","2023-01-01T10:01:00+00:00","",,""\n', encoding="utf-8")
    invoke("01_collect", "discord", path, "--format", "messages")
    (row,) = store.query("SELECT * FROM prompts")
    assert row["text"] == "a lighthouse in a storm, oil painting" and row["author"] == hash_author("1")
    assert json.loads(row["meta"])["attachments"] == ["https://cdn.example/a.png", "https://cdn.example/b.png"]


def test_streams_a_big_export_with_small_reads(tmp_path, store, run, monkeypatch):
    from promptmill.collect import discord
    from promptmill.collect.base import Collector

    monkeypatch.setattr(discord, "READ_CHARS", 97)  # every message straddles reads
    messages = [{"id": str(i), "type": "Default", "timestamp": "2023-01-01T00:00:00+00:00",
                 "content": f"prompt number {i}, with \"quotes\" and ] brackets {{", "author": {"id": "7", "isBot": False},
                 "attachments": [], "embeds": []} for i in range(300)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"guild": {"name": "g"}, "channel": {"name": "c"}, "messages": messages}), "utf-8")
    collector = Collector(store, run, discord.source_info(path, "messages"))
    assert discord.collect_export(collector, path, "messages") == 300
    collector.finish(300)
    assert store.count("prompts") == 300
    assert store.scalar("SELECT text FROM prompts WHERE position = 300") == messages[-1]["content"]


def test_malformed_and_non_utf8_exports_are_recorded(tmp_path, invoke, store):
    good = {"id": "1", "type": "Default", "timestamp": "t", "content": "a quiet harbour at dawn",
            "author": {"id": "5", "isBot": False}}
    broken = tmp_path / "broken.json"
    broken.write_text('{"guild": {}, "channel": {}, "messages": [' + json.dumps(good) + ', {"id": "2", "cont', "utf-8")
    invoke("01_collect", "discord", broken, "--format", "messages")
    assert store.count("prompts") == 1
    assert store.scalar("SELECT reason FROM item_errors") == "export cut off"
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"guild": {}, "channel": {}, "messages": [{"id": "3", "content": "caf\xe9 terrace", '
                      b'"author": {"id": "5", "isBot": false}}]}')
    invoke("01_collect", "discord", latin, "--format", "messages")
    assert store.scalar("SELECT count(*) FROM item_errors WHERE reason = 'not utf-8'") == 1
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    invoke("01_collect", "discord", empty, "--format", "messages")
    assert store.scalar("SELECT count(*) FROM item_errors WHERE reason = 'malformed export'") == 1


def test_bad_format_exits_2(tmp_path):
    result = run_script("01_collect", "discord", "--db", tmp_path / "x.db", EXAMPLES / "dreambot.json",
                        "--format", "nope")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
