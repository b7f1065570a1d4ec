"""casts operators."""
