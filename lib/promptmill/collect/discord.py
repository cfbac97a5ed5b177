"""DiscordChatExporter exports (JSON or CSV): prompts from bot results or from user messages.

JSON exports can be gigabytes, so the ``messages`` array is read one object at a
time with ``json.JSONDecoder.raw_decode`` over a sliding text buffer: memory is
bounded by the largest single message (``MAX_MESSAGE_CHARS``), not the file.

Formats:
- ``dreambot``: SD bot results, ``Dreamt ... /dream prompt:<p> key:value ... for @user``;
  the ``key:value`` arguments (``negative_prompt:``, ``seed:`` ...) leave the prompt and go to its meta.
- ``midjourney``: ``**<prompt> --ar 3:2** - <@user> (fast)``; ``--`` parameters go to meta.
- ``messages``: every non-empty message of a human author.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from promptmill.collect.base import Collector, SourceInfo, file_sha256
from promptmill.core.progress import bar

FORMATS = ("dreambot", "midjourney", "messages")
READ_CHARS = 1 << 20
MAX_MESSAGE_CHARS = 16 << 20
_MESSAGES_KEY = re.compile(r'"messages"\s*:\s*\[')
_DREAM = re.compile(r"/dream\s+prompt:\s*(?P<args>.*?)\s*(?:```|\bfor\s+@(?P<user>[^\s`*]+)|$)", re.S)
_FOR_USER = re.compile(r"\bfor\s+@([^\s`*]+)")
_ARG = re.compile(r"\s+([a-z_]{2,}):(?!//)\s*")
_MIDJOURNEY = re.compile(r"^\*\*(?P<prompt>.+)\*\*\s+-\s+(?P<rest>.*)$", re.S)
_MENTION = re.compile(r"<@!?(\d+)>")
_MJ_PARAMS = re.compile(r"\s--[a-z]")
_IMAGE_PROMPT = re.compile(r"^<?(https?://\S+?)>?\s+")


class MalformedExport(ValueError):
    """The JSON stops making sense at some message."""


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
    except json.JSONDecodeError:
        header = {}

    def messages() -> Iterator[dict]:
        text, index, eof = buffer, match.end(), False
        while True:
            while index < len(text) and text[index] in " \t\r\n,":
                index += 1
            if index >= len(text):
                if eof:
                    raise MalformedExport("the file ends inside the messages array")
                chunk = fh.read(READ_CHARS)
                eof = not chunk
                text, index = text[index:] + chunk, 0
                continue
            if text[index] == "]":
                return
            try:
                message, end = decoder.raw_decode(text, index)
            except json.JSONDecodeError as exc:
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
    """CSV exports (AuthorID, Author, Date, Content, Attachments, Reactions) as JSON-like messages."""
    for row in csv.DictReader(fh):
        attachments = [{"url": url.strip()} for url in (row.get("Attachments") or "").split(",") if url.strip()]
        yield {"id": None, "type": "Default", "timestamp": row.get("Date"), "content": row.get("Content") or "",
               "author": {"id": row.get("AuthorID"), "name": row.get("Author"), "isBot": None},
               "attachments": attachments}


def dreambot_prompt(content: str) -> tuple[str, dict, str | None] | None:
    match = _DREAM.search(content)
    if not match:
        return None
    pieces = _ARG.split(" " + match["args"])
    prompt = pieces[0].strip().strip("`").strip()
    args = {key: value.strip().strip("`").strip() for key, value in zip(pieces[1::2], pieces[2::2])}
    user = match["user"] or (found[1] if (found := _FOR_USER.search(content, match.end())) else None)
    return prompt, args, user


def midjourney_prompt(content: str) -> tuple[str, dict, str | None] | None:
    match = _MIDJOURNEY.match(content.strip())
    if not match:
        return None
    prompt, meta = match["prompt"].strip(), {}
    image_prompts = []
    while image := _IMAGE_PROMPT.match(prompt):
        image_prompts.append(image[1])
        prompt = prompt[image.end():]
    if image_prompts:
        meta["image_prompts"] = image_prompts
    if params := _MJ_PARAMS.search(prompt):
        meta["parameters"] = prompt[params.start():].strip()
        prompt = prompt[:params.start()].strip()
    mention = _MENTION.search(match["rest"])
    return prompt, meta, mention[1] if mention else None


def prompt_of(message: dict, fmt: str) -> tuple[str, dict, str | None] | None:
    """(prompt, extra meta, author id) of a message in the given format, or None."""
    content = message.get("content") or ""
    author = message.get("author") or {}
    if fmt == "messages":
        if author.get("isBot") or not content.strip():
            return None
        return content.strip(), {}, author.get("id")
    if author.get("isBot") is False:
        return None
    found = dreambot_prompt(content) if fmt == "dreambot" else midjourney_prompt(content)
    if not found:
        return None
    prompt, meta, user = found
    if fmt == "dreambot" and user:  # "for @name": the mentioned user's id if the export lists it
        mentioned = {m.get("name"): m.get("id") for m in message.get("mentions") or [] if isinstance(m, dict)}
        user = mentioned.get(user.lstrip("@")) or f"@{user.lstrip('@')}"
    return prompt, meta, user


def source_info(path: Path, fmt: str) -> SourceInfo:
    return SourceInfo(kind="discord", uri=str(path), sha256=file_sha256(path), options={"format": fmt},
                      bytes=os.path.getsize(path))


def export_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in (".json", ".csv") and p.is_file())
    return [path]


def collect_export(collector: Collector, path: Path, fmt: str) -> int:
    """Add the prompts of one export file; return the number of messages read."""
    position = 0
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh, \
            bar(None, f"discord {path.name}", "msg") as progress:
        try:
            if path.suffix.lower() == ".csv":
                header, messages = {}, iter_csv_export(fh)
            else:
                header, messages = iter_json_export(fh)
            channel = header.get("channel") or {}
            guild = (header.get("guild") or {}).get("name")
            for position, message in enumerate(messages, 1):
                progress.update()
                if collector.seen(position):
                    continue
                add_message(collector, position, message, fmt, channel, guild)
        except (MalformedExport, csv.Error) as exc:
            collector.add_error(position + 1, "malformed export", str(exc))
            position += 1
    return position


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


def add_message(collector: Collector, position: int, message: dict, fmt: str, channel: dict, guild):
    if problem := malformed(message):
        locator = str(message.get("id")) if isinstance(message, dict) and message.get("id") is not None else None
        collector.add_error(position, "malformed message", problem, locator)
        return
    locator = str(message["id"]) if message.get("id") is not None else None
    found = prompt_of(message, fmt)
    if found is None:
        collector.run.add("messages without a prompt")
        return
    prompt, meta, author = found
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        collector.add_error(position, "not utf-8", "undecodable bytes in the message", locator)
        return
    attachments = [a.get("url") for a in message.get("attachments") or [] if isinstance(a, dict) and a.get("url")]
    meta = {**meta, "channel": channel.get("name"), "channel_id": channel.get("id"), "guild": guild,
            "attachments": attachments or None}
    meta = {key: value for key, value in meta.items() if value not in (None, "", [])}
    collector.add_prompt(position, prompt, locator=locator, author=author,
                         created_at=message.get("timestamp"), meta=meta)
