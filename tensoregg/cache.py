"""The compile cache: artifacts of compiled models, found again by a content hash.

The key is the SHA-256 of the model's bytes, the target's name and description (every fact its cost
model and code generator read), the rule families, the compile options, tensoregg's version, the
artifact format and the source of the whole package (rules, lowering, code generators: a changed
line anywhere is another key). An entry is the model's artifact (``Module.save``), loaded by
``tensoregg.load``: every check of ``read_artifact`` applies, so a corrupted entry, or one written by
another version, is ignored (with a logged warning), removed and rebuilt, never trusted.

Entries live in ``$TENSOREGG_CACHE_DIR``, else ``$XDG_CACHE_HOME/tensoregg/artifacts``, else
``~/.cache/tensoregg/artifacts``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensoregg.errors import ArtifactError
from tensoregg.runtime import Module, load
from tensoregg.runtime.artifact import FORMAT_VERSION
from tensoregg.targets.llvm import cachefiles
from tensoregg.version import __version__

if TYPE_CHECKING:
    from tensoregg.ir.target import Target

log = logging.getLogger(__name__)

ENV = "TENSOREGG_CACHE_DIR"
SUFFIX = ".tegg"


def cache_dir() -> Path:
    """Where entries live (see the module docstring)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    return cachefiles.cache_dir() / "artifacts"


@functools.cache
def source_digest() -> str:
    """SHA-256 of every Python file of the package (path and content)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def model_digest(model: Any) -> str | None:
    """SHA-256 of the bytes that define ``model`` as ``compile`` takes it (an ONNX path, bytes or
    ModelProto; a file is hashed as it is read, never held whole), None for what has none (a Graph)
    or cannot be read."""
    if isinstance(model, (str, os.PathLike)):
        try:
            with open(model, "rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:  # compile reports it
            return None
    if isinstance(model, bytes):
        return hashlib.sha256(model).hexdigest()
    if hasattr(model, "SerializeToString"):
        return hashlib.sha256(model.SerializeToString()).hexdigest()
    return None


def cache_key(model_digest: str, target: str, description: Target, rule_families: Sequence[str] | None,
              options: Mapping[str, Any]) -> str:
    """The key of a compile (see the module docstring) of the model whose bytes hash to ``model_digest``."""
    facts = json.dumps([model_digest, target, repr(description),
                        list(rule_families) if rule_families is not None else None,
                        options, __version__, FORMAT_VERSION, source_digest()], sort_keys=True, default=str)
    return hashlib.sha256(facts.encode()).hexdigest()


def lookup(key: str) -> Module | None:
    """The cached Module of ``key``, or None (a corrupted or foreign entry is removed, with a warning)."""
    path = cache_dir() / f"{key}{SUFFIX}"
    if not path.exists():
        return None
    if not cachefiles.owned_file(path):  # an artifact's hashes check integrity, not who wrote it
        log.warning("ignoring compile cache entry %s: not a regular file of this user in a directory "
                    "of this user", path)
        return None
    try:
        module = load(path)
        version = module.artifact().manifest["tensoregg_version"]
        if version != __version__:
            raise ArtifactError(f"written by tensoregg {version}, this is {__version__}")
        return module
    except ArtifactError as exc:
        log.warning("ignoring compile cache entry %s (rebuilding it): %s", path, exc)
        path.unlink(missing_ok=True)
        return None


def store(key: str, module: Module) -> None:
    """Save ``module`` as the entry of ``key`` (a cache that cannot be written is skipped, with a
    warning)."""
    try:
        directory = cache_dir()
        directory.mkdir(parents=True, exist_ok=True)
        module.save(directory / f"{key}{SUFFIX}")
    except (OSError, ArtifactError) as exc:
        log.warning("compile cache: cannot store %s: %s", key, exc)


def clear() -> int:
    """Remove every entry; returns how many there were."""
    entries = list(cache_dir().glob(f"*{SUFFIX}")) if cache_dir().is_dir() else []
    for path in entries:
        path.unlink(missing_ok=True)
    return len(entries)
