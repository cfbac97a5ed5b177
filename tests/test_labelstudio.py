import csv
import json
import signal
import subprocess
import sys
import time
import urllib.parse

import pytest
from curation_fixtures import add_caption, add_decision, add_images, add_label

import paths
from conftest import run_script
from promptmill.core.runs import start_run
from promptmill.core.store import open_store
from promptmill.label.labelstudio import DEFAULT_CONFIG, read_config

SSLQ = paths.EXAMPLES_DIR / "labelstudio"


def test_shipped_config_has_the_sslq_controls():
    ours, sslq = read_config(DEFAULT_CONFIG), read_config(SSLQ / "sslq_schema_v1_0.xml")
    assert set(sslq) <= set(ours)
    for name, control in sslq.items():
        assert ours[name].type == control.type and ours[name].to_name == control.to_name == "image"
    assert ours["triage"].values == ("keep", "maybe", "skip")


def _library(store, run):
    image_ids = add_images(store, run, ["set/fox.png", "set/owl.png", "set/dropped.png"],
                           prompts=["a red fox in snow", "an owl at night", "blurry thing"])
    add_caption(store, run, image_ids[0], "wd14", "fox, snow, outdoors")
    add_caption(store, run, image_ids[0], "blip", "a fox standing in the snow")
    fox_prompt = store.scalar("SELECT prompt_id FROM image_origins WHERE image_id = ?", (image_ids[0],))
    add_label(store, run, "description", "a red fox", prompt_id=fox_prompt)
    add_label(store, run, "mood", "epic", image_id=image_ids[1])
    add_label(store, run, "mood", "not-a-choice", image_id=image_ids[1])
    add_decision(store, run, "image", image_ids[2], "clean", "drop", "test", rule="too small")
    return image_ids


def test_export_tasks_open_in_label_studio_with_predictions(tmp_path, invoke, store, run):
    image_ids = _library(store, run)
    out = tmp_path / "out" / "tasks.json"
    invoke("07_label", "ls-export", out)
    tasks = json.loads(out.read_text())
    assert [t["data"]["promptmill_image_id"] for t in tasks] == image_ids[:2]
    fox = tasks[0]
    sha = fox["data"]["sha256"]
    assert fox["data"]["image"].startswith("/data/local-files/?d=")
    relative = urllib.parse.unquote(fox["data"]["image"].split("?d=")[1])
    assert relative == f"blobs/{sha[:2]}/{sha[2:4]}/{sha}.png"
    assert (store.path.parent / relative).is_file()
    assert fox["data"]["file_name"] == "set/fox.png" and fox["data"]["prompt"] == "a red fox in snow"
    controls = read_config(DEFAULT_CONFIG)
    results = {r["from_name"]: r for r in fox["predictions"][0]["result"]}
    assert results["reverse_prompt"]["value"] == {"text": ["a fox standing in the snow"]}
    assert results["machine_tags"]["value"] == {"text": ["fox, snow, outdoors"]}
    assert results["human_desc"]["value"] == {"text": ["a red fox"]}
    for task in tasks:
        for result in task["predictions"][0]["result"]:
            control = controls[result["from_name"]]
            assert result["to_name"] == control.to_name and result["type"] == control.type
    assert {r["from_name"]: r["value"] for r in tasks[1]["predictions"][0]["result"]} == {"mood": {"choices": ["epic"]}}
    invoke("07_label", "ls-export", out, "--url-prefix", "http://127.0.0.1:8081/files/", "--document-root",
           store.path.parent / "blobs")
    assert json.loads(out.read_text())[0]["data"]["image"] == f"http://127.0.0.1:8081/files/{sha[:2]}/{sha[2:4]}/{sha}.png"


def _annotation(annotation_id, results, cancelled=False, annotator=7, updated="2025-05-01T10:00:00Z"):
    return {"id": annotation_id, "completed_by": annotator, "was_cancelled": cancelled, "lead_time": 42.5,
            "created_at": "2025-05-01T09:59:00Z", "updated_at": updated, "result": results}


def _result(name, kind, value):
    return {"id": f"r-{name}", "from_name": name, "to_name": "image", "type": kind, "origin": "manual",
            "value": {"text" if kind == "textarea" else kind: value}}


def test_import_label_studio_json_export(tmp_path, invoke, store, run):
    image_ids = _library(store, run)
    tasks_file = tmp_path / "tasks.json"
    invoke("07_label", "ls-export", tasks_file)
    tasks = json.loads(tasks_file.read_text())
    for number, task in enumerate(tasks, 1):
        task["id"] = number
    answers = [
        _result("human_desc", "textarea", ["A fox crossing fresh snow."]),
        _result("category", "choices", ["animals"]),
        _result("palette", "choices", ["blue", "gold"]),
        _result("tags", "labels", ["landscape"]),
        _result("triage", "choices", ["keep"]),
        _result("quality", "rating", 4),
        _result("notes", "textarea", ["nice light"]),
    ]
    tasks[0]["annotations"] = [_annotation(101, answers), _annotation(102, answers[:1], cancelled=True)]
    tasks[1]["annotations"] = [_annotation(103, [_result("triage", "choices", ["skip"])],
                                           annotator={"id": 9, "email": "ann@example.org"})]
    # A task from another project: matched by its uploaded file name only.
    tasks.append({"id": 3, "data": {"image": "/data/upload/4/0a1b2c3d-dropped.png"},
                  "annotations": [_annotation(104, [_result("triage", "choices", ["maybe"])])]})
    tasks.append({"id": 4, "data": {"image": "/data/upload/4/unknown.png"},
                  "annotations": [_annotation(105, [_result("triage", "choices", ["keep"])])]})
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    result = invoke("07_label", "ls-import", export)
    assert "cancelled annotations ignored 1" in result.output
    human = store.query("SELECT image_id, text, author, params, created_at FROM captions WHERE kind = 'human'")
    assert len(human) == 1 and human[0]["image_id"] == image_ids[0] and human[0]["author"] == "7"
    params = json.loads(human[0]["params"])
    assert params["field"] == "human_desc" and params["lead_time"] == 42.5 and params["task_id"] == 1
    labels = {(r["image_id"], r["kind"], r["text"]) for r in store.query(
        "SELECT image_id, kind, text FROM labels WHERE author IS NOT NULL")}
    assert labels == {(image_ids[0], "category", "animals"), (image_ids[0], "palette", "blue"),
                      (image_ids[0], "palette", "gold"), (image_ids[0], "tags", "landscape"),
                      (image_ids[0], "triage", "keep"), (image_ids[0], "notes", "nice light"),
                      (image_ids[1], "triage", "skip"), (image_ids[2], "triage", "maybe")}
    assert store.query("SELECT image_id, kind, value FROM scores") == [
        {"image_id": image_ids[0], "kind": "quality", "value": 4.0}]
    reviews = store.query("SELECT item_id, verdict, reason FROM decisions WHERE stage = 'review' ORDER BY item_id")
    assert [(r["item_id"], r["verdict"]) for r in reviews] == [(image_ids[0], "keep"), (image_ids[1], "drop")]
    assert json.loads(reviews[1]["reason"])["annotator"] == "ann@example.org"
    assert store.query("SELECT image_id, state FROM image_state ORDER BY image_id")[1]["state"] == "drop"
    assert store.query("SELECT reason FROM item_errors") == [{"reason": "no matching image"}]
    counts = {t: store.count(t) for t in ("captions", "labels", "scores", "decisions", "item_errors")}
    invoke("07_label", "ls-import", export)
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(tasks, indent=2))
    invoke("07_label", "ls-import", copy)
    assert {t: store.count(t) for t in counts} == {**counts, "item_errors": 2}
    # An annotation changed in Label Studio comes back as new rows; the newest triage wins.
    tasks[1]["annotations"][0].update(updated_at="2025-05-02T08:00:00Z",
                                      result=[_result("triage", "choices", ["keep"])])
    export.write_text(json.dumps(tasks))
    invoke("07_label", "ls-import", export)
    assert store.query("SELECT state FROM image_state WHERE image_id = ?", (image_ids[1],))[0]["state"] == "keep"


def test_import_flat_csv_of_the_sslq_project(tmp_path, invoke, store, run):
    with open(SSLQ / "metadata_for_hf_example.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:40]
    present = rows[:30]
    image_ids = add_images(store, run, [row["file_name"] for row in present])
    subset = tmp_path / "subset.csv"
    with open(subset, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    invoke("07_label", "ls-import", subset)
    assert store.count("item_errors", "reason = 'no matching image'") == 10
    assert store.count("captions", "kind = 'human'") == sum(
        bool(r["human_description"].strip()) + bool(r["llm_description"].strip()) for r in present)
    first = present[0]
    moods = store.query("SELECT text FROM labels WHERE image_id = ? AND kind = 'mood'", (image_ids[0],))
    assert moods == [{"text": first["mood"]}]
    palette = {r["text"] for r in store.query("SELECT text FROM labels WHERE image_id = ? AND kind = 'palette'",
                                               (image_ids[0],))}
    assert palette == {v.strip() for v in first["palette"].split(";")}
    quality = store.scalar("SELECT value FROM scores WHERE image_id = ? AND kind = 'quality'", (image_ids[0],))
    assert quality == float(first["quality"])
    expected_reviews = sum(r["triage"] in ("keep", "skip") for r in present)
    assert store.count("decisions", "stage = 'review'") == expected_reviews
    dropped = {image_id for image_id, r in zip(image_ids, present) if r["triage"] == "skip"}
    assert {r["image_id"] for r in store.query("SELECT image_id FROM image_state WHERE state = 'drop'")} == dropped
    before = store.count("labels")
    invoke("07_label", "ls-import", subset)
    assert store.count("labels") == before


def test_bad_label_studio_commands_exit_2(tmp_path, store):
    not_json = tmp_path / "export.json"
    not_json.write_text("{not json")
    no_column = tmp_path / "x.csv"
    no_column.write_text("id,name\n1,a\n")
    for args in (["ls-import", not_json], ["ls-import", no_column], ["ls-import", tmp_path / "missing.json"],
                 ["ls-export", tmp_path / "t.json", "--document-root", tmp_path / "elsewhere"]):
        result = run_script("07_label", args[0], "--db", store.path, *args[1:])
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.resilience
def test_import_killed_and_rerun_ends_like_one_run(tmp_path):
    tasks = [{"id": n, "data": {"file_name": f"{n}.png"},
              "annotations": [_annotation(n * 1000 + k, [_result("human_desc", "textarea", [f"text {n} {k}"]),
                                                          _result("mood", "choices", ["epic"]),
                                                          _result("quality", "rating", k % 5 + 1)])
                              for k in range(600)]} for n in range(20)]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    stores = {}
    for name in ("killed", "clean"):
        store = stores[name] = open_store(tmp_path / name / "p.db")
        with start_run(store, "test", "fixture", {}, argv=["pytest"]) as run:
            add_images(store, run, [f"{n}.png" for n in range(20)])
    process = subprocess.Popen([sys.executable, str(paths.STEPS_DIR / "07_label.py"), "ls-import", str(export),
                                "--db", str(stores["killed"].path)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not stores["killed"].count("labels"):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert stores["killed"].count("labels") > 0
    for name in ("killed", "clean"):
        assert run_script("07_label", "ls-import", export, "--db", stores[name].path).returncode == 0

    def rows(store):
        return [store.query(f"SELECT natural_key FROM {table} ORDER BY natural_key")
                for table in ("captions", "labels", "scores")]

    assert rows(stores["killed"]) == rows(stores["clean"])
    assert stores["clean"].count("labels") == 12_000
