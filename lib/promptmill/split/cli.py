"""08_split: Assign dedup clusters to train/validation/test splits, stable as data grows.

A whole dedup cluster goes to one split, chosen by a hash of its kept member and
the seed, so near-duplicates never straddle splits and adding data never moves
an item. Images follow their prompt. `report` counts and checks for leakage.
"""

import click

from promptmill.cli import BadInput, StepGroup, db_option, step_run

STEP = "08_split"


@click.group(cls=StepGroup)
def cli():
    """Assign dedup clusters to train/validation/test splits, stable as data grows."""


@cli.command()
@db_option
@click.option("--validation", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Share of clusters in the validation split.")
@click.option("--test", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of clusters in the test split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Changes which clusters are held out.")
@click.option("--stratify", type=click.Choice(["source"]),
              help="Hold out each source's share exactly (by lowest hash among its new clusters).")
def assign(db_path, validation, test, seed, stratify):
    """Assign every prompt (and image) not dropped by cleaning to a split, cluster by cluster."""
    if validation + test >= 1:
        raise BadInput("--validation plus --test must be below 1")
    from promptmill.split import assign as splits

    scope = splits.scope_name(seed, validation, test, stratify)
    params = {"validation": validation, "test": test, "seed": seed, "stratify": stratify, "scope": scope}
    with step_run(db_path, STEP, "assign", params) as (store, run):
        if splits.up_to_date(store, scope):
            run.add("already assigned, nothing new")
            return
        seen = splits.watermark(store)
        prompt_splits = splits.assign_prompts(store, run, scope, seed, validation, test, stratify)
        splits.assign_images(store, run, scope, seed, validation, test, prompt_splits)
        splits.record_pass(store, run, scope, seen)


@cli.command()
@db_option
@click.option("--scope", help="Which assignment to check (default: the latest split of each item).")
@click.option("--method", "method_list", default="exact,simhash", show_default=True,
              help="Leakage check: any of exact, cascade (its lexical stages), simhash, semantic.")
@click.option("--features", type=click.Choice(["wordset", "word", "word2", "char4"]), default="wordset", show_default=True)
@click.option("--near-dup-bits", "k", type=click.IntRange(0, 16), default=3, show_default=True,
              help="Simhash: largest Hamming distance (in bits) that counts as a leak.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.75, show_default=True,
              help="Semantic: cosine similarity that counts as leakage across splits.")
@click.option("--model", help="Semantic: a sentence-transformers model folder (default: bundled MiniLM).")
@click.option("--show", type=click.IntRange(0), default=20, show_default=True, help="Leaking pairs to list.")
def report(db_path, scope, method_list, features, k, threshold, model, show):
    """Items per split and source, and every near-duplicate pair that crosses splits."""
    methods = [m.strip() for m in method_list.split(",") if m.strip()]
    if not methods or any(m not in ("exact", "cascade", "simhash", "semantic") for m in methods):
        raise BadInput("--method takes exact, cascade, simhash and/or semantic")
    from promptmill.cli import read_only
    from promptmill.split import assign as splits

    with read_only(db_path) as store:
        rows = splits.counts(store, scope)
        leaks = splits.leakage(store, scope, methods, features, k, threshold, model)
    click.echo("items   split        count  source")
    for row in rows:
        click.echo(f"{row['items']:<7} {row['split']:<12} {row['n']:>6}  {row['source']}")
    click.echo(f"leakage ({', '.join(methods)}): {len(leaks)} cross-split pair(s)")
    for leak in leaks[:show]:
        click.echo(f"  {leak['method']} {leak['score']:.3f}: prompt {leak['a']} ({leak['split_a']}) "
                   f"~ prompt {leak['b']} ({leak['split_b']}): {leak['text_a'][:60]!r} / {leak['text_b'][:60]!r}")

