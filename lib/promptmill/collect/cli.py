"""01_collect: read prompts, images and captions from files, exports and datasets into the store.

Every sub-command is a :class:`~promptmill.collect.base.Source` from the registry
(built-in or a plugin's): it records a `sources` row and each item's position inside
it, streams its input, commits in batches and can be killed and run again: a source
that was read to the end is skipped, a half-read one resumes where it stopped.
"""

import inspect

import click

from promptmill.cli import StepGroup, db_option, step_run
from promptmill.collect.base import Collector, Source, sources

STEP = "01_collect"


def import_once(store, run, info, read, reread_completed: bool = False) -> None:
    """Open the source, skip it if an earlier run finished it, else read it and mark it done."""
    collector = Collector(store, run, info)
    if collector.completed and not reread_completed:
        run.add("sources already imported")
        return
    collector.finish(read(collector))
    if not collector.incomplete:
        run.add("sources imported")


def source_command(source_class: type[Source]) -> click.Command:
    """`promptmill collect NAME`: the source's parameters plus --db; one run over all its imports."""

    def callback(db_path, **options):
        source = source_class(**options)
        try:
            with step_run(db_path, STEP, source_class.name, source.recorded()) as (store, run):
                for info, read in source.imports():
                    import_once(store, run, info, read, source_class.reread_completed)
        finally:
            source.close()

    doc = inspect.getdoc(source_class) or ""
    command = click.Command(source_class.name, callback=callback, params=list(source_class.params), help=doc,
                            short_help=" ".join(doc.split("\n\n")[0].split()))
    return db_option(command)


class CollectGroup(StepGroup):
    """Sub-commands from the source registry, each imported only when named."""

    def list_commands(self, ctx):
        return sorted(sources())

    def get_command(self, ctx, name):
        load = sources().get(name)
        return source_command(load()) if load else None


@click.group(cls=CollectGroup)
def cli():
    """Collect prompts and images into the promptmill database."""
