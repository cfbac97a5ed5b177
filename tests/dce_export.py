"""Exports written the way DiscordChatExporter's JsonMessageWriter and CsvMessageWriter write them.

Field order, defaults and rendering follow its writers: with markdown formatting on
(its default) a user mention ``<@id>`` is written as ``@DisplayName`` (the member's
nickname, else the user's name) in JSON and CSV alike; with it off the raw ``<@id>``
stays. The CSV has AuthorID, Author (``name`` or ``name#0000``), Date (.NET "o"
format), Content, Attachments, Reactions, every value quoted, and no isBot. System
messages carry their fallback text. ``--media`` downloads attachments into
``<export file>_Files/`` as ``<stem>-<16 hex of sha256(url)><ext>`` and writes that
relative path as the attachment's url.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

_MENTION = re.compile(r"<@!?(\d+)>")


@dataclass
class User:
    id: str
    name: str
    nickname: str | None = None
    is_bot: bool = False

    @property
    def display(self) -> str:
        return self.nickname or self.name

    def json(self) -> dict:
        return {"id": self.id, "name": self.name, "discriminator": "0000", "nickname": self.display,
                "color": None, "isBot": self.is_bot, "roles": [],
                "avatarUrl": "https://cdn.discordapp.com/embed/avatars/0.png"}


@dataclass
class Message:
    id: str
    author: User
    content: str  # as Discord stores it: <@id> mentions
    type: str = "Default"
    mentions: list[User] = field(default_factory=list)
    attachments: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, bytes)
    stickers: list[dict] = field(default_factory=list)
    reference: str | None = None  # replied-to or forwarded message id
    forwarded: str | None = None  # a forwarded message's content
    minute: int = 0


@dataclass
class Export:
    guild: str = "Stable Foundation"
    channel: str = "dream-results"
    channel_type: str = "GuildTextChat"
    parent: str | None = "Results"
    markdown: bool = True
    media: bool = False
    users: dict[str, User] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)

    def add(self, message: Message) -> Message:
        for user in (message.author, *message.mentions):
            self.users[user.id] = user
        self.messages.append(message)
        return message

    def render(self, content: str) -> str:
        if not self.markdown:
            return content
        return _MENTION.sub(lambda m: "@" + (self.users[m[1]].display if m[1] in self.users else "Unknown"), content)

    def timestamp(self, message: Message) -> dt.datetime:
        return dt.datetime(2022, 8, 20, 12, 0, tzinfo=dt.UTC) + dt.timedelta(minutes=message.minute)

    def attachment_url(self, path: Path, message: Message, file_name: str, data: bytes) -> str:
        url = f"https://cdn.discordapp.com/attachments/1000/{message.id}/{file_name}"
        if not self.media:
            return url
        stem, dot, ext = file_name.rpartition(".")
        local = f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:16]}{dot}{ext}"
        folder = path.parent / f"{path.name}_Files"
        folder.mkdir(exist_ok=True)
        (folder / local).write_bytes(data)
        return f"{path.name}_Files/{local}"

    def message_json(self, path: Path, message: Message) -> dict:
        for user in (message.author, *message.mentions):
            self.users.setdefault(user.id, user)
        out = {
            "id": message.id, "type": message.type,
            "timestamp": self.timestamp(message).isoformat(timespec="milliseconds"),
            "timestampEdited": None, "callEndedTimestamp": None, "isPinned": False,
            "content": message.content if message.type not in ("Default", "Reply") else self.render(message.content),
            "author": message.author.json(),
            "attachments": [{"id": f"{message.id}{i}", "url": self.attachment_url(path, message, name, data),
                             "fileName": name, "fileSizeBytes": len(data)}
                            for i, (name, data) in enumerate(message.attachments)],
            "embeds": [], "stickers": message.stickers, "reactions": [],
            "mentions": [user.json() for user in message.mentions],
        }
        if message.reference:
            out["reference"] = {"type": "Forward" if message.forwarded is not None else "Default",
                                "messageId": message.reference, "channelId": "1000", "guildId": "900"}
        if message.forwarded is not None:
            out["forwardedMessage"] = {"timestamp": out["timestamp"], "timestampEdited": None,
                                       "content": self.render(message.forwarded), "attachments": [],
                                       "embeds": [], "stickers": []}
        out["inlineEmojis"] = []
        return out

    def write_json(self, path: Path, bom: bool = False, messages=None) -> Path:
        """The export, written message by message as DCE's Utf8JsonWriter streams it (indented,
        unescaped non-ASCII); MESSAGES may be any iterable, so a huge export never sits in memory."""
        header = {
            "guild": {"id": "900", "name": self.guild, "iconUrl": "https://cdn.discordapp.com/icons/900/a.png"},
            "channel": {"id": "1000", "type": self.channel_type, "categoryId": "990" if self.parent else None,
                        "category": self.parent, "name": self.channel, "topic": None},
            "dateRange": {"after": None, "before": None},
            "exportedAt": "2022-08-21T00:00:00.000+00:00",
        }
        count = 0
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(("\ufeff" if bom else "") + json.dumps(header, indent=2, ensure_ascii=False)[:-2]
                     + ',\n  "messages": [')
            for count, message in enumerate(self.messages if messages is None else messages, 1):
                text = json.dumps(self.message_json(path, message), indent=2, ensure_ascii=False)
                fh.write(("," if count > 1 else "") + "\n    " + text.replace("\n", "\n    "))
            fh.write(f'\n  ],\n  "messageCount": {count}\n}}')
        return path

    def write_csv(self, path: Path, newline: str = "\n") -> Path:
        def quoted(value: str) -> str:
            return '"' + value.replace('"', '""') + '"'

        lines = ["AuthorID,Author,Date,Content,Attachments,Reactions"]
        for message in self.messages:
            date = self.timestamp(message).strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00")
            urls = ",".join(self.attachment_url(path, message, name, data) for name, data in message.attachments)
            lines.append(",".join(quoted(v) for v in (message.author.id, message.author.name, date,
                                                     self.render(message.content), urls, "")))
        path.write_text(newline.join(lines) + newline, encoding="utf-8", newline="")
        return path


def read_csv_rows(path: Path) -> list[dict]:
    """The CSV as a spreadsheet would read it, to check the writer above against."""
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))
