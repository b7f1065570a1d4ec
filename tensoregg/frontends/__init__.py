"""Frontends translate models into ``tensoregg.ir`` Graphs."""
