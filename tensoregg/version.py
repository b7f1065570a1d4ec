"""tensoregg's version (also in ``pyproject.toml``): artifacts and the compile cache record it."""

__version__ = "0.1.0"
