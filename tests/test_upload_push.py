"""09_upload push against a loopback Hub (tests/fakes/hub_server.py) through huggingface_hub's real
upload_folder: repo creation, preupload, the git-lfs batch API, NDJSON commits, retries on faults."""

import json

import pytest
from upload_fixtures import build_release_db, sha256_tree

from conftest import run_script
from fakes.hub_server import FakeHub
from promptmill.release.folder import is_own


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


@pytest.fixture
def released(tmp_path, invoke, store):
    build_release_db(store)
    invoke("09_upload", "imagefolder", tmp_path / "if", "--release", "v1")
    invoke("09_upload", "prompts", tmp_path / "prompts", "--release", "plist", "--no-card")
    return tmp_path


def push(db_path, hub, *args, token=None, xet=False, home=None):
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HOME": str(home or db_path.parent / "hf-home"), "HF_HUB_DISABLE_XET": "0" if xet else "1",
           "HF_TOKEN": hub.token if token is None else token}
    return run_script("09_upload", "push", "--db", db_path, *args, env=env)


def test_push_uploads_the_release_through_lfs(released, db_path, store, hub):
    hub.faults["preupload"] = [503]  # retried by huggingface_hub's backoff
    result = push(db_path, hub, "me/foxes", "--release", "v1", "--private")
    assert result.returncode == 0, result.stderr
    repo = hub.repos["me/foxes"]
    assert repo.repo_type == "dataset" and repo.private
    folder = released / "if"
    expected = {path: (folder / path).read_bytes() for path in sha256_tree(folder) if not is_own(path)}
    assert repo.files == expected
    [commit] = repo.commits
    release = store.query("SELECT * FROM releases WHERE name = 'v1'")[0]
    assert commit["summary"] == f"Release v1 (imagefolder, manifest {release['manifest_sha256'][:12]})"
    assert set(commit["lfs"]) == {p for p in expected if p.endswith((".png", ".jpg", ".gif"))}
    called = hub.endpoints_called()
    assert called.count("preupload") == 2 and called.count("commit") == 1
    assert {"create", "lfs_batch", "lfs_upload", "lfs_verify"} <= set(called)
    pushed = store.query("SELECT * FROM release_pushes")[0]
    assert (pushed["repo_id"], pushed["commit_oid"], pushed["files"]) == ("me/foxes", commit["oid"], len(expected))
    assert hub.token.encode() not in db_path.read_bytes()
    assert all(hub.token not in row["argv"] + row["params"] for row in store.query("SELECT argv, params FROM runs"))

    # Pushing again sends no file and records no push: every one is already there unchanged.
    uploads = called.count("lfs_upload")
    again = push(db_path, hub, "me/foxes", "--release", "v1")
    assert again.returncode == 0, again.stderr
    assert len(repo.commits) == 1 and hub.endpoints_called().count("lfs_upload") == uploads
    assert "(nothing changed)" in again.stdout and store.count("release_pushes") == 1


def test_push_sends_only_the_release_and_lists_the_rest(released, db_path, store, hub):
    folder = released / "if"
    (folder / "notes.txt").write_text("not for the Hub")
    (folder / "train" / "cache.npz").write_bytes(b"latents")
    result = push(db_path, hub, "me/foxes", "--release", "v1")
    assert result.returncode == 0, result.stderr
    assert "not in the release, not uploaded: notes.txt" in result.stderr
    assert "not in the release, not uploaded: train/cache.npz" in result.stderr
    manifest = json.loads(store.scalar("SELECT manifest FROM releases WHERE name = 'v1'"))
    assert set(hub.repos["me/foxes"].files) == set(manifest)


def test_push_of_a_text_release_with_the_default_transport(released, db_path, store, hub):
    result = push(db_path, hub, "me/prompts", "--release", "plist", xet=True)
    assert result.returncode == 0, result.stderr
    repo = hub.repos["me/prompts"]
    assert repo.files["prompts.txt"] == (released / "prompts/prompts.txt").read_bytes()
    assert set(repo.files) == {"prompts.txt"} and repo.commits[0]["summary"].startswith("Release plist (prompts")


def test_dry_run_lists_files_and_sends_nothing(released, db_path, hub):
    result = push(db_path, hub, "me/foxes", "--release", "v1", "--dry-run", token="")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[-1] for line in result.stdout.splitlines()]
    assert listed == sorted(p for p in sha256_tree(released / "if") if not is_own(p))
    assert hub.requests == []


def test_push_refuses_without_token_or_with_a_changed_folder(released, db_path, hub):
    result = push(db_path, hub, "me/foxes", "--release", "v1", token="")
    assert result.returncode == 2 and "hf auth login" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (released / "if" / "train" / "metadata.jsonl").write_text("{}\n")
    result = push(db_path, hub, "me/foxes", "--release", "v1")
    assert result.returncode == 2 and "changed: train/metadata.jsonl" in result.stderr
    assert hub.requests == []


def test_push_with_a_wrong_token_fails_in_one_line(released, db_path, store, hub):
    result = push(db_path, hub, "me/foxes", "--release", "v1", token="hf_wrongtoken12345")
    assert result.returncode == 1 and "push to me/foxes failed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    run = store.query("SELECT status, error FROM runs WHERE command = 'push'")[0]
    assert run["status"] == "failed" and "wrongtoken" not in json.dumps(run)


def test_a_pushed_kohya_release_loads_as_images_with_captions(tmp_path, invoke, store, db_path, hub, monkeypatch):
    from datasets import load_dataset

    build_release_db(store)
    out = tmp_path / "lora"
    invoke("09_upload", "kohya", out, "--trigger", "ohwx", "--text-from", "caption:wd14,prompt")
    (out / "10_ohwx" / "cache.npz").write_bytes(b"kohya latents")
    result = push(db_path, hub, "me/lora", "--release", "lora")
    assert result.returncode == 0, result.stderr
    repo = hub.repos["me/lora"].files
    assert "10_ohwx/cache.npz" not in repo and not any(name.startswith("card/") for name in repo)
    pulled = tmp_path / "pulled"
    for name, data in repo.items():
        (pulled / name).parent.mkdir(parents=True, exist_ok=True)
        (pulled / name).write_bytes(data)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    dataset = load_dataset(str(pulled))
    assert list(dataset) == ["train"] and set(dataset["train"].features) == {"image", "text"}
    captions = sorted(data.decode().strip() for name, data in repo.items() if name.endswith(".txt"))
    assert sorted(row["text"] for row in dataset["train"]) == captions


def test_push_uses_the_token_hf_auth_login_stored(released, db_path, store, hub):
    home = db_path.parent / "logged-in"
    home.mkdir()
    (home / "token").write_text(hub.token)  # where `hf auth login` writes it, under HF_HOME
    result = push(db_path, hub, "me/foxes", "--release", "v1", token="", home=home)
    assert result.returncode == 0, result.stderr
    assert store.count("release_pushes") == 1
