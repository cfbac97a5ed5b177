"""Shared fixtures: a fresh store, the step CLIs in-process and as subprocesses, the seed data."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import paths
from promptmill.core.runs import start_run
from promptmill.core.store import open_store

ROOT = paths.ROOT
SHARED_DATA = ROOT.parent / "shared" / "data"
SEED_PROMPTS = SHARED_DATA / "seed-prompts"

os.environ.setdefault("PROMPTMILL_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

_steps: dict[str, object] = {}


def load_step(name: str):
    """Import steps/NAME.py (its name starts with a digit, so not by `import`)."""
    if name not in _steps:
        spec = importlib.util.spec_from_file_location(f"step_{name}", paths.STEPS_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _steps[name] = module
    return _steps[name]


def seed_lines(file_name: str, limit: int | None = None) -> list[str]:
    path = SEED_PROMPTS / file_name
    if not path.exists():
        pytest.skip(f"{path} is missing (CI puts ../shared beside the checkout)")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:limit] if limit else lines


@pytest.fixture
def prompts_file(tmp_path):
    """Six real prompts in a text file, for steps that need something collected."""
    lines = (ROOT / "examples" / "prompts" / "openprompts.txt").read_text(encoding="utf-8").splitlines()[:6]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "db" / "promptmill.db"


@pytest.fixture
def store(db_path):
    store = open_store(db_path)
    yield store
    store.close()


@pytest.fixture
def run(store):
    """A run for library-level tests that write rows directly."""
    with start_run(store, "test", "fixture", {}, argv=["pytest"]) as run:
        yield run


@pytest.fixture
def invoke(db_path):
    """Call a step in-process: invoke('01_collect', 'text', path) -> click Result (exit 0 asserted)."""

    def _invoke(step: str, *args, expect: int = 0, db: Path | None = None):
        cli = load_step(step).cli
        argv = [str(a) for a in args]
        command_path = argv[:1]
        result = CliRunner().invoke(cli, command_path + ["--db", str(db or db_path)] + argv[1:],
                                    catch_exceptions=False)
        assert result.exit_code == expect, result.output
        return result

    return _invoke


def run_script(step: str, *args, env: dict | None = None, timeout: float = 600, **kwargs):
    """Run steps/STEP.py in a subprocess, as a user would."""
    full_env = {**os.environ, "PROMPTMILL_PROGRESS": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(paths.STEPS_DIR / f"{step}.py"), *[str(a) for a in args]],
        capture_output=True, text=True, env=full_env, timeout=timeout, **kwargs,
    )


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium through selenium, with the flags a closed network needs."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1024"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER), log_output=os.devnull)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for_server(process, base: str, name: str, seconds: float = 90) -> None:
    """Until the Datasette at BASE answers; fail with the end of its stderr if it dies or never does."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(f"{base}/-/versions.json", timeout=2).read()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                error = process.stderr.read()
                pytest.fail(f"{name} did not start: {(error.decode() if isinstance(error, bytes) else error)[-800:]}")
            time.sleep(0.2)
