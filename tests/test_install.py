"""The built wheel, installed into a fresh virtual environment outside the checkout, is the whole tool.

The wheel is built from the checkout and installed with --no-deps into a new venv;
its third-party dependencies come from this test environment's site-packages
(added as a plain path, so the checkout's editable install stays invisible). Every
command then runs from an empty folder, where nothing of the checkout can be found.
"""

from __future__ import annotations

import json
import os
import site
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import paths

pytestmark = pytest.mark.slow


def run(argv, cwd, env, timeout=300):
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{argv}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, environment) of a fresh venv holding only the built promptmill wheel."""
    work = tmp_path_factory.mktemp("install")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PROMPTMILL_DB")}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", work / "dist",
         paths.ROOT], cwd=work, env=env, timeout=600)
    wheel = next((work / "dist").glob("promptmill-*.whl"))
    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work, env=env)
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps", wheel],
        cwd=work, env=env)
    venv_site = next((venv / "lib").glob("python3*/site-packages"))
    (venv_site / "test-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv / "bin", env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_wheel_runs_every_step_from_an_empty_folder(installed, tmp_path):
    bin_dir, env = installed
    here = tmp_path / "empty"
    here.mkdir()
    found = run([bin_dir / "python", "-c", "import promptmill, sys; print(promptmill.__file__)"], here, env)
    assert Path(found.stdout.strip()).is_relative_to(bin_dir.parent), found.stdout
    assert not Path(found.stdout.strip()).is_relative_to(paths.ROOT)
    shipped = Path(found.stdout.strip()).parent / "schema"
    assert list((shipped / "migrations").glob("*.sql")) and list((shipped / "clean").glob("*.toml"))

    prompts = here / "prompts.txt"
    prompts.write_text("a red fox in the snow\na red fox in the snow\nA red fox in the snow!\n"
                       "portrait of a knight, oil painting\nhi\n", encoding="utf-8")
    promptmill = bin_dir / "promptmill"
    db = ["--db", "mydata.db"]
    run([promptmill, *db, "collect", "text", prompts], here, env)
    run([promptmill, "clean", "prompts", "--preset", "basic", *db], here, env)
    run([promptmill, *db, "dedup", "prompts", "--method", "exact"], here, env)
    run([promptmill, *db, "split", "assign", "--validation", "0.5"], here, env)
    run([promptmill, *db, "upload", "prompts", "out", "--format", "txt"], here, env)
    exported = sorted(path.relative_to(here / "out").as_posix() for path in (here / "out").rglob("*.txt"))
    assert exported, "the prompts export wrote no text file"
    texts = "".join((here / "out" / name).read_text(encoding="utf-8") for name in exported)
    assert "portrait of a knight" in texts and texts.count("a red fox in the snow") == 1
    assert run([bin_dir / "python", "-m", "promptmill", "--version"], here, env).stdout.startswith("promptmill")

    port = free_port()
    server = subprocess.Popen([promptmill, "browse", "--db", "mydata.db", "--port", str(port)], cwd=here, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/mydata/run_history.json?_shape=array"
        deadline = time.monotonic() + 120
        while True:
            try:
                body = urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "promptmill browse never answered"
                time.sleep(0.5)
        history = json.loads(body)
        assert {row["step"] for row in history} >= {"01_collect", "02_clean", "03_dedup", "08_split", "09_upload"}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_missing_schema_is_an_error_not_an_empty_database(tmp_path, monkeypatch):
    from promptmill.core import resources
    from promptmill.core.errors import PromptmillError
    from promptmill.core.store import open_store

    monkeypatch.setattr(resources, "SCHEMA_DIR", tmp_path / "schema")
    with pytest.raises(PromptmillError, match="no migrations"):
        open_store(tmp_path / "db" / "promptmill.db")
    assert not (tmp_path / "db" / "promptmill.db").exists()
