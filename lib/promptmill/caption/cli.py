"""06_caption: Caption, tag and score images; edit captions with history."""

import click

from promptmill.cli import StepGroup, db_option, step_run

STEP = "06_caption"


@click.group(cls=StepGroup)
def cli():
    """Caption, tag and score images; edit captions with history."""


# --- local models: blip, wd14, clipscore ---


def _local_model_options(default_model: str):
    def decorate(f):
        f = click.option("--limit", default=None, type=click.IntRange(1), help="At most this many images.")(f)
        f = click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))(f)
        f = click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")(f)
        return click.option("--model", default=default_model, show_default=True,
                            help="Hub id or local folder.")(f)
    return decorate


def _torch_options(f):
    f = click.option("--dtype", type=click.Choice(["auto", "fp16", "bf16", "fp32"]), default="auto",
                     show_default=True, help="auto: fp16 on CUDA, fp32 on CPU.")(f)
    return click.option("--device", default="auto", show_default=True, help="auto: cuda when there, else cpu.")(f)


@cli.command()
@db_option
@_local_model_options("Salesforce/blip-image-captioning-large")
@_torch_options
@click.option("--num-beams", default=3, show_default=True, type=click.IntRange(1))
@click.option("--min-length", default=5, show_default=True, type=click.IntRange(0), help="In tokens.")
@click.option("--max-length", default=40, show_default=True, type=click.IntRange(1), help="In tokens.")
@click.option("--prefix", default=None, help="Text the caption continues (e.g. 'a photograph of').")
def blip(db_path, model, revision, batch_size, limit, device, dtype, num_beams, min_length, max_length, prefix):
    """Caption kept images with BLIP (batched beam search); kind 'blip'."""
    import json

    from promptmill.caption import base as caption_local
    from promptmill.caption import blip as caption_blip
    from promptmill.cli import BadInput
    from promptmill.core.progress import bar

    if min_length > max_length:
        raise BadInput("--min-length is larger than --max-length")
    device = caption_local.pick_device(device)
    dtype_name, torch_dtype = caption_local.torch_dtype(dtype, device)
    settings = {"model": model, "revision": revision, "num_beams": num_beams, "min_length": min_length,
                "max_length": max_length, "prefix": prefix or None, "dtype": dtype_name}
    hash_ = caption_local.params_hash(settings)
    settings_json = json.dumps(settings, sort_keys=True)
    params = {**settings, "params_hash": hash_, "batch_size": batch_size, "limit": limit, "device": device}
    with step_run(db_path, STEP, "blip", params) as (store, run):
        rows = caption_local.uncaptioned_images(store, "blip", hash_, limit)
        if not rows:
            return
        captioner, processor = caption_blip.load_blip(model, revision, device, torch_dtype)
        with bar(len(rows), desc="blip", unit="img") as progress:
            for batch, images in caption_local.decoded_batches(store, rows, batch_size):
                good, pictures, bad = caption_local.split_readable(batch, images)
                texts = caption_blip.caption_batch(captioner, processor, pictures, prefix, num_beams, min_length,
                                                   max_length) if pictures else []
                with store.transaction() as conn:
                    caption_local.record_unreadable(conn, run, "blip", bad)
                    for row, text in zip(good, texts):
                        caption_local.insert_caption(conn, run, row[0], "blip", text, model, settings_json, hash_)
                progress.update(len(batch))


@cli.command()
@db_option
@_local_model_options("SmilingWolf/wd-swinv2-tagger-v3")
@click.option("--general", default=0.35, show_default=True, type=click.FloatRange(0, 1),
              help="Threshold for general tags.")
@click.option("--character", default=0.85, show_default=True, type=click.FloatRange(0, 1),
              help="Threshold for character tags.")
@click.option("--blacklist", default="", metavar="A,B", help="Tags never to keep (comma-separated).")
@click.option("--max-tags", default=None, type=click.IntRange(1), help="Keep at most this many tags.")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0),
              help="onnxruntime CPU threads (0: its default).")
def wd14(db_path, model, revision, batch_size, limit, general, character, blacklist, max_tags, threads):
    """Tag kept images with a WD14 ONNX tagger; kind 'wd14', tags with scores and categories."""
    import json

    from promptmill.caption import base as caption_local
    from promptmill.caption import wd14 as caption_wd14
    from promptmill.core.progress import bar

    blocked = frozenset(caption_wd14.display_name(t.strip()) for t in blacklist.split(",") if t.strip())
    thresholds = caption_wd14.Thresholds(general, character, blocked, max_tags)
    settings = {"model": model, "revision": revision, "general": general, "character": character,
                "blacklist": sorted(blocked), "max_tags": max_tags}
    hash_ = caption_local.params_hash(settings)
    params = {**settings, "params_hash": hash_, "batch_size": batch_size, "limit": limit}
    with step_run(db_path, STEP, "wd14", params) as (store, run):
        rows = caption_local.uncaptioned_images(store, "wd14", hash_, limit)
        if not rows:
            return
        tagger = caption_wd14.load_tagger(model, revision, threads)
        note = "" if tagger.provider == "CUDAExecutionProvider" else \
            " (no CUDA provider: install onnxruntime-gpu for the GPU)"
        click.echo(f"06_caption wd14: onnxruntime runs on {tagger.provider}{note}", err=True)
        settings_json = json.dumps({**settings, "provider": tagger.provider}, sort_keys=True)
        prepare = lambda image: caption_wd14.prepare(image, tagger.size)  # noqa: E731
        with bar(len(rows), desc="wd14", unit="img") as progress:
            for batch, arrays in caption_local.decoded_batches(store, rows, batch_size, prepare):
                good, ready, bad = caption_local.split_readable(batch, arrays)
                scores = caption_wd14.predict(tagger, ready) if ready else []
                with store.transaction() as conn:
                    caption_local.record_unreadable(conn, run, "wd14", bad)
                    for row, image_scores in zip(good, scores):
                        tags, ratings = caption_wd14.select_tags(tagger, image_scores, thresholds)
                        caption_id = caption_local.insert_caption(
                            conn, run, row[0], "wd14", ", ".join(t[0] for t in tags), model, settings_json, hash_)
                        if caption_id is None:
                            continue
                        conn.executemany(
                            "INSERT INTO tags (caption_id, tag, score, category, position) VALUES (?, ?, ?, ?, ?) "
                            "ON CONFLICT DO NOTHING",
                            [(caption_id, name, round(score, 5), category, i)
                             for i, (name, score, category) in enumerate(tags)]
                            + [(caption_id, name, round(score, 5), "rating", None) for name, score in ratings])
                        run.add("tags added", len(tags))
                progress.update(len(batch))


@cli.command()
@db_option
@_local_model_options("openai/clip-vit-large-patch14")
@_torch_options
@click.option("--min-score", default=None, type=float,
              help="Record a 'score' drop decision for images below this cosine (e.g. 0.3 with "
                   "laion/CLIP-ViT-H-14).")
def clipscore(db_path, model, revision, batch_size, limit, device, dtype, min_score):
    """Score generated images against their prompts (CLIP cosine); kind 'clip' in scores."""
    from promptmill.caption import base as caption_local
    from promptmill.caption import clipscore as clip_scoring
    from promptmill.core.progress import bar

    device = caption_local.pick_device(device)
    dtype_name, torch_dtype = caption_local.torch_dtype(dtype, device)
    settings = {"model": model, "revision": revision, "dtype": dtype_name}
    hash_ = caption_local.params_hash(settings)
    params = {**settings, "params_hash": hash_, "batch_size": batch_size, "limit": limit, "device": device,
              "min_score": min_score}
    with step_run(db_path, STEP, "clipscore", params) as (store, run):
        rows = clip_scoring.unscored_generations(store, hash_, limit)
        if rows:
            clip, processor = clip_scoring.load_clip(model, revision, device, torch_dtype)
            with bar(len(rows), desc="clipscore", unit="img") as progress:
                for batch, images in caption_local.decoded_batches(store, rows, batch_size):
                    good, pictures, bad = caption_local.split_readable(batch, images)
                    values = clip_scoring.score_batch(clip, processor, pictures, [r[4] for r in good]) if good else []
                    with store.transaction() as conn:
                        caption_local.record_unreadable(conn, run, "clipscore", bad)
                        before = conn.total_changes
                        conn.executemany(
                            "INSERT INTO scores (image_id, prompt_id, kind, value, model, params_hash, natural_key, "
                            "run_id) VALUES (?, ?, 'clip', ?, ?, ?, ?, ?) ON CONFLICT (natural_key) DO NOTHING",
                            [(row[0], row[3], round(value, 6), model, hash_, f"clip:{row[0]}:{row[3]}:{hash_}",
                              run.id) for row, value in zip(good, values)])
                        run.add("scores added", conn.total_changes - before)
                    progress.update(len(batch))
        if min_score is not None:
            run.add("images dropped", clip_scoring.drop_below(store, run, hash_, min_score))


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
    from promptmill.llm.ledger import load_prices
    from promptmill.llm.runner import CallRunner, check_budget_priced, settings_from

    price_table = load_prices(prices)
    check_budget_priced(price_table, model, options["max_cost"])
    settings = settings_from(options)
    with step_run(db_path, STEP, command, params) as (store, run):
        provider = provider_factory(settings)
        with bar(count(store), command, "image") as progress:
            runner = CallRunner(store, run, provider, settings, price_table,
                                caption_writer(run, command, model, params["config"]), progress)
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
    f = click.option("--source", "source_id", type=int, help="Only images found in this source id.")(f)
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
def edit(db_path, kinds, source_id, trigger, position, replace, regex, remove_tags, blacklist, dedup_tags, sort,
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
    params = {"ops": ops.as_dict(), "kinds": list(kinds), "source": source_id, "undo": undo_run_id}
    with step_run(db_path, STEP, "edit", params) as (store, run):
        if undo_run_id is not None:
            undo_run(store, run, undo_run_id)
        else:
            edit_captions(store, run, ops, tuple(kinds), source_id)


@cli.command()
@db_option
@_scope_options
@click.option("--trigger", metavar="WORD", help="Report how many captions contain WORD as a tag.")
@click.option("--top", default=30, show_default=True, help="How many tags and resolutions to list.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the figures as JSON.")
def stats(db_path, kinds, source_id, trigger, top, json_path):
    """Tag frequency, caption length in CLIP tokens, trigger coverage and resolutions of current captions."""
    import json
    from pathlib import Path

    from promptmill.caption.stats import caption_stats, current_captions, format_stats

    params = {"kinds": list(kinds), "source": source_id, "trigger": trigger, "top": top}
    with step_run(db_path, STEP, "stats", params) as (store, run):
        figures = caption_stats(current_captions(store, tuple(kinds), source_id), trigger, top)
        run.add("captions measured", figures["captions"])
        click.echo(format_stats(figures))
        if json_path:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(figures, indent=2), encoding="utf-8")

