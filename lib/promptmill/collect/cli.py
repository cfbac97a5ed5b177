"""01_collect: read prompts, images and captions from files, exports and datasets into the store.

Every sub-command records a `sources` row and each item's position inside it,
streams its input, commits in batches and can be killed and run again: a source
that was read to the end is skipped, a half-read one resumes where it stopped.
"""

from pathlib import Path

import click

from promptmill.cli import BadInput, StepGroup, db_option, step_run
from promptmill.collect.base import Collector

STEP = "01_collect"
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
EXISTING_PATH = click.Path(exists=True, path_type=Path)
TEXT_AS = click.Choice(["caption", "prompt", "both"])


@click.group(cls=StepGroup)
def cli():
    """Collect prompts and images into the promptmill database."""


def import_once(store, run, info, read) -> None:
    """Open the source, skip it if an earlier run finished it, else read it and mark it done."""
    collector = Collector(store, run, info)
    if collector.completed:
        run.add("sources already imported")
        return
    collector.finish(read(collector))
    run.add("sources imported")


@cli.command()
@db_option
@click.argument("files", nargs=-1, required=True, type=EXISTING_FILE)
def text(db_path, files):
    """One prompt per line from FILES (.txt or .txt.gz)."""
    from promptmill.collect import textfile

    with step_run(db_path, STEP, "text", {"files": [str(f) for f in files]}) as (store, run):
        for path in files:
            import_once(store, run, textfile.source_info(path), lambda c, p=path: textfile.collect_lines(c, p))


@cli.command()
@db_option
@click.argument("path", type=EXISTING_PATH)
@click.option("--format", "fmt", type=click.Choice(["dreambot", "midjourney", "messages"]), required=True,
              help="dreambot: SD bot results; midjourney: Midjourney bot results; messages: human messages.")
def discord(db_path, path, fmt):
    """Prompts from DiscordChatExporter exports (a .json/.csv file or a folder of them)."""
    from promptmill.collect import discord as source

    files = source.export_files(path)
    if not files:
        raise BadInput(f"no .json or .csv exports in {path}")
    with step_run(db_path, STEP, "discord", {"path": str(path), "format": fmt}) as (store, run):
        for file in files:
            import_once(store, run, source.source_info(file, fmt),
                        lambda c, f=file: source.collect_export(c, f, fmt))


@cli.command()
@db_option
@click.argument("path", type=EXISTING_FILE)
@click.option("--column", help="The prompt column (default: the preset's, else 'prompt').")
@click.option("--preset", type=click.Choice(["diffusiondb", "gustavosta"]), help="A known dataset layout.")
@click.option("--format", "fmt", type=click.Choice(["csv", "tsv", "jsonl", "parquet"]),
              help="Default: from the file extension.")
@click.option("--meta-column", "meta_columns", multiple=True, help="Columns kept as prompt meta (repeatable).")
def table(db_path, path, column, preset, fmt, meta_columns):
    """Prompts from a column of a CSV, TSV, JSON-lines or Parquet file, read in batches."""
    from dataclasses import replace

    from promptmill.collect import table as source

    layout = source.PRESETS[preset] if preset else source.Layout(column="prompt")
    layout = replace(layout, column=column or layout.column,
                     meta_columns=tuple(dict.fromkeys((*layout.meta_columns, *meta_columns))))
    try:
        fmt = source.table_format(path, fmt)
        source.check_columns(path, fmt, layout)
    except (ValueError, OSError) as exc:
        raise BadInput(str(exc).splitlines()[0]) from None
    params = {"path": str(path), "format": fmt, "column": layout.column, "preset": preset}
    with step_run(db_path, STEP, "table", params) as (store, run):
        import_once(store, run, source.source_info(path, fmt, layout, preset),
                    lambda c: source.collect_table(c, path, fmt, layout))


@cli.command()
@db_option
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--text-column", default="text", show_default=True, help="Caption column of metadata.jsonl/csv.")
@click.option("--text-as", type=TEXT_AS, default="caption", show_default=True,
              help="Record the text beside each image as its caption, its prompt, or both.")
def imagefolder(db_path, folder, text_column, text_as):
    """Images with sidecar .txt/.caption files, or a Hugging Face imagefolder (metadata.jsonl/csv)."""
    from promptmill.collect import imagefolder as source

    params = {"folder": str(folder), "text_column": text_column, "text_as": text_as}
    with step_run(db_path, STEP, "imagefolder", params) as (store, run):
        import_once(store, run, source.source_info(folder, text_column, text_as),
                    lambda c: source.collect_tree(c, source.folder_tree(folder), text_column, text_as,
                                                  f"imagefolder {folder.name}"))


@cli.command("zip")
@db_option
@click.argument("archive", type=EXISTING_FILE)
@click.option("--text-column", default="text", show_default=True, help="Caption column of a metadata file.")
@click.option("--text-as", type=TEXT_AS, default="caption", show_default=True)
@click.option("--max-members", type=click.IntRange(1), default=100_000, show_default=True,
              help="Refuse archives with more members (zip bombs).")
@click.option("--max-total-bytes", type=click.IntRange(1), default=20 * 1024**3, show_default=True,
              help="Refuse archives that unpack to more bytes (zip bombs).")
@click.option("--max-member-bytes", type=click.IntRange(1), default=256 * 1024**2, show_default=True,
              help="Members bigger than this are recorded as errors.")
def zip_(db_path, archive, text_column, text_as, max_members, max_total_bytes, max_member_bytes):
    """Images and sidecar captions from a ZIP, read in place (nothing is extracted to disk)."""
    import zipfile

    from promptmill.collect import archive as source
    from promptmill.collect.imagefolder import collect_tree

    try:
        tree = source.ZipTree(archive, max_members, max_total_bytes, max_member_bytes)
    except (zipfile.BadZipFile, source.ArchiveTooBig, OSError) as exc:
        raise BadInput(f"{archive.name}: {exc}") from None
    params = {"archive": str(archive), "text_column": text_column, "text_as": text_as,
              "max_members": max_members, "max_total_bytes": max_total_bytes}
    try:
        with step_run(db_path, STEP, "zip", params) as (store, run):
            import_once(store, run, source.source_info(archive, text_column, text_as),
                        lambda c: collect_tree(c, tree, text_column, text_as, f"zip {archive.name}"))
    finally:
        tree.close()


@cli.command()
@db_option
@click.option("--tags", required=True, help='Gelbooru tag query, e.g. "landscape rating:general".')
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True, help="Posts to collect.")
@click.option("--base-url", default="https://gelbooru.com", show_default=True)
@click.option("--delay", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Seconds between requests.")
def gelbooru(db_path, tags, limit, base_url, delay):
    """Images and their tags from Gelbooru (needs GELBOORU_API_KEY and GELBOORU_USER_ID)."""
    from promptmill.collect import gelbooru as source

    try:
        client = source.Client(base_url, source.credentials_from_env(), delay=delay)
    except source.MissingCredentials as exc:
        raise BadInput(str(exc)) from None
    params = {"tags": tags, "limit": limit, "base_url": base_url, "delay": delay}
    try:
        with step_run(db_path, STEP, "gelbooru", params) as (store, run):
            collector = Collector(store, run, source.source_info(base_url, tags))
            collector.finish(source.collect_posts(collector, client, tags, limit))
    except source.Unauthorized as exc:
        raise BadInput(str(exc)) from None


@cli.command()
@db_option
@click.argument("dataset")
@click.option("--split", default="train", show_default=True)
@click.option("--config", help="Dataset configuration name.")
@click.option("--streaming", is_flag=True, help="Stream rows instead of downloading the whole dataset.")
@click.option("--prompt-column", help="Column with prompts.")
@click.option("--image-column", help="Column with images.")
@click.option("--text-column", help="Column with image captions.")
def hf(db_path, dataset, split, config, streaming, prompt_column, image_column, text_column):
    """Rows of a Hugging Face dataset: a Hub id, a local data folder or a save_to_disk folder."""
    from promptmill.collect import hf as source

    if not (prompt_column or image_column):
        raise BadInput("pass --prompt-column and/or --image-column")
    try:
        loaded = source.load(dataset, split, config, streaming)
    except Exception as exc:  # datasets raises many kinds; any of them means "cannot load this"
        raise BadInput(f"cannot load {dataset}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    columns = {"prompt_column": prompt_column, "image_column": image_column, "text_column": text_column}
    names = loaded.column_names or list(loaded.features or {})
    missing = [c for c in columns.values() if c and c not in names]
    if missing:
        raise BadInput(f"{dataset} has no column {', '.join(map(repr, missing))} (it has: {', '.join(names)})")
    params = {"dataset": dataset, "split": split, "config": config, "streaming": streaming, **columns}
    with step_run(db_path, STEP, "hf", params) as (store, run):
        import_once(store, run, source.source_info(dataset, split, config, columns),
                    lambda c: source.collect_dataset(c, loaded, prompt_column, image_column, text_column))

