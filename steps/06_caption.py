#!/usr/bin/env python3
"""06_caption: Caption, tag and score images; edit captions with history."""

import click

from promptmill.cli import db_option, main, step_run  # noqa: F401

STEP = "06_caption"


@click.group(no_args_is_help=True)
def cli():
    """Caption, tag and score images; edit captions with history."""


# --- local models: blip, wd14, clipscore ---


# --- API captioners: gemini, vlm ---


# --- curation: edit, stats ---


def _scope_options(f):
    f = click.option("--source", "source_id", type=int, help="Only images found in this source id.")(f)
    return click.option("--kind", "kinds", multiple=True,
                        help="Only caption chains that started as this kind (blip, wd14, human, ...); repeatable.")(f)


@cli.command()
@db_option
@_scope_options
@click.option("--add-trigger", "trigger", metavar="WORD", help="Add WORD as a tag unless already there.")
@click.option("--position", type=click.Choice(["start", "end", "random"]), default="start", show_default=True,
              help="Where the trigger goes; random is seeded by the image id.")
@click.option("--replace", nargs=2, multiple=True, metavar="OLD NEW", help="Replace whole tag OLD by NEW.")
@click.option("--regex", is_flag=True, help="--replace OLD is a regular expression over the whole caption.")
@click.option("--remove-tags", default="", metavar="A,B", help="Remove these whole tags.")
@click.option("--blacklist", type=click.Path(exists=True, dir_okay=False), help="Remove tags listed in FILE.")
@click.option("--dedup-tags", is_flag=True, help="Drop repeated tags, keeping the first.")
@click.option("--sort", is_flag=True, help="Sort tags alphabetically (the trigger stays where --position says).")
@click.option("--undo", "undo_run_id", type=int, metavar="RUN", help="Revert the edits made by run RUN.")
def edit(db_path, kinds, source_id, trigger, position, replace, regex, remove_tags, blacklist, dedup_tags, sort,
         undo_run_id):
    """Edit current captions; each change is a new caption row (kind 'edit') pointing at its parent."""
    import re

    from promptmill.caption_edit import EditOps, edit_captions, load_blacklist, split_tags, undo_run
    from promptmill.cli import BadInput

    try:
        ops = EditOps(replace=tuple(tuple(pair) for pair in replace), regex=regex,
                      remove_tags=tuple(split_tags(remove_tags)),
                      blacklist=load_blacklist(blacklist) if blacklist else (), dedup_tags=dedup_tags,
                      sort=sort, trigger=(trigger or "").strip() or None, position=position)
    except re.error as exc:
        raise BadInput(f"--replace pattern is not a regular expression: {exc}") from exc
    if ops.is_empty() == (undo_run_id is None):
        raise BadInput("give either edit options or --undo RUN (not both)")
    params = {"ops": ops.as_dict(), "kinds": list(kinds), "source": source_id, "undo": undo_run_id}
    with step_run(db_path, STEP, "edit", params) as (store, run):
        if undo_run_id is not None:
            undo_run(store, run, undo_run_id)
        else:
            edit_captions(store, run, ops, tuple(kinds), source_id)


@cli.command()
@db_option
@_scope_options
@click.option("--trigger", metavar="WORD", help="Report how many captions contain WORD as a tag.")
@click.option("--top", default=30, show_default=True, help="How many tags and resolutions to list.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the figures as JSON.")
def stats(db_path, kinds, source_id, trigger, top, json_path):
    """Tag frequency, caption length in CLIP tokens, trigger coverage and resolutions of current captions."""
    import json
    from pathlib import Path

    from promptmill.caption_stats import caption_stats, current_captions, format_stats

    params = {"kinds": list(kinds), "source": source_id, "trigger": trigger, "top": top}
    with step_run(db_path, STEP, "stats", params) as (store, run):
        figures = caption_stats(current_captions(store, tuple(kinds), source_id), trigger, top)
        run.add("captions measured", figures["captions"])
        click.echo(format_stats(figures))
        if json_path:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main(cli)
