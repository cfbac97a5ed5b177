"""`promptmill browse --review` as a real server process: stopped by SIGTERM or killed, and with review off."""

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from curation_fixtures import add_library

from promptmill.core.runs import pid_alive, start_run
from promptmill.core.store import open_store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Browser:
    """Cookies and the page's token, as the review page's script uses them."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        page = self.opener.open(f"{base}/-/review", timeout=30).read().decode()
        self.token = re.search(r'name="review-token" content="([^"]*)"', page).group(1)

    def act(self, payload: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{self.base}/-/review/action", data=json.dumps(payload).encode(), method="POST",
            headers={"content-type": "application/json", "x-review-token": self.token, "origin": self.base})
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


def start(db_path, *flags) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "promptmill", "browse", "--db", str(db_path), "--port", str(port), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PROMPTMILL_PROGRESS": "0"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/-/versions.json", timeout=2).read()
            return process, base
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                pytest.fail(f"promptmill browse did not start: {process.communicate()[1][-800:]}")
            time.sleep(0.3)


def port_closed(base: str) -> bool:
    try:
        urllib.request.urlopen(f"{base}/-/versions.json", timeout=2)
    except OSError:
        return True
    return False


@pytest.fixture
def library(store, run):
    ids = add_library(store, run)
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return ids


def test_sigterm_stops_the_server_and_closes_the_session(store, library, db_path):
    process, base = start(db_path, "--review")
    try:
        browser = Browser(base)
        assert browser.act({"action": "drop", "ids": library["images"][:1], "reason": "blur"})[0] == 200
        process.send_signal(signal.SIGTERM)  # to the command only, as a service manager would
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "review: 1 session(s), 1 action(s) recorded" in stdout, stderr[-800:]
    assert port_closed(base), "the server stopped with the command"
    assert store.query("SELECT status FROM runs WHERE step = 'review'") == [{"status": "ok"}]


def test_kill_9_keeps_every_committed_action_and_the_next_run_marks_the_session_interrupted(store, library, db_path):
    process, base = start(db_path, "--review")
    try:
        browser = Browser(base)
        assert browser.act({"action": "trigger", "ids": library["images"], "tags": ["sks"]})[0] == 200
        assert browser.act({"action": "drop", "ids": library["images"][1:]})[0] == 200
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    server_pids = [row["pid"] for row in store.query("SELECT pid FROM runs WHERE step = 'review'")]
    deadline = time.monotonic() + 60  # the server itself is the group's child: it dies a moment later
    while any(pid_alive(pid) for pid in server_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    reopened = open_store(db_path)
    with start_run(reopened, "test", "after", {}, argv=["pytest"]):
        pass
    assert reopened.query("SELECT status FROM runs WHERE step = 'review'") == [{"status": "interrupted"}]
    assert reopened.count("captions", "kind = 'edit' AND text LIKE 'sks, %'") == 2
    assert reopened.count("decisions", "stage = 'review'") == 1


def test_without_review_the_server_refuses_writes(store, library, db_path):
    before = {table: store.count(table) for table in ("decisions", "captions", "runs")}
    process, base = start(db_path)
    try:
        browser = Browser(base)
        assert browser.token == ""
        browser.token = "guessed"
        status, answer = browser.act({"action": "drop", "ids": library["images"]})
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert status == 403 and "review is off" in answer["error"]
    assert {table: store.count(table) for table in before} == before
