"""Publishing a release folder to a Hugging Face dataset repository.

The folder is checked against the release's manifest first, and only the
manifest's files are sent, so what lands on the Hub is exactly what the
database says the release contains; other files in the folder are listed and
left out. The token is huggingface_hub's own: ``HF_TOKEN``, else the one
``hf auth login`` stored; the endpoint is ``HF_ENDPOINT``; never argv. ``create_commit`` skips files
the repository already holds unchanged, so pushing again after an
interruption resends only what is missing, and a push that changes nothing
makes no commit and records no push.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from promptmill.core.errors import BadInput, PromptmillError
from promptmill.core.runs import Run, now
from promptmill.core.store import Store
from promptmill.release.folder import folder_files, sha256_file


class PushFailed(PromptmillError):
    """The Hub refused or could not be reached: one line, exit 1."""


def progress_disabled() -> bool:
    """The same rule as promptmill.progress.bar, applied to huggingface_hub's own bars."""
    setting = os.environ.get("PROMPTMILL_PROGRESS", "auto")
    return setting == "0" or (setting == "auto" and not sys.stderr.isatty())


def compare_folder(folder: Path, manifest: dict[str, str]) -> tuple[list[str], list[str]]:
    """(problems: files of the release missing or changed, extra: files in the folder not in the release)."""
    if not folder.is_dir():
        return [f"{folder} does not exist"], []
    found = folder_files(folder)
    problems = [f"missing {name}" for name in sorted(manifest.keys() - found)]
    problems += [f"changed: {name}" for name in sorted(manifest.keys() & found)
                 if sha256_file(folder / name) != manifest[name]]
    return problems, sorted(found - manifest.keys())


def commit_message(release: dict) -> str:
    return f"Release {release['name']} ({release['format']}, manifest {release['manifest_sha256'][:12]})"


def push_release(store: Store, run: Run, release: dict, repo_id: str, private: bool, folder: Path | None = None,
                 dry_run: bool = False) -> dict:
    """Create the dataset repository if needed and upload the release folder in one call."""
    folder = Path(folder or release["path"])
    manifest = json.loads(release["manifest"])
    problems, extra = compare_folder(folder, manifest)
    if problems:
        raise BadInput(f"{folder} no longer matches release {release['name']!r} ({problems[0]}"
                       f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}); export it again")
    result: dict = {"extra": extra, "files": [(name, (folder / name).stat().st_size) for name in sorted(manifest)]}
    if dry_run:
        return result
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    token = get_token()
    if not token:
        raise BadInput("no Hugging Face token: run `hf auth login` or set HF_TOKEN")

    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import disable_progress_bars

    if progress_disabled():
        disable_progress_bars()
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.create_commit(
            repo_id=repo_id, repo_type="dataset", commit_message=commit_message(release),
            operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
                        for name in sorted(manifest)],
            commit_description=f"promptmill release #{release['id']}, manifest sha256 {release['manifest_sha256']}",
        )
    except (HfHubHTTPError, OSError, ValueError) as exc:
        # OSError covers connection failures of both the HTTP client and the xet uploader.
        raise PushFailed(f"push to {repo_id} failed: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
    with store.transaction() as conn:
        before = conn.total_changes
        conn.execute(
            "INSERT INTO release_pushes (release_id, repo_id, endpoint, private, files, commit_oid, commit_url, "
            "created_at, run_id) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM release_pushes "
            "WHERE release_id = ? AND repo_id = ? AND endpoint = ? AND commit_oid = ?)",
            (release["id"], repo_id, api.endpoint, int(private), len(manifest), info.oid, info.commit_url, now(),
             run.id, release["id"], repo_id, api.endpoint, info.oid))
        result["recorded"] = conn.total_changes > before
    result.update(commit_url=info.commit_url, oid=info.oid)
    return result
