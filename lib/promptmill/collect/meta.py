"""One set of prompt meta keys across sources, with one type each.

Generation settings found beside a prompt (a bot's arguments, DiffusionDB's columns,
Midjourney's parameters) are stored under these names and types whatever the source
called them, so a query over `prompts.meta` reads them the same way for every source.
"""

from __future__ import annotations

# key -> (type, what it is). README's 01_collect section lists the same keys.
META_KEYS = {
    "seed": (int, "generation seed"),
    "steps": (int, "sampling steps"),
    "cfg_scale": (float, "classifier-free guidance scale"),
    "sampler": (str, "sampler name (ddim, plms, k_lms, k_euler_a, ...)"),
    "width": (int, "image width in pixels"),
    "height": (int, "image height in pixels"),
    "n": (int, "images asked for"),
    "negative_prompt": (str, "negative prompt"),
    "aspect_ratio": (str, "aspect ratio as W:H"),
    "version": (str, "model version (Midjourney --v)"),
    "stylize": (int, "Midjourney --stylize"),
    "chaos": (int, "Midjourney --chaos"),
    "kind": (str, "what a bot message is: result, upscale, variation, zoom, pan, remix, blend"),
    "mode": (str, "Midjourney speed mode: fast, relaxed, turbo"),
    "stealth": (bool, "Midjourney stealth mode"),
    "image_number": (int, "which image of a grid (Midjourney Image #n)"),
    "image_prompts": (list, "image URLs given as part of the prompt"),
    "parameters": (str, "other bot parameters, as written"),
}
# What sources call these keys.
ALIASES = {"step": "steps", "cfg": "cfg_scale", "guidance_scale": "cfg_scale", "scale": "cfg_scale",
           "ar": "aspect_ratio", "aspect": "aspect_ratio", "v": "version", "s": "stylize", "c": "chaos",
           "count": "n", "images": "n"}


def typed(key: str, value):
    """(canonical key, value of its type); a value that does not fit the type is kept as found under
    the source's own key, so nothing is lost or silently changed."""
    canonical = ALIASES.get(key, key)
    kind = META_KEYS.get(canonical, (None,))[0]
    if kind is None or isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return canonical, value
    if kind in (int, float) and not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
        if number is not None and (kind is float or number.is_integer()):
            return canonical, kind(number)
    elif kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return canonical, str(value)
    return key if key != canonical else f"{key}_raw", value


def normalize_meta(raw: dict) -> dict:
    """Meta with canonical keys and types; empty values left out."""
    meta = {}
    for key, value in raw.items():
        if value is None or value == "" or value == []:
            continue
        name, value = typed(key, value)
        meta.setdefault(name, value)
    return meta
