"""03_dedup: Find exact and near-duplicate prompts and images; keep one of each cluster.

Methods run cheapest first, each over what the previous one kept. Every cluster
keeps exactly one member (or its reference items, with --against); each other
member gets a `drop` decision naming the method, the score and the kept item.
Running again adds nothing; after new items arrive only they are compared.
"""

import click

from promptmill.cli import BadInput, StepGroup, db_option, source_option, step_run
from promptmill.core.sources import resolve_sources
from promptmill.engine.base import ray_options

STEP = "03_dedup"


@click.group(cls=StepGroup)
def cli():
    """Find exact and near-duplicate prompts and images; keep one of each cluster."""


def _methods(value: str, allowed: tuple[str, ...]) -> list[str]:
    chosen = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in allowed]
    if unknown or not chosen:
        raise BadInput(f"--method: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}")
    return [m for m in allowed if m in chosen]  # cheapest first


def _priority(value: str | None) -> list[int]:
    try:
        return [int(v) for v in (value or "").split(",") if v.strip()]
    except ValueError as exc:
        raise BadInput("--source-priority takes source ids separated by commas") from exc


def _targets_and_reference(store, items, load_by_id, item_type, sources, against):
    """Mark reference items fixed; limit targets to --source. Returns the items of the pass."""
    import numpy as np

    from promptmill.dedup import passes as dedup

    if not sources and not against:
        return items
    target = np.isin(items.source_ids, sources) if sources else np.ones(len(items.ids), dtype=bool)
    if not against:
        return items.subset(target)
    try:
        reference = np.array(dedup.reference_ids(store, item_type, against), dtype=np.int64)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    is_reference = np.isin(items.ids, reference)
    chosen = items.subset(is_reference | (target & ~is_reference))
    chosen.fixed = np.isin(chosen.ids, reference)
    outside = sorted(set(reference.tolist()) - set(chosen.ids.tolist()))
    if outside and load_by_id is not None:
        extra = load_by_id(store, outside)
        extra.fixed = np.ones(len(extra.ids), dtype=bool)
        chosen = dedup.Items.concat(chosen, extra)
    return chosen


def _summarise(run, result):
    run.add(f"{result.method} compared", result.compared)
    run.add(f"{result.method} pairs", result.pairs)
    run.add(f"{result.method} clusters", result.clusters)
    run.add(f"{result.method} dropped", result.drops_written)


def _pass_options(item: str, methods: str, method_help: str, longest: str):
    """The options both dedup commands share: methods, scope, reference set, which member stays."""
    def decorate(f):
        for option in reversed([
            db_option,
            click.option("--method", "method_list", default=methods, show_default=True, help=method_help),
            source_option(f"the {item}"),
            click.option("--against", help="Reference set never dropped: source:ID|PATH, split:NAME or "
                                           "release:NAME."),
            click.option("--keep", type=click.Choice(["oldest", "longest", "source-priority"]), default="oldest",
                         show_default=True, help=f"Which member of a cluster stays; 'longest' means {longest}."),
            click.option("--source-priority", help="Source ids, best first, for --keep source-priority."),
        ]):
            f = option(f)
        return f
    return decorate


@cli.command()
@_pass_options("prompts", "exact,cascade", "Any of exact, cascade, simhash, semantic (comma-separated); they run "
               "cheapest first.", "the most characters")
@click.option("--features", type=click.Choice(["wordset", "word", "word2", "char4"]), default="wordset", show_default=True,
              help="Simhash features: distinct words, all words, word pairs, or the simhash package's "
                   "4-character shingles.")
@click.option("--near-dup-bits", "k", type=click.IntRange(0, 16), default=3, show_default=True,
              help="Simhash: largest Hamming distance (in bits) that counts as a near-duplicate.")
@click.option("--model", help="Semantic: a sentence-transformers model folder (default: bundled all-MiniLM-L6-v2).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.85, show_default=True,
              help="Semantic: cosine similarity that counts (0.75 is the usual choice with --against).")
@click.option("--neighbours", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Semantic: nearest neighbours examined per prompt.")
@click.option("--jaccard", type=click.FloatRange(0, 1), default=0.8, show_default=True,
              help="Cascade: word-set Jaccard that links a candidate pair without embedding it.")
@click.option("--cosine", type=click.FloatRange(0, 1), default=0.85, show_default=True,
              help="Cascade: MiniLM cosine that links a grey-zone pair (Jaccard from 0.5 to --jaccard).")
@click.option("--lexical-only", is_flag=True, help="Cascade: link by word overlap alone; embed nothing.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True, help="Semantic: encoder batch.")
@click.option("--batch-rows", type=click.IntRange(1), default=20_000, show_default=True,
              help="Decisions written per transaction.")
@ray_options
def prompts(db_path, method_list, sources, against, keep, source_priority, features, k, model, threshold,
            neighbours, jaccard, cosine, lexical_only, batch_size, batch_rows, engine, address, workers,
            num_gpus_per_worker):
    """Drop exact and near-duplicate prompts, keeping one per cluster."""
    methods = _methods(method_list, ("exact", "cascade", "simhash", "semantic"))
    priority = _priority(source_priority)
    if keep == "source-priority" and not priority:
        raise BadInput("--keep source-priority needs --source-priority ID,ID,...")
    params = {"method": methods, "source": list(sources), "against": against, "keep": keep,
              "source_priority": priority, "features": features, "k": k, "model": model,
              "threshold": threshold, "neighbours": neighbours, "jaccard": jaccard, "cosine": cosine,
              "lexical_only": lexical_only}
    with step_run(db_path, STEP, "prompts", params) as (store, run):
        import numpy as np

        from promptmill.dedup import passes as dedup
        from promptmill.dedup import semantic

        source_ids = resolve_sources(store, sources) or []
        try:
            if "semantic" in methods or ("cascade" in methods and not lexical_only):
                semantic.model_path(model)
        except ValueError as exc:
            raise BadInput(str(exc)) from exc
        method_scopes = {
            "exact": "exact",
            "cascade": (f"cascade:j={jaccard:g}:" + ("lexical" if lexical_only else
                                                     f"{semantic.model_name(model)}:c={cosine:g}")),
            "simhash": f"simhash:{features}:k={k}",
            "semantic": f"semantic:{semantic.model_name(model)}:{threshold:g}:n={neighbours}",
        }
        scopes = {m: dedup.scope_name(method_scopes[m], keep, source_ids, against, priority) for m in methods}
        if dedup.nothing_new(store, list(scopes.values()), "prompt"):
            run.add("methods up to date", len(methods))
            return
        loaded = dedup.load_prompts(store, list(scopes.values()))
        encoder = None
        for method in methods:
            others = [s for m, s in scopes.items() if m != method]
            elsewhere = np.concatenate([dedup.dropped_by(store, s, "prompt") for s in others] or [np.zeros(0)])
            items = loaded.subset(~np.isin(loaded.ids, elsewhere)) if len(elsewhere) else loaded
            if method == methods[-1]:
                del loaded  # the last pass needs only its own items: millions of prompts are common
            items = _targets_and_reference(store, items, dedup.load_prompts_by_id, "prompt", source_ids, against)
            if method == "exact":
                find = dedup.exact_links
            elif method == "cascade":
                def find(batch):
                    def embed(indices):  # the local model is loaded only if a text is not cached yet
                        remote = None
                        if engine == "ray":
                            from promptmill.engine.embed import RayEncoder

                            remote = RayEncoder(model, address, workers, num_gpus_per_worker)
                        vectors, computed = semantic.embed(store, batch.texts.take(indices), model,
                                                           batch_size, remote)
                        run.add("embeddings computed", computed)
                        return vectors
                    return dedup.cascade_links(batch, None if lexical_only else embed, run.add,
                                               jaccard_cut=jaccard, cosine_cut=cosine)
            elif method == "simhash":
                def find(batch):
                    return dedup.simhash_links(batch, features, k)
            else:
                def find(batch):
                    nonlocal encoder
                    if encoder is None and engine == "ray":
                        from promptmill.engine.embed import RayEncoder

                        encoder = RayEncoder(model, address, workers, num_gpus_per_worker)
                    elif encoder is None:
                        encoder = semantic.load_model(model)
                    vectors, computed = semantic.embed(store, list(batch.texts), model, batch_size, encoder)
                    run.add("embeddings computed", computed)
                    left, right, _ = semantic.similar_pairs(vectors, threshold, batch.fixed, neighbours)
                    return dedup.Links(left, right, lambda a, b: semantic.cosine(vectors, a, b),
                                       "cosine {score:.3f}")
            result = dedup.run_pass(store, run, "prompt", scopes[method], method, items, find, keep, priority,
                                    batch_rows)
            _summarise(run, result)


@cli.command()
@_pass_options("images", "sha256,phash", "Any of sha256, phash (comma-separated).", "the most pixels")
@click.option("--near-dup-bits", "k", type=click.IntRange(0, 16), default=4, show_default=True,
              help="phash: largest Hamming distance (in bits) that counts as a near-duplicate.")
def images(db_path, method_list, sources, against, keep, source_priority, k):
    """Drop duplicate images: identical bytes (sha256) and look-alikes (perceptual hash)."""
    methods = _methods(method_list, ("sha256", "phash"))
    priority = _priority(source_priority)
    if keep == "source-priority" and not priority:
        raise BadInput("--keep source-priority needs --source-priority ID,ID,...")
    params = {"method": methods, "source": list(sources), "against": against, "keep": keep,
              "source_priority": priority, "k": k}
    with step_run(db_path, STEP, "images", params) as (store, run):
        import numpy as np

        from promptmill.dedup import passes as dedup

        source_ids = resolve_sources(store, sources) or []
        method_scopes = {"sha256": "sha256", "phash": f"phash:k={k}"}
        scopes = {m: dedup.scope_name(method_scopes[m], keep, source_ids, against, priority) for m in methods}
        if dedup.nothing_new(store, list(scopes.values()), "image"):
            run.add("methods up to date", len(methods))
            return
        loaded = dedup.load_images(store, list(scopes.values()))
        for method in methods:
            others = [s for m, s in scopes.items() if m != method]
            elsewhere = np.concatenate([dedup.dropped_by(store, s, "image") for s in others] or [np.zeros(0)])
            items = loaded.subset(~np.isin(loaded.ids, elsewhere)) if len(elsewhere) else loaded
            items = _targets_and_reference(store, items, None, "image", source_ids, against)
            if method == "sha256":
                find = dedup.exact_links
            else:
                values, readable = dedup.image_phashes(store, run, items)
                items, values = items.subset(readable), values[readable]

                def find(batch, values=values):
                    return dedup.phash_links(values, k, batch.fixed)
            result = dedup.run_pass(store, run, "image", scopes[method], method, items, find, keep, priority)
            _summarise(run, result)


@cli.command()
@db_option
@click.option("--items", "item_type", type=click.Choice(["prompt", "image"]), default="prompt", show_default=True)
@click.option("--largest", type=click.IntRange(0), default=5, show_default=True, help="Largest clusters to show.")
def report(db_path, item_type, largest):
    """Per method: passes, pairs, clusters and drops, and the largest clusters with examples."""
    from promptmill.cli import read_only
    from promptmill.dedup import passes as dedup

    with read_only(db_path) as store:
        rows = dedup.report(store, item_type, largest)
    if not rows:
        click.echo(f"no dedup passes over {item_type}s yet")
    for row in rows:
        click.echo(f"{row['scope']}: {row['passes']} pass(es), {row['compared']:,} compared, "
                   f"{row['pairs']:,} pairs, {row['clusters']:,} clusters, {row['drops']:,} dropped")
        for cluster in row["largest"]:
            click.echo(f"  cluster of {cluster['size']} kept {item_type} {cluster['kept']}:")
            for item_id, text in cluster["examples"]:
                click.echo(f"    {item_id}: {(text or '')[:100]}")

