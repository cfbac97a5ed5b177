"""Datasette loads every file in this folder as a plugin (`datasette --plugins-dir lib/promptmill/datasette_plugins`).

The hooks live in promptmill.datasette_plugin; naming them here registers them."""

from promptmill.datasette_plugin import register_routes, render_cell  # noqa: F401
