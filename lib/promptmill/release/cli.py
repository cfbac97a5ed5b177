"""09_upload: export releases (imagefolder, parquet, kohya, pairs, prompts and installed exporters), check
them, diff them, push them.

Every export selects the kept items (after cleaning and dedup) with their
split (no split decision: ``train``), writes OUT through a staging folder
under a lock, adds a dataset card and records a ``releases`` row with the
sha256 of every file. Exporting the same data again writes the same bytes and
records nothing new; a killed export leaves OUT as it was or finishes on the
next run; files in OUT that the release did not write are never touched.
"""

import json
import sys
from pathlib import Path

import click

from promptmill.cli import BadInput, StepGroup, db_option, read_only, step_run
from promptmill.release.base import STEP

out_argument = click.argument("out", type=click.Path(file_okay=False, path_type=Path))


def card_options(f):
    f = click.option("--card/--no-card", default=True, show_default=True,
                     help="Write README.md (dataset card) into OUT.")(f)
    f = click.option("--license", "license_id", default="other", show_default=True,
                     help="License id for the card header (e.g. cc-by-4.0, openrail).")(f)
    f = click.option("--license-name", default=None,
                     help="With --license other: its short name (default: mixed-sources).")(f)
    f = click.option("--license-link", default=None,
                     help="With --license other: where its terms are (default: the card's License section).")(f)
    f = click.option("--pretty-name", default=None, help="Title of the dataset card.")(f)
    return f


def export_command(cls) -> click.Command:
    """The `upload NAME` command of an exporter: OUT, --release, the card options and its own options."""

    def callback(db_path, out, release_name, card, license_id, license_name, license_link, pretty_name, **options):
        from promptmill.release.base import CardSettings, export

        exporter = cls({"out": str(out), **options})
        exporter.check()
        name = release_name or out.resolve().name
        settings = CardSettings(card, license_id, license_name, license_link, pretty_name)
        with step_run(db_path, STEP, cls.name, {}) as (store, run):
            recorded = export(store, run, exporter, out, name, settings)
            if recorded.without_text:
                click.echo(f"warning: {recorded.without_text:,} of {recorded.items:,} items have no text", err=True)
            for extra in recorded.extra_files[:20]:
                click.echo(f"kept (not from this release): {extra}", err=True)
            click.echo(f"release {name!r} #{recorded.release_id}: {out} (manifest {recorded.manifest_sha256[:12]})")

    command = click.Command(cls.name, callback=callback, help=(cls.__doc__ or "").strip(),
                            short_help=(cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else None)
    for decorate in (db_option, out_argument, click.option(
            "--release", "release_name", default=None, help="Release name to record (default: OUT's folder name)."),
            card_options, *cls.options):
        decorate(command)
    return command


class UploadGroup(StepGroup):
    """upload's own commands, then one command per exporter (built in or installed), made when named."""

    def list_commands(self, ctx):
        from promptmill.release.base import exporters

        return list(exporters()) + super().list_commands(ctx)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        from promptmill.release.base import exporters

        cls = exporters().get(name)
        return export_command(cls) if cls else None


@click.group(cls=UploadGroup)
def cli():
    """Export releases (imagefolder, parquet, kohya, pairs, prompts, installed exporters), cards and Hub pushes."""


@cli.command()
@db_option
@out_argument
@click.option("--release", "release_ref", required=True, help="Release name (its newest row) or #ID.")
@click.option("--license", "license_id", default=None, help="License id (default: the one the release used).")
@click.option("--license-name", default=None, help="With --license other: its short name.")
@click.option("--license-link", default=None, help="With --license other: where its terms are.")
@click.option("--pretty-name", default=None, help="Title of the dataset card.")
def card(db_path, out, release_ref, license_id, license_name, license_link, pretty_name):
    """Render the dataset card (README.md + charts) of a recorded release into OUT, e.g. to preview or relicense it."""
    from promptmill.release.base import CardSettings, exporter_for, find_release
    from promptmill.release.card import CardInfo, CardStats, render_card

    with step_run(db_path, STEP, "card", {}) as (store, run):
        release = find_release(store, release_ref)
        if not release["card_stats"]:
            raise BadInput(f"release {release['name']!r} #{release['id']} was recorded without card data; export it again")
        params = json.loads(release["params"])
        used = params.pop("card", {})
        exporter = exporter_for(release["format"])(params)
        stats = CardStats.from_json(json.loads(release["card_stats"]))
        settings = CardSettings(True, license_id or used.get("license", "other"),
                                license_name or used.get("license_name"), license_link or used.get("license_link"),
                                pretty_name or used.get("pretty_name"))
        files = render_card(store, CardInfo(
            name=release["name"], exporter=exporter, out=Path(release["path"]), stats=stats, settings=settings,
            scope_sql=f"SELECT item_id FROM release_items WHERE release_id = {int(release['id'])}"))
        for relative, data in files.items():
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        run.add("files written", len(files))
        click.echo(f"card of release {release['name']!r} #{release['id']}: {out / 'README.md'}")


@cli.command()
@db_option
@click.argument("old")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True, help="Print the whole difference as JSON.")
@click.option("--limit", default=20, show_default=True, help="Items listed per kind (added, removed, changed).")
def diff(db_path, old, new, as_json, limit):
    """What was added, removed and changed from release OLD to release NEW (names or #IDs)."""
    from promptmill.release.base import diff_releases

    with read_only(db_path) as store:
        result = diff_releases(store, old, new)
        if as_json:
            click.echo(json.dumps(result, indent=1, ensure_ascii=False))
            return
        click.echo(f"{result['old']['name']} #{result['old']['id']} -> {result['new']['name']} #{result['new']['id']}: "
                   f"{len(result['added']):,} added, {len(result['removed']):,} removed, "
                   f"{len(result['changed']):,} changed; files {len(result['files_added']):,} added, "
                   f"{len(result['files_removed']):,} removed, {len(result['files_changed']):,} changed")
        for sign, key in (("+", "added"), ("-", "removed")):
            for item in result[key][:limit]:
                click.echo(f"{sign} {item['item_type']} {item['item_id']} [{item['split']}] {item['file_name']}")
        for item in result["changed"][:limit]:
            what = "; ".join(f"{field}: {str(a)[:40]!r} -> {str(b)[:40]!r}" for field, (a, b) in item["changes"].items())
            click.echo(f"~ {item['item_type']} {item['item_id']}: {what}")


@cli.command()
@db_option
@click.argument("repo_id")
@click.option("--release", "release_ref", required=True, help="Release name (its newest row) or #ID.")
@click.option("--private", is_flag=True, help="Create the repository as private (if it does not exist yet).")
@click.option("--dry-run", is_flag=True, help="List the files that would be uploaded; send nothing.")
@click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the release's files are now (default: where it was exported).")
def push(db_path, repo_id, release_ref, private, dry_run, folder):
    """Upload a release to the Hub dataset repository REPO_ID (token from $HF_TOKEN only)."""
    from promptmill.release.base import find_release
    from promptmill.release.hub import push_release

    with step_run(db_path, STEP, "push", {}) as (store, run):
        release = find_release(store, release_ref)
        result = push_release(store, run, release, repo_id, private, folder, dry_run)
        for name in result["extra"][:20]:
            click.echo(f"not in the release, not uploaded: {name}", err=True)
        if result["extra"]:
            run.add("extra files left out", len(result["extra"]))
        if dry_run:
            for name, size in result["files"]:
                click.echo(f"{size:>12,}  {name}")
            run.add("files listed", len(result["files"]))
            return
        run.add("files pushed" if result["recorded"] else "files already on the Hub", len(result["files"]))
        click.echo(f"pushed release {release['name']!r} to {repo_id}: {result['commit_url']}"
                   + ("" if result["recorded"] else " (nothing changed)"))


@cli.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
def check(out):
    """Check OUT as the Hub viewer reads it (same columns and types in every row, file names that exist, no
    absolute or '..' paths, fewer than 10,000 files per folder) and against its export's manifest (every file
    present and unchanged; files that are not the release's are listed). Exit 1 when something is wrong."""
    from promptmill.release.check import check_folder

    problems, files, extra = check_folder(out)
    for problem in problems:
        click.echo(problem)
    for name in extra[:20]:
        click.echo(f"not in the release (not uploaded by push): {name}", err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {files:,} files", err=True)
        sys.exit(1)
    click.echo(f"ok: {files:,} files" + (f", {len(extra):,} not in the release" if extra else ""))
