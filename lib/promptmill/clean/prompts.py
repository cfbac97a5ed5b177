"""Judge prompts with a cleaning preset: rewrite them with transforms, then keep or drop them with filters.

A preset is a TOML file (``schema/clean/<name>.toml``, or any path) with a list
of named rules. All transforms run first, in file order, then all filters, in
file order, on the *cleaned* text: a prompt that is too long only because of
``--ar 16:9 --seed 1`` and ``trending on artstation`` is judged without them.
The first filter that fails drops the prompt and names itself as the rule;
a text that transforms empty is dropped by the rule ``empty``.

Every prompt gets one ``clean`` decision per scope, ``<preset>@<hash of the
preset file>`` (plus the language filter when one is asked for): editing the
preset makes a new scope, re-running the same one adds nothing. The cleaned
text goes into the keep decision's ``value`` only when it differs from the
text as found (``prompt_state.clean_text`` falls back to the original), so
untouched prompts cost no extra storage. Which prompts are judged: every
prompt (of the chosen sources) without a decision in this scope, whatever
other decisions it has; dedup or review drops do not hide prompts from clean.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from promptmill.clean.rules import FILTERS, TRANSFORMS, PresetError
from promptmill.core import resources
from promptmill.core.progress import bar
from promptmill.core.runs import Run
from promptmill.core.save import save_decisions
from promptmill.core.store import Store

PRESET_DIR = resources.SCHEMA_DIR / "clean"
BATCH_PROMPTS = 10_000
EMPTY_RULE = "empty"


@dataclass(frozen=True)
class Verdict:
    keep: bool
    text: str
    rule: str | None = None
    reason: str | None = None


@dataclass
class Preset:
    name: str
    digest: str
    transforms: list[tuple[str, object]] = field(default_factory=list)
    filters: list[tuple[str, object]] = field(default_factory=list)
    extra_scope: str = ""

    @property
    def scope(self) -> str:
        return f"{self.name}@{self.digest}{self.extra_scope}"

    def add_language_filter(self, lang: str, min_confidence: float):
        """The optional --lang filter runs after the preset's own filters and joins the scope."""
        self.filters.append(("language", FILTERS["language"](lang=lang, min_confidence=min_confidence)))
        self.extra_scope += f"+lang={lang}@{min_confidence:g}"

    def judge(self, text: str) -> Verdict:
        """Transforms in order, then the first failing filter drops; the cleaned text either way."""
        changed_by = []
        for name, transform in self.transforms:
            new = transform(text)
            if new != text:
                changed_by.append(name)
                text = new
        if not text:
            return Verdict(False, text, EMPTY_RULE, f"nothing left after {', '.join(changed_by) or 'cleaning'}")
        for name, judge in self.filters:
            reason = judge(text)
            if reason is not None:
                return Verdict(False, text, name, reason)
        return Verdict(True, text, None, f"cleaned by {', '.join(changed_by)}" if changed_by else None)


def preset_path(name_or_path: str) -> Path:
    """A bundled preset by name, or a user's own preset file by path."""
    bundled = PRESET_DIR / f"{name_or_path}.toml"
    if bundled.is_file():
        return bundled
    path = Path(name_or_path)
    if path.is_file():
        return path
    names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
    raise PresetError(f"no preset {name_or_path!r} (bundled: {names}; or give a .toml path)")


def load_preset(name_or_path: str) -> Preset:
    path = preset_path(name_or_path)
    data = path.read_bytes()
    try:
        spec = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PresetError(f"{path}: {exc}") from exc
    return build_preset(spec, hashlib.sha256(data).hexdigest()[:8], default_name=path.stem)


def build_preset(spec: dict, digest: str, default_name: str = "custom") -> Preset:
    """Build every rule once: regexes compiled, parameters checked."""
    preset = Preset(name=spec.get("name", default_name), digest=digest)
    seen = set()
    for number, rule in enumerate(spec.get("rules", []), 1):
        rule = dict(rule)
        name, use = rule.pop("name", None), rule.pop("use", None)
        rule.pop("note", None)
        if not name or not use:
            raise PresetError(f"rule {number} needs a 'name' and a 'use'")
        if name in seen or name == EMPTY_RULE:
            raise PresetError(f"rule name {name!r} used twice (or reserved)")
        seen.add(name)
        if use in TRANSFORMS:
            factory, target = TRANSFORMS[use], preset.transforms
        elif use in FILTERS:
            factory, target = FILTERS[use], preset.filters
        else:
            known = ", ".join(sorted(TRANSFORMS) + sorted(FILTERS))
            raise PresetError(f"rule {name!r}: unknown use {use!r} (known: {known})")
        try:
            target.append((name, factory(**rule)))
        except PresetError as exc:
            raise PresetError(f"rule {name!r}: {exc}") from exc
        except TypeError as exc:
            raise PresetError(f"rule {name!r}: bad parameters for {use!r}: {exc}") from exc
    if not preset.transforms and not preset.filters:
        raise PresetError(f"preset {preset.name!r} has no rules")
    return preset


_PENDING = """
    SELECT p.id, p.text FROM prompts p JOIN sources s ON s.id = p.source_id
    WHERE p.id > ? AND ({where})
      AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.item_type = 'prompt' AND d.item_id = p.id
                      AND d.stage = 'clean' AND d.scope = ?)
    ORDER BY p.id LIMIT ?
"""


def clean_prompts(store: Store, run: Run, preset: Preset, where: str = "1", params: tuple = (),
                  batch: int = BATCH_PROMPTS) -> None:
    """Judge every not-yet-judged prompt; one transaction per batch, so a kill loses at most one batch."""
    scope = preset.scope
    total = store.scalar(f"SELECT count(*) FROM prompts p JOIN sources s ON s.id = p.source_id "
                         f"WHERE ({where})", params)
    done = store.scalar(
        f"SELECT count(*) FROM prompts p JOIN sources s ON s.id = p.source_id WHERE ({where}) AND EXISTS "
        f"(SELECT 1 FROM decisions d WHERE d.item_type = 'prompt' AND d.item_id = p.id AND d.stage = 'clean' "
        f"AND d.scope = ?)", (*params, scope))
    if done:
        run.add("prompts already judged", done)
    last_id = 0
    with bar(total - done, f"clean {preset.name}", "prompt", True) as progress:
        while rows := store.execute(_PENDING.format(where=where), (last_id, *params, scope, batch)).fetchall():
            decisions = []
            for prompt_id, text in rows:
                verdict = preset.judge(text)
                if verdict.keep:
                    value = verdict.text if verdict.text != text else None
                    decisions.append({"item_type": "prompt", "item_id": prompt_id, "stage": "clean",
                                      "verdict": "keep", "scope": scope, "reason": verdict.reason, "value": value})
                    run.add("prompts kept")
                    if value is not None:
                        run.add("prompts rewritten")
                else:
                    decisions.append({"item_type": "prompt", "item_id": prompt_id, "stage": "clean",
                                      "verdict": "drop", "scope": scope, "rule": verdict.rule,
                                      "reason": verdict.reason})
                    run.add("prompts dropped")
                    run.add(f"dropped by {verdict.rule}")
            with store.transaction() as conn:
                save_decisions(conn, run, decisions)
            last_id = rows[-1][0]
            progress.update(len(rows))
    run.save_counts()
