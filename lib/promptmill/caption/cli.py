"""06_caption: Caption, tag and score images; edit captions with history."""

import click

from promptmill.caption.base import Captioner, captioner_names, load_captioner
from promptmill.cli import StepGroup, db_option, source_option, step_run
from promptmill.core.sources import resolve_sources
from promptmill.engine.base import engine_options

STEP = "06_caption"


class CaptionGroup(StepGroup):
    """The step's own commands plus one per registered captioner (built-in or from an entry point)."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *captioner_names()})

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None or name not in captioner_names():
            return command
        return captioner_command(load_captioner(name))


@click.group(cls=CaptionGroup)
def cli():
    """Caption, tag and score images; edit captions with history."""


def captioner_command(captioner_class: type[Captioner]) -> click.Command:
    """`caption NAME`: the shared options, the captioner's own, and the generic loop."""

    def command(db_path, model, revision, batch_size, limit, engine, address, workers, num_gpus_per_worker, shard,
                out_dir, **options):
        from promptmill.caption.base import caption_images
        from promptmill.engine.base import check_engine_options

        shard = check_engine_options(engine, shard, out_dir)
        captioner = captioner_class(model, revision, **options)
        params = {**captioner.settings(), "params_hash": captioner.params_hash, **captioner.run_params(),
                  "batch_size": batch_size, "limit": limit}
        with step_run(db_path, STEP, captioner_class.name, params) as (store, run):
            if engine == "local" and shard is None:
                caption_images(store, run, captioner, batch_size, limit)
                return
            from promptmill.caption import work
            from promptmill.engine.base import execute

            execute(store, run, work.task(captioner, options, store, batch_size),
                    work.plan_rows(captioner, store, limit), shard, out_dir,
                    {"address": address, "workers": workers, "num_gpus_per_worker": num_gpus_per_worker})
            if shard is None:
                captioner.finish(store, run)

    for option in reversed(captioner_class.cli_options):
        command = option(command)
    command = engine_options(command)
    command = click.option("--limit", default=None, type=click.IntRange(1), help="At most this many images.")(command)
    command = click.option("--batch-size", default=captioner_class.default_batch_size, show_default=True,
                           type=click.IntRange(1))(command)
    command = click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")(command)
    command = click.option("--model", default=captioner_class.default_model, show_default=True,
                           help="Hub id or local folder.")(command)
    command = db_option(command)
    return click.command(captioner_class.name, help=captioner_class.__doc__)(command)


# --- API captioners: gemini, vlm ---


def _api_caption_options(default_model: str, base_url_help: str):
    from promptmill.caption.api import DEFAULT_INSTRUCTION
    from promptmill.llm.options import call_options

    def decorate(f):
        f = click.option("--limit", type=click.IntRange(1), help="Caption at most this many images.")(f)
        f = click.option("--temperature", default=0.2, show_default=True, type=float)(f)
        f = click.option("--max-tokens", default=200, show_default=True, type=click.IntRange(1),
                         help="Longest answer, in tokens (also the budget estimate).")(f)
        f = click.option("--instruction", default=str(DEFAULT_INSTRUCTION), type=click.Path(exists=True, dir_okay=False),
                         show_default="schema/templates/gemini_reverse_prompt.txt",
                         help="The instruction sent with each image (a 30-60 word ordered prompt by default).")(f)
        f = click.option("--base-url", help=base_url_help)(f)
        return call_options(default_model, base_url=False)(f)

    return decorate


def _run_api_captions(db_path, command, params, provider_factory, jobs_factory, count, dry_run, prices, model,
                      options):
    from promptmill.caption.api import caption_writer
    from promptmill.core.progress import bar
    from promptmill.core.runs import redact
    from promptmill.llm.runner import CallRunner, price_table_for, settings_from

    price_table = price_table_for(model, prices, options["max_cost"])
    settings = settings_from(options)
    with step_run(db_path, STEP, command, params) as (store, run):
        provider = provider_factory(settings)
        with bar(count(store), command, "image") as progress:
            runner = CallRunner(store, run, provider, settings, price_table,
                                caption_writer(run, command, redact(model), params["config"]), progress)
            if dry_run:
                click.echo(runner.dry_run(jobs_factory(store)).line(), err=True)
                return
            runner.run_jobs(jobs_factory(store))


@cli.command()
@db_option
@_api_caption_options("gemini-2.5-flash", "Another endpoint for the Gemini API or Vertex AI (a proxy, a test server).")
@click.option("--project", envvar="GOOGLE_CLOUD_PROJECT", show_envvar=True,
              help="Google Cloud project: use Vertex AI with Application Default Credentials.")
@click.option("--location", default="us-central1", show_default=True, envvar="GOOGLE_CLOUD_LOCATION",
              help="Vertex AI region (or 'global').")
def gemini(db_path, project, location, base_url, instruction, max_tokens, temperature, limit, model, prices,
           dry_run, **options):
    """Reverse prompts for kept images with Gemini: on Vertex AI (--project) or with GOOGLE_API_KEY.

    Images are sent as bytes with the instruction; each call is recorded in the api_calls ledger
    (the image by its sha256) with its usage, so an image is never paid for twice."""
    from pathlib import Path

    from promptmill.caption import api as reverse_prompt
    from promptmill.llm import gemini as gemini_api

    if not dry_run and not project and not gemini_api.api_key_from_env():
        from promptmill.cli import BadInput

        raise BadInput("no Gemini endpoint configured: pass --project (Vertex AI, with Application Default "
                       "Credentials) or set GOOGLE_API_KEY in the environment")
    text = Path(instruction).read_text(encoding="utf-8").strip()
    config = {"max_output_tokens": max_tokens, "temperature": temperature}
    phash = reverse_prompt.params_hash("gemini", model, text, config)
    params = {"model": model, "project": project, "location": location if project else None, "base_url": base_url,
              "instruction": instruction, "config": config, "params_hash": phash, "limit": limit,
              "dry_run": dry_run, **options}

    def provider(settings):
        client = None if dry_run else gemini_api.make_client(project, location, base_url, settings.timeout)
        return gemini_api.GeminiGenerate(model, client, reverse_prompt.parse_caption, config)

    def count(store):
        found = reverse_prompt.count_uncaptioned(store, "gemini", phash)
        return min(found, limit) if limit else found

    _run_api_captions(db_path, "gemini", params, provider,
                      lambda store: reverse_prompt.gemini_jobs(store, model, text, config, limit),
                      count, dry_run, prices, model, options)


@cli.command()
@db_option
@_api_caption_options("Qwen/Qwen2.5-VL-7B-Instruct", "The OpenAI-compatible vision server (vLLM, Ollama: "
                      "http://localhost:11434/v1); api.openai.com when not given.")
def vlm(db_path, base_url, instruction, max_tokens, temperature, limit, model, prices, dry_run, **options):
    """Reverse prompts for kept images with a vision model behind any OpenAI-compatible API.

    Serve JoyCaption, Qwen-VL, LLaVA ... with vLLM or Ollama and pass --base-url; images go as
    data URLs. OPENAI_API_KEY is sent when set (api.openai.com needs it)."""
    from pathlib import Path

    from promptmill.caption import api as reverse_prompt
    from promptmill.llm.openai_chat import OpenAIChat, require_endpoint

    if not dry_run:
        require_endpoint(base_url)
    text = Path(instruction).read_text(encoding="utf-8").strip()
    config = {"max_tokens": max_tokens, "temperature": temperature}
    phash = reverse_prompt.params_hash("vlm", model, text, config)
    params = {"model": model, "base_url": base_url, "instruction": instruction, "config": config,
              "params_hash": phash, "limit": limit, "dry_run": dry_run, **options}

    def count(store):
        found = reverse_prompt.count_uncaptioned(store, "vlm", phash)
        return min(found, limit) if limit else found

    _run_api_captions(
        db_path, "vlm", params,
        lambda settings: OpenAIChat(model, reverse_prompt.parse_caption, base_url=base_url, timeout=settings.timeout),
        lambda store: reverse_prompt.vlm_jobs(store, model, text, max_tokens, temperature, limit),
        count, dry_run, prices, model, options)


# --- curation: edit, stats ---


def _scope_options(f):
    f = source_option("the images")(f)
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
def edit(db_path, kinds, sources, trigger, position, replace, regex, remove_tags, blacklist, dedup_tags, sort,
         undo_run_id):
    """Edit current captions; each change is a new caption row (kind 'edit') pointing at its parent."""
    import re

    from promptmill.caption.edit import EditOps, edit_captions, load_blacklist, split_tags, undo_run
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
    params = {"ops": ops.as_dict(), "kinds": list(kinds), "undo": undo_run_id}
    with step_run(db_path, STEP, "edit", params) as (store, run):
        if undo_run_id is not None:
            undo_run(store, run, undo_run_id)
        else:
            edit_captions(store, run, ops, tuple(kinds), resolve_sources(store, sources))


@cli.command()
@db_option
@_scope_options
@click.option("--trigger", metavar="WORD", help="Report how many captions contain WORD as a tag.")
@click.option("--top", default=30, show_default=True, help="How many tags and resolutions to list.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the figures as JSON.")
def stats(db_path, kinds, sources, trigger, top, json_path):
    """Tag frequency, caption length in CLIP tokens, trigger coverage and resolutions of current captions."""
    import json
    from pathlib import Path

    from promptmill.caption.stats import caption_stats, current_captions, format_stats
    from promptmill.cli import read_only

    with read_only(db_path) as store:
        figures = caption_stats(current_captions(store, tuple(kinds), resolve_sources(store, sources)), trigger, top)
        click.echo(format_stats(figures))
        if json_path:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(figures, indent=2), encoding="utf-8")

