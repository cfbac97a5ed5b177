"""A SIGKILL in the middle of an export leaves OUT untouched; the re-run ends byte-identical to an
export that was never interrupted, with one releases row."""

import signal
import subprocess
import sys
import time

import pytest
from upload_fixtures import image_bytes, sha256_tree

import paths
from promptmill.collect.base import Collector, SourceInfo
from promptmill.core.runs import start_run
from promptmill.release.folder import LOCK, MARKER, STAGING, is_own, read_marker


def release_files(out) -> dict[str, str]:
    return {path: sha for path, sha in sha256_tree(out).items() if not is_own(path)}


@pytest.mark.resilience
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["imagefolder", "parquet"])
def test_killed_export_reruns_to_the_uninterrupted_result(tmp_path, db_path, store, fmt):
    with start_run(store, "01_collect", "zip", {}, argv=["fixture"]) as run:
        collector = Collector(store, run, SourceInfo(kind="zip", uri="many.zip", sha256="c" * 64))
        for position in range(1, 2001):
            collector.add_image(position, image_bytes(position, (48, 48)), f"many/{position}.png",
                                prompt=f"prompt number {position}")
        collector.finish(2000)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    argv = [sys.executable, str(paths.STEPS_DIR / "09_upload.py"), fmt, "--db", str(db_path), "--release", "r"]
    process = subprocess.Popen([*argv, str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = killed / STAGING
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        # Parquet writes a few shards progressively, imagefolder one file per image.
        if staging.is_dir() and sum(1 for p in staging.rglob("*") if p.is_file()) > (20 if fmt == "imagefolder" else 0):
            break
        time.sleep(0.005)
    assert process.poll() is None, "the export finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert sorted(p.name for p in killed.iterdir()) == [LOCK, STAGING]  # nothing under its final name yet
    assert store.count("releases") == 0

    for out in (killed, clean):
        subprocess.run([*argv, str(out)], check=True, capture_output=True)
    assert release_files(killed) == release_files(clean) and MARKER in sha256_tree(clean)
    assert read_marker(killed)["manifest_sha256"] == read_marker(clean)["manifest_sha256"]
    assert store.count("releases") == 1
    assert store.scalar("SELECT status FROM runs WHERE step = '09_upload' ORDER BY id LIMIT 1") == "interrupted"
