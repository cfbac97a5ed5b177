"""promptmill: text-to-image datasets with full provenance in one SQLite database."""

__version__ = "0.1.0"
