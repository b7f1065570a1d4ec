"""The files the llvm target caches under ``$XDG_CACHE_HOME/tensoregg`` (the host's measurement, the
derived GEMM schedules): plain JSON, read only from a regular file of this user that is no symlink,
in a directory of this user that is no symlink, and written atomically (a fresh temporary file,
renamed over the old one). Whoever reads one still validates its values: a file is a hint, never
trusted."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

MAX_BYTES = 4 << 20
"""A larger cache file is not read."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tensoregg`` (default ``~/.cache/tensoregg``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tensoregg"


def _ours(st: os.stat_result, kind: int) -> bool:
    return stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.getuid()


def safe_dir(folder: Path) -> bool:
    """Whether ``folder`` is a directory of this user that is no symlink."""
    try:
        return _ours(os.lstat(folder), stat.S_IFDIR)
    except OSError:
        return False


def owned_file(path: Path) -> bool:
    """Whether ``path`` is a regular file of this user, no symlink, in a directory of this user that is
    no symlink (what a cache may read)."""
    try:
        return safe_dir(path.parent) and _ours(os.lstat(path), stat.S_IFREG)
    except OSError:
        return False


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None where it is missing, unreadable, not JSON, over ``MAX_BYTES``, a
    symlink or not a regular file of this user, or in a directory that is a symlink."""
    if not safe_dir(path.parent):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not _ours(st, stat.S_IFREG) or st.st_size > MAX_BYTES:
            return None
        try:
            return json.loads(f.read(MAX_BYTES))
        except (OSError, ValueError):
            return None


def write_json(path: Path, data: Any) -> None:
    """``data`` as JSON into ``path``, atomically (concurrent writers each write a whole file; the last
    one stays); nothing where the directory cannot be made, is a symlink or is read-only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not safe_dir(path.parent):
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(data, allow_nan=False))
            os.replace(tmp, path)  # replaces a symlink at ``path`` itself, never its target
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, ValueError):
        pass  # a read-only home: measure (derive) again next time
