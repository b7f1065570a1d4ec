"""misc operators."""
