"""Readers for each kind of input; each feeds a promptmill.collect.Collector."""
