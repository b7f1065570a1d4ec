"""Saved artifacts: a compiled model in one zip file (``.tegg``) that runs without the compiler.

Entries (parts) of the zip:

- ``manifest.json``: the JSON object below;
- ``graph.txt``: the optimized Graph as text (what ``print(module.graph)`` shows);
- the target's code parts (``llvm``: ``libtensoregg_model.so``, ``tensoregg.h``, ``weights.npy``,
  and ``outputs/<k>.npy`` for an output that is a constant).

The manifest holds ``format`` (``FORMAT``), ``format_version`` (``FORMAT_VERSION``),
``tensoregg_version``, ``target`` (its name), ``inputs`` and ``outputs`` (lists of ``{"name",
"dtype", "shape"}``), ``graph`` (the name of the graph part), ``code`` (the target's own object: for
``llvm`` its memory plan, kernel order, CPU and parts; each target documents its own), ``parts``
(the SHA-256 of every other entry, by name) and ``manifest_sha256``, the SHA-256 of the manifest's
canonical JSON without that field.

``read_artifact`` checks, before anything in the file is used: the zip's structure, the manifest's
types, its own hash, the format and its version, that the parts are exactly those the manifest names
(no missing or extra ones, no unsafe names), and every part's hash. Any failure is an
``ArtifactError`` naming the part. ``load`` (``tensoregg.runtime.module``) then hands the artifact to
its target's loader (``LOADERS``: a loader imports numpy, the standard library and
``tensoregg.runtime`` only).
``.npy`` parts are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import re
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tensoregg.errors import ArtifactError, ParameterError
from tensoregg.runtime.signature import TensorSpec
from tensoregg.version import __version__

FORMAT = "tensoregg-artifact"
FORMAT_VERSION = 1
"""Bumped whenever what a loader expects changes (manifest fields, a part's layout, the C ABI)."""
MANIFEST = "manifest.json"
GRAPH = "graph.txt"
NPY_HEADER_MAX = 1 << 16
"""Bytes of a ``.npy`` file its header may take (numpy's own limit for version 1 is 64 KiB)."""
MAX_MANIFEST = 64 << 20
"""Bytes: a larger manifest is not one this code wrote."""
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*")
"""Part names: relative paths whose components do not start with a dot (no ``..``, no absolute
paths, no backslashes), so that extracting an artifact writes only inside its directory."""
LOADERS: dict[str, str] = {"llvm": "tensoregg.runtime.native:load_native",
                           "cuda": "tensoregg.runtime.cuda:load_cuda"}
"""Target name -> ``module:function`` of its loader: ``(Artifact) -> Program`` (a target registers
its own with ``register_loader``)."""


def npy(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` part (no pickles)."""
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(array), allow_pickle=False)
    return out.getvalue()


@dataclass(frozen=True)
class TargetCode:
    """What a target saves of a compiled program: its manifest object (``code``) and its parts."""

    manifest: dict[str, Any]
    parts: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    """A checked artifact: its manifest and its parts (every entry but the manifest), by name."""

    manifest: dict[str, Any]
    parts: Mapping[str, bytes | memoryview]

    @property
    def target(self) -> str:
        return str(self.manifest["target"])

    @property
    def inputs(self) -> list[TensorSpec]:
        return [_spec(t, f".inputs[{k}]") for k, t in enumerate(self.manifest["inputs"])]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [_spec(t, f".outputs[{k}]") for k, t in enumerate(self.manifest["outputs"])]

    @property
    def graph_text(self) -> str:
        return bytes(self.parts[self.manifest["graph"]]).decode()

    def array(self, name: str) -> np.ndarray:
        """The ``.npy`` part ``name``, a read-only view of the part (no pickles, no object arrays)."""
        data = self.parts.get(name)
        try:
            if data is None:
                raise ValueError("no such part")
            head = io.BytesIO(bytes(data[:NPY_HEADER_MAX]))
            version = np.lib.format.read_magic(head)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f".npy version {version}")
            shape, fortran, dtype = read_header(head)
            if dtype.hasobject:
                raise ValueError("an object array")
            count = int(np.prod(shape, dtype=np.int64))
            flat = np.frombuffer(data, dtype, count=count, offset=head.tell())
            return flat.reshape(shape, order="F" if fortran else "C")
        except (ValueError, TypeError, OSError) as exc:
            raise ArtifactError(f"part {name!r}: not a readable .npy array ({exc})") from exc


def build_artifact(target: str, inputs: list[TensorSpec], outputs: list[TensorSpec], graph_text: str,
                   code: TargetCode) -> Artifact:
    """The artifact of a model compiled for ``target`` (see the module docstring)."""
    parts = {GRAPH: graph_text.encode(), **code.parts}
    for name in parts:
        if not SAFE_NAME.fullmatch(name) or name == MANIFEST:
            raise ArtifactError(f"part {name!r}: not a valid part name")
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "tensoregg_version": __version__,
                "target": target, "inputs": [spec_json(t) for t in inputs],
                "outputs": [spec_json(t) for t in outputs], "graph": GRAPH, "code": code.manifest,
                "parts": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(parts.items())}}
    manifest["manifest_sha256"] = _manifest_hash(manifest)
    return Artifact(manifest, parts)


def artifact_path(path: object) -> Path:
    """``path`` as a Path; ParameterError unless it is a str or os.PathLike."""
    if not isinstance(path, str | os.PathLike):
        raise ParameterError(f"an artifact's path must be a str or os.PathLike, got {type(path).__name__} "
                             f"{path!r}")
    return Path(path)


def write_artifact(artifact: Artifact, path: str | os.PathLike[str]) -> Path:
    """Write ``artifact`` to ``path`` atomically (a temporary file renamed over it), every entry
    stored uncompressed."""
    path = artifact_path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w") as zf:  # stored, not compressed: every byte is checked (a
            zf.writestr(MANIFEST, json.dumps(artifact.manifest, indent=1))  # deflate stream has slack)
            for name, data in sorted(artifact.parts.items()):
                zf.writestr(name, bytes(data))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_artifact(path: str | os.PathLike[str]) -> Artifact:
    """The artifact at ``path``, checked (see the module docstring); ArtifactError naming the part
    otherwise. Parts are views of the file mapped into memory (read-only), not copies."""
    path = artifact_path(path)
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
            entries = {e.filename: e for e in zf.infolist()}
            names = [e.filename for e in zf.infolist()]
            for name in names:
                if not SAFE_NAME.fullmatch(name):
                    raise ArtifactError(f"part {name!r}: unsafe or invalid name")
            if len(entries) != len(names):
                raise ArtifactError(f"parts named twice: {sorted({n for n in names if names.count(n) > 1})}")
            if MANIFEST not in entries:
                raise ArtifactError(f"part {MANIFEST!r} is missing")
            if entries[MANIFEST].file_size > MAX_MANIFEST:
                raise ArtifactError(f"part {MANIFEST!r} is too large")
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # every page mapped at once:
            mapped = memoryview(mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ))  # all are read
    except zipfile.BadZipFile as exc:
        raise ArtifactError(f"{os.fspath(path)}: not a readable artifact ({exc})") from exc
    except OSError as exc:
        raise ArtifactError(f"{os.fspath(path)}: cannot read the artifact ({exc})") from exc
    manifest = _check_manifest(bytes(_stored(mapped, entries[MANIFEST])))
    listed = manifest["parts"]
    missing = sorted(set(listed) - set(entries))
    extra = sorted(set(entries) - set(listed) - {MANIFEST})
    if missing:
        raise ArtifactError(f"parts {missing} are missing")
    if extra:
        raise ArtifactError(f"parts {extra} are not in the manifest")
    parts = {}
    for name, want in listed.items():
        data = _stored(mapped, entries[name])
        if hashlib.sha256(data).hexdigest() != want:
            raise ArtifactError(f"part {name!r}: SHA-256 does not match the manifest (corrupted)")
        parts[name] = data
    if manifest["graph"] not in parts:
        raise ArtifactError(f"manifest .graph: part {manifest['graph']!r} is not a part")
    return Artifact(manifest, parts)


def nested_artifact(outer: Artifact, manifest: Any, prefix: str, where: str) -> Artifact:
    """An artifact stored inside ``outer`` (a model saved as several, e.g. per batch size): its
    ``manifest`` (an object of ``outer``'s manifest, at ``where``) checked as ``read_artifact``
    checks one, and its parts, ``outer``'s parts ``prefix + name`` with the hashes it lists."""
    try:
        manifest = _check_manifest(json.dumps(manifest).encode())
    except ArtifactError as exc:
        raise ArtifactError(f"manifest {where}: {exc}") from exc
    parts = {}
    for name, digest in manifest["parts"].items():
        if outer.manifest["parts"].get(prefix + name) != digest:
            raise ArtifactError(f"manifest {where}: part {prefix + name!r} is missing or differs")
        parts[name] = outer.parts[prefix + name]
    if manifest["graph"] not in parts:
        raise ArtifactError(f"manifest {where}.graph: part {manifest['graph']!r} is not a part")
    return Artifact(manifest, parts)


def _stored(mapped: memoryview, entry: zipfile.ZipInfo) -> memoryview:
    """The bytes of ``entry`` in the mapped zip file: its local header must name it, and it must be
    stored uncompressed (as ``write_artifact`` stores every entry). The SHA-256 checks stand in for
    the zip's CRC."""
    name, at = entry.filename, entry.header_offset
    header = bytes(mapped[at:at + 30]) if at >= 0 else b""
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise ArtifactError(f"part {name!r}: corrupted (no local header)")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    if bytes(mapped[at + 30:at + 30 + name_len]) != name.encode():
        raise ArtifactError(f"part {name!r}: corrupted (its local header names another)")
    if entry.compress_type != zipfile.ZIP_STORED or entry.compress_size != entry.file_size:
        raise ArtifactError(f"part {name!r}: compressed (artifact parts are stored uncompressed)")
    start = at + 30 + name_len + extra_len
    if start + entry.file_size > len(mapped):
        raise ArtifactError(f"part {name!r}: truncated")
    return mapped[start:start + entry.file_size]


def register_loader(target: str, loader: str) -> None:
    """Make artifacts of ``target`` loadable by the function ``loader`` (``module:function``,
    ``(Artifact) -> Program``; the module should import no compiler)."""
    LOADERS[target] = loader


def extract(path: str | os.PathLike[str], directory: str | os.PathLike[str]) -> list[Path]:
    """Write the parts of the (checked) artifact at ``path`` and its manifest into ``directory``
    (for the C API: the library, ``tensoregg.h`` and ``weights.npy``); returns the files written."""
    artifact = read_artifact(path)
    root = Path(directory)
    written = []
    for name, data in [(MANIFEST, json.dumps(artifact.manifest, indent=1).encode()),
                       *sorted(artifact.parts.items())]:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(target)
    return written


# ---- the manifest -------------------------------------------------------------------------------


def _manifest_hash(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def spec_json(t: TensorSpec) -> dict[str, Any]:
    """``t`` as the manifest lists it."""
    return {"name": t.name, "dtype": t.dtype.name, "shape": list(t.shape)}


def dtype_of(name: Any, where: str) -> np.dtype:
    """The numeric numpy dtype called ``name`` (ml_dtypes' too: bfloat16, float8...); ArtifactError
    naming ``where`` otherwise."""
    if isinstance(name, str) and name.isidentifier():
        try:
            dtype = np.dtype(name)
        except TypeError:
            import ml_dtypes

            dtype = np.dtype(getattr(ml_dtypes, name, object))
        if dtype.kind not in "OVUSMm":
            return dtype
    raise ArtifactError(f"manifest {where}: unknown dtype {name!r}")


def _spec(t: Mapping[str, Any], where: str) -> TensorSpec:
    return TensorSpec(t["name"], dtype_of(t["dtype"], where), tuple(t["shape"]))


HEX64 = re.compile(r"[0-9a-f]{64}")
SPEC_FIELDS = {"name": str, "dtype": str, "shape": list}


def require(value: Any, kind: type, where: str) -> Any:
    """``value`` if it is a ``kind`` (a bool is no int here); ArtifactError naming ``where`` otherwise."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ArtifactError(f"manifest {where}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def require_fields(obj: Mapping[str, Any], fields: Mapping[str, type], where: str) -> None:
    """ArtifactError naming the field unless ``obj`` has each of ``fields`` with its type."""
    for key, kind in fields.items():
        if key not in obj:
            raise ArtifactError(f"manifest {where}: field {key!r} is missing")
        require(obj[key], kind, f"{where}.{key}")


MANIFEST_FIELDS = {"format": str, "format_version": int, "tensoregg_version": str, "target": str,
                   "inputs": list, "outputs": list, "graph": str, "code": dict, "parts": dict,
                   "manifest_sha256": str}


def _check_manifest(data: bytes) -> dict[str, Any]:
    """The manifest, its types, its own hash and its format checked."""
    try:
        manifest = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"part {MANIFEST!r}: not valid JSON ({exc})") from exc
    require(manifest, dict, "(the whole)")
    require_fields(manifest, {"format": str, "format_version": int}, "")  # first: another version's
    if manifest["format"] != FORMAT:                                    # fields may differ
        raise ArtifactError(f"manifest .format: {manifest['format']!r} is not {FORMAT!r}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"manifest .format_version: artifact format {manifest['format_version']} "
                            f"(tensoregg {manifest.get('tensoregg_version')}); this tensoregg "
                            f"({__version__}) reads format {FORMAT_VERSION}")
    require_fields(manifest, MANIFEST_FIELDS, "")
    if manifest["manifest_sha256"] != _manifest_hash(manifest):
        raise ArtifactError(f"part {MANIFEST!r}: its SHA-256 does not match its content (edited or "
                            "corrupted)")
    for side in ("inputs", "outputs"):
        for k, t in enumerate(manifest[side]):
            _check_spec(t, f".{side}[{k}]")
    for name, digest in manifest["parts"].items():
        if not SAFE_NAME.fullmatch(name) or name == MANIFEST:
            raise ArtifactError(f"part {name!r}: unsafe or invalid name")
        if not isinstance(digest, str) or not HEX64.fullmatch(digest):
            raise ArtifactError(f"manifest .parts[{name!r}]: not a SHA-256 hex digest")
    return manifest


def _check_spec(t: Any, where: str) -> None:
    require(t, dict, where)
    require_fields(t, SPEC_FIELDS, where)
    for d in t["shape"]:
        if require(d, int, f"{where}.shape") < 0:
            raise ArtifactError(f"manifest {where}.shape: negative dimension {d}")
    dtype_of(t["dtype"], f"{where}.dtype")
