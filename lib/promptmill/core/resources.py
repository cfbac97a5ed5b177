"""The package's own data (migrations, cleaning presets, templates, prices, Datasette metadata).

Read through importlib.resources, so an installed wheel finds them exactly as a
checkout does.
"""

from importlib.resources import files
from pathlib import Path

SCHEMA_DIR = Path(str(files("promptmill") / "schema"))
