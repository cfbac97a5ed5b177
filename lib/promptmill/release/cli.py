"""09_upload: export releases (imagefolder, parquet, kohya, pairs, prompts), check them, diff them, push them.

Every export selects the kept items (after cleaning and dedup) with their
split (no split decision: ``train``), writes OUT through a staging folder,
adds a dataset card and records a ``releases`` row with the sha256 of every
file. Exporting the same data again writes the same bytes and records
nothing new; a killed export leaves OUT as it was or finishes on the next run.
"""

import json
import sys
from pathlib import Path

import click

from promptmill.cli import BadInput, StepGroup, db_option, step_run

STEP = "09_upload"

out_argument = click.argument("out", type=click.Path(file_okay=False, path_type=Path))


def release_option(f):
    return click.option("--release", "release_name", default=None,
                        help="Release name to record (default: OUT's folder name).")(f)


def card_options(f):
    f = click.option("--card/--no-card", default=True, show_default=True,
                     help="Write README.md (dataset card) and its charts into OUT.")(f)
    f = click.option("--license", "license_id", default="other", show_default=True,
                     help="License id for the card header (e.g. cc-by-4.0, openrail).")(f)
    f = click.option("--pretty-name", default=None, help="Title of the dataset card.")(f)
    return f


def text_from_option(default):
    return click.option("--text-from", default=default, show_default=True,
                        help="Text of each image: prompt, caption:KIND (the current caption of that kind, edits "
                        "included, e.g. caption:wd14) or label:KIND; comma-separated fallbacks, the first "
                        "with text wins (e.g. prompt,caption:imported).")


split_option = click.option("--split", "splits", multiple=True,
                            help="Only these splits (repeatable; default: all).")


def split_names(items) -> list[str]:
    from promptmill.release.base import split_sort_key

    return sorted({item["split"] for item in items}, key=split_sort_key)


def card_files(store, name, fmt, items, item_type, data_files, license_id, pretty_name, params):
    from promptmill.release.card import CardInfo, render_card

    return render_card(store, CardInfo(name=name, format=fmt, items=items, item_type=item_type,
                                       data_files=data_files, license=license_id, pretty_name=pretty_name,
                                       params=params))


def export_images(ctx_name, db_path, out, release_name, params, text_from, splits, write, data_files, card,
                  license_id, pretty_name):
    """The shared body of imagefolder, parquet and kohya."""
    from promptmill.release.base import image_items, parse_text_from, run_export

    parse_text_from(text_from)
    name = release_name or out.resolve().name
    with step_run(db_path, STEP, ctx_name, params) as (store, run):
        items = image_items(store, text_from, tuple(splits))
        if not items:
            raise BadInput("no kept images to export (collect or generate some first)")
        empty = sum(1 for item in items if not item["text"].strip())
        if empty:
            run.add("images without text", empty)
            click.echo(f"warning: {empty:,} of {len(items):,} images have no text from {text_from}", err=True)

        def extra(released):
            if not card:
                return {}
            return card_files(store, name, ctx_name, items, "image", data_files(items), license_id, pretty_name,
                              params)

        recorded = run_export(store, run, out, name, ctx_name, params, lambda folder: write(store, folder, items),
                              extra)
        click.echo(f"release {name!r} #{recorded.release_id}: {out} (manifest {recorded.manifest_sha256[:12]})")


@click.group(cls=StepGroup)
def cli():
    """Export releases (imagefolder, parquet, kohya, pairs, prompts), cards and Hub pushes."""


# --- upload ---


@cli.command()
@db_option
@out_argument
@release_option
@text_from_option("prompt")
@split_option
@card_options
def imagefolder(db_path, out, release_name, text_from, splits, card, license_id, pretty_name):
    """Images in OUT/<split>/ with one metadata.jsonl per split (Hugging Face imagefolder)."""
    from promptmill.release.imagefolder import write_imagefolder

    params = {"out": str(out), "text_from": text_from, "splits": list(splits), "card": card, "license": license_id}
    export_images("imagefolder", db_path, out, release_name, params, text_from, splits, write_imagefolder,
                  lambda items: {s: f"{s}/**" for s in split_names(items)},
                  card, license_id, pretty_name)


@cli.command()
@db_option
@out_argument
@release_option
@text_from_option("prompt")
@split_option
@click.option("--max-shard-mb", default=500, show_default=True, type=click.IntRange(1),
              help="Start a new shard before a shard's images pass this size.")
@card_options
def parquet(db_path, out, release_name, text_from, splits, max_shard_mb, card, license_id, pretty_name):
    """Parquet shards in OUT/data/ with the images embedded, 100 rows per row group."""
    from promptmill.release.parquet import write_parquet

    params = {"out": str(out), "text_from": text_from, "splits": list(splits), "max_shard_mb": max_shard_mb,
              "card": card, "license": license_id}
    export_images("parquet", db_path, out, release_name, params, text_from, splits,
                  lambda store, folder, items: write_parquet(store, folder, items, max_shard_mb * 1000 * 1000),
                  lambda items: {s: f"data/{s}-*" for s in split_names(items)},
                  card, license_id, pretty_name)


@cli.command()
@db_option
@out_argument
@click.option("--trigger", required=True, help="Trigger word: the folder's class tokens and every caption's start.")
@click.option("--repeats", default=10, show_default=True, type=click.IntRange(1), help="kohya repeats per epoch.")
@release_option
@text_from_option("prompt")
@split_option
@click.option("--toml/--no-toml", "write_toml", default=False, show_default=True,
              help="Also write dataset_config.toml with one [[datasets.subsets]].")
@click.option("--resolution", default=512, show_default=True, type=click.IntRange(64),
              help="Training resolution written into dataset_config.toml.")
@card_options
def kohya(db_path, out, trigger, repeats, release_name, text_from, splits, write_toml, resolution, card,
          license_id, pretty_name):
    """A kohya LoRA folder: OUT/<repeats>_<trigger>/ with each image and its same-stem .txt caption."""
    from promptmill.release.kohya import check_trigger, write_kohya

    check_trigger(trigger)
    params = {"out": str(out), "trigger": trigger, "repeats": repeats, "text_from": text_from,
              "splits": list(splits), "toml": write_toml, "resolution": resolution, "card": card,
              "license": license_id}

    def write(store, folder, items):
        released, empty = write_kohya(store, folder, items, trigger, repeats, write_toml, resolution)
        if empty:
            click.echo(f"warning: {empty:,} captions are only the trigger word (no text from {text_from})", err=True)
        return released

    export_images("kohya", db_path, out, release_name, params, text_from, splits, write, lambda items: {},
                  card, license_id, pretty_name)


@cli.command()
@db_option
@out_argument
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "strings"]), default="jsonl", show_default=True)
@click.option("--template", default="{description}\\t{prompt}", show_default=True,
              help="Record template of --format strings: {description}, {prompt}, {prompt_id}, {id}; \\t and \\n work.")
@release_option
@card_options
def pairs(db_path, out, fmt, template, release_name, card, license_id, pretty_name):
    """Description -> prompt pairs (07_label descriptions, no _no_object), one file per split."""
    from promptmill.release.base import pair_items, run_export
    from promptmill.release.text import check_template, write_pairs

    template = check_template(template) if fmt == "strings" else template
    name = release_name or out.resolve().name
    params = {"out": str(out), "format": fmt, "template": template if fmt == "strings" else None, "card": card,
              "license": license_id}
    with step_run(db_path, STEP, "pairs", params) as (store, run):
        items = pair_items(store)
        if not items:
            raise BadInput("no kept prompts with a description label (run 07_label describe first)")
        pattern = {"jsonl": "{}.jsonl", "csv": "{}.csv", "strings": "{}_strings.txt"}[fmt]
        card_items = [{**item, "text": item["prompt"]} for item in items]

        def extra(released):
            data_files = {s: pattern.format(s) for s in split_names(items)} if fmt != "strings" else {}
            return card_files(store, name, "pairs", card_items, "prompt", data_files, license_id, pretty_name,
                              params) if card else {}

        recorded = run_export(store, run, out, name, "pairs", params,
                              lambda folder: write_pairs(folder, items, fmt, template), extra)
        click.echo(f"release {name!r} #{recorded.release_id}: {out} (manifest {recorded.manifest_sha256[:12]})")


@cli.command()
@db_option
@out_argument
@click.option("--format", "fmt", type=click.Choice(["txt", "jsonl"]), default="txt", show_default=True)
@click.option("--split", default=None, help="Only prompts of this split.")
@release_option
@card_options
def prompts(db_path, out, fmt, split, release_name, card, license_id, pretty_name):
    """The kept prompts (cleaned, deduplicated): prompts.txt one per line, or prompts.jsonl with provenance."""
    from promptmill.release.base import prompt_items, run_export
    from promptmill.release.text import write_prompts

    name = release_name or out.resolve().name
    params = {"out": str(out), "format": fmt, "split": split, "card": card, "license": license_id}
    with step_run(db_path, STEP, "prompts", params) as (store, run):
        items = prompt_items(store, split)
        if not items:
            raise BadInput("no kept prompts to export" + (f" in split {split!r}" if split else ""))

        def extra(released):
            return card_files(store, name, "prompts", items, "prompt", {"train": f"prompts.{fmt}"}, license_id,
                              pretty_name, params) if card else {}

        recorded = run_export(store, run, out, name, "prompts", params,
                              lambda folder: write_prompts(folder, items, fmt), extra)
        click.echo(f"release {name!r} #{recorded.release_id}: {out} (manifest {recorded.manifest_sha256[:12]})")


@cli.command()
@db_option
@out_argument
@click.option("--release", "release_ref", required=True, help="Release name (its newest row) or #ID.")
@click.option("--license", "license_id", default=None, help="License id (default: the one the release used).")
@click.option("--pretty-name", default=None, help="Title of the dataset card.")
def card(db_path, out, release_ref, license_id, pretty_name):
    """Render the dataset card (README.md + charts) of a recorded release into OUT, e.g. to preview or relicense it."""
    from promptmill.release.base import find_release, image_items, pair_items, prompt_items, release_items
    from promptmill.release.card import CardInfo, render_card

    with step_run(db_path, STEP, "card", {"out": str(out), "release": release_ref}) as (store, run):
        release = find_release(store, release_ref)
        params = json.loads(release["params"])
        recorded = release_items(store, release["id"])
        if release["format"] in ("imagefolder", "parquet", "kohya"):
            items = [{**item, "text": recorded[("image", item["image_id"])]["text"] or "",
                      "split": recorded[("image", item["image_id"])]["split"]}
                     for item in image_items(store, params.get("text_from", "prompt"))
                     if ("image", item["image_id"]) in recorded]
            item_type = "image"
        else:
            found = pair_items(store) if release["format"] == "pairs" else prompt_items(store)
            items = [{**item, "text": item.get("prompt", item.get("text", "")),
                      "split": recorded[("prompt", item["prompt_id"])]["split"]}
                     for item in found if ("prompt", item["prompt_id"]) in recorded]
            item_type = "prompt"
        files = render_card(store, CardInfo(name=release["name"], format=release["format"], items=items,
                                            item_type=item_type, license=license_id or params.get("license", "other"),
                                            pretty_name=pretty_name, params=params))
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

    with step_run(db_path, STEP, "diff", {"old": old, "new": new}) as (store, run):
        result = diff_releases(store, old, new)
        for key in ("added", "removed", "changed"):
            run.add(f"items {key}", len(result[key]))
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

    params = {"repo_id": repo_id, "release": release_ref, "private": private, "dry_run": dry_run,
              "folder": str(folder) if folder else None}
    with step_run(db_path, STEP, "push", params) as (store, run):
        release = find_release(store, release_ref)
        result = push_release(store, run, release, repo_id, private, folder, dry_run)
        if dry_run:
            for name, size in result["files"]:
                click.echo(f"{size:>12,}  {name}")
            run.add("files listed", len(result["files"]))
            return
        run.add("files pushed", result["files"])
        click.echo(f"pushed release {release['name']!r} to {repo_id}: {result['commit_url']}")


@cli.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
def check(out):
    """Check OUT as the Hub viewer reads it: same columns and types in every row, file names that exist, no
    absolute or '..' paths, fewer than 10,000 files per folder. Exit 1 when something is wrong."""
    from promptmill.release.check import check_folder

    problems, files = check_folder(out)
    for problem in problems:
        click.echo(problem)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {files:,} files", err=True)
        sys.exit(1)
    click.echo(f"ok: {files:,} files")

