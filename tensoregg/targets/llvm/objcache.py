"""Object code on disk, shared by every compile of every process of this user: a kernel compiled once
(by its IR text, the target machine, LLVM's version and the O3 pipeline's source) is not compiled
again by a later compile of any model that has it.

An entry is one file ``<key>.o`` holding ``MAGIC``, the SHA-256 of the object code, then the object
code, written atomically. It is read only from a regular file of this user that is no symlink, in a
directory of this user that is no symlink (``cachefiles.owned_file``), and only if its digest matches:
a truncated or altered entry is ignored (and replaced by the next compile that needs it), never
loaded. Entries live in ``$TENSOREGG_OBJECT_CACHE``, else ``$XDG_CACHE_HOME/tensoregg/objects``; the
value ``off`` disables the cache. The directory is kept under ``MAX_BYTES`` (the least recently used
entries are removed first).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

from tensoregg.targets.llvm import cachefiles, pipeline

ENV = "TENSOREGG_OBJECT_CACHE"
MAGIC = b"tensoregg object 1\n"
MAX_BYTES = 512 << 20
"""The directory's size above which the least recently used entries are removed (to 3/4 of it)."""
MAX_ENTRY = 64 << 20
"""A larger entry is not read."""
TRIM_EVERY = 64
"""Stores between two looks at the directory's size (listing it costs in proportion to its entries)."""
_stores = 0


def cache_dir() -> Path | None:
    """Where entries live (see the module docstring); None when the cache is off."""
    wanted = os.environ.get(ENV, "")
    if wanted == "off":
        return None
    return Path(wanted) if wanted else cachefiles.cache_dir() / "objects"


@functools.cache
def _toolchain() -> str:
    """What else decides the object code for a given text: llvmlite's and LLVM's versions and the
    source of the O3 pipeline (its options)."""
    source = Path(pipeline.__file__).read_bytes()
    return json.dumps([llvmlite.__version__, list(llvm.llvm_version_info),
                       hashlib.sha256(source).hexdigest()])


def key(text: str, kind: str, machine: dict[str, object]) -> str:
    """The key of the object code of IR ``text`` built as ``kind`` for ``machine``."""
    digest = hashlib.sha256(json.dumps([kind, machine, _toolchain()], sort_keys=True).encode())
    digest.update(text.encode())
    return digest.hexdigest()


def load(k: str) -> bytes | None:
    """The entry ``k``'s object code; None where there is none, or none that can be trusted."""
    folder = cache_dir()
    if folder is None:
        return None
    path = folder / f"{k}.o"
    if not cachefiles.owned_file(path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_ENTRY + 1)
    except OSError:
        return None
    head = len(MAGIC) + 32
    code, digest = data[head:], data[len(MAGIC):head]
    if len(data) > MAX_ENTRY or not data.startswith(MAGIC) or hashlib.sha256(code).digest() != digest:
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used
    return code


def store(entries: dict[str, bytes]) -> None:
    """Write each key's object code (atomically), and trim the directory to ``MAX_BYTES`` (at a
    process's first store and every ``TRIM_EVERY`` stores after); nothing where the directory cannot
    be made, is a symlink or is read-only."""
    folder = cache_dir()
    if folder is None or not entries:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not cachefiles.safe_dir(folder):
            return
        for k, code in entries.items():
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{k}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(MAGIC + hashlib.sha256(code).digest() + code)
                os.replace(tmp, folder / f"{k}.o")
            except BaseException:
                os.unlink(tmp)
                raise
        global _stores
        if _stores % TRIM_EVERY == 0:
            _trim(folder)
        _stores += 1
    except OSError:
        pass


def clear() -> int:
    """Remove every entry; returns how many there were."""
    folder = cache_dir()
    entries = list(folder.glob("*.o")) if folder is not None and cachefiles.safe_dir(folder) else []
    for path in entries:
        path.unlink(missing_ok=True)
    return len(entries)


def _trim(folder: Path) -> None:
    """Remove the least recently used entries while the directory holds more than ``MAX_BYTES``."""
    entries = []
    for path in folder.glob("*.o"):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    if total <= MAX_BYTES:
        return
    for _, size, path in sorted(entries):
        if total <= MAX_BYTES * 3 // 4:
            break
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
