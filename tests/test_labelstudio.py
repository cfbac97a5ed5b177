import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import zipfile

import pytest
from curation_fixtures import add_caption, add_decision, add_images, add_label
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paths
from conftest import run_script
from promptmill.core.runs import start_run
from promptmill.core.store import open_store
from promptmill.label.labelstudio import DEFAULT_CONFIG, import_answers, read_config

SSLQ = paths.EXAMPLES_DIR / "labelstudio"


def test_shipped_config_has_the_sslq_controls():
    ours, sslq = read_config(DEFAULT_CONFIG), read_config(SSLQ / "sslq_schema_v1_0.xml")
    assert set(sslq) <= set(ours)
    for name, control in sslq.items():
        assert ours[name].to_name == control.to_name == "image"
        assert ours[name].type == ("choices" if name == "tags" else control.type)
    assert ours["triage"].values == ("keep", "maybe", "skip")
    assert ours["tags"].multiple


def test_shipped_config_validates_with_label_studios_parser():
    from label_studio_sdk._extensions.label_studio_tools.core.label_config import parse_config
    from label_studio_sdk.label_interface import LabelInterface

    config = DEFAULT_CONFIG.read_text()
    LabelInterface(config).validate()
    parsed = parse_config(config)
    assert {name: parsed[name]["type"] for name in ("tags", "human_desc", "quality", "triage")} == {
        "tags": "Choices", "human_desc": "TextArea", "quality": "Rating", "triage": "Choices"}


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
    from label_studio_sdk.label_interface import LabelInterface

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
    interface = LabelInterface(DEFAULT_CONFIG.read_text())
    for task in tasks:
        assert interface.validate_prediction(task["predictions"][0])
        for result in task["predictions"][0]["result"]:
            control = controls[result["from_name"]]
            assert result["to_name"] == control.to_name and result["type"] == control.type
    assert {r["from_name"]: r["value"] for r in tasks[1]["predictions"][0]["result"]} == {"mood": {"choices": ["epic"]}}
    invoke("07_label", "ls-export", out, "--url-prefix", "http://127.0.0.1:8081/files/", "--document-root",
           store.path.parent / "blobs")
    assert json.loads(out.read_text())[0]["data"]["image"] == f"http://127.0.0.1:8081/files/{sha[:2]}/{sha[2:4]}/{sha}.png"


def _annotation(annotation_id, results, cancelled=False, annotator=7, updated="2025-05-01T10:00:00Z"):
    completed_by = annotator if isinstance(annotator, dict) else {"id": annotator, "email": f"user{annotator}@example.org"}
    return {"id": annotation_id, "completed_by": completed_by, "was_cancelled": cancelled, "lead_time": 42.5,
            "created_at": "2025-05-01T09:59:00Z", "updated_at": updated, "result": results}


def _result(name, kind, value, origin="manual"):
    return {"id": f"r-{name}", "from_name": name, "to_name": "image", "type": kind, "origin": origin,
            "value": {"text" if kind == "textarea" else kind: value}}


def _exported_project(tmp_path, invoke):
    """Our tasks as Label Studio's JSON export gives them back after two people answered."""
    tasks_file = tmp_path / "tasks.json"
    invoke("07_label", "ls-export", tasks_file)
    tasks = json.loads(tasks_file.read_text())
    for number, task in enumerate(tasks, 1):
        task["id"] = number
    answers = [
        _result("human_desc", "textarea", ["A fox crossing fresh snow."]),
        _result("reverse_prompt", "textarea", ["red fox, snow field, soft light"]),
        _result("category", "choices", ["animals"]),
        _result("palette", "choices", ["blue", "gold"]),
        _result("tags", "choices", ["landscape", "creature"]),
        _result("triage", "choices", ["keep"]),
        _result("quality", "rating", 4),
        _result("notes", "textarea", ["nice light"]),
    ]
    tasks[0]["annotations"] = [_annotation(101, answers), _annotation(102, answers[:1], cancelled=True),
                               _annotation(106, [_result("triage", "choices", ["skip"]),
                                                 _result("quality", "rating", 2),
                                                 _result("reverse_prompt", "textarea", ["a fox standing in the snow"],
                                                         origin="prediction")],
                                           annotator={"id": 9, "email": "ann@example.org"},
                                           updated="2025-05-01T09:30:00Z")]
    tasks[1]["annotations"] = [_annotation(103, [_result("triage", "choices", ["skip"])],
                                           annotator={"id": 9, "email": "ann@example.org"})]
    return tasks


EXPECTED_LABELS = {("category", "animals", "user7@example.org"), ("palette", "blue", "user7@example.org"),
                   ("palette", "gold", "user7@example.org"), ("tags", "landscape", "user7@example.org"),
                   ("tags", "creature", "user7@example.org"), ("triage", "keep", "user7@example.org"),
                   ("notes", "nice light", "user7@example.org"), ("triage", "skip", "ann@example.org")}


def _answers_in(store, image_ids):
    """Everything people said, item by item, with who said it (from the annotations row)."""
    def rows(sql):
        return {tuple(row.values()) for row in store.query(sql)}

    fox, owl = image_ids[:2]
    return {
        "captions": rows("SELECT c.image_id, c.kind, c.text, a.annotator, a.lead_time FROM captions c "
                         "JOIN annotations a ON a.id = c.annotation_id"),
        "labels": rows("SELECT l.image_id, l.kind, l.text, a.annotator FROM labels l "
                       "JOIN annotations a ON a.id = l.annotation_id"),
        "scores": rows("SELECT s.image_id, s.kind, s.value, a.annotator FROM scores s "
                       "JOIN annotations a ON a.id = s.annotation_id"),
        "annotations": rows("SELECT image_id, ls_annotation_id, task_id, annotator, created_at, updated_at, lead_time "
                            "FROM annotations"),
        "state": rows(f"SELECT image_id, state FROM image_state WHERE image_id IN ({fox}, {owl})"),
        "accepted": rows("SELECT d.item_type, c.kind, c.text, a.annotator FROM decisions d "
                         "JOIN captions c ON c.id = d.item_id JOIN annotations a ON a.id = d.annotation_id "
                         "WHERE d.rule = 'labelstudio accepted prediction'"),
    }


def _expected(image_ids):
    fox, owl = image_ids[:2]
    return {
        "captions": {(fox, "human", "A fox crossing fresh snow.", "user7@example.org", 42.5),
                     (fox, "human_prompt", "red fox, snow field, soft light", "user7@example.org", 42.5)},
        "labels": {(owl if who == "ann@example.org" else fox, kind, text, who)
                   for kind, text, who in EXPECTED_LABELS} | {(fox, "triage", "skip", "ann@example.org")},
        "scores": {(fox, "quality", 4.0, "user7@example.org"), (fox, "quality", 2.0, "ann@example.org")},
        "annotations": {(fox, 101, 1, "user7@example.org", "2025-05-01T09:59:00.000000Z",
                         "2025-05-01T10:00:00.000000Z", 42.5),
                        (fox, 106, 1, "ann@example.org", "2025-05-01T09:59:00.000000Z",
                         "2025-05-01T09:30:00.000000Z", 42.5),
                        (owl, 103, 2, "ann@example.org", "2025-05-01T09:59:00.000000Z",
                         "2025-05-01T10:00:00.000000Z", 42.5)},
        # The fox's newest triage (user 7, 10:00) wins over ann's older skip (09:30).
        "state": {(fox, "keep"), (owl, "drop")},
        # ann left the pre-filled reverse prompt as it was: the blip caption is accepted, not hers.
        "accepted": {("caption", "blip", "a fox standing in the snow", "ann@example.org")},
    }


def test_import_label_studio_json_export(tmp_path, invoke, store, run):
    image_ids = _library(store, run)
    tasks = _exported_project(tmp_path, invoke)
    # A task from another project: matched by its uploaded file name only.
    tasks.append({"id": 3, "data": {"image": "/data/upload/4/0a1b2c3d-dropped.png"},
                  "annotations": [_annotation(104, [_result("triage", "choices", ["maybe"])])]})
    tasks.append({"id": 4, "data": {"image": "/data/upload/4/unknown.png"},
                  "annotations": [_annotation(105, [_result("triage", "choices", ["keep"])])]})
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    result = invoke("07_label", "ls-import", export)
    assert "cancelled annotations ignored 1" in result.output and "format json 1" in result.output
    answers = _answers_in(store, image_ids)
    expected = _expected(image_ids)
    expected["labels"].add((image_ids[2], "triage", "maybe", "user7@example.org"))
    expected["annotations"].add((image_ids[2], 104, 3, "user7@example.org", "2025-05-01T09:59:00.000000Z",
                                 "2025-05-01T10:00:00.000000Z", 42.5))
    assert answers == expected
    assert store.query("SELECT reason, locator FROM item_errors") == [{"reason": "no matching image",
                                                                       "locator": "task 4"}]
    counts = {t: store.count(t) for t in ("captions", "labels", "scores", "decisions", "annotations", "item_errors")}
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


def test_older_answer_imported_later_does_not_win(tmp_path, invoke, store, run):
    image_ids = _library(store, run)
    newer = [{"id": 1, "data": {"promptmill_image_id": image_ids[0]},
              "annotations": [_annotation(1, [_result("triage", "choices", ["skip"])], updated="2025-06-02T00:00:00Z")]}]
    older = [{"id": 1, "data": {"promptmill_image_id": image_ids[0]},
              "annotations": [_annotation(2, [_result("triage", "choices", ["keep"])], annotator=8,
                                          updated="2025-06-01T00:00:00+02:00")]}]
    for name, tasks in (("newer.json", newer), ("older.json", older)):
        (tmp_path / name).write_text(json.dumps(tasks))
        invoke("07_label", "ls-import", tmp_path / name)
    assert store.query("SELECT state FROM image_state WHERE image_id = ?", (image_ids[0],))[0]["state"] == "drop"
    assert store.count("labels", "kind = 'triage'") == 2


def test_unchanged_prediction_is_an_accepted_machine_caption(tmp_path, invoke, store, run):
    _library(store, run)
    blip = store.scalar("SELECT id FROM captions WHERE kind = 'blip'")
    invoke("07_label", "ls-export", tmp_path / "t.json")
    fox = json.loads((tmp_path / "t.json").read_text())[0]
    fox["id"] = 1
    prefilled = {r["from_name"]: r for r in fox["predictions"][0]["result"]}
    kept = {**prefilled["reverse_prompt"], "origin": "prediction"}
    edited = {**prefilled["machine_tags"], "origin": "prediction-changed", "value": {"text": ["fox, snow"]}}
    fox["annotations"] = [_annotation(1, [kept, edited])]
    (tmp_path / "e.json").write_text(json.dumps([fox]))
    invoke("07_label", "ls-import", tmp_path / "e.json")
    assert store.query("SELECT kind, text FROM captions WHERE annotation_id IS NOT NULL") == [
        {"kind": "human_tags", "text": "fox, snow"}]
    assert store.query("SELECT item_type, item_id, verdict, rule, value FROM decisions WHERE stage = 'review'") == [
        {"item_type": "caption", "item_id": blip, "verdict": "keep", "rule": "labelstudio accepted prediction",
         "value": "reverse_prompt"}]


@pytest.mark.parametrize("kind", ["JSON_MIN", "CSV", "TSV"])
def test_import_what_label_studios_converter_writes(tmp_path, invoke, store, run, kind):
    from label_studio_sdk.converter import Converter

    image_ids = _library(store, run)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(_exported_project(tmp_path, invoke)))
    out = tmp_path / kind.lower()
    Converter(config=DEFAULT_CONFIG.read_text(), project_dir=None, download_resources=False).convert(
        str(export), str(out), kind, is_dir=False)
    converted = next(out.iterdir())
    result = invoke("07_label", "ls-import", converted)
    assert f"format {kind.lower()} 1" in result.output
    assert _answers_in(store, image_ids) == _expected(image_ids)
    # The same answers in the full JSON export add nothing: they are the same annotations.
    counts = {t: store.count(t) for t in ("captions", "labels", "scores", "decisions", "annotations")}
    invoke("07_label", "ls-import", export)
    assert {t: store.count(t) for t in counts} == counts


def test_values_that_do_not_fit_are_item_errors_not_crashes(tmp_path, invoke, store, run):
    image_ids = _library(store, run)
    tasks = [{"id": 1, "data": {"promptmill_image_id": "fox", "file_name": "set/fox.png"},
              "annotations": [_annotation(1, [_result("quality", "rating", "five"),
                                              _result("style_match", "rating", [1, 2]),
                                              {**_result("human_desc", "textarea", None), "value": {"text": "a fox"}},
                                              {**_result("mood", "choices", None), "value": {"choices": "epic"}},
                                              _result("category", "choices", [3])])]}]
    (tmp_path / "bad.json").write_text(json.dumps(tasks))
    result = invoke("07_label", "ls-import", tmp_path / "bad.json")
    assert "malformed results skipped 3" in result.output
    assert store.query("SELECT image_id, kind, text FROM captions WHERE annotation_id IS NOT NULL") == [
        {"image_id": image_ids[0], "kind": "human", "text": "a fox"}]
    assert store.query("SELECT kind, text FROM labels WHERE annotation_id IS NOT NULL") == [
        {"kind": "mood", "text": "epic"}]
    assert store.count("scores") == 0
    detail = store.scalar("SELECT detail FROM item_errors WHERE reason = 'malformed result'")
    assert "quality" in detail and "style_match" in detail and "category" in detail


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
    assert store.count("captions", "kind = 'human'") == sum(bool(r["human_description"].strip()) for r in present)
    assert store.count("captions", "kind = 'human_prompt'") == sum(bool(r["llm_description"].strip()) for r in present)
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


ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["text", "choices", "labels", "taxonomy", "rating", "number", "x"]), inner, max_size=2),
    max_leaves=8)
ANY_RESULT = st.fixed_dictionaries({
    "from_name": st.sampled_from(["human_desc", "notes", "mood", "palette", "tags", "triage", "quality", "other"]),
    "to_name": st.just("image"),
    "type": st.sampled_from(["textarea", "choices", "labels", "taxonomy", "rating", "number", "rectanglelabels"]),
    "origin": st.sampled_from(["manual", "prediction", "prediction-changed"]),
    "value": ANY_VALUE,
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(results=st.lists(st.lists(ANY_RESULT, max_size=4), min_size=1, max_size=4), image_id=ANY_VALUE)
def test_any_result_value_is_recorded_or_reported_never_a_crash(tmp_path_factory, results, image_id):
    folder = tmp_path_factory.mktemp("fuzz")
    store = open_store(folder / "db" / "p.db")
    with start_run(store, "test", "fixture", {}, argv=["pytest"]) as run:
        [fox] = add_images(store, run, ["fox.png"])
        tasks = [{"id": 1, "data": {"promptmill_image_id": image_id, "file_name": "fox.png"},
                  "annotations": [_annotation(n, result, updated=f"2025-05-01T10:00:{n:02d}Z")
                                  for n, result in enumerate(results, 1)]}]
        export = folder / "export.json"
        export.write_text(json.dumps(tasks))
        import_answers(store, run, export, read_config(DEFAULT_CONFIG))
    # Every answer is accounted for (the image id is used when it is one, else the file name finds it).
    assert store.count("annotations", "image_id = ?", (fox,)) == len(results)
    assert store.count("item_errors", "reason != 'malformed result'") == 0
    store.close()


def test_bad_label_studio_commands_exit_2(tmp_path, store):
    not_json = tmp_path / "export.json"
    not_json.write_text("{not json")
    no_column = tmp_path / "x.csv"
    no_column.write_text("id,name\n1,a\n")
    zipped = tmp_path / "export.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("result.json", "[]")
    deep = tmp_path / "deep.json"
    deep.write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)  # one object nested too deep, not a task list
    bad_config = tmp_path / "config.xml"
    bad_config.write_text("<View><Choices")
    for args in (["ls-import", not_json], ["ls-import", no_column], ["ls-import", zipped], ["ls-import", deep],
                 ["ls-import", tmp_path / "missing.json"], ["ls-import", no_column, "--config", bad_config],
                 ["ls-export", tmp_path / "t.json", "--document-root", tmp_path / "elsewhere"],
                 ["ls-push"], ["ls-pull"]):
        result = run_script("07_label", args[0], "--db", store.path, *args[1:],
                            env={"LABEL_STUDIO_URL": "", "LABEL_STUDIO_API_KEY": ""})
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    for path in (not_json, no_column, zipped):
        assert "JSON, JSON_MIN, CSV or TSV" in run_script("07_label", "ls-import", path, "--db", store.path).stderr
    assert store.count("sources") == 0


def _push_env(monkeypatch, fake):
    monkeypatch.setenv("LABEL_STUDIO_URL", fake.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", fake.token)


def test_push_creates_the_project_once_and_only_new_tasks(monkeypatch, invoke, store, run):
    from label_studio_sdk.label_interface import LabelInterface

    from fakes.labelstudio_server import FakeLabelStudio

    image_ids = _library(store, run)
    with FakeLabelStudio(store.path.parent) as fake:
        _push_env(monkeypatch, fake)
        result = invoke("07_label", "ls-push")
        assert "tasks imported 2" in result.output and "projects created 1" in result.output
        [project] = fake.projects.values()
        assert project["label_config"] == DEFAULT_CONFIG.read_text()
        [storage] = fake.storages.values()
        assert storage["path"] == str((store.path.parent / "blobs").resolve()) and storage["project"] == project["id"]
        assert sorted(t["data"]["promptmill_image_id"] for t in fake.tasks.values()) == image_ids[:2]
        for task in fake.tasks.values():
            relative = urllib.parse.unquote(task["data"]["image"].removeprefix("/data/local-files/?d="))
            assert relative.startswith("blobs/") and (store.path.parent / relative).is_file()
        interface = LabelInterface(project["label_config"])
        for prediction in fake.predictions.values():
            assert interface.validate_prediction(prediction) and prediction["model_version"].startswith("promptmill:")
        assert fake.predictions[1]["model_version"] == "promptmill:blip+description+wd14"
        result = invoke("07_label", "ls-push")
        assert "tasks already in the project 2" in result.output and "tasks imported" not in result.output
        assert len(fake.tasks) == 2 and len(fake.projects) == 1 and len(fake.storages) == 1
        assert len(fake.predictions) == 2
        # A new machine caption: the task's prediction is updated, not duplicated.
        add_caption(store, run, image_ids[1], "gemini", "an owl on a branch at night")
        add_images(store, run, ["set/cat.png"], sizes=[(40, 30)], source_uri="second-folder")
        result = invoke("07_label", "ls-push")
        assert "predictions updated 1" in result.output and "tasks imported 1" in result.output
        assert len(fake.tasks) == 3 and len(fake.predictions) == 2
        owl = next(p for p in fake.predictions.values() if p["task"] == 2)
        assert {r["from_name"]: r["value"] for r in owl["result"]}["reverse_prompt"] == {
            "text": ["an owl on a branch at night"]}
        # A new database on the same server finds the project by its title instead of making another.
        other = store.path.parent / "other.db"
        result = invoke("07_label", "ls-push", db=other)
        assert "projects reused 1" in result.output and len(fake.projects) == 1


def test_pull_is_incremental_and_idempotent(monkeypatch, invoke, store, run):
    from fakes.labelstudio_server import FakeLabelStudio
    from promptmill.label import ls_api

    monkeypatch.setattr(ls_api, "PAGE_SIZE", 1)  # every task on its own page, as with a large project
    image_ids = _library(store, run)
    blip = store.scalar("SELECT id FROM captions WHERE kind = 'blip'")
    with FakeLabelStudio(store.path.parent) as fake:
        _push_env(monkeypatch, fake)
        invoke("07_label", "ls-push")
        fox_task = next(t["id"] for t in fake.tasks.values() if t["data"]["promptmill_image_id"] == image_ids[0])
        fox_prediction = next(p for p in fake.predictions.values() if p["task"] == fox_task)
        prefilled = {r["from_name"]: r for r in fox_prediction["result"]}
        first = fake.annotate(fox_task, [{**prefilled["reverse_prompt"], "origin": "prediction"},
                                         _result("triage", "choices", ["skip"]), _result("quality", "rating", 3)],
                              user=2, parent_prediction=fox_prediction["id"])
        fake.annotate(fox_task, [_result("triage", "choices", ["keep"])], user=1)
        result = invoke("07_label", "ls-pull")
        assert "answers imported 2" in result.output
        assert store.query("SELECT annotator, lead_time, prediction_id, ls_project_id FROM annotations ORDER BY id") == [
            {"annotator": "2", "lead_time": 12.5, "prediction_id": fox_prediction["id"], "ls_project_id": 1},
            {"annotator": "1", "lead_time": 12.5, "prediction_id": None, "ls_project_id": 1}]
        assert store.query("SELECT state FROM image_state WHERE image_id = ?", (image_ids[0],)) == [{"state": "keep"}]
        assert store.query("SELECT item_type, item_id FROM decisions WHERE rule = 'labelstudio accepted prediction'") \
            == [{"item_type": "caption", "item_id": blip}]
        assert store.count("captions", "annotation_id IS NOT NULL") == 0
        counts = {t: store.count(t) for t in ("captions", "labels", "scores", "decisions", "annotations")}
        result = invoke("07_label", "ls-pull")
        assert "answers imported" not in result.output
        assert {t: store.count(t) for t in counts} == counts
        # ann edits her answer later: only that annotation is read, and her newer triage wins.
        fake.annotate(fox_task, [_result("triage", "choices", ["skip"]), _result("quality", "rating", 1)],
                      annotation_id=first)
        result = invoke("07_label", "ls-pull")
        assert "answers imported 1" in result.output and "annotations unchanged since the last pull 1" in result.output
        assert store.query("SELECT state FROM image_state WHERE image_id = ?", (image_ids[0],)) == [{"state": "drop"}]
        assert [row["annotations"] for row in store.query("SELECT annotations FROM ls_pulls ORDER BY id")] == [2, 0, 1]
        assert store.query("SELECT value FROM scores ORDER BY id") == [{"value": 3.0}, {"value": 1.0}]


def server_env(fake) -> dict:
    """The environment a step reaches the fake Label Studio with (URL and token never go in argv)."""
    return {**os.environ, "LABEL_STUDIO_URL": fake.url, "LABEL_STUDIO_API_KEY": fake.token,
            "PROMPTMILL_PROGRESS": "0"}


@pytest.mark.resilience
def test_push_killed_after_the_import_and_rerun_adds_no_task_twice(store, run):
    from fakes.labelstudio_server import FakeLabelStudio

    image_ids = _library(store, run)
    with FakeLabelStudio(store.path.parent) as fake:
        env = server_env(fake)
        fake.hold_imports.clear()
        process = subprocess.Popen([sys.executable, str(paths.STEPS_DIR / "07_label.py"), "ls-push", "--db",
                                    str(store.path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not fake.tasks:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        fake.hold_imports.set()
        assert len(fake.tasks) == 2
        result = run_script("07_label", "ls-push", "--db", store.path, env=env)
        assert result.returncode == 0, result.stderr
        assert "tasks already in the project 2" in result.stderr + result.stdout
        assert sorted(t["data"]["promptmill_image_id"] for t in fake.tasks.values()) == image_ids[:2]
        assert len(fake.projects) == 1 and len(fake.storages) == 1 and len(fake.predictions) == 2


@pytest.mark.resilience
def test_two_pushes_at_once_import_each_image_once(store, run):
    from fakes.labelstudio_server import FakeLabelStudio

    image_ids = _library(store, run)
    with FakeLabelStudio(store.path.parent) as fake:
        env = server_env(fake)
        fake.hold_imports_before.clear()
        command = [sys.executable, str(paths.STEPS_DIR / "07_label.py"), "ls-push", "--db", str(store.path)]
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and ("POST", "/api/projects/1/import") not in fake.requests:
            time.sleep(0.05)
        second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2)  # the second reaches the lock while the first is held inside its import
        fake.hold_imports_before.set()
        outputs = [process.communicate(timeout=300)[0] for process in (first, second)]
        assert [process.returncode for process in (first, second)] == [0, 0], outputs
        assert sorted(t["data"]["promptmill_image_id"] for t in fake.tasks.values()) == image_ids[:2]
        assert "tasks already in the project 2" in outputs[1]
        assert len(fake.projects) == 1 and len(fake.storages) == 1 and len(fake.predictions) == 2


@pytest.mark.resilience
def test_pull_killed_and_rerun_ends_like_one_pull(tmp_path):
    from fakes.labelstudio_server import FakeLabelStudio

    stores = {name: open_store(tmp_path / name / "p.db") for name in ("killed", "clean")}
    for store in stores.values():
        with start_run(store, "test", "fixture", {}, argv=["pytest"]) as run:
            add_images(store, run, ["a.png", "b.png"])
    with FakeLabelStudio(tmp_path) as fake:
        env = server_env(fake)
        for store in stores.values():
            assert run_script("07_label", "ls-push", "--db", store.path, env=env).returncode == 0
        for task_id in fake.tasks:
            for k in range(1000):
                fake.annotate(task_id, [_result("human_desc", "textarea", [f"text {task_id} {k}"]),
                                        _result("mood", "choices", ["epic"]), _result("quality", "rating", k % 5 + 1)])
        killed = stores["killed"]
        process = subprocess.Popen([sys.executable, str(paths.STEPS_DIR / "07_label.py"), "ls-pull", "--db",
                                    str(killed.path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed.count("annotations"):
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert killed.count("annotations") > 0 and killed.count("ls_pulls") == 0
        for store in stores.values():
            assert run_script("07_label", "ls-pull", "--db", store.path, env=env).returncode == 0

    def rows(store):
        return [store.query(f"SELECT natural_key FROM {table} ORDER BY natural_key")
                for table in ("annotations", "captions", "labels", "scores")]

    assert rows(stores["killed"]) == rows(stores["clean"])
    assert stores["clean"].count("annotations") == 2000


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
