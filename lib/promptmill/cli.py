"""The `promptmill` command: one group per step, and what every step command shares.

`promptmill collect text …` and `python steps/01_collect.py text …` run the
same click group. The library raises :class:`~promptmill.core.errors.PromptmillError`;
only here does it become one line on stderr and an exit status.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sqlite3
import sys
from pathlib import Path

import click

from promptmill import __version__
from promptmill.core.errors import BadInput, PromptmillError, storage_error
from promptmill.core.runs import Interrupted, Run, redact_params, start_run
from promptmill.core.store import default_db_path, open_readonly, open_store

__all__ = ["BadInput", "StepGroup", "db_option", "main", "promptmill", "read_only", "step_run"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
DB_META = "promptmill.db"

# command name -> (module holding its click group, the step it runs)
STEPS = {
    "collect": "promptmill.collect.cli",
    "clean": "promptmill.clean.cli",
    "dedup": "promptmill.dedup.cli",
    "augment": "promptmill.augment.cli",
    "generate": "promptmill.generate.cli",
    "caption": "promptmill.caption.cli",
    "label": "promptmill.label.cli",
    "split": "promptmill.split.cli",
    "upload": "promptmill.release.cli",
    "ingest": "promptmill.engine.cli",
    "browse": "promptmill.datasette.cli",
}


class Failure(click.ClickException):
    """A library error on its way out of click: its message, its exit status."""

    def __init__(self, error: PromptmillError):
        super().__init__(str(error))
        self.exit_code = error.exit_code


def _remember_db(ctx: click.Context, _param, value):
    """`--db` given to a group applies to the command under it (`promptmill --db X collect text …`)."""
    if value is not None:
        ctx.meta[DB_META] = value
    return value


def _group_db_option(f):
    return click.option("--db", "group_db", default=None, envvar="PROMPTMILL_DB", expose_value=False,
                        is_eager=True, callback=_remember_db, type=click.Path(dir_okay=False),
                        help="The promptmill database (also $PROMPTMILL_DB), before or after the sub-command.")(f)


class StepGroup(click.Group):
    """A step's group: takes `--db` before its sub-command and turns library errors into exit codes."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        kwargs.setdefault("no_args_is_help", True)
        super().__init__(*args, **kwargs)
        _group_db_option(self)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PromptmillError as exc:
            raise Failure(exc) from None
        except (sqlite3.Error, OSError) as exc:
            error = storage_error(exc)
            if error is None:
                raise
            raise Failure(error) from None


def _default_db() -> str:
    ctx = click.get_current_context(silent=True)
    return (ctx.meta.get(DB_META) if ctx else None) or default_db_path()


def db_option(f):
    return click.option(
        "--db", "db_path", default=_default_db, show_default="db/promptmill.db or $PROMPTMILL_DB",
        type=click.Path(dir_okay=False),
        help="The promptmill database (its image blobs live beside it).",
    )(f)


def source_option(what: str):
    """`--source`, one meaning in every step: repeatable; an id, a path or file name, or a kind."""
    return click.option("--source", "sources", multiple=True, metavar="ID|PATH|KIND",
                        help=f"Only {what} of this source: its id, its path or file name, or its kind "
                             "(text, discord, imagefolder, ...); repeatable.")


def recorded_params(ctx: click.Context | None) -> dict:
    """Every option of the command as click parsed it, secrets redacted (paths as text, the database path
    left out)."""
    if ctx is None:
        return {}
    values = {}
    for name, value in ctx.params.items():
        if name == "db_path":
            continue
        values[name] = json.loads(json.dumps(value, default=str))
    return redact_params(values)


@contextlib.contextmanager
def step_run(db_path: str, step: str, command: str, params: dict):
    """Open the store, record a run with every parsed option plus PARAMS, yield (store, run), print a summary."""
    store = open_store(db_path)
    try:
        recorded = {**recorded_params(click.get_current_context(silent=True)), **params}
        with start_run(store, step, command, recorded) as run:
            yield store, run
        print_summary(run)
    finally:
        store.close()


@contextlib.contextmanager
def read_only(db_path: str):
    """The store of a command that only reads (reports, stats, diffs): works on a read-only database,
    never creates one, records no run."""
    store = open_readonly(db_path)
    try:
        yield store
    finally:
        store.close()


def print_summary(run: Run):
    counts = ", ".join(f"{key} {value:,}" for key, value in sorted(run.counts.items())) or "nothing to do"
    click.echo(f"{run.step} {run.command}: {counts} (run {run.id})", err=True)


class Promptmill(StepGroup):
    """The top command: step groups are imported when named, so `promptmill -h` stays instant."""

    def list_commands(self, ctx):
        return list(STEPS)

    def get_command(self, ctx, name):
        if name not in STEPS:
            return None
        return importlib.import_module(STEPS[name]).cli


@click.group(cls=Promptmill)
@click.version_option(__version__, "--version", prog_name="promptmill")
def promptmill():
    """Build text-to-image datasets with full provenance in one SQLite database.

    The steps in order: collect, clean, dedup, augment, generate, caption, label, split, upload;
    `browse` opens the database in Datasette; `ingest` folds in result shards made with --shard K/N.
    """


def main(group: click.Group = promptmill):
    """Run a click group; usage errors become one line and exit status 2, never a traceback."""
    try:
        group.main(standalone_mode=False, prog_name=Path(sys.argv[0]).name)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(0)
    except click.UsageError as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except PromptmillError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (sqlite3.Error, OSError) as exc:
        error = storage_error(exc)
        if error is None:
            raise
        click.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Interrupted:
        click.echo("interrupted (SIGTERM)", err=True)
        sys.exit(143)
    sys.exit(0)
