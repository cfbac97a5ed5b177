"""What every step script shares: the --db option, one-line errors, the run and its summary."""

from __future__ import annotations

import contextlib
import sys

import click

from promptmill.runs import Run, start_run
from promptmill.store import default_db_path, open_store


class BadInput(click.ClickException):
    """An unusable command (missing file, wrong option): one line on stderr, exit 2."""

    exit_code = 2


def db_option(f):
    return click.option(
        "--db", "db_path", default=default_db_path, show_default="db/promptmill.db or $PROMPTMILL_DB",
        envvar="PROMPTMILL_DB", type=click.Path(dir_okay=False),
        help="The promptmill database (its image blobs live beside it).",
    )(f)


@contextlib.contextmanager
def step_run(db_path: str, step: str, command: str, params: dict):
    """Open the store, record a run, yield (store, run), then print the run's summary."""
    store = open_store(db_path)
    try:
        with start_run(store, step, command, params) as run:
            yield store, run
        print_summary(run)
    finally:
        store.close()


def print_summary(run: Run):
    counts = ", ".join(f"{key} {value:,}" for key, value in sorted(run.counts.items())) or "nothing to do"
    click.echo(f"{run.step} {run.command}: {counts} (run {run.id})", err=True)


def main(group: click.Group):
    """Run a step's click group; usage errors become one line and exit status 2."""
    try:
        group.main(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(0)
    except click.UsageError as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
