"""End to end: a real Datasette server and a real headless Chromium load the lineage page's thumbnail."""

import socket
import subprocess
import sys

import pytest
from curation_fixtures import add_library

from conftest import CHROMEDRIVER, CHROMIUM, wait_for_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs /usr/bin/chromium and /usr/bin/chromedriver "
                              "(apt-get install chromium chromium-driver)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(store, run):
    ids = add_library(store, run)
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", str(store.path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    wait_for_server(process, base, "datasette", 60)
    yield base, ids
    process.terminate()
    process.wait(timeout=30)


def test_lineage_page_shows_the_image_thumbnail(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, ids = server
    browser.get(f"{base}/promptmill/lineage?image_id={ids['images'][0]}")
    image = browser.find_element(By.CSS_SELECTOR, "td.col-thumbnail img")
    browser.execute_script("arguments[0].scrollIntoView();", image)
    WebDriverWait(browser, 30).until(lambda _: browser.execute_script("return arguments[0].complete;", image))
    assert browser.execute_script("return arguments[0].naturalWidth;", image) > 0
    assert "/-/promptmill/thumb/" in image.get_attribute("src")
    cells = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "td.col-what")]
    assert cells[:4] == ["image", "found in imagefolder", "generation", "prompt"]
