"""Extraction: cost models (the protocol and the analytic ones) and extractors (greedy DAG-aware,
exact ILP)."""
