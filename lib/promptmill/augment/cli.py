"""04_augment: Write new prompts with an LLM in the style of example prompts, never paying twice."""

import math
from pathlib import Path

import click

from promptmill.cli import BadInput, StepGroup, db_option, step_run

STEP = "04_augment"


@click.group(cls=StepGroup)
def cli():
    """Write new prompts with an LLM in the style of example prompts, never paying twice."""


# --- augment ---


def _augment_options(f):
    from promptmill.augment.fewshot import DEFAULT_MODEL, DEFAULT_SEEDS, DEFAULT_TEMPLATE
    from promptmill.llm.options import call_options

    options = [
        click.option("--seeds", "seeds_path", default=str(DEFAULT_SEEDS), show_default=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Example prompts, one per line (imported as a text source)."),
        click.option("--k1", "k_seeds", default=4, show_default=True, type=click.IntRange(0),
                     help="Examples per request from the seed file."),
        click.option("--k2", "k_collected", default=2, show_default=True, type=click.IntRange(0),
                     help="Examples per request from the collected (kept, non-augment) prompts."),
        click.option("--per-call", "-n", default=10, show_default=True, type=click.IntRange(1, 100),
                     help="Prompts asked for in each request."),
        click.option("--target", default=100, show_default=True, type=click.IntRange(1),
                     help="Stop once this many new unique prompts exist in this augment source."),
        click.option("--max-requests", type=click.IntRange(1),
                     help="Never send more requests than this  [default: 4 x target / per-call + concurrency]."),
        click.option("--avoid", default="", help="Comma-separated topics the prompts must avoid "
                     "(told to the model; prompts that still mention one are dropped)."),
        click.option("--seed", default=0, show_default=True, type=int,
                     help="Seeds the example sampling of request i, so a resumed run sends the same requests."),
        click.option("--near-dup-bits", default=3, show_default=True, type=click.IntRange(0, 16),
                     help="Simhash (word features) Hamming distance that counts as a near-duplicate."),
        click.option("--structured/--plain", default=True, show_default=True,
                     help="Ask for JSON through response_format (servers without it: --plain)."),
        click.option("--temperature", default=1.0, show_default=True, type=float),
        click.option("--max-tokens", type=click.IntRange(1), help="Longest reply  [default: 80 x per-call]."),
        click.option("--template", default=str(DEFAULT_TEMPLATE), show_default="schema/templates/augment.toml",
                     type=click.Path(exists=True, dir_okay=False), help="Prompt template (TOML)."),
    ]
    for option in reversed(options):
        f = option(f)
    return call_options(DEFAULT_MODEL)(f)


@cli.command()
@db_option
@_augment_options
def openai(db_path, seeds_path, k_seeds, k_collected, per_call, target, max_requests, avoid, seed, near_dup_bits,
           structured, temperature, max_tokens, template, model, base_url, prices, dry_run, **options):
    """New prompts in the style of --seeds, from OpenAI (OPENAI_API_KEY) or an OpenAI-compatible --base-url.

    Each request shows K1 seed examples and K2 collected prompts and asks for N new prompts,
    avoiding the --avoid topics. Every reply is stored in the api_calls ledger with its prompts,
    which are deduplicated (exact and simhash) against every prompt in the database as they arrive."""
    from itertools import islice

    from promptmill.augment import fewshot as augment
    from promptmill.collect.base import file_sha256
    from promptmill.core.progress import bar
    from promptmill.core.text import sha256_hex
    from promptmill.llm.openai_chat import OpenAIChat, require_endpoint
    from promptmill.llm.runner import CallRunner, price_table_for, settings_from

    if not dry_run:
        require_endpoint(base_url)
    price_table = price_table_for(model, prices, options["max_cost"])
    try:
        loaded = augment.load_template(template)
    except (ValueError, KeyError, IndexError, OSError) as exc:
        raise BadInput(f"bad template {template}: {exc}") from exc
    settings = augment.Settings(
        model=model, seeds_source_sha=file_sha256(seeds_path), k_seeds=k_seeds, k_collected=k_collected,
        per_call=per_call, avoid=augment.parse_avoid(avoid), seed=seed,
        template_sha=sha256_hex(Path(template).read_bytes()), structured=structured, temperature=temperature,
        max_tokens=max_tokens or 80 * per_call)
    call_settings = settings_from(options)
    max_requests = max_requests or 4 * math.ceil(target / per_call) + call_settings.concurrency
    params = {**settings.__dict__, "seeds": str(seeds_path), "target": target, "max_requests": max_requests,
              "near_dup_bits": near_dup_bits, "base_url": base_url, "template": template, "dry_run": dry_run,
              **options}
    with step_run(db_path, STEP, "openai", params) as (store, run):
        seeds_source = augment.collect_seeds(store, run, seeds_path)
        pools = augment.load_pools(store, seeds_source)
        if not pools.seeds and not pools.collected:
            raise BadInput(f"no example prompts: {seeds_path} is empty and nothing is collected")
        source_id = augment.open_source(store, run, settings)
        writer = augment.PromptWriter(store, run, source_id, settings, augment.build_index(store, near_dup_bits))
        provider = OpenAIChat(model, augment.parse_prompts, base_url=base_url, timeout=call_settings.timeout)
        runner = CallRunner(store, run, provider, call_settings, price_table, writer)
        jobs = augment.jobs(settings, pools, loaded, max_requests)
        if dry_run:
            needed = math.ceil(max(0, target - writer.unique) / per_call)
            click.echo(f"{writer.unique:,} of {target:,} unique prompts exist; {needed:,} more requests "
                       f"if every prompt returned is new", err=True)
            click.echo(runner.dry_run(islice(jobs, needed)).line(), err=True)
            return
        runner.claim_scope = f"augment-source:{source_id}"
        with bar(target, "augment", "prompt") as progress:
            progress.update(min(writer.unique, target))
            elsewhere = augment.InFlightElsewhere(store, writer, runner)

            def reached() -> bool:
                elsewhere.refresh()
                progress.update(max(0, min(writer.unique, target) - progress.n))
                return writer.unique >= target

            # Requests in flight, here or in another run, are counted as if each brought --per-call new prompts.
            runner.run_jobs(jobs, should_stop=reached,
                            hold=lambda: writer.unique + (runner.in_flight + elsewhere.count) * per_call >= target)
        if writer.unique < target and not runner.stop_reason:
            run.add("stopped: --max-requests reached")
            click.echo(f"stopped: {max_requests:,} requests gave {writer.unique:,} of {target:,} unique prompts "
                       f"(raise --max-requests)", err=True)
        run.add("unique prompts in the source", writer.unique)

