"""A loopback Label Studio speaking the endpoints label-studio-sdk calls for ls-push and ls-pull.

- ``GET/POST /api/projects/``                     list (``title`` filter, DRF pages, 404 past the last) and create
- ``GET /api/storages/localfiles/?project=``      local-files storages; ``POST`` adds one, refused (400) like
  the real server when the path is not a folder strictly under ``LOCAL_FILES_DOCUMENT_ROOT``
- ``POST /api/projects/{id}/import``              tasks with optional predictions, each prediction checked
  with the SDK's ``LabelInterface`` against the project's config (400 for the whole file, as with
  strict validation on)
- ``GET /api/tasks/?project=&fields=all``         ``{"tasks": [...], "total": n}`` pages, 404 past the last
- ``GET/POST /api/predictions/``, ``PATCH /api/predictions/{id}/``

Requests need ``Authorization: Token <key>``. ``hold_imports`` (an Event, set = open) keeps an import's
answer back after its tasks are stored, so a test can kill the client between the two;
``hold_imports_before`` holds it before they are stored, so two clients can overlap. ``annotate`` adds or edits an annotation the way the
labelling UI saves one (``completed_by`` a user id, ``updated_at`` moved on each edit).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from label_studio_sdk.label_interface import LabelInterface

from fakes.loopback import ThreadedServer

START = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)


class FakeLabelStudio(ThreadedServer):
    def __init__(self, document_root: Path, token: str = "ls-fake-token-0123456789"):
        self.token = token
        self.document_root = Path(document_root).resolve()
        self.projects: dict[int, dict] = {}
        self.storages: dict[int, dict] = {}
        self.tasks: dict[int, dict] = {}
        self.predictions: dict[int, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.ids = {"project": 0, "storage": 0, "task": 0, "prediction": 0, "annotation": 0}
        self.clock = START
        self.lock = threading.Lock()
        self.hold_imports = threading.Event()
        self.hold_imports.set()
        self.hold_imports_before = threading.Event()
        self.hold_imports_before.set()
        super().__init__(_handler(self))

    def next_id(self, kind: str) -> int:
        self.ids[kind] += 1
        return self.ids[kind]

    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return self.clock.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def annotate(self, task_id: int, result: list[dict], user: int = 2, annotation_id: int | None = None,
                 lead_time: float = 12.5, parent_prediction: int | None = None) -> int:
        """Submit (or, with ANNOTATION_ID, update) an annotation as the labelling UI does."""
        with self.lock:
            task = self.tasks[task_id]
            stamp = self.tick()
            if annotation_id is None:
                annotation_id = self.next_id("annotation")
                task["annotations"].append({"id": annotation_id, "completed_by": user, "result": result,
                                            "was_cancelled": False, "ground_truth": False, "created_at": stamp,
                                            "updated_at": stamp, "lead_time": lead_time, "task": task_id,
                                            "project": task["project"], "parent_prediction": parent_prediction,
                                            "parent_annotation": None})
            else:
                annotation = next(a for a in task["annotations"] if a["id"] == annotation_id)
                annotation.update(result=result, updated_at=stamp, lead_time=annotation["lead_time"] + lead_time)
            return annotation_id

    def task_json(self, task: dict) -> dict:
        return {**task, "predictions": [p for p in self.predictions.values() if p["task"] == task["id"]],
                "total_annotations": len(task["annotations"]),
                "total_predictions": sum(p["task"] == task["id"] for p in self.predictions.values())}


def _page(items: list, query: dict, key: str | None):
    page = int(query.get("page", ["1"])[0])
    size = int(query.get("page_size", ["30"])[0])
    chunk = items[(page - 1) * size: page * size]
    if page > 1 and not chunk:
        return 404, {"detail": "Invalid page."}
    if key:
        return 200, {key: chunk, "total": len(items), "total_annotations": 0, "total_predictions": 0}
    return 200, {"count": len(items), "next": None, "previous": None, "results": chunk}


def _handler(ls: FakeLabelStudio):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"null")

        def _route(self, method: str):
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            ls.requests.append((method, url.path))
            if self.headers.get("Authorization") != f"Token {ls.token}":
                return self._send(401, {"detail": "Authentication credentials were not provided."})
            parts = [part for part in url.path.split("/") if part]
            if parts[-1:] == ["import"]:
                ls.hold_imports_before.wait(timeout=120)
            with ls.lock:
                status, body = self.dispatch(method, parts, query)
            if parts[-1:] == ["import"]:
                ls.hold_imports.wait(timeout=120)
            self._send(status, body)

        def dispatch(self, method, parts, query):
            if parts[:2] == ["api", "projects"] and len(parts) == 2:
                if method == "GET":
                    title = query.get("title", [""])[0].lower()
                    found = [p for p in ls.projects.values() if title in p["title"].lower()]
                    return _page(found, query, None)
                body = self._body()
                try:
                    LabelInterface(body["label_config"]).validate()
                except Exception as exc:  # noqa: BLE001 - the real server answers 400 with the parser's message
                    return 400, {"label_config": [str(exc)]}
                project = {"id": ls.next_id("project"), "title": body["title"], "label_config": body["label_config"],
                           "description": body.get("description", "")}
                ls.projects[project["id"]] = project
                return 201, project
            if parts[:2] == ["api", "projects"] and len(parts) == 4 and parts[3] == "import":
                return self.import_tasks(int(parts[2]), self._body())
            if parts[:3] == ["api", "storages", "localfiles"]:
                if method == "GET":
                    project = int(query["project"][0])
                    return 200, [s for s in ls.storages.values() if s["project"] == project]
                body = self._body()
                path = Path(body["path"])
                if path.resolve() == ls.document_root:
                    return 400, {"path": [f"{path} cannot be the same as LOCAL_FILES_DOCUMENT_ROOT"]}
                if not path.resolve().is_relative_to(ls.document_root) or not path.is_dir():
                    return 400, {"path": [f"{path} must be a folder under LOCAL_FILES_DOCUMENT_ROOT"]}
                storage = {"id": ls.next_id("storage"), "type": "localfiles", **body}
                ls.storages[storage["id"]] = storage
                return 201, storage
            if parts[:2] == ["api", "tasks"] and method == "GET":
                project = int(query["project"][0])
                tasks = [ls.task_json(t) for t in ls.tasks.values() if t["project"] == project]
                return _page(tasks, query, "tasks")
            if parts[:2] == ["api", "predictions"]:
                return self.predictions(method, parts, query)
            return 404, {"detail": "Not found."}

        def import_tasks(self, project_id: int, tasks: list):
            interface = LabelInterface(ls.projects[project_id]["label_config"])
            for task in tasks:
                for prediction in task.get("predictions") or []:
                    errors = interface.validate_prediction(prediction, return_errors=True)
                    if errors is not True and errors:
                        return 400, {"detail": "prediction does not match the labeling config", "errors": errors}
            ids = []
            for task in tasks:
                task_id = ls.next_id("task")
                ls.tasks[task_id] = {"id": task_id, "project": project_id, "data": task["data"], "annotations": [],
                                     "created_at": ls.tick()}
                for prediction in task.get("predictions") or []:
                    self.save_prediction({**prediction, "task": task_id})
                ids.append(task_id)
            return 201, {"task_count": len(ids), "annotation_count": 0, "prediction_count": sum(
                len(t.get("predictions") or []) for t in tasks), "task_ids": ids, "duration": 0.01,
                "file_upload_ids": [], "could_be_tasks_list": False, "found_formats": [], "data_columns": []}

        def save_prediction(self, body: dict, prediction_id: int | None = None) -> dict:
            prediction = ls.predictions.get(prediction_id) or {"id": ls.next_id("prediction"), "created_at": ls.tick()}
            prediction.update({k: v for k, v in body.items() if k in ("result", "score", "model_version", "task")})
            prediction["project"] = ls.tasks[prediction["task"]]["project"]
            prediction["updated_at"] = ls.tick()
            ls.predictions[prediction["id"]] = prediction
            return prediction

        def predictions(self, method, parts, query):
            if method == "GET":
                project = query.get("project", [None])[0]
                return 200, [p for p in ls.predictions.values() if project is None or str(p["project"]) == project]
            body = self._body()
            prediction_id = int(parts[2]) if len(parts) > 2 else None
            if prediction_id is not None and prediction_id not in ls.predictions:
                return 404, {"detail": "Not found."}
            task = ls.tasks.get(body.get("task") or ls.predictions.get(prediction_id, {}).get("task"))
            interface = LabelInterface(ls.projects[task["project"]]["label_config"])
            errors = interface.validate_prediction({"result": body["result"]}, return_errors=True)
            if errors is not True and errors:
                return 400, {"detail": "prediction does not match the labeling config", "errors": errors}
            return (201 if prediction_id is None else 200), self.save_prediction(body, prediction_id)

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def do_PATCH(self):
            self._route("PATCH")

    return Handler
