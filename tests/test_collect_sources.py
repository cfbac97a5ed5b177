"""The Source registry: built-in sources and a plugin's, found through the same entry point group."""

import subprocess
import sys
import textwrap

from promptmill.collect.base import BUILTIN_SOURCES, Source, sources

PLUGIN = '''
import click

from promptmill.collect.base import Source, SourceInfo
from promptmill.core.text import sha256_hex


class Shout(Source):
    """Prompts given on the command line, upper-cased."""

    name = "shout"
    params = (click.Argument(["words"], nargs=-1, required=True),)

    def imports(self):
        words = self.options["words"]

        def read(collector):
            for position, word in enumerate(words, 1):
                collector.add_prompt(position, word.upper(), meta={"plugin": "shout"})
            return len(words)

        yield SourceInfo(kind="shout", uri="argv", sha256=sha256_hex(" ".join(words))), read
'''


def install_plugin(site):
    """A package as pip leaves it: its module and a dist-info with entry_points.txt."""
    (site / "shout_source.py").write_text(PLUGIN, encoding="utf-8")
    info = site / "shout_source-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-source\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[promptmill.sources]\nshout = shout_source:Shout\n", encoding="utf-8")


def test_builtin_sources_are_source_classes():
    found = sources()
    assert set(BUILTIN_SOURCES) <= set(found)
    for name in BUILTIN_SOURCES:
        loaded = found[name]()
        assert issubclass(loaded, Source) and loaded.name == name


def test_plugin_source_runs_as_a_collect_command(tmp_path, db_path):
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site)
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv.pop(1))
        from promptmill.cli import main
        main()
    """)
    command = [sys.executable, "-c", code, str(site), "collect", "--db", str(db_path)]
    listed = subprocess.run([*command, "-h"], capture_output=True, text=True, timeout=120)
    assert "shout" in listed.stdout and "Prompts given on the command line" in listed.stdout
    done = subprocess.run([*command, "shout", "red fox", "blue whale"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    again = subprocess.run([*command, "shout", "red fox", "blue whale"], capture_output=True, text=True, timeout=120)
    assert "sources already imported 1" in again.stderr

    from promptmill.core.store import open_store

    store = open_store(db_path)
    try:
        rows = store.query("SELECT p.text, p.meta, s.kind FROM prompts p JOIN sources s ON s.id = p.source_id "
                           "ORDER BY p.position")
        runs = store.query("SELECT command FROM runs")
    finally:
        store.close()
    assert [(r["text"], r["kind"]) for r in rows] == [("RED FOX", "shout"), ("BLUE WHALE", "shout")]
    assert rows[0]["meta"] == '{"plugin": "shout"}'
    assert [r["command"] for r in runs] == ["shout", "shout"]
