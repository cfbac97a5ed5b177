"""Push tasks to a running Label Studio and pull people's answers back, through label-studio-sdk.

The server is named by ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` (never
argv). Push creates the project (or finds it by title), gives it a local-files
storage at ``<db folder>/blobs``, imports only images not yet tasks there (the
server's tasks are read back, so a push killed halfway and run again adds
nothing twice), and creates or updates each task's promptmill prediction. Pull
reads the annotations changed since the project's last pull (``ls_pulls``) and
records them like an imported export: the same natural keys, so pulling twice,
or importing an export of the same project, adds nothing.
"""

from __future__ import annotations

import os
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from promptmill.core.errors import BadInput, PromptmillError
from promptmill.core.progress import bar
from promptmill.core.runs import Run, now
from promptmill.core.store import Store
from promptmill.label.labelstudio import MODEL_VERSION_PREFIX, Control, build_tasks, record_answers
from promptmill.label.ls_formats import BadValue, answers_from_task

PAGE_SIZE = 100
IMPORT_BATCH = 500


@dataclass(frozen=True)
class Server:
    url: str
    api_key: str


def server_from_env() -> Server:
    """The server from LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY; exit 2 naming what is missing."""
    url, key = os.environ.get("LABEL_STUDIO_URL", "").strip(), os.environ.get("LABEL_STUDIO_API_KEY", "").strip()
    missing = [name for name, value in (("LABEL_STUDIO_URL", url), ("LABEL_STUDIO_API_KEY", key)) if not value]
    if missing:
        raise BadInput(f"set {' and '.join(missing)} (the server and an access token from its Account page)")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput("LABEL_STUDIO_URL must be an http(s) URL")
    if parts.username or parts.password:
        raise BadInput("LABEL_STUDIO_URL must not carry credentials; put the token in LABEL_STUDIO_API_KEY")
    return Server(url.rstrip("/"), key)


def client(server: Server):
    try:
        from label_studio_sdk import LabelStudio
    except ImportError as exc:
        raise BadInput("ls-push and ls-pull need label-studio-sdk: pip install 'promptmill[labelstudio]'") from exc

    return LabelStudio(base_url=server.url, api_key=server.api_key, timeout=120)


def _as_dict(item) -> dict:
    return item if isinstance(item, dict) else item.model_dump(warnings=False)


def _call(what: str, fn, *args, **kwargs):
    """One SDK call; a refused or failed request ends the run with one line naming it."""
    from label_studio_sdk.core.api_error import ApiError

    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        body = exc.body if isinstance(exc.body, str) else str(exc.body)
        raise PromptmillError(f"Label Studio refused {what}: HTTP {exc.status_code} {body[:300]}") from exc
    except OSError as exc:
        raise PromptmillError(f"Label Studio unreachable ({what}): {exc}") from exc
    except Exception as exc:  # httpx transport errors are not OSErrors
        if type(exc).__module__.startswith("httpx"):
            raise PromptmillError(f"Label Studio unreachable ({what}): {exc}") from exc
        raise


def ensure_project(store: Store, run: Run, ls, server: Server, title: str, config: str) -> tuple[int, int]:
    """(promptmill's ls_projects id, Label Studio's project id): the project recorded for this server
    and title, else one on the server with that title, else a new one with CONFIG."""
    row = store.query("SELECT id, project_id FROM ls_projects WHERE url = ? AND title = ? ORDER BY id DESC LIMIT 1",
                      (server.url, title))
    if row:
        return row[0]["id"], row[0]["project_id"]
    page = _call("listing projects", ls.projects.list, title=title, page_size=PAGE_SIZE)
    found = [project for project in (page.items or []) if project.title == title]
    if found:
        project_id = found[0].id
        run.add("projects reused")
    else:
        project_id = _call("creating the project", ls.projects.create, title=title, label_config=config,
                           description="Images from a promptmill database; answers come back with ls-pull.").id
        run.add("projects created")
    with store.transaction() as conn:
        conn.execute("INSERT INTO ls_projects (url, project_id, title, created_at, run_id) VALUES (?, ?, ?, ?, ?) "
                     "ON CONFLICT (url, project_id) DO NOTHING", (server.url, project_id, title, now(), run.id))
    return store.scalar("SELECT id FROM ls_projects WHERE url = ? AND project_id = ?",
                        (server.url, project_id)), project_id


def ensure_storage(store: Store, run: Run, ls, ls_project_id: int, project_id: int, blobs: Path) -> int:
    """The project's local-files storage at the image store (<db folder>/blobs). It is never synced:
    a sync would make a task of every blob, kept or not, without its prompt or file name."""
    blobs.mkdir(parents=True, exist_ok=True)  # Label Studio refuses a storage path that doesn't exist
    path = str(blobs.resolve())
    existing = _call("listing storages", ls.import_storage.local.list, project=project_id)
    storage_id = next((storage.id for storage in existing if storage.path == path), None)
    if storage_id is None:
        storage_id = _call("adding the local-files storage", ls.import_storage.local.create, project=project_id,
                           path=path, title="promptmill blobs", use_blob_urls=False,
                           description="promptmill's image store; tasks come from ls-push, do not Sync").id
        run.add("storages added")
    with store.transaction() as conn:
        conn.execute("UPDATE ls_projects SET storage_id = ? WHERE id = ? AND storage_id IS NULL",
                     (storage_id, ls_project_id))
    return storage_id


def server_tasks(ls, project_id: int, what: str) -> list[dict]:
    """Every task of the project, with its annotations and predictions."""
    pager = _call(what, ls.tasks.list, project=project_id, fields="all", page_size=PAGE_SIZE)
    tasks = []
    iterator = iter(pager)
    while True:
        item = _call(what, next, iterator, None)
        if item is None:
            return tasks
        tasks.append(_as_dict(item))


@contextmanager
def push_lock(store: Store):
    """One push at a time per database: a second waits, then finds the first one's tasks on the server
    instead of importing them again. The lock is the kernel's, so a killed push releases it."""
    import fcntl

    with open(store.path.parent / f".{store.path.name}.ls-push.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def push(store: Store, run: Run, server: Server, title: str, config_text: str, controls: dict[str, Control],
         document_root: Path, source_ids: list[int] | None = None) -> None:
    """Tasks for kept images not yet in the project; each task's promptmill prediction created or updated.
    Image paths are relative to DOCUMENT_ROOT, the server's LOCAL_FILES_DOCUMENT_ROOT."""
    with push_lock(store):
        _push(store, run, server, title, config_text, controls, document_root, source_ids)


def _push(store: Store, run: Run, server: Server, title: str, config_text: str, controls: dict[str, Control],
          document_root: Path, source_ids: list[int] | None) -> None:
    ls = client(server)
    ls_project_id, project_id = ensure_project(store, run, ls, server, title, config_text)
    ensure_storage(store, run, ls, ls_project_id, project_id, store.blobs.root)
    wanted = build_tasks(store, controls, document_root, None, source_ids)
    present = {}
    for task in server_tasks(ls, project_id, "listing tasks"):
        image_id = (task.get("data") or {}).get("promptmill_image_id")
        if isinstance(image_id, int):
            present.setdefault(image_id, task)
    new = [task for task in wanted if task["data"]["promptmill_image_id"] not in present]
    if len(wanted) > len(new):
        run.add("tasks already in the project", len(wanted) - len(new))
    with bar(len(new), "import tasks", "task") as progress:
        for start in range(0, len(new), IMPORT_BATCH):
            batch = new[start:start + IMPORT_BATCH]
            _call("importing tasks", ls.projects.import_tasks, project_id, request=batch, return_task_ids=True)
            run.add("tasks imported", len(batch))
            progress.update(len(batch))
    _update_predictions(run, ls, present, wanted)


def _update_predictions(run: Run, ls, present: dict[int, dict], wanted: list[dict]) -> None:
    """Tasks imported before: their promptmill prediction made to match the database's current one."""
    todo = []
    for task in wanted:
        old = present.get(task["data"]["promptmill_image_id"])
        if old is None or "predictions" not in task:
            continue
        prediction = task["predictions"][0]
        ours = [p for p in old.get("predictions") or []
                if str(p.get("model_version") or "").startswith(MODEL_VERSION_PREFIX)]
        if ours and ours[-1].get("result") == prediction["result"] and ours[-1].get("score") == prediction.get("score") \
                and ours[-1].get("model_version") == prediction["model_version"]:
            continue
        todo.append((old["id"], ours[-1]["id"] if ours else None, prediction))
    with bar(len(todo), "predictions", "task") as progress:
        for task_id, prediction_id, prediction in todo:
            fields = {"result": prediction["result"], "model_version": prediction["model_version"],
                      "score": prediction.get("score")}
            if prediction_id is None:
                _call("creating a prediction", ls.predictions.create, task=task_id, **fields)
                run.add("predictions created")
            else:
                _call("updating a prediction", ls.predictions.update, prediction_id, **fields)
                run.add("predictions updated")
            progress.update()


def pull(store: Store, run: Run, server: Server, title: str) -> None:
    """Annotations changed since this project's last pull, recorded as answers; the pull itself in ls_pulls."""
    row = store.query("SELECT id, project_id FROM ls_projects WHERE url = ? AND title = ? ORDER BY id DESC LIMIT 1",
                      (server.url, title))
    if not row:
        raise BadInput(f"no project {title!r} pushed to {server.url} from this database (run ls-push first)")
    ls_project_id, project_id = row[0]["id"], row[0]["project_id"]
    since = store.scalar("SELECT until FROM ls_pulls WHERE ls_project_id = ? AND until IS NOT NULL "
                         "ORDER BY id DESC LIMIT 1", (ls_project_id,))
    ls = client(server)
    answers, cancelled, malformed = [], [], 0
    for position, task in enumerate(server_tasks(ls, project_id, "listing tasks")):
        try:
            answers.extend(answers_from_task(task, position, cancelled))
        except BadValue:
            malformed += 1
    if malformed:
        run.add("malformed tasks skipped", malformed)
    if cancelled:
        run.add("cancelled annotations ignored", len(cancelled))
    changed = [a for a in answers if since is None or (a.meta.get("updated_at") or "") > since]
    if len(answers) > len(changed):
        run.add("annotations unchanged since the last pull", len(answers) - len(changed))
    record_answers(store, run, changed, ls_project_id=ls_project_id,
                   locator=f"{server.url}/projects/{project_id}")
    until = max((a.meta.get("updated_at") or "" for a in changed), default="") or since
    with store.transaction() as conn:
        conn.execute("INSERT INTO ls_pulls (ls_project_id, since, until, annotations, created_at, run_id) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (ls_project_id, since, until, len(changed), now(), run.id))
