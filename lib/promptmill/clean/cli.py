"""02_clean: keep or drop prompts and images by named rules; cleaned text is stored beside the original.

Nothing is rewritten: every prompt and image gets a `clean` decision (keep or
drop, with the rule and a readable reason) under a scope that names the preset
or the parameters, so a re-run adds nothing and a killed run picks up where it
stopped.
"""

import click

from promptmill.cli import BadInput, StepGroup, db_option, source_option, step_run

STEP = "02_clean"


@click.group(cls=StepGroup)
def cli():
    """Keep or drop prompts and images by named rules; cleaned text is stored beside the original."""


# --- prompts ---


@cli.command()
@db_option
@click.option("--preset", required=True,
              help="A bundled preset (basic, kaggle-i2p, discord: schema/clean/NAME.toml) or a path to your own .toml.")
@source_option("the prompts")
@click.option("--lang", default=None, help="Also drop prompts confidently detected as another language (e.g. en).")
@click.option("--lang-min-confidence", default=0.9, show_default=True, type=click.FloatRange(0, 1),
              help="Drop only when the detector is at least this sure; unsure and very short prompts are kept.")
def prompts(db_path, preset, sources, lang, lang_min_confidence):
    """Rewrite prompts with a preset's transforms, then keep or drop them with its filters."""
    from promptmill.clean.prompts import clean_prompts, load_preset
    from promptmill.clean.rules import PresetError

    try:
        rules = load_preset(preset)
    except PresetError as exc:
        raise BadInput(str(exc)) from exc
    if lang:
        rules.add_language_filter(lang, lang_min_confidence)
    params = {"preset": preset, "scope": rules.scope, "lang": lang,
              "lang_min_confidence": lang_min_confidence if lang else None}
    with step_run(db_path, STEP, "prompts", params) as (store, run):
        from promptmill.core.sources import resolve_sources

        source_ids = resolve_sources(store, sources)
        if source_ids is None:
            clean_prompts(store, run, rules, "1", ())
        else:
            clean_prompts(store, run, rules, f"p.source_id IN ({', '.join('?' * len(source_ids))})", source_ids)


# --- images ---


def _aspect_range(ctx, param, value: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in value.split(".."))
    except ValueError:
        raise click.BadParameter("write it as LOW..HIGH, e.g. 0.25..4") from None
    if not 0 < low <= high:
        raise click.BadParameter("needs 0 < LOW <= HIGH")
    return low, high


def _formats(ctx, param, value: str) -> tuple[str, ...]:
    from promptmill.clean.images import parse_formats

    return parse_formats(value)


@cli.command()
@db_option
@click.option("--min-side", default=64, show_default=True, type=click.IntRange(1), help="Shortest side in pixels.")
@click.option("--max-bytes", default=50_000_000, show_default=True, type=click.IntRange(1), help="Largest file.")
@click.option("--max-pixels", default=64_000_000, show_default=True, type=click.IntRange(1),
              help="Most pixels (width x height); larger headers are refused before decoding (bomb guard).")
@click.option("--aspect", default="0.25..4", show_default=True, callback=_aspect_range,
              help="Allowed width/height range.")
@click.option("--formats", default="jpg,png,webp,bmp,gif", show_default=True, callback=_formats,
              help="Allowed real formats (by content, not by name): jpg/jpeg, png, webp, bmp, gif, tif/tiff, "
                   "avif, ico, ppm.")
@click.option("--extension-mismatch", type=click.Choice(["drop", "warn"]), default="drop", show_default=True,
              help="A file named .png that is really a JPEG: drop it, or keep it with a warning.")
def images(db_path, min_side, max_bytes, max_pixels, aspect, formats, extension_mismatch):
    """Decode every stored image fully and keep or drop it by integrity, format, size and aspect."""
    from promptmill.clean.images import ImageRules, clean_images

    rules = ImageRules(min_side=min_side, max_bytes=max_bytes, max_pixels=max_pixels, min_aspect=aspect[0],
                       max_aspect=aspect[1], formats=formats, extension_mismatch=extension_mismatch)
    params = {"scope": rules.scope, "min_side": min_side, "max_bytes": max_bytes, "max_pixels": max_pixels,
              "aspect": list(aspect), "formats": list(formats), "extension_mismatch": extension_mismatch}
    with step_run(db_path, STEP, "images", params) as (store, run):
        clean_images(store, run, rules)

