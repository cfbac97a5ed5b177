import io
import json

import pytest
from PIL import Image

from conftest import run_script
from fakes.gelbooru import FakeGelbooru, make_posts

ENV = {"GELBOORU_API_KEY": "k3y", "GELBOORU_USER_ID": "42"}


def small_png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 255 - shade, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def gelbooru():
    images = {f"{i:03d}.png": small_png(i * 20) for i in range(7)}
    tags = {name: f"landscape mountain {'^_^' if i % 2 else 'blue_sky'}" for i, name in enumerate(sorted(images))}
    with FakeGelbooru([], images) as fake:
        fake.posts = make_posts(fake.base_url, images, tags)
        yield fake


def collect(fake, db, *args, env=ENV):
    return run_script("01_collect", "gelbooru", "--db", db, "--tags", "landscape", "--base-url", fake.base_url,
                      "--delay", "0", *args, env=env)


def test_posts_with_tags_paging_and_retries(gelbooru, tmp_path, monkeypatch):
    from promptmill.collect import gelbooru as source

    monkeypatch.setattr(source, "PAGE_LIMIT", 3)
    gelbooru.faults += [("/index.php", 429, {"Retry-After": "0"}), ("/images/", 500, {})]
    db = tmp_path / "db" / "g.db"
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    from click.testing import CliRunner

    from conftest import load_step
    result = CliRunner().invoke(load_step("01_collect").cli, ["gelbooru", "--db", str(db), "--tags", "landscape",
                                "--limit", "5", "--base-url", gelbooru.base_url, "--delay", "0"])
    assert result.exit_code == 0, result.output
    from promptmill.core.store import open_store
    store = open_store(db)
    origins = store.query("SELECT * FROM image_origins ORDER BY position DESC")
    assert len(origins) == 5 and origins[0]["locator"] == str(gelbooru.posts[0]["id"])
    assert json.loads(origins[0]["meta"])["file_url"] == gelbooru.posts[0]["file_url"]
    caption = store.query("SELECT * FROM captions WHERE image_id = ?", (origins[0]["image_id"],))[0]
    assert caption["kind"] == "imported" and json.loads(caption["params"])["rating"] == "general"
    tags = {r["tag"] for r in store.query("SELECT tag FROM tags WHERE caption_id = ?", (caption["id"],))}
    assert tags == set(gelbooru.posts[0]["tags"].split())
    assert "blue sky" in caption["text"] or "^_^" in caption["text"]
    pages = [r for r in gelbooru.requests if r.startswith("/index.php")]
    assert len(pages) == 3 and "pid=1" in pages[-1]  # 429 retried, then two pages of 3
    assert not any("k3y" in json.dumps(row) for row in store.query("SELECT argv, params FROM runs"))
    assert "k3y" not in store.scalar("SELECT uri FROM sources")
    store.close()


def test_rerun_downloads_only_new_posts(gelbooru, tmp_path):
    db = tmp_path / "db" / "g.db"
    assert collect(gelbooru, db, "--limit", "4").returncode == 0
    first = len(gelbooru.image_requests())
    result = collect(gelbooru, db, "--limit", "7")
    assert result.returncode == 0, result.stderr
    assert len(gelbooru.image_requests()) - first == 3
    again = collect(gelbooru, db, "--limit", "7")
    assert again.returncode == 0 and len(gelbooru.image_requests()) - first == 3
    assert "posts already there 7" in again.stderr


def test_missing_or_refused_credentials_exit_2(gelbooru, tmp_path):
    db = tmp_path / "db" / "g.db"
    result = collect(gelbooru, db, env={"GELBOORU_API_KEY": "", "GELBOORU_USER_ID": ""})
    assert result.returncode == 2 and "GELBOORU_API_KEY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = collect(gelbooru, db, env={"GELBOORU_API_KEY": "wrong", "GELBOORU_USER_ID": "42"})
    assert result.returncode == 2 and "401" in result.stderr and "wrong" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
