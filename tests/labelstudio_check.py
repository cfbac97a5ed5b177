"""The round trip against a real Label Studio (`make labelstudio-check`, not part of `make test`).

Starts the `label-studio` given (its own venv) on 127.0.0.1 with local files served from a fresh
database's folder, then: collect the example images, `ls-push` twice (one task per image), check an
image loads through the local-files storage, annotate every task through the API (one answer
keeps a prediction unchanged), `ls-pull` twice (the second adds nothing), export the project in
JSON, JSON_MIN, CSV and TSV from the server, and `ls-import` each export into a copy of the
database as it was before the pull: every format must give the answers the pull gave.
Prints one line per stage and exits 1 on the first difference.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("JSON", "JSON_MIN", "CSV", "TSV")
ANSWER_QUERIES = {
    "captions": "SELECT c.image_id, c.kind, c.text, a.ls_annotation_id FROM captions c "
                "JOIN annotations a ON a.id = c.annotation_id",
    "labels": "SELECT l.image_id, l.kind, l.text, a.ls_annotation_id FROM labels l "
              "JOIN annotations a ON a.id = l.annotation_id",
    "scores": "SELECT s.image_id, s.kind, s.value, a.ls_annotation_id FROM scores s "
              "JOIN annotations a ON a.id = s.annotation_id",
    "decisions": "SELECT d.item_type, d.item_id, d.verdict, d.rule, a.ls_annotation_id FROM decisions d "
                 "JOIN annotations a ON a.id = d.annotation_id",
    "annotations": "SELECT image_id, ls_annotation_id, task_id, annotator, created_at, updated_at, lead_time "
                   "FROM annotations",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def promptmill(db: Path, *args: str, env: dict | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "promptmill", *args, "--db", str(db)], capture_output=True,
                            text=True, env={**os.environ, "PROMPTMILL_PROGRESS": "0", **(env or {})}, timeout=600)
    if result.returncode:
        raise SystemExit(f"promptmill {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip() + result.stderr.strip()


def api(url: str, token: str, path: str, body=None, method: str | None = None) -> bytes:
    request = urllib.request.Request(url + path, method=method or ("POST" if body is not None else "GET"),
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return response.read()


def wait_until_up(url: str, token: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"label-studio exited ({server.returncode}) while starting")
        try:
            api(url, token, "/api/projects/")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(2)
    raise SystemExit(f"label-studio did not answer within {timeout:.0f} s")


def query(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


def answers(db: Path) -> dict[str, set]:
    return {name: set(query(db, sql)) for name, sql in ANSWER_QUERIES.items()}


def copy_database(db: Path, to: Path) -> None:
    """A consistent copy (the WAL included), through SQLite's backup API."""
    with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(to)) as target:
        source.backup(target)


def annotate(url: str, token: str, project: int) -> int:
    """One answer per task; the first keeps its pre-filled reverse prompt unchanged."""
    tasks = json.loads(api(url, token, f"/api/tasks/?project={project}&fields=all&page_size=1000"))["tasks"]
    for number, task in enumerate(tasks):
        result = [
            {"from_name": "triage", "to_name": "image", "type": "choices", "origin": "manual",
             "value": {"choices": ["skip" if number % 3 == 2 else "keep"]}},
            {"from_name": "quality", "to_name": "image", "type": "rating", "origin": "manual",
             "value": {"rating": number % 5 + 1}},
            {"from_name": "tags", "to_name": "image", "type": "choices", "origin": "manual",
             "value": {"choices": ["landscape", "cosmic"]}},
            {"from_name": "human_desc", "to_name": "image", "type": "textarea", "origin": "manual",
             "value": {"text": [f"description {number}"]}},
        ]
        prefilled = [r for p in task.get("predictions") or [] for r in p["result"] if r["from_name"] == "reverse_prompt"]
        if number == 0 and prefilled:
            result.append({**prefilled[0], "origin": "prediction"})
        api(url, token, f"/api/tasks/{task['id']}/annotations/", {"result": result, "lead_time": 3.5 + number})
    return len(tasks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label-studio", required=True, help="the label-studio executable")
    parser.add_argument("--images", default=str(ROOT / "examples" / "images"))
    parser.add_argument("--start-timeout", type=float, default=900)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="promptmill-lscheck-"))
    db = work / "db" / "promptmill.db"
    db.parent.mkdir(parents=True)
    port, token = free_port(), secrets.token_hex(20)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(db.parent), "LABEL_STUDIO_BASE_DATA_DIR": str(work / "ls")}
    started = time.monotonic()
    log = open(work / "label-studio.log", "w")
    server = subprocess.Popen([args.label_studio, "start", "--no-browser", "--internal-host", "127.0.0.1",
                               "--host", url, "-p", str(port),
                               "--data-dir", str(work / "ls"), "--username", "check@example.org",
                               "--password", secrets.token_hex(8), "--user-token", token,
                               "--enable-legacy-api-token"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_up(url, token, server, args.start_timeout)
        print(f"label-studio up at {url} in {time.monotonic() - started:.0f} s (log: {work / 'label-studio.log'})")
        ls_env = {"LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": token}
        print(promptmill(db, "collect", "imagefolder", args.images))
        print(promptmill(db, "label", "ls-push", env=ls_env))
        print(promptmill(db, "label", "ls-push", env=ls_env))
        project = query(db, "SELECT project_id FROM ls_projects")[0][0]
        kept = query(db, "SELECT count(*) FROM image_state WHERE state = 'keep'")[0][0]
        tasks = json.loads(api(url, token, f"/api/tasks/?project={project}&fields=all&page_size=1000"))["tasks"]
        if len(tasks) != kept:
            raise SystemExit(f"{len(tasks)} tasks for {kept} kept images after two pushes")
        image = tasks[0]["data"]["image"]
        served = api(url, token, image)
        blob = (db.parent / urllib.request.url2pathname(image.split("?d=", 1)[1])).read_bytes()
        if served != blob:
            raise SystemExit(f"{image} is not the stored image")
        print(f"{len(tasks)} tasks, one per kept image; {image} served from the local-files storage")
        before_pull = work / "before-pull.db"
        copy_database(db, before_pull)
        annotated = annotate(url, token, project)
        print(promptmill(db, "label", "ls-pull", env=ls_env))
        pulled = answers(db)
        print(promptmill(db, "label", "ls-pull", env=ls_env))
        if answers(db) != pulled or len(pulled["annotations"]) != annotated:
            raise SystemExit(f"pulls disagree: {len(pulled['annotations'])} annotations for {annotated} answers")
        for kind in FORMATS:
            export = work / f"export.{kind.lower()}"
            export.write_bytes(api(url, token, f"/api/projects/{project}/export?exportType={kind}"))
            copy = work / f"import-{kind.lower()}.db"
            copy_database(before_pull, copy)
            print(promptmill(copy, "label", "ls-import", str(export)))
            imported = answers(copy)
            for table, rows in pulled.items():
                if imported[table] != rows:
                    raise SystemExit(f"{kind}: {table} differ from the pull: "
                                     f"missing {sorted(rows - imported[table])[:3]}, "
                                     f"extra {sorted(imported[table] - rows)[:3]}")
            print(f"{kind}: every answer as pulled ({', '.join(f'{len(v)} {k}' for k, v in imported.items())})")
        print(f"labelstudio-check passed in {time.monotonic() - started:.0f} s")
        return 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
