"""Discord exports generated the way DiscordChatExporter writes them (tests/dce_export.py), checked
message by message: text, author, meta and image links."""

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from dce_export import Export, Message, User, read_csv_rows
from PIL import Image
from test_collect_resume import count_prompts

from conftest import ROOT
from promptmill.core.text import hash_author

ANN = User("800000000000000001", "ann_lee", "Ann Lee")
BOB = User("800000000000000002", "bob")
DREAMBOT = User("1003336000000000001", "dreambot", "DreamBot", is_bot=True)
MOTHERSHIP = User("1002292111942635562", "DreamBotMothership", is_bot=True)
MJ = User("936929561302675456", "Midjourney Bot", is_bot=True)


def png(color) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "PNG")
    return out.getvalue()


def dreambot_export(markdown: bool) -> tuple[Export, list[tuple[str, str, User, dict]]]:
    """An export and what must come out of it: (message id, prompt, author, meta subset)."""
    export = Export(markdown=markdown)
    export.add(Message("1", ANN, "/dream prompt:book cover: a red door"))
    export.add(Message("2", DREAMBOT, "**Dreaming** ```/dream prompt:a cat``` for <@800000000000000001>",
                       mentions=[ANN]))
    export.add(Message("3", DREAMBOT,
                       "**Dreamt** in `4.03s` ```/dream prompt:book cover: a red door, nier:automata style, "
                       "bald::-10 negative_prompt:blurry, text seed:361562174 steps:20 cfg_scale:6 "
                       "sampler:k_euler_a``` for <@800000000000000001>\n**WARNING:** the NSFW filter hid 1 image",
                       mentions=[ANN], attachments=[("dream_0.png", png("red"))]))
    export.add(Message("4", DREAMBOT, "**Dreamt** in `2.1s` ```/dream prompt:a lighthouse at dusk seed:7``` "
                       "for <@800000000000000002>\nSeed 7", mentions=[BOB]))
    export.add(Message("5", DREAMBOT, '<@800000000000000002> !dream "a castle on a hill, oil" -n 4 -g -S 1234 '
                       '-C 7 -A k_lms', mentions=[BOB]))
    export.add(Message("6", ANN, "Joined the server.", type="GuildMemberJoin"))
    export.add(Message("8", ANN, '!dream "moss on old stones, macro" --seed 77 -s 30 -W 640 -H 384'))
    export.add(Message("7", MOTHERSHIP, '`!dream "moss on old stones, macro" --seed 77 -s 30 -W 640 -H 384` '
                       "The seeds for each individual image are [77]", type="Reply", reference="8",
                       mentions=[ANN]))
    expected = [
        ("3", "book cover: a red door, nier:automata style, bald::-10", ANN,
         {"negative_prompt": "blurry, text", "seed": 361562174, "steps": 20, "cfg_scale": 6.0,
          "sampler": "k_euler_a"}),
        ("4", "a lighthouse at dusk", BOB, {"seed": 7}),
        ("5", "a castle on a hill, oil", BOB, {"n": 4, "grid": True, "seed": 1234, "cfg_scale": 7.0,
                                               "sampler": "k_lms"}),
        ("7", "moss on old stones, macro", ANN, {"seed": 77, "steps": 30, "width": 640, "height": 384}),
    ]
    return export, expected


def prompts(store):
    return {r["locator"]: r for r in store.query("SELECT * FROM prompts ORDER BY position")}


def check(rows, expected, guild="Stable Foundation", channel="dream-results"):
    assert sorted(rows) == sorted(e[0] for e in expected)
    for locator, text, author, meta in expected:
        row = rows[locator]
        found = json.loads(row["meta"])
        assert row["text"] == text
        assert row["author"] == hash_author(author.id)
        assert {k: found.get(k) for k in meta} == meta
        assert found["guild"] == guild and found["channel"] == channel


@pytest.mark.parametrize("markdown", [True, False])
def test_dreambot_json_with_and_without_markdown(tmp_path, invoke, store, markdown):
    export, expected = dreambot_export(markdown)
    path = export.write_json(tmp_path / "dreams.json")
    assert ("@Ann Lee" in path.read_text("utf-8")) is markdown
    invoke("01_collect", "discord", path, "--format", "dreambot")
    check(prompts(store), expected)


def test_dreambot_csv_without_markdown_has_ids(tmp_path, invoke, store):
    export, expected = dreambot_export(markdown=False)
    invoke("01_collect", "discord", export.write_csv(tmp_path / "raw.csv"), "--format", "dreambot")
    rows = store.query("SELECT text, author FROM prompts ORDER BY position")
    assert [(r["text"], r["author"]) for r in rows] == [
        (text, hash_author(author.id)) for _, text, author, _ in expected[:3]] + [(expected[3][1], None)]


def test_dreambot_csv_excel_style(tmp_path, invoke, store):
    export, expected = dreambot_export(markdown=True)
    path = export.write_csv(tmp_path / "dreams.csv", newline="\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # saved again by Excel: BOM, CRLF
    assert read_csv_rows(tmp_path / "dreams.csv")[2]["\ufeffAuthorID"] == DREAMBOT.id
    invoke("01_collect", "discord", path, "--format", "dreambot")
    rows = store.query("SELECT * FROM prompts ORDER BY position")
    assert [r["text"] for r in rows] == [e[1] for e in expected]
    # CSV has no mentions array: the rendered @name is the author key
    assert [r["author"] for r in rows] == [hash_author("@Ann Lee"), hash_author("@bob"), hash_author("@bob"), None]
    assert json.loads(rows[0]["meta"])["seed"] == 361562174


def midjourney_export(markdown: bool) -> tuple[Export, list]:
    export = Export(channel="general-1", parent=None, markdown=markdown)
    export.add(Message("10", MJ, "**a red fox in snow --ar 16:9 --v 6.0 --stylize 250 --chaos 20 --seed 42 "
                       "--no trees --tile** - <@800000000000000001> (relaxed, stealth)", mentions=[ANN]))
    export.add(Message("11", MJ, "**<https://s.mj.run/abc123> a castle --v 5** - Image #2 <@800000000000000002>",
                       mentions=[BOB]))
    export.add(Message("12", MJ, "**a castle** - Variations (Strong) by <@800000000000000002> (fast)",
                       mentions=[BOB]))
    export.add(Message("13", MJ, "**a castle** - Zoom Out by <@800000000000000002> (turbo)", mentions=[BOB]))
    export.add(Message("14", MJ, "**<https://s.mj.run/a1> <https://s.mj.run/b2> --v 6.0** - "
                       "<@800000000000000001> (fast)", mentions=[ANN]))
    export.add(Message("15", MJ, "**a castle** - Upscaled (Subtle) by <@800000000000000001> (fast)",
                       mentions=[ANN]))
    export.add(Message("16", ANN, "**nice** - what do you think"))
    expected = [
        ("10", "a red fox in snow", ANN, {"aspect_ratio": "16:9", "version": "6.0", "stylize": 250, "chaos": 20,
                                          "seed": 42, "negative_prompt": "trees", "parameters": "--tile",
                                          "kind": "result", "mode": "relaxed", "stealth": True}),
        ("11", "a castle", BOB, {"image_prompts": ["https://s.mj.run/abc123"], "version": "5", "kind": "upscale",
                                 "image_number": 2, "mode": None}),
        ("12", "a castle", BOB, {"kind": "variation", "mode": "fast", "stealth": None}),
        ("13", "a castle", BOB, {"kind": "zoom", "mode": "turbo"}),
        ("15", "a castle", ANN, {"kind": "upscale", "mode": "fast"}),
    ]
    return export, expected


@pytest.mark.parametrize("markdown", [True, False])
def test_midjourney_meta_and_blends(tmp_path, invoke, store, markdown):
    export, expected = midjourney_export(markdown)
    result = invoke("01_collect", "discord", export.write_json(tmp_path / "mj.json"), "--format", "midjourney")
    check(prompts(store), expected, channel="general-1")
    assert "blends without text 1" in result.output


def test_messages_skip_system_and_bots_and_read_forwards(tmp_path, invoke, store):
    export = Export(channel="prompt-share", markdown=True)
    export.add(Message("20", ANN, "a quiet harbour at dawn, <@800000000000000002> look", mentions=[BOB]))
    export.add(Message("21", ANN, "Joined the server.", type="GuildMemberJoin"))
    export.add(Message("22", BOB, "Pinned a message.", type="ChannelPinnedMessage"))
    export.add(Message("23", BOB, "Started a thread.", type="ThreadCreated"))
    export.add(Message("24", ANN, "", type="8"))  # a boost: DCE writes the number of a kind it doesn't name
    export.add(Message("25", BOB, "", reference="20", forwarded="a forwarded prompt: moss on old stones"))
    export.add(Message("26", BOB, "same but in winter", type="Reply", reference="20"))
    export.add(Message("27", MJ, "**a castle** - <@800000000000000001> (fast)", mentions=[ANN]))
    export.add(Message("28", ANN, "", stickers=[{"id": "5", "name": "wave", "format": "Lottie",
                                                  "sourceUrl": "https://media.discordapp.net/stickers/5.json"}]))
    json_path = export.write_json(tmp_path / "chat.json")
    invoke("01_collect", "discord", json_path, "--format", "messages")
    rows = prompts(store)
    assert {k: (r["text"], r["author"]) for k, r in rows.items()} == {
        "20": ("a quiet harbour at dawn, @bob look", hash_author(ANN.id)),
        "25": ("a forwarded prompt: moss on old stones", hash_author(BOB.id)),
        "26": ("same but in winter", hash_author(BOB.id)),
    }
    assert json.loads(rows["25"]["meta"])["forwarded"] is True
    assert json.loads(rows["26"]["meta"])["reply_to"] == "20"
    # the same export as CSV: no ids, no types, no isBot; system text and bot results still kept out
    csv_db = tmp_path / "csv" / "promptmill.db"
    invoke("01_collect", "discord", export.write_csv(tmp_path / "chat.csv"), "--format", "messages", db=csv_db)
    from promptmill.core.store import open_store

    with_csv = open_store(csv_db)
    try:
        texts = [r["text"] for r in with_csv.query("SELECT text FROM prompts ORDER BY position")]
    finally:
        with_csv.close()
    assert "**a castle** - @ann_lee (fast)" not in texts and "a quiet harbour at dawn, @bob look" in texts


def test_thread_export_keeps_parent_channel_and_bom(tmp_path, invoke, store):
    export, expected = dreambot_export(markdown=True)
    export.channel, export.channel_type, export.parent = "red door ideas", "GuildPublicThread", "dream-results"
    invoke("01_collect", "discord", export.write_json(tmp_path / "thread.json", bom=True), "--format", "dreambot")
    rows = prompts(store)
    check(rows, expected)
    meta = json.loads(rows["3"]["meta"])
    assert meta["thread"] == "red door ideas" and meta["channel_id"] == "990" and meta["thread_id"] == "1000"


def test_media_folder_images_linked_to_their_prompt(tmp_path, invoke, store):
    export, _ = dreambot_export(markdown=True)
    export.media = True
    export.messages[2].attachments.append(("dream_1.png", png("blue")))
    export.messages[2].attachments.append(("clip.mp4", b"\x00\x00\x00\x18ftypmp42"))
    export.messages[2].stickers.append({"id": "5", "name": "wave", "format": "Lottie",
                                        "sourceUrl": "dreams.json_Files/5-0123456789abcdef.json"})
    folder = tmp_path / "export"
    folder.mkdir()
    path = export.write_json(folder / "dreams.json")
    (folder / "dreams.json_Files" / "5-0123456789abcdef.json").write_text('{"v": "5.5.2", "layers": []}')
    result = invoke("01_collect", "discord", folder, "--format", "dreambot")
    assert "sources imported 1" in result.output and "media skipped: not an image 1" in result.output
    links = store.query("SELECT o.locator, p.locator AS message, i.width, i.format FROM image_origins o "
                        "JOIN images i ON i.id = o.image_id JOIN prompts p ON p.id = o.prompt_id ORDER BY o.position")
    names = sorted((path.parent / "dreams.json_Files").iterdir())
    assert [(r["message"], r["width"], r["format"]) for r in links] == [("3", 64, "PNG")] * 2
    assert {r["locator"] for r in links} == {n.name for n in names if n.suffix == ".png"}
    assert store.count("sources") == 1


def test_cut_off_export_stays_incomplete_and_the_whole_file_adds_the_rest(tmp_path, invoke, store):
    export, expected = dreambot_export(markdown=True)
    whole = export.write_json(tmp_path / "dreams.json").read_bytes()
    cut = whole[:whole.index(b'"id": "4"')]
    (tmp_path / "dreams.json").write_bytes(cut)
    result = invoke("01_collect", "discord", tmp_path / "dreams.json", "--format", "dreambot")
    assert "sources incomplete 1" in result.output
    assert store.scalar("SELECT completed_run_id FROM sources") is None
    assert store.scalar("SELECT reason FROM item_errors") == "export cut off"
    (tmp_path / "dreams.json").write_bytes(whole)
    result = invoke("01_collect", "discord", tmp_path / "dreams.json", "--format", "dreambot")
    assert "messages already read from a cut-off copy 1" in result.output
    texts = [r["text"] for r in store.query("SELECT text FROM prompts ORDER BY id")]
    assert texts == [e[1] for e in expected]


def origins(db):
    with sqlite3.connect(db) as conn:
        prompts = conn.execute("SELECT position, locator, text, author FROM prompts ORDER BY position").fetchall()
        images = conn.execute("SELECT o.position, i.sha256, p.position FROM image_origins o JOIN images i "
                              "ON i.id = o.image_id LEFT JOIN prompts p ON p.id = o.prompt_id ORDER BY o.position"
                              ).fetchall()
        statuses = [row[0] for row in conn.execute("SELECT status FROM runs ORDER BY id")]
    return prompts, images, statuses


@pytest.mark.slow
@pytest.mark.resilience
def test_sigkill_mid_media_import_then_rerun_matches_one_run(tmp_path):
    export = Export(markdown=True, media=True)
    for index in range(3000):
        user = (ANN, BOB)[index % 2]
        attachments = [(f"dream_{index}.png", png((index % 256, index // 256, 7)))] if index % 3 == 0 else []
        export.add(Message(str(10_000 + index), DREAMBOT, f"**Dreamt** in `1s` ```/dream prompt:a red door "
                           f"number {index} seed:{index}``` for <@{user.id}>", mentions=[user], attachments=attachments))
    folder = tmp_path / "export"
    folder.mkdir()
    path = export.write_json(folder / "dreams.json")
    env = {**os.environ, "PROMPTMILL_PROGRESS": "0"}

    def command(db):
        return [sys.executable, str(ROOT / "steps" / "01_collect.py"), "discord", "--db", str(db), str(path),
                "--format", "dreambot"]

    killed = tmp_path / "killed" / "promptmill.db"
    process = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while count_prompts(killed) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 0 < count_prompts(killed) < 3000
    rerun = subprocess.run(command(killed), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    whole = tmp_path / "whole" / "promptmill.db"
    subprocess.run(command(whole), env=env, capture_output=True, text=True, timeout=600, check=True)
    resumed_prompts, resumed_images, statuses = origins(killed)
    one_prompts, one_images, _ = origins(whole)
    assert resumed_prompts == one_prompts and resumed_images == one_images
    assert len(one_prompts) == 3000 and len(one_images) == 1000
    assert all(prompt_position == position - 1 for position, _, prompt_position in one_images)
    assert statuses == ["interrupted", "ok"]
