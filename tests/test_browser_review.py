"""End to end: `promptmill browse --review` and a real headless Chromium review the demo's images by keyboard
and buttons; the database rows and the 09_upload export then show every action.

Screenshots of the grid, the image page and the phone-sized grid go to the test's folder; with
PROMPTMILL_SCREENSHOTS=1 they are written to docs/ too (the README shows them).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_browser_datasette import free_port

import paths
from conftest import CHROMEDRIVER, CHROMIUM, wait_for_server
from tiny_models import build_tiny_tagger

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs /usr/bin/chromium and /usr/bin/chromedriver "
                              "(apt-get install chromium chromium-driver)"),
]

TRIGGER = "sks"


@pytest.fixture
def demo_db(invoke, db_path, tmp_path, monkeypatch):
    """The demo's image half: two image folders, cleaned, deduplicated, WD14-tagged, split (collected
    by relative path from a copy, as a user in the checkout would, so the pages show examples/...)."""
    for folder in ("images", "imagefolder"):
        shutil.copytree(paths.EXAMPLES_DIR / folder, tmp_path / "examples" / folder)
    monkeypatch.chdir(tmp_path)
    invoke("01_collect", "imagefolder", "examples/images")
    invoke("01_collect", "imagefolder", "examples/imagefolder", "--text-as", "both")
    invoke("02_clean", "images", "--min-side", "32")
    invoke("03_dedup", "images", "--method", "sha256,phash")
    invoke("06_caption", "wd14", "--model", build_tiny_tagger(tmp_path / "tiny-wd14"))
    invoke("08_split", "assign", "--validation", "0.1", "--seed", "0")
    return db_path


@pytest.fixture
def server(demo_db):
    port = free_port()
    env = {**os.environ, "PROMPTMILL_PROGRESS": "0"}
    process = subprocess.Popen([sys.executable, "-m", "promptmill", "browse", "--review", "--db", str(demo_db),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    wait_for_server(process, base, "promptmill browse", 90)
    state = {"process": process, "stopped": False}

    def stop():
        if not state["stopped"]:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal: the server and the CLI around it
            state["output"] = process.communicate(timeout=60)
            state["stopped"] = True
        return state["output"]

    yield base, stop
    if not state["stopped"]:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def common_tag(store) -> str:
    """A WD14 tag at least three images have."""
    counts = {}
    for (text,) in store.execute("SELECT text FROM current_captions WHERE lineage_kind = 'wd14'"):
        for tag in {t.strip() for t in text.split(",")}:
            counts[tag] = counts.get(tag, 0) + 1
    tag, count = max(counts.items(), key=lambda item: (item[1], item[0]))
    assert count >= 3, counts
    return tag


def save_screenshot(driver, tmp_path: Path, name: str):
    driver.save_screenshot(str(tmp_path / name))
    if os.environ.get("PROMPTMILL_SCREENSHOTS") == "1":
        (paths.ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / name, paths.ROOT / "docs" / name)


def test_review_by_keyboard_and_buttons_lands_in_the_database_and_the_export(server, browser, store, invoke,
                                                                             tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base, stop = server
    tag = common_tag(store)
    wait = WebDriverWait(browser, 30)

    def done(number: int):
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(f"action {number}:"))

    def keys(*sequence):
        ActionChains(browser).send_keys(*sequence).perform()

    def focus(css: str):  # as Tab would; a click could land on the tile's link or checkbox
        browser.execute_script("arguments[0].focus();", browser.find_element(By.CSS_SELECTOR, css))

    browser.get(f"{base}/-/review")
    Select(browser.find_element(By.ID, "kind")).select_by_visible_text("wd14")
    browser.find_element(By.ID, "filter-tag").send_keys(tag, Keys.ENTER)
    wait.until(lambda d: f"tag={tag.replace(' ', '+')}" in d.current_url)
    shown = [int(t.get_attribute("data-id")) for t in browser.find_elements(By.CSS_SELECTOR, "#grid .tile")]
    assert len(shown) >= 3

    # select three images with the keyboard and add a trigger word to them
    focus("#grid .tile")
    keys("x", Keys.ARROW_RIGHT, "x", Keys.ARROW_RIGHT, "x")
    assert browser.find_element(By.ID, "selected-count").text == "3 selected"
    picked = shown[:3]
    browser.find_element(By.ID, "bulk-tags").send_keys(TRIGGER)
    browser.find_element(By.ID, "bulk-apply").click()
    done(1)
    captions = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#grid .tile .caption")[:3]]
    assert all(text.startswith(f"{TRIGGER}, ") for text in captions)

    # drop the first with the keyboard, with a reason
    browser.find_element(By.ID, "reason").send_keys("watermark")
    focus(f"#tile-{picked[0]}")
    keys("d")
    done(2)
    assert "state-drop" in browser.find_element(By.ID, f"tile-{picked[0]}").get_attribute("class")

    # edit the second's caption inline
    focus(f"#tile-{picked[1]}")
    keys("e")
    box = browser.find_element(By.CSS_SELECTOR, f"#tile-{picked[1]} textarea")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(f"{TRIGGER}, a hand-written caption", Keys.ENTER)
    done(3)

    # drop the third by keyboard, then undo that drop with u
    focus(f"#tile-{picked[2]}")
    keys("d")
    done(4)
    keys("u")
    done(5)
    assert "state-keep" in browser.find_element(By.ID, f"tile-{picked[2]}").get_attribute("class")
    save_screenshot(browser, tmp_path, "review-grid.png")

    browser.get(f"{base}/-/review/image/{picked[1]}?kind=wd14")
    heads = [li.text for li in browser.find_elements(By.CSS_SELECTOR, ".captions li.head")]
    assert any("edit of wd14" in head and "a hand-written caption" in head for head in heads)
    assert browser.find_elements(By.LINK_TEXT, "lineage")
    save_screenshot(browser, tmp_path, "review-image.png")
    keys(Keys.ARROW_RIGHT)  # the next image, by keyboard
    wait.until(lambda d: "/-/review/image/" in d.current_url and f"/image/{picked[1]}?" not in d.current_url)
    following = int(re.search(r"/image/(\d+)", browser.current_url).group(1))
    form = browser.find_element(By.CSS_SELECTOR, 'form.edit-caption[data-kind="wd14"]')
    form.find_element(By.CSS_SELECTOR, ".add-tag").send_keys("checked by hand")
    form.find_element(By.CSS_SELECTOR, ".tag-apply").click()
    heads_js = ("return Array.from(document.querySelectorAll('.captions li.head .caption-text'))"
                ".map((p) => p.textContent).join('|')")
    wait.until(lambda d: "checked by hand" in d.execute_script(heads_js))  # after the page reloads

    browser.set_window_size(390, 844)
    browser.get(f"{base}/-/review?kind=wd14&tag={tag}")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, "the grid fits a phone's width"
    save_screenshot(browser, tmp_path, "review-phone.png")

    stdout, _ = stop()
    assert "review: 1 session(s), 6 action(s) recorded" in stdout

    runs = store.query("SELECT id, status, counts FROM runs WHERE step = 'review'")
    assert [r["status"] for r in runs] == ["ok"]
    run_id = runs[0]["id"]
    reviews = store.query("SELECT item_id, verdict, reason, value, rule FROM decisions "
                          "WHERE stage = 'review' AND run_id = ? ORDER BY id", (run_id,))
    assert [(r["item_id"], r["verdict"], r["value"]) for r in reviews] == [
        (picked[0], "drop", None), (picked[2], "drop", None), (picked[2], "keep", "clear")]
    assert reviews[0]["reason"] == "watermark" and reviews[2]["rule"] == "undo"
    edits = store.query("SELECT c.image_id, c.text, c.params, p.text AS parent_text FROM captions c "
                        "JOIN captions p ON p.id = c.parent_id WHERE c.run_id = ? ORDER BY c.id", (run_id,))
    assert [e["image_id"] for e in edits] == [*picked, picked[1], following]
    assert edits[4]["text"] == f"{edits[4]['parent_text']}, checked by hand"
    assert all(f"{TRIGGER}, {e['parent_text']}" == e["text"] for e in edits[:3])
    inline = edits[3]
    assert inline["text"] == f"{TRIGGER}, a hand-written caption" and inline["parent_text"] == edits[1]["text"]
    assert json.loads(inline["params"])["root_kind"] == "wd14"

    invoke("09_upload", "imagefolder", tmp_path / "export", "--release", "reviewed", "--text-from", "caption:wd14")
    released = dict(store.execute(
        "SELECT ri.item_id, ri.text FROM release_items ri JOIN releases r ON r.id = ri.release_id "
        "WHERE r.name = 'reviewed' AND ri.item_type = 'image'"))
    assert picked[0] not in released, "the dropped image is not released"
    assert released[picked[1]] == f"{TRIGGER}, a hand-written caption"
    assert released[picked[2]].startswith(f"{TRIGGER}, "), "the undone drop is released, with its trigger"
    texts = [json.loads(line)["text"] for metadata in (tmp_path / "export").glob("*/metadata.jsonl")
             for line in metadata.read_text().splitlines()]
    assert f"{TRIGGER}, a hand-written caption" in texts
