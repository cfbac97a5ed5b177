"""07_label: Label prompts with an LLM or with people in Label Studio."""

import click

from promptmill.cli import StepGroup, db_option, source_option, step_run
from promptmill.core.sources import resolve_sources

STEP = "07_label"


@click.group(cls=StepGroup)
def cli():
    """Label prompts with an LLM or with people in Label Studio."""


# --- LLM labels: describe ---


def _describe_options(f):
    from promptmill.label.describe import DEFAULT_MODEL, DEFAULT_TEMPLATE
    from promptmill.llm.options import call_options

    f = click.option("--limit", type=click.IntRange(1), help="Label at most this many prompts.")(f)
    f = click.option("--temperature", default=0.0, show_default=True, type=float)(f)
    f = click.option("--max-tokens", default=60, show_default=True, type=click.IntRange(1),
                     help="Longest answer, in tokens (also the budget estimate).")(f)
    f = click.option("--template", default=str(DEFAULT_TEMPLATE), show_default="schema/templates/describe.toml",
                     type=click.Path(exists=True, dir_okay=False), help="Few-shot template (TOML).")(f)
    return call_options(DEFAULT_MODEL)(f)


@cli.command()
@db_option
@_describe_options
def describe(db_path, template, max_tokens, temperature, limit, model, base_url, prices, dry_run, **options):
    """Label every kept prompt without a description: a short plain description, or `_no_object`.

    Uses OpenAI (OPENAI_API_KEY) or any OpenAI-compatible server (--base-url). Each request is
    recorded in the api_calls ledger before its label; a request already paid for is never sent again."""
    from promptmill.cli import BadInput
    from promptmill.core.progress import bar
    from promptmill.core.runs import redact
    from promptmill.label import describe as describing
    from promptmill.llm.openai_chat import OpenAIChat, require_endpoint
    from promptmill.llm.runner import CallRunner, price_table_for, settings_from

    if not dry_run:
        require_endpoint(base_url)
    price_table = price_table_for(model, prices, options["max_cost"])
    try:
        loaded = describing.load_template(template)
    except (ValueError, KeyError, OSError) as exc:
        raise BadInput(f"bad template {template}: {exc}") from exc
    template_sha = describing.template_sha(template)
    params = {"model": model, "base_url": base_url, "template": template, "template_sha256": template_sha,
              "max_tokens": max_tokens, "temperature": temperature, "limit": limit, "dry_run": dry_run, **options}
    with step_run(db_path, STEP, "describe", params) as (store, run):
        settings = settings_from(options)
        provider = OpenAIChat(model, describing.parse_answer, base_url=base_url, timeout=settings.timeout)
        todo = describing.count_unlabelled(store)
        todo = min(todo, limit) if limit else todo
        with bar(todo, "describe", "prompt") as progress:
            runner = CallRunner(store, run, provider, settings, price_table,
                                describing.label_writer(run, redact(model), template_sha), progress)
            jobs = describing.jobs(store, loaded, model, max_tokens, temperature, limit)
            if dry_run:
                click.echo(runner.dry_run(jobs).line(), err=True)
                return
            runner.run_jobs(jobs)


# --- Label Studio: ls-export, ls-import, ls-push, ls-pull ---


def _config_option(f):
    return click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
                        help="Labelling config whose controls the tasks use "
                             "[schema/labelstudio/image_review.xml].")(f)


@cli.command("ls-export")
@db_option
@click.argument("out", type=click.Path(dir_okay=False))
@_config_option
@click.option("--document-root", type=click.Path(file_okay=False),
              help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT; image paths are relative to it [the database folder].")
@click.option("--url-prefix", help="Serve images from PREFIX + path under the document root instead of local files.")
@source_option("the images")
def ls_export(db_path, out, config_path, document_root, url_prefix, sources):
    """Write Label Studio tasks for every kept image to OUT (JSON), with predictions pre-filled."""
    import json
    from pathlib import Path

    from promptmill.cli import BadInput
    from promptmill.label.labelstudio import DEFAULT_CONFIG, build_tasks, read_config

    controls = read_config(config_path or DEFAULT_CONFIG)
    params = {"config": str(config_path or DEFAULT_CONFIG), "document_root": document_root,
              "url_prefix": url_prefix}
    with step_run(db_path, STEP, "ls-export", params) as (store, run):
        root = Path(document_root) if document_root else store.path.parent
        if not store.blobs.root.resolve().is_relative_to(root.resolve()):
            raise BadInput(f"the image store {store.blobs.root} is not under --document-root {root}")
        tasks = build_tasks(store, controls, root, url_prefix, resolve_sources(store, sources))
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(tasks, indent=1, ensure_ascii=False), encoding="utf-8")
        run.add("tasks exported", len(tasks))
        run.add("tasks with predictions", sum("predictions" in task for task in tasks))


@cli.command("ls-import")
@db_option
@click.argument("export", type=click.Path(exists=True, dir_okay=False))
@_config_option
def ls_import(db_path, export, config_path):
    """Read a Label Studio export (JSON, JSON_MIN, CSV or TSV) or the SSLQ flat CSV into human captions,
    labels, scores and review decisions; JSON_MIN, CSV and TSV name the controls of --config."""
    from pathlib import Path

    from promptmill.label.labelstudio import DEFAULT_CONFIG, import_answers, read_config

    controls = read_config(config_path or DEFAULT_CONFIG)
    params = {"export": export, "config": str(config_path or DEFAULT_CONFIG)}
    with step_run(db_path, STEP, "ls-import", params) as (store, run):
        run.add(f"format {import_answers(store, run, Path(export), controls)}")


@cli.command("ls-push")
@db_option
@click.option("--project", "title", default="promptmill", show_default=True, help="Project title in Label Studio.")
@_config_option
@click.option("--document-root", type=click.Path(file_okay=False),
              help="The server's LOCAL_FILES_DOCUMENT_ROOT, if not the database folder (it must hold it).")
@source_option("the images")
def ls_push(db_path, title, config_path, document_root, sources):
    """Send kept images as tasks to the Label Studio at LABEL_STUDIO_URL (token: LABEL_STUDIO_API_KEY).

    Creates or reuses the project, adds a local-files storage at <db folder>/blobs, imports only images
    not yet tasks there, and creates or updates their promptmill predictions."""
    from pathlib import Path

    from promptmill.cli import BadInput
    from promptmill.label import ls_api
    from promptmill.label.labelstudio import DEFAULT_CONFIG, read_config

    config = Path(config_path or DEFAULT_CONFIG)
    controls = read_config(config)
    server = ls_api.server_from_env()
    params = {"server": server.url, "project": title, "config": str(config), "document_root": document_root}
    with step_run(db_path, STEP, "ls-push", params) as (store, run):
        root = Path(document_root) if document_root else store.path.parent
        if not store.blobs.root.resolve().is_relative_to(root.resolve()):
            raise BadInput(f"the image store {store.blobs.root} is not under --document-root {root}")
        ls_api.push(store, run, server, title, config.read_text(encoding="utf-8"), controls, root,
                    resolve_sources(store, sources))


@cli.command("ls-pull")
@db_option
@click.option("--project", "title", default="promptmill", show_default=True, help="Project title in Label Studio.")
def ls_pull(db_path, title):
    """Record the annotations changed in the pushed project since its last pull (LABEL_STUDIO_URL,
    LABEL_STUDIO_API_KEY)."""
    from promptmill.label import ls_api

    server = ls_api.server_from_env()
    with step_run(db_path, STEP, "ls-pull", {"server": server.url, "project": title}) as (store, run):
        ls_api.pull(store, run, server, title)
