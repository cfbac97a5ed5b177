"""DiscordChatExporter exports (JSON or CSV): prompts from bot results or from user messages.

JSON exports can be gigabytes, so the ``messages`` array is read one object at a
time with ``json.JSONDecoder.raw_decode`` over a sliding text buffer: memory is
bounded by the largest single message (``MAX_MESSAGE_CHARS``), not the file.

Exports are read as DiscordChatExporter writes them: with ``--markdown true`` (its
default) a mention is rendered as ``@DisplayName``, without it as ``<@id>``; the
author of a bot result is the mentioned user, resolved through the message's
``mentions`` array by id, display name or user name. CSV exports have no ``isBot``
column, so bot messages are told apart by known bot names and by their shape.

Formats:
- ``dreambot``: SD bot results, ``Dreamt ... /dream prompt:<p> key:value ... for @user``;
  only the bot's own argument names (``negative_prompt:``, ``seed:`` ...) are split off,
  so ``book cover: a red door`` stays in the prompt. Also the Aug 2022 bot's echoes of
  ``!dream "prompt" -n 4 -g -S 1234 -C 7 -A k_lms`` commands, flags as meta.
- ``midjourney``: ``**<prompt> --ar 3:2** - <@user> (fast)``; the kind of result
  (upscale, variation, zoom, pan, remix), the mode, image prompt URLs and each
  ``--`` parameter go to meta; blends (image links and parameters only) are not prompts.
- ``messages``: every non-empty human message, forwarded text included; system
  messages (joins, pins, thread starts, boosts) are not prompts.

Attachments downloaded with ``--media`` (the ``<export>_Files`` folder) are imported
as images linked to their message's prompt; other media is counted and skipped.
A JSON export that was cut off part way leaves its source incomplete.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

from promptmill.collect.base import Collector, SourceInfo, file_sha256
from promptmill.collect.meta import normalize_meta
from promptmill.core.images import is_image_name
from promptmill.core.progress import bar

# Characters per read. Not more: each read makes the text buffer anew, and buffers of a million
# characters left glibc's heap holding ~70 MB more at the peak of a 200,000-message import.
READ_CHARS = 1 << 18
MAX_MESSAGE_CHARS = 16 << 20
MAX_MEDIA_BYTES = 256 << 20
_MESSAGES_KEY = re.compile(r'"messages"\s*:\s*\[')
# Message types DiscordChatExporter writes for what people typed; every other type is a
# system notice (joins, pins, thread starts, boosts, calls, renames).
TYPED_MESSAGES = {"Default", "Reply"}
THREAD_TYPES = {"GuildPublicThread", "GuildPrivateThread", "GuildNewsThread"}
KNOWN_BOTS = {"midjourney bot", "dreambot", "dream bot", "dreambotmothership", "stable diffusion", "niji・journey bot",
              "niji journey bot", "stablebot", "carl-bot", "mee6", "dyno"}

# /dream results. The bot's argument names: only these are split off the prompt.
DREAM_ARGS = ("negative_prompt", "seed", "steps", "cfg_scale", "guidance_scale", "sampler", "width", "height",
              "size", "aspect", "aspect_ratio", "count", "n_images", "model", "style", "strength", "init_image",
              "upscale", "preset")
_DREAM = re.compile(r"/dream\s+prompt:\s*(?P<args>[^\n`]*)")
_DREAM_ARG = re.compile(r"\s+(" + "|".join(DREAM_ARGS) + r"):\s*")
_FOR_USER = re.compile(r"\bfor\s+`?(?:<@!?(?P<id>\d+)>|@(?P<name>[^`*\n]+?))`?(?:\s*$|\s*\n|[*`])", re.M)
# !dream "prompt" -n 4 -g -S 1234 -C 7 -A k_lms (the Aug 2022 bot)
_BANG_DREAM = re.compile(r'!dream\s+(?P<command>"(?:[^"\\]|\\.)*".*)')
BANG_FLAGS = {"-S": "seed", "-s": "steps", "-C": "cfg_scale", "-A": "sampler", "-W": "width", "-H": "height",
              "-n": "n", "-b": "batch_size", "-f": "strength", "--seed": "seed", "--steps": "steps",
              "--cfg_scale": "cfg_scale", "--sampler": "sampler", "--width": "width", "--height": "height"}
BANG_SWITCHES = {"-g": "grid", "-i": "individual", "-U": "upscale", "-G": "face_restore"}
_LEADING_MENTION = re.compile(r"^\s*(?:<@!?(?P<id>\d+)>|@(?P<name>\S+))")

_MIDJOURNEY = re.compile(r"^\*\*(?P<prompt>.*)\*\*\s+-\s+(?P<rest>.*)$", re.S)
_MJ_IMAGE_NUMBER = re.compile(r"\bImage #(\d+)")
_MJ_KINDS = (("Upscaled", "upscale"), ("Image #", "upscale"), ("Variations", "variation"),
             ("Zoom Out", "zoom"), ("Pan ", "pan"), ("Remix", "remix"))
_MJ_MODE = re.compile(r"\((?P<mode>fast|relaxed|turbo)(?P<stealth>,\s*stealth)?\)\s*$")
_MJ_USER = re.compile(r"<@!?(?P<id>\d+)>|@(?P<name>.+?)(?=\s*\((?:fast|relaxed|turbo)|\s*$)")
_MJ_PARAMS = re.compile(r"(?:^|\s)--[a-z]")
_MJ_PARAM = re.compile(r"--(?P<key>[a-z]+)(?:\s+(?P<value>(?:(?!--)\S+\s*)*))?")
_IMAGE_PROMPT = re.compile(r"^<?(https?://\S+?)>?(?:\s+|$)")
MJ_PARAM_KEYS = {"ar": "aspect_ratio", "aspect": "aspect_ratio", "v": "version", "version": "version",
                 "stylize": "stylize", "s": "stylize", "chaos": "chaos", "c": "chaos", "seed": "seed",
                 "no": "negative_prompt"}


class MalformedExport(ValueError):
    """The JSON stops making sense at some message."""


class CutOff(MalformedExport):
    """The file ends inside the messages array: an export copied or written only in part."""


def iter_json_export(fh) -> tuple[dict, Iterator]:
    """(header with guild/channel, iterator of message objects) of a JSON export, streamed."""
    decoder = json.JSONDecoder()
    buffer = ""
    while not (match := _MESSAGES_KEY.search(buffer)):
        chunk = fh.read(READ_CHARS)
        if not chunk or len(buffer) > MAX_MESSAGE_CHARS:
            raise MalformedExport("no \"messages\" array: not a DiscordChatExporter JSON export")
        buffer += chunk
    try:
        header = json.loads(buffer[:match.start()].rstrip().rstrip(",") + "}")
    except (json.JSONDecodeError, RecursionError):
        header = {}

    def messages() -> Iterator[dict]:
        text, index, eof = buffer, match.end(), False
        while True:
            while index < len(text) and text[index] in " \t\r\n,":
                index += 1
            if index >= len(text):
                if eof:
                    raise CutOff("the file ends inside the messages array")
                chunk = fh.read(READ_CHARS)
                eof = not chunk
                text, index = text[index:] + chunk, 0
                continue
            if text[index] == "]":
                return
            try:
                message, end = decoder.raw_decode(text, index)
            except RecursionError:
                raise MalformedExport("a message nested too deep to read") from None
            except json.JSONDecodeError as exc:
                if eof and (exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated")):
                    raise CutOff(f"the file ends inside a message ({exc.msg})") from None
                if eof or len(text) - index > MAX_MESSAGE_CHARS:
                    raise MalformedExport(f"malformed JSON: {exc.msg}") from None
                chunk = fh.read(READ_CHARS)
                eof = not chunk
                text, index = text[index:] + chunk, 0
                continue
            index = end
            yield message  # add_message records a non-object as a malformed message

    return header, messages()


def iter_csv_export(fh) -> Iterator[dict]:
    """CSV exports (AuthorID, Author, Date, Content, Attachments, Reactions) as JSON-like messages.

    The CSV has no message id, type or isBot; the author is ``name#discriminator`` or ``name``."""
    for row in csv.DictReader(fh):
        attachments = [{"url": url.strip()} for url in (row.get("Attachments") or "").split(",") if url.strip()]
        yield {"id": None, "type": "Default", "timestamp": row.get("Date"), "content": row.get("Content") or "",
               "author": {"id": row.get("AuthorID"), "name": row.get("Author"), "isBot": None},
               "attachments": attachments}


def resolve_user(message: dict, user_id: str | None, name: str | None) -> str | None:
    """The author key of a mentioned user: the id from <@id>, or the id of the `mentions` entry
    whose display name or user name is the rendered @name, else "@name" as rendered."""
    if user_id:
        return user_id
    if not name:
        return None
    name = name.strip()
    for mentioned in message.get("mentions") or []:
        if isinstance(mentioned, dict) and name in (mentioned.get("nickname"), mentioned.get("name")):
            return mentioned.get("id") or f"@{name}"
    return f"@{name}"


def dreambot_prompt(message: dict, content: str) -> tuple[str, dict, str | None] | None:
    if found := bang_dream_prompt(message, content):
        return found
    match = _DREAM.search(content)
    if not match or "Dreamt" not in content[:match.start()]:
        return None  # a status message ("Dreaming ...", "queued") or a user's own command
    pieces = _DREAM_ARG.split(" " + match["args"].rstrip())
    prompt = pieces[0].strip()
    args = {key: value.strip() for key, value in zip(pieces[1::2], pieces[2::2])}
    user = _FOR_USER.search(content, match.end())
    return prompt, args, resolve_user(message, user and user["id"], user and user["name"])


def bang_dream_prompt(message: dict, content: str) -> tuple[str, dict, str | None] | None:
    """`!dream "prompt" -n 4 -g -S 1234 -C 7 -A k_lms` as the bot echoed it (DiffusionDB's scraper read
    those too), credited to the user it mentions or replies to."""
    match = _BANG_DREAM.search(content)
    if not match:
        return None
    try:
        words = shlex.split(re.split(r"[`\n]", match["command"], maxsplit=1)[0])
    except ValueError:
        return None
    prompt, args, index = words[0].strip(), {}, 1
    while index < len(words):
        word = words[index]
        if word in BANG_FLAGS and index + 1 < len(words):
            args[BANG_FLAGS[word]] = words[index + 1]
            index += 2
            continue
        if word in BANG_SWITCHES:
            args[BANG_SWITCHES[word]] = True
        index += 1
    if not looks_like_bot(message):
        return None  # the user's request; the bot's answer repeats it with the settings it used
    lead = _LEADING_MENTION.search(content[:match.start()])
    if lead:
        return prompt, args, resolve_user(message, lead["id"], lead["name"])
    mentioned = [m for m in message.get("mentions") or [] if isinstance(m, dict) and m.get("id")]
    # the bot replied to the request: Discord lists the replied-to user among the mentions
    return prompt, args, mentioned[0]["id"] if len(mentioned) == 1 else None


def midjourney_prompt(message: dict, content: str) -> tuple[str, dict, str | None] | None:
    match = _MIDJOURNEY.match(content.strip())
    if not match:
        return None
    prompt, rest, meta = match["prompt"].strip(), match["rest"].strip(), {}
    image_prompts = []
    while image := _IMAGE_PROMPT.match(prompt):
        image_prompts.append(image[1])
        prompt = prompt[image.end():]
    if image_prompts:
        meta["image_prompts"] = image_prompts
    if params := _MJ_PARAMS.search(prompt):
        meta.update(midjourney_parameters(prompt[params.start():].strip()))
        prompt = prompt[:params.start()].strip()
    meta["kind"] = next((kind for word, kind in _MJ_KINDS if word in rest), "result")
    if number := _MJ_IMAGE_NUMBER.search(rest):
        meta["image_number"] = number[1]
    if mode := _MJ_MODE.search(rest):
        meta["mode"] = mode["mode"]
        if mode["stealth"]:
            meta["stealth"] = True
    user = _MJ_USER.search(rest[rest.find(" by ") + 4:] if " by " in rest else _strip_kind(rest))
    if not prompt:
        meta["kind"] = "blend" if image_prompts else meta["kind"]
    return prompt, meta, resolve_user(message, user and user["id"], user and user["name"])


def _strip_kind(rest: str) -> str:
    """What follows "Image #n" in an old upscale's tail: the user."""
    return _MJ_IMAGE_NUMBER.sub("", rest, count=1).strip()


def midjourney_parameters(text: str) -> dict:
    """`--ar 16:9 --v 6.0 --stylize 250` as separate keys; others stay together as written."""
    meta, others = {}, []
    for param in _MJ_PARAM.finditer(text):
        key, value = param["key"], (param["value"] or "").strip()
        if key in MJ_PARAM_KEYS and value:
            meta[MJ_PARAM_KEYS[key]] = value
        else:
            others.append(param[0].strip())
    if others:
        meta["parameters"] = " ".join(others)
    return meta


def looks_like_bot(message: dict) -> bool:
    """isBot when the export says so; for CSV (no isBot), a known bot name or a bot result's shape."""
    author = message.get("author") or {}
    if author.get("isBot") is not None:
        return bool(author["isBot"])
    name = (author.get("name") or "").rsplit("#", 1)[0].strip().lower()
    content = message.get("content") or ""
    return (name in KNOWN_BOTS or "dreamt" in content.lower() and "/dream" in content
            or bool(_MIDJOURNEY.match(content.strip())))


def message_text(message: dict) -> tuple[str, dict]:
    """What a person wrote in a message: its content, or a forwarded message's text."""
    content = (message.get("content") or "").strip()
    forwarded = message.get("forwardedMessage")
    if not content and isinstance(forwarded, dict) and isinstance(forwarded.get("content"), str):
        return forwarded["content"].strip(), {"forwarded": True}
    return content, {}


def prompt_of(message: dict, fmt: str) -> tuple[str, dict, str | None] | None:
    """(prompt, extra meta, author key) of a message in the given format, or None."""
    if (message.get("type") or "Default") not in TYPED_MESSAGES:
        return None
    author = message.get("author") or {}
    if fmt == "messages":
        text, meta = message_text(message)
        if not text or looks_like_bot(message):
            return None
        return text, meta, author.get("id") or author.get("name")
    content = message.get("content") or ""
    if fmt == "dreambot":
        return dreambot_prompt(message, content)
    if author.get("isBot") is False:
        return None
    return midjourney_prompt(message, content)


def source_info(path: Path, fmt: str) -> SourceInfo:
    return SourceInfo(kind="discord", uri=str(path), sha256=file_sha256(path), options={"format": fmt},
                      bytes=os.path.getsize(path))


def export_files(path: Path) -> list[Path]:
    """Export files under PATH; what --media downloaded (the *_Files folders) is not an export."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in (".json", ".csv") and p.is_file()
                      and not any(part.endswith("_Files") for part in p.relative_to(path).parts[:-1]))
    return [path]


def channel_meta(header: dict) -> dict:
    """Guild, channel and, for a thread, the thread and its parent channel (DCE calls it `category`)."""
    channel = header.get("channel") if isinstance(header.get("channel"), dict) else {}
    guild = header.get("guild") if isinstance(header.get("guild"), dict) else {}
    meta = {"guild": guild.get("name"), "channel": channel.get("name"), "channel_id": channel.get("id")}
    if channel.get("type") in THREAD_TYPES:
        meta.update(thread=channel.get("name"), thread_id=channel.get("id"),
                    channel=channel.get("category"), channel_id=channel.get("categoryId"))
    elif channel.get("category"):
        meta["category"] = channel["category"]
    return meta


def collect_export(collector: Collector, path: Path, fmt: str) -> int:
    """Add the prompts (and downloaded attachments) of one export file; return the items read.

    Positions count messages, and after a message each of its downloaded image attachments."""
    position = 0
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh, \
            bar(None, f"discord {path.name}", "msg") as progress:
        try:
            if path.suffix.lower() == ".csv":
                header, messages = {}, iter_csv_export(fh)
            else:
                header, messages = iter_json_export(fh)
            where = channel_meta(header)
            earlier = cut_off_copies(collector, path)
            for message in messages:
                progress.update()
                if earlier and isinstance(message, dict) and str(message.get("id")) in earlier:
                    collector.run.add("messages already read from a cut-off copy")
                    position += 1
                    continue
                position = add_message(collector, position + 1, message, fmt, where, path.parent)
        except CutOff as exc:
            collector.add_error(position + 1, "export cut off", f"{exc}; the source stays incomplete")
            collector.mark_incomplete()
            position += 1
        except (MalformedExport, csv.Error) as exc:
            collector.add_error(position + 1, "malformed export", str(exc))
            position += 1
    return position


def cut_off_copies(collector: Collector, path: Path) -> set[str]:
    """Message ids already imported from an earlier, cut-off copy of this export (same path and
    format): the whole file read later adds only the rest."""
    rows = collector.store.execute(
        "SELECT p.locator FROM prompts p JOIN sources s ON s.id = p.source_id WHERE s.kind = 'discord' "
        "AND s.uri = ? AND s.options = ? AND s.completed_run_id IS NULL AND s.id != ? AND p.locator IS NOT NULL",
        (str(path), json.dumps(collector.info.options, sort_keys=True), collector.source_id))
    return {row[0] for row in rows}


def malformed(message) -> str | None:
    """Why a message can't be read, or None: exports edited by hand or by other tools drift."""
    if not isinstance(message, dict):
        return f"message is a {type(message).__name__}, not an object"
    if not isinstance(message.get("content") or "", str):
        return f"content is a {type(message['content']).__name__}, not text"
    for key, kind in (("author", dict), ("attachments", list), ("mentions", list)):
        if message.get(key) is not None and not isinstance(message[key], kind):
            return f"{key} is a {type(message[key]).__name__}, not a {kind.__name__}"
    return None


def local_media(url: str, folder: Path) -> Path | None:
    """The downloaded file an attachment URL names (--media writes paths), if it is inside FOLDER."""
    if not url or "://" in url:
        return None
    path = (folder / url.replace("\\", "/")).resolve()
    root = folder.resolve()
    if path != root and root in path.parents and path.is_file():
        return path
    return None


def add_message(collector: Collector, position: int, message, fmt: str, where: dict, folder: Path) -> int:
    """Record one message at POSITION (and its media after it); return the last position used."""
    if problem := malformed(message):
        locator = str(message.get("id")) if isinstance(message, dict) and message.get("id") is not None else None
        if not collector.seen(position):
            collector.add_error(position, "malformed message", problem, locator)
        return position
    media = [local_media(a.get("url") or "", folder) for a in message.get("attachments") or []
             if isinstance(a, dict)]
    media = [m for m in media if m is not None]
    found = prompt_of(message, fmt)
    last = position + (len([m for m in media if is_image_name(m.name)]) if found and found[0] else 0)
    if collector.seen(last):
        return last
    locator = str(message["id"]) if message.get("id") is not None else None
    if found is None or not found[0]:
        collector.run.add("blends without text" if found else "messages without a prompt")
        return position
    prompt, meta, author = found
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        collector.add_error(position, "not utf-8", "undecodable bytes in the message", locator)
        return position
    attachments = [a.get("url") for a in message.get("attachments") or [] if isinstance(a, dict) and a.get("url")]
    reference = message.get("reference") if isinstance(message.get("reference"), dict) else {}
    meta = normalize_meta({**meta, **where, "attachments": attachments,
                           "reply_to": reference.get("messageId") if message.get("type") == "Reply" else None})
    collector.add_prompt(position, prompt, locator=locator, author=author,
                         created_at=message.get("timestamp"), meta=meta)
    return add_media(collector, position, media, locator)


def add_media(collector: Collector, position: int, media: list[Path], locator: str | None) -> int:
    """Downloaded image attachments after their message, linked to its prompt; the rest counted."""
    message_position = position
    for path in media:
        if not is_image_name(path.name):
            collector.run.add("media skipped: not an image")
            continue
        position += 1
        if path.stat().st_size > MAX_MEDIA_BYTES:
            collector.add_error(position, "file too big", f"over {MAX_MEDIA_BYTES} bytes", path.name)
            continue
        collector.add_image(position, path.read_bytes(), path.name, prompt_position=message_position,
                            meta={"message_id": locator} if locator else None)
    return position
