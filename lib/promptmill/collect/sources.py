"""The built-in sources: each one's options and what it imports, over the readers beside it.

They are registered in :data:`promptmill.collect.base.BUILTIN_SOURCES` and reached the
same way as a plugin's source; the readers are imported only when a source is built.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import click

from promptmill.collect.base import Source
from promptmill.core.errors import BadInput

EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
EXISTING_PATH = click.Path(exists=True, path_type=Path)
TEXT_AS = click.Choice(["caption", "prompt", "both"])
TEXT_COLUMN = click.Option(["--text-column"], default="text", show_default=True,
                           help="Caption column of metadata.jsonl/csv.")
TEXT_AS_OPTION = click.Option(["--text-as"], type=TEXT_AS, default="caption", show_default=True,
                              help="Record the text beside each image as its caption, its prompt, or both.")


class TextSource(Source):
    """One prompt per line from FILES (.txt or .txt.gz; UTF-8, or UTF-16 with a byte order mark)."""

    name = "text"
    params = (click.Argument(["files"], nargs=-1, required=True, type=EXISTING_FILE),)

    def imports(self):
        from promptmill.collect import textfile

        for path in self.options["files"]:
            yield textfile.source_info(path), lambda c, p=path: textfile.collect_lines(c, p)


class DiscordSource(Source):
    """Prompts from DiscordChatExporter exports (a .json/.csv file or a folder of them).

    Attachments downloaded with DiscordChatExporter's --media (the *_Files folder beside
    an export) are imported as images linked to their message's prompt."""

    name = "discord"
    params = (
        click.Argument(["path"], type=EXISTING_PATH),
        click.Option(["--format", "fmt"], type=click.Choice(["dreambot", "midjourney", "messages"]), required=True,
                     help="dreambot: SD bot results; midjourney: Midjourney bot results; messages: human messages."),
    )

    def __init__(self, **options):
        from promptmill.collect import discord

        super().__init__(**options)
        self.files = discord.export_files(options["path"])
        if not self.files:
            raise BadInput(f"no .json or .csv exports in {options['path']}")

    def imports(self):
        from promptmill.collect import discord

        fmt = self.options["fmt"]
        for file in self.files:
            yield discord.source_info(file, fmt), lambda c, f=file: discord.collect_export(c, f, fmt)


class TableSource(Source):
    """Prompts from a column of a CSV, TSV, JSON-lines or Parquet file, read in batches."""

    name = "table"
    params = (
        click.Argument(["path"], type=EXISTING_FILE),
        click.Option(["--column"], help="The prompt column (default: the preset's, else 'prompt')."),
        click.Option(["--preset"], type=click.Choice(["diffusiondb", "gustavosta"]), help="A known dataset layout."),
        click.Option(["--format", "fmt"], type=click.Choice(["csv", "tsv", "jsonl", "parquet"]),
                     help="Default: from the file extension."),
        click.Option(["--meta-column", "meta_columns"], multiple=True,
                     help="Columns kept as prompt meta (repeatable)."),
    )

    def __init__(self, **options):
        from dataclasses import replace

        from promptmill.collect import table

        super().__init__(**options)
        preset, path = options["preset"], options["path"]
        layout = table.PRESETS[preset] if preset else table.Layout(column="prompt")
        self.layout = replace(layout, column=options["column"] or layout.column,
                              meta_columns=tuple(dict.fromkeys((*layout.meta_columns, *options["meta_columns"]))))
        try:
            self.fmt = table.table_format(path, options["fmt"])
            table.check_columns(path, self.fmt, self.layout)
        except (ValueError, OSError) as exc:
            raise BadInput(str(exc).splitlines()[0]) from None

    def recorded(self):
        return {"format": self.fmt, "column": self.layout.column}

    def imports(self):
        from promptmill.collect import table

        path, preset = self.options["path"], self.options["preset"]
        yield (table.source_info(path, self.fmt, self.layout, preset),
               lambda c: table.collect_table(c, path, self.fmt, self.layout))


class ImageFolderSource(Source):
    """Images with sidecar .txt/.caption files (also x.jpg.txt), a Hugging Face imagefolder
    (metadata.jsonl/csv) or a DiffusionDB image part (part-NNNNNN.json beside the images)."""

    name = "imagefolder"
    params = (click.Argument(["folder"], type=click.Path(exists=True, file_okay=False, path_type=Path)),
              TEXT_COLUMN, TEXT_AS_OPTION)

    def imports(self):
        from promptmill.collect import imagefolder

        folder, column, text_as = self.options["folder"], self.options["text_column"], self.options["text_as"]
        yield (imagefolder.source_info(folder, column, text_as),
               lambda c: imagefolder.collect_tree(c, imagefolder.folder_tree(folder), column, text_as,
                                                  f"imagefolder {folder.name}"))


class ZipSource(Source):
    """Images and sidecar captions from a ZIP, read in place (nothing is extracted to disk);
    DiffusionDB's part-NNNNNN.zip included."""

    name = "zip"
    params = (
        click.Argument(["archive"], type=EXISTING_FILE),
        TEXT_COLUMN, TEXT_AS_OPTION,
        click.Option(["--max-members"], type=click.IntRange(1), default=100_000, show_default=True,
                     help="Refuse archives with more members (zip bombs)."),
        click.Option(["--max-total-bytes"], type=click.IntRange(1), default=20 * 1024**3, show_default=True,
                     help="Refuse archives that unpack to more bytes (zip bombs)."),
        click.Option(["--max-member-bytes"], type=click.IntRange(1), default=256 * 1024**2, show_default=True,
                     help="Members bigger than this are recorded as errors."),
    )

    def __init__(self, **options):
        from promptmill.collect import archive

        super().__init__(**options)
        path = options["archive"]
        try:
            self.tree = archive.ZipTree(path, options["max_members"], options["max_total_bytes"],
                                        options["max_member_bytes"])
        except (zipfile.BadZipFile, archive.ArchiveTooBig, OSError) as exc:
            raise BadInput(f"{path.name}: {exc}") from None

    def imports(self):
        from promptmill.collect import archive
        from promptmill.collect.imagefolder import collect_tree

        path, column, text_as = self.options["archive"], self.options["text_column"], self.options["text_as"]
        yield (archive.source_info(path, column, text_as),
               lambda c: collect_tree(c, self.tree, column, text_as, f"zip {path.name}"))

    def close(self):
        self.tree.close()


class HfSource(Source):
    """Rows of a Hugging Face dataset: a Hub id, a local data folder or a save_to_disk folder."""

    name = "hf"
    params = (
        click.Argument(["dataset"]),
        click.Option(["--split"], default="train", show_default=True),
        click.Option(["--config"], help="Dataset configuration name."),
        click.Option(["--streaming"], is_flag=True, help="Stream rows instead of downloading the whole dataset."),
        click.Option(["--prompt-column"], help="Column with prompts."),
        click.Option(["--image-column"], help="Column with images."),
        click.Option(["--text-column"], help="Column with image captions."),
    )

    def __init__(self, **options):
        from promptmill.collect import hf

        super().__init__(**options)
        dataset = options["dataset"]
        self.columns = {key: options[key] for key in ("prompt_column", "image_column", "text_column")}
        if not (self.columns["prompt_column"] or self.columns["image_column"]):
            raise BadInput("pass --prompt-column and/or --image-column")
        try:
            self.loaded = hf.load(dataset, options["split"], options["config"], options["streaming"])
        except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; any of them means "cannot load this"
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BadInput(f"cannot load {dataset}: {first}") from None
        names = self.loaded.column_names or list(self.loaded.features or {})
        missing = [c for c in self.columns.values() if c and c not in names]
        if missing:
            raise BadInput(f"{dataset} has no column {', '.join(map(repr, missing))} (it has: {', '.join(names)})")

    def imports(self):
        from promptmill.collect import hf

        o = self.options
        yield (hf.source_info(o["dataset"], o["split"], o["config"], self.columns),
               lambda c: hf.collect_dataset(c, self.loaded, o["prompt_column"], o["image_column"],
                                            o["text_column"], hf.allowed_roots(o["dataset"])))


class GelbooruSource(Source):
    """Images and their tags from Gelbooru (needs GELBOORU_API_KEY and GELBOORU_USER_ID)."""

    name = "gelbooru"
    reread_completed = True
    params = (
        click.Option(["--tags"], required=True, help='Gelbooru tag query, e.g. "landscape rating:general".'),
        click.Option(["--limit"], type=click.IntRange(1), default=100, show_default=True, help="Posts to collect."),
        click.Option(["--base-url"], default="https://gelbooru.com", show_default=True),
        click.Option(["--delay"], type=click.FloatRange(0), default=1.0, show_default=True,
                     help="Seconds between requests."),
    )

    def __init__(self, **options):
        from promptmill.collect import gelbooru

        super().__init__(**options)
        try:
            self.client = gelbooru.Client(options["base_url"], gelbooru.credentials_from_env(),
                                          delay=options["delay"])
        except (gelbooru.MissingCredentials, gelbooru.Refused) as exc:
            raise BadInput(str(exc)) from None

    def imports(self):
        from promptmill.collect import gelbooru

        tags, limit = self.options["tags"], self.options["limit"]

        def read(collector):
            try:
                return gelbooru.collect_posts(collector, self.client, tags, limit)
            except gelbooru.Unauthorized as exc:
                raise BadInput(str(exc)) from None

        yield gelbooru.source_info(self.options["base_url"], tags), read
