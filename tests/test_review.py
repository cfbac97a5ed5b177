"""The review pages and their actions through Datasette's ASGI app: rows written, undo, refusals."""

import asyncio
import json
import re

import httpx
import pytest
from curation_fixtures import add_library
from datasette.app import Datasette

from promptmill.core.state import kept_images
from promptmill.datasette.queries import GridQuery, matching_ids

HOST = "127.0.0.1:8001"


@pytest.fixture
def library(store, run):
    ids = add_library(store, run)
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return ids


def call(datasette, requests, client_host="127.0.0.1"):
    """Run REQUESTS(client) against the app as a browser on CLIENT_HOST would."""
    async def go():
        transport = httpx.ASGITransport(app=datasette.app(), client=(client_host, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as client:
            return await requests(client)
    return asyncio.run(go())


def open_session(client):
    async def go():
        page = await client.get("/-/review")
        assert page.status_code == 200, page.text
        return re.search(r'name="review-token" content="([^"]*)"', page.text).group(1)
    return go()


def post(client, token, payload, **headers):
    return client.post("/-/review/action", json=payload,
                       headers={"x-review-token": token, "origin": f"http://{HOST}", **headers})


@pytest.fixture
def review_on(monkeypatch):
    monkeypatch.setenv("PROMPTMILL_REVIEW", "1")


def facts(store) -> dict:
    return {table: store.count(table) for table in ("decisions", "captions", "tags", "runs")}


def test_actions_are_rows_of_one_review_run_and_undo_appends(store, library, review_on):
    fox, owl = library["images"]
    datasette = Datasette([str(store.path)])

    async def session(client):
        token = await open_session(client)
        results = []
        for payload in ({"action": "drop", "ids": [fox], "reason": "blurry"},
                        {"action": "trigger", "ids": [fox, owl], "tags": ["sks"]},
                        {"action": "caption", "ids": [owl], "text": "owl, moon"},
                        {"action": "remove_tags", "ids": [fox], "tags": ["snow"]},
                        {"action": "undo"}):
            response = await post(client, token, payload)
            assert response.status_code == 200, response.text
            results.append(response.json())
        return results

    results = call(datasette, session)
    assert [r["number"] for r in results] == [1, 2, 3, 4, 5]
    assert results[-1]["undoes"] == [4]
    review = store.query("SELECT id, status, counts FROM runs WHERE step = 'review'")
    assert len(review) == 1 and json.loads(review[0]["counts"])["undo actions"] == 1
    run_id = review[0]["id"]
    drop = store.query("SELECT * FROM decisions WHERE stage = 'review'")
    assert [(d["item_id"], d["verdict"], d["reason"], d["run_id"]) for d in drop] == [(fox, "drop", "blurry", run_id)]
    assert fox not in {row[0] for row in kept_images(store)}

    edits = store.query("SELECT id, image_id, text, parent_id, params, run_id FROM captions WHERE kind = 'edit' "
                        "ORDER BY id")
    assert all(edit["run_id"] == run_id and edit["parent_id"] for edit in edits)
    by_text = {edit["text"]: edit for edit in reversed(edits)}  # the first row of each text
    assert by_text["sks, fox, snow, outdoors, fox"]["parent_id"] == library["wd14"]
    assert json.loads(by_text["owl, moon"]["params"])["root_kind"] == "wd14"
    assert json.loads(by_text["owl, moon"]["params"])["ops"] == {"text": "owl, moon"}
    # the undone tag removal is a new row restoring its parent's text, the history kept
    removed, restored = edits[-2], edits[-1]
    assert removed["text"] == "sks, fox, outdoors, fox"
    assert (restored["parent_id"], restored["text"]) == (removed["id"], "sks, fox, snow, outdoors, fox")
    current = dict(store.execute("SELECT image_id, text FROM current_captions WHERE lineage_kind = 'wd14'"))
    assert current == {fox: "sks, fox, snow, outdoors, fox", owl: "owl, moon"}
    tags = [row[0] for row in store.execute("SELECT tag FROM tags WHERE caption_id = ? ORDER BY position",
                                            (restored["id"],))]
    assert tags == ["sks", "fox", "snow", "outdoors"]


def test_undo_session_restores_the_state_before_it(store, library, review_on):
    fox, owl = library["images"]
    datasette = Datasette([str(store.path)])
    before = dict(store.execute("SELECT image_id, text FROM current_captions"))

    async def session(client):
        token = await open_session(client)
        for payload in ({"action": "drop", "ids": [fox, owl]}, {"action": "keep", "ids": [owl]},
                        {"action": "add_tag", "ids": [fox], "tags": ["red"]},
                        {"action": "replace", "ids": [owl], "old": "night", "new": "dusk"},
                        {"action": "drop", "item_type": "prompt", "ids": library["prompts"][:1], "reason": "dull"},
                        {"action": "undo", "which": "session"}):
            assert (await post(client, token, payload)).status_code == 200
        return (await post(client, token, {"action": "undo"})).json()

    assert call(datasette, session) == {"error": "nothing to undo in this session"}
    assert dict(store.execute("SELECT image_id, text FROM current_captions")) == before
    states = dict(store.execute("SELECT image_id, state FROM image_state"))
    assert states == {fox: "keep", owl: "keep"}
    assert [row[0] for row in kept_images(store)] == [fox, owl], "core.state reads a 'clear' as no review"
    for state, expected in (("kept", [fox, owl]), ("dropped", []), ("undecided", [fox, owl]), ("reviewed", [])):
        assert matching_ids(store.conn, GridQuery(state=state)) == expected, state
    assert store.scalar("SELECT count(*) FROM decisions WHERE stage = 'review' AND value = 'clear'") == 3
    prompt_state = store.scalar("SELECT state FROM prompt_state WHERE prompt_id = ?", (library["prompts"][0],))
    assert prompt_state == "keep"


def test_bulk_action_on_the_whole_filter_result(store, library, review_on):
    fox, owl = library["images"]
    datasette = Datasette([str(store.path)])

    async def session(client):
        token = await open_session(client)
        return (await post(client, token, {"action": "drop", "filter": "tag=owl", "reason": "no owls"})).json()

    assert call(datasette, session)["ids"] == [owl]
    assert dict(store.execute("SELECT image_id, state FROM image_state")) == {fox: "keep", owl: "drop"}


def test_grid_filters_sort_and_pages(store, library, review_on):
    fox, owl = library["images"]
    datasette = Datasette([str(store.path)])

    def tiles(client, query):
        async def go():
            page = await client.get(f"/-/review?{query}")
            assert page.status_code == 200
            return [int(i) for i in re.findall(r'class="tile[^"]*" tabindex="0" data-id="(\d+)"', page.text)], page.text
        return go()

    async def pages(client):
        out = {}
        for query in ("", "tag=fox", "notag=fox", "q=owl+at+night", "smin=0.3", "split=train", "state=dropped",
                      "sort=size&desc=1", f"cluster={fox}", "kind=wd14&tag=snow", "state=undecided"):
            out[query] = (await tiles(client, query))[0]
        return out

    found = call(datasette, pages)
    assert found == {"": [fox, owl], "tag=fox": [fox], "notag=fox": [owl], "q=owl+at+night": [owl],
                     "smin=0.3": [fox], "split=train": [fox], "state=dropped": [], "sort=size&desc=1": [fox, owl],
                     f"cluster={fox}": [fox], "kind=wd14&tag=snow": [fox],
                     "state=undecided": [fox, owl]}


def test_keyset_pages_cover_every_image_once(store, run, review_on):
    from curation_fixtures import add_images

    ids = add_images(store, run, [f"p/{n}.png" for n in range(120)])
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    datasette = Datasette([str(store.path)])

    async def walk(client):
        seen, url = [], "/-/review?size=50"
        while url:
            page = await client.get(url)
            seen += [int(i) for i in re.findall(r'tabindex="0" data-id="(\d+)"', page.text)]
            found = re.search(r'id="next-page" href="([^"]+)"', page.text)
            url = found.group(1).replace("&amp;", "&") if found else None
        return seen

    assert call(datasette, walk) == ids


def test_one_image_page_and_prompts_list(store, library, review_on):
    fox = library["images"][0]
    datasette = Datasette([str(store.path)])

    async def pages(client):
        return (await client.get(f"/-/review/image/{fox}")).text, (await client.get("/-/review/prompts")).text

    image, prompts = call(datasette, pages)
    assert "fox, snow, outdoors, fox" in image and f"/promptmill/lineage?image_id={fox}" in image
    assert "a red fox in the snow" in image and "clip 0.3100" in image
    assert "A red fox in the snow." in prompts and "1 near-duplicate(s)" in prompts and "too_short" in prompts


@pytest.mark.parametrize("case", ["no token", "wrong token", "other site", "cross-site fetch", "foreign host",
                                  "non-local client", "review off", "no session"])
def test_refused_writes_write_nothing(store, library, monkeypatch, case):
    if case != "review off":
        monkeypatch.setenv("PROMPTMILL_REVIEW", "1")
    else:
        monkeypatch.delenv("PROMPTMILL_REVIEW", raising=False)
    datasette = Datasette([str(store.path)])
    before = facts(store)
    payload = {"action": "drop", "ids": library["images"]}

    async def attempt(client):
        token = await open_session(client) if case not in ("non-local client", "no session") else "x"
        headers = {"x-review-token": token, "origin": f"http://{HOST}"}
        if case == "no token":
            headers.pop("x-review-token")
        elif case == "wrong token":
            headers["x-review-token"] = token[:-2] + "xx"
        elif case == "other site":
            headers["origin"] = "https://evil.example"
        elif case == "cross-site fetch":
            headers.pop("origin")
            headers["sec-fetch-site"] = "cross-site"
        elif case == "foreign host":
            headers["host"] = "evil.example:8001"
            headers["origin"] = "http://evil.example:8001"
        elif case == "no session":
            client.cookies.clear()
        return await client.post("/-/review/action", json=payload, headers=headers)

    response = call(datasette, attempt, client_host="10.1.2.3" if case == "non-local client" else "127.0.0.1")
    assert response.status_code == 403, response.text
    assert facts(store) == before


def test_read_only_pages_have_no_token_and_no_cookie(store, library, monkeypatch):
    monkeypatch.delenv("PROMPTMILL_REVIEW", raising=False)
    datasette = Datasette([str(store.path)])

    async def page(client):
        return await client.get("/-/review")

    response = call(datasette, page)
    assert response.status_code == 200 and 'name="review-token" content=""' in response.text
    assert "set-cookie" not in response.headers and "read-only" in response.text


def test_bad_actions_are_refused_with_a_reason(store, library, review_on):
    datasette = Datasette([str(store.path)])
    before = facts(store)

    async def session(client):
        token = await open_session(client)
        out = []
        for payload in ({"action": "drop", "ids": []}, {"action": "trigger", "ids": [1]},
                        {"action": "caption", "ids": [1], "text": "  "}, {"action": "explode", "ids": [1]},
                        {"action": "drop", "ids": "1"}, {"action": "drop", "item_type": "prompt", "filter": ""}):
            response = await post(client, token, payload)
            out.append((response.status_code, response.json()["error"]))
        return out

    answers = call(datasette, session)
    assert [code for code, _ in answers] == [400] * 6
    assert answers[0][1] == "select at least one item" and "unknown action" in answers[3][1]
    assert {k: v for k, v in facts(store).items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}


def test_an_action_waits_for_a_step_holding_the_write_lock(store, library, review_on):
    """Another process writing (a step in its transaction) delays a review action; it is not lost."""
    import subprocess
    import sys

    datasette = Datasette([str(store.path)])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "conn.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(2); conn.execute('COMMIT')",
         str(store.path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"

    async def session(client):
        token = await open_session(client)
        return await post(client, token, {"action": "drop", "ids": library["images"][:1], "reason": "late"})

    response = call(datasette, session)
    assert holder.wait(timeout=60) == 0
    assert response.status_code == 200, response.text
    assert store.count("decisions", "stage = 'review' AND reason = 'late'") == 1


def test_prompt_keep_and_drop_show_in_the_prompts_list(store, library, review_on):
    fox_prompt, owl_prompt = library["prompts"]
    datasette = Datasette([str(store.path)])

    async def session(client):
        token = await open_session(client)
        assert (await post(client, token, {"action": "keep", "item_type": "prompt", "ids": [owl_prompt],
                                           "reason": "short but fine"})).status_code == 200
        assert (await post(client, token, {"action": "drop", "item_type": "prompt", "ids": [fox_prompt]})).status_code \
            == 200
        pages = {}
        for state in ("kept", "dropped", "undecided", "reviewed"):
            text = (await client.get(f"/-/review/prompts?state={state}")).text
            pages[state] = [int(i) for i in re.findall(r'data-id="(\d+)" data-item="prompt"', text)]
        return pages

    pages = call(datasette, session)
    assert pages == {"kept": [owl_prompt], "dropped": [fox_prompt, library["twin"]],
                     "undecided": [library["twin"]], "reviewed": [fox_prompt, owl_prompt]}
    assert store.scalar("SELECT state FROM prompt_state WHERE prompt_id = ?", (owl_prompt,)) == "keep"
