"""Cleaning presets against prompts labelled by reading (tests/clean_labels.tsv) and the false drops
and false keeps seen on real data."""

from pathlib import Path

import pytest

from promptmill.clean.prompts import load_preset

LABELS = Path(__file__).with_name("clean_labels.tsv")
# Rules whose job is to catch what is not a prompt (chat, bot noise, commands); the other
# kaggle-i2p filters pick the competition's style (short, few commas) and drop real prompts by design.
NOISE_RULES = {"first-person", "chat", "bot-noise", "empty", "length"}


def labelled():
    rows = [line.split("\t", 2) for line in LABELS.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")]
    return [(label, text) for label, _, text in rows]


def test_the_sample_is_a_few_hundred_labelled_real_prompts():
    rows = labelled()
    assert len(rows) >= 250 and {label for label, _ in rows} == {"keep", "drop"}
    assert len({text for _, text in rows}) == len(rows)


@pytest.mark.parametrize("preset_name", ["basic", "kaggle-i2p", "discord"])
def test_noise_rules_drop_no_labelled_prompt(preset_name):
    preset = load_preset(preset_name)
    false_drops = [(verdict.rule, text) for label, text in labelled() if label == "keep"
                   and not (verdict := preset.judge(text)).keep and verdict.rule in NOISE_RULES
                   and not (preset_name == "kaggle-i2p" and verdict.rule == "length")]
    assert false_drops == []


def test_discord_keeps_every_labelled_prompt():
    preset = load_preset("discord")
    assert [text for label, text in labelled() if label == "keep" and not preset.judge(text).keep] == []


@pytest.mark.parametrize("text, cleaned", [
    ("a horse", "a horse"), ("lion", "lion"), ("headphones", "headphones"),
    ("prompt: a lighthouse in a storm", "a lighthouse in a storm"),
    ('!dream "a castle on a hill" -n 4 -g -S 1234 -C 7 -A k_lms', "a castle on a hill"),
    ("!dream a bar fight inside a pub between costumed super heros",
     "a bar fight inside a pub between costumed super heros"),
    ("brass_woman_golden_hour_illustration_by_Brian_Froud_-i_-S_1161050876_ts-1660004767_idx-3",
     "brass woman golden hour illustration by Brian Froud"),
    (".echanical flower, budding bleeding hearts", ".echanical flower, budding bleeding hearts"),
])
def test_discord_keeps_real_short_and_command_wrapped_prompts(text, cleaned):
    verdict = load_preset("discord").judge(text)
    assert verdict.keep and verdict.text == cleaned


@pytest.mark.parametrize("text, rule", [
    ("can someone help me with img2img", "chat"), ("anyone know how to get sharper eyes?", "chat"),
    ("thanks!", "chat"), ("what model is this bot using?", "chat"),
    ("The queue is busy, please wait.", "bot-noise"), ("/imagine", "empty"), ("!help", "empty"),
])
def test_discord_drops_chat_status_and_commands(text, rule):
    verdict = load_preset("discord").judge(text)
    assert (verdict.keep, verdict.rule) == (False, rule)


@pytest.mark.parametrize("text", [
    "Despicable Me minions in a field of sunflowers", "My Hero Academia characters at the beach",
    "Portrait of King Juan Carlos I applying anesthesia to an agitated patient.",
    "gopro still from the french revolution, crowds storming the bastille",
    "single flower head from seed catalog, unique textures and patterns sure to please every gardener",
])
def test_kaggle_keeps_titles_and_styles_it_used_to_drop(text):
    assert load_preset("kaggle-i2p").judge(text).keep
