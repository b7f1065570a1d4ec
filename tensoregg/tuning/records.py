"""The tuning records: measured kernel times in an SQLite database.

A record is target + kernel signature (``KernelSpec.signature``) + template (``untiled`` or
``gemm-tiled``) + parameters (the template's literals, as JSON) -> the median of the measured calls
(``seconds``; NULL with an ``error`` where the candidate failed: crashed, hung, gave a wrong result),
with the machine fingerprint it was measured on (``fingerprint``: a hash of ``machine``, the CPU
model, LLVM's CPU name and features and the thread count), tensoregg's version and when, and the
kernel's GEMM problem (``problem``, JSON: what a learned cost model reads of the kernel). One record
per (target, signature, template, parameters, fingerprint): measuring again replaces it.

The database is ``--records PATH`` / ``records=`` where given, else ``$TENSOREGG_RECORDS``, else
``records.sqlite`` in the user cache directory (``cachefiles.cache_dir()``; read there only when it is
a regular file of this user, as every cache file). Records export and import as JSON lines, one
record an object with the columns above.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from tensoregg.errors import RecordsError
from tensoregg.extraction.alternatives import Reprice
from tensoregg.extraction.kernel_spec import KernelSpec
from tensoregg.ir.schedules import GemmSchedule, Schedule, Untiled
from tensoregg.ir.target import Target
from tensoregg.targets.llvm.cachefiles import cache_dir, owned_file
from tensoregg.version import __version__

log = logging.getLogger(__name__)

ENV = "TENSOREGG_RECORDS"
SCHEMA_VERSION = 1
UNTILED, GEMM_TILED = "untiled", "gemm-tiled"
"""The templates a record names."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema', '{SCHEMA_VERSION}');
CREATE TABLE IF NOT EXISTS records (
    target TEXT NOT NULL, signature TEXT NOT NULL, template TEXT NOT NULL, params TEXT NOT NULL,
    seconds REAL, error TEXT, repeats INTEGER NOT NULL, fingerprint TEXT NOT NULL, machine TEXT NOT NULL,
    version TEXT NOT NULL, created REAL NOT NULL, kernel TEXT NOT NULL, problem TEXT NOT NULL,
    PRIMARY KEY (target, signature, template, params, fingerprint));
"""


@dataclass(frozen=True)
class Record:
    """One measurement (see the module docstring); ``kernel`` describes the kernel for people."""

    target: str
    signature: str
    template: str
    params: str
    seconds: float | None
    error: str | None
    repeats: int
    fingerprint: str
    machine: str
    version: str
    created: float
    kernel: str
    problem: str


COLUMNS = tuple(Record.__dataclass_fields__)


def default_path() -> Path:
    """``$TENSOREGG_RECORDS``, else ``records.sqlite`` in the user cache directory."""
    return Path(os.environ[ENV]) if os.environ.get(ENV) else cache_dir() / "records.sqlite"


def machine(target: Target) -> dict[str, Any]:
    """What a measurement depends on besides the kernel: the CPU model (``/proc/cpuinfo``), LLVM's CPU
    name and features and the threads the target's code runs on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu_model": model, "cpu": target.cpu, "features": target.features, "threads": target.cores}


def fingerprint(target: Target) -> str:
    """A short hash of ``machine(target)``: records of another fingerprint are not used."""
    return hashlib.sha256(json.dumps(machine(target), sort_keys=True).encode()).hexdigest()[:16]


def encode_schedule(schedule: Schedule) -> tuple[str, str] | None:
    """(template, parameters as JSON) of a schedule; None for one no record can name (another
    target's own template)."""
    if isinstance(schedule, Untiled):
        return UNTILED, "{}"
    if isinstance(schedule, GemmSchedule):
        s = schedule
        return GEMM_TILED, json.dumps({"ukernel": s.ukernel.name, "mc": s.mc, "nc": s.nc, "kc": s.kc,
                                       "split_m": s.split_m, "split_n": s.split_n}, sort_keys=True)
    return None


def decode_schedule(template: str, params: str, target: Target) -> Schedule | None:
    """The schedule a record names on ``target``; None where it names none of its (an unknown
    template or micro-kernel, bad parameters)."""
    if template == UNTILED:
        return Untiled()
    if template != GEMM_TILED:
        return None
    try:
        p = json.loads(params)
        ukernel = next(u for u in target.microkernels if u.name == p["ukernel"])
        return GemmSchedule(ukernel, int(p["mc"]), int(p["nc"]), int(p["kc"]), int(p["split_m"]),
                            int(p["split_n"]))
    except (ValueError, KeyError, TypeError, StopIteration):
        return None


class Records:
    """The records database at ``path`` (see the module docstring). Opening creates it unless
    ``create`` is False (then it is opened read-only, and a missing file holds no records); a file
    that is no such database raises RecordsError."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._db: sqlite3.Connection | None = None
        if not create and not self.path.exists():
            return
        if path is None and not os.environ.get(ENV) and self.path.exists() and not owned_file(self.path):
            raise RecordsError(f"tuning records {self.path}: not a regular file of this user in a directory "
                               "of this user; not read")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if create:
                self._db = sqlite3.connect(self.path, timeout=30.0)
                with self._db:
                    self._db.executescript(_SCHEMA)
            else:  # reading only: a read-only file or directory is fine, and nothing is written
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
            (schema,) = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(records)")]
        except sqlite3.Error as e:
            self.close()
            raise RecordsError(f"tuning records {self.path} cannot be read ({e}): remove the file, or name "
                               f"another with --records / ${ENV}") from e
        if schema != str(SCHEMA_VERSION) or tuple(columns) != COLUMNS:
            self.close()
            raise RecordsError(f"tuning records {self.path} have schema {schema} with columns {columns}; "
                               f"this tensoregg reads schema {SCHEMA_VERSION}")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._db is None:
            return []
        try:
            with closing(self._db.execute(sql, args)) as cursor:
                return cursor.fetchall()
        except sqlite3.Error as e:
            raise RecordsError(f"tuning records {self.path}: {e}") from e

    def add(self, records: Iterable[Record]) -> int:
        """Store ``records`` (replacing those of the same key); returns how many."""
        rows = [tuple(asdict(r).values()) for r in records]
        if self._db is None:
            raise RecordsError(f"tuning records {self.path}: not opened for writing")
        try:
            with self._db:
                slots = ",".join("?" * len(COLUMNS))
                self._db.executemany(f"INSERT OR REPLACE INTO records VALUES ({slots})", rows)
        except sqlite3.Error as e:
            raise RecordsError(f"tuning records {self.path}: {e}") from e
        return len(rows)

    def record(self, target: Target, spec: KernelSpec, schedule: Schedule, seconds: float | None,
               repeats: int, error: str | None = None) -> Record:
        """Store the measurement of ``spec`` under ``schedule`` on this machine; returns its record."""
        encoded = encode_schedule(schedule)
        if encoded is None:
            raise RecordsError(f"schedule {schedule} of {spec} has no record form")
        info = machine(target)
        rec = Record(target.name, spec.signature, *encoded, seconds, error, repeats, fingerprint(target),
                     json.dumps(info, sort_keys=True), __version__, time.time(), str(spec),
                     json.dumps(asdict(spec.problem), sort_keys=True))
        self.add([rec])
        return rec

    def all(self) -> list[Record]:
        """Every record, in key order."""
        return [Record(*row) for row in self._query(f"SELECT {','.join(COLUMNS)} FROM records ORDER BY "
                                                     "target, signature, fingerprint, template, params")]

    def measured(self, target: Target) -> dict[str, dict[Schedule, float | None]]:
        """The records of ``target`` on this machine by kernel signature: schedule -> seconds (None:
        the candidate failed)."""
        out: dict[str, dict[Schedule, float | None]] = {}
        for signature, template, params, seconds in self._query(
                "SELECT signature, template, params, seconds FROM records WHERE target = ? "
                "AND fingerprint = ? ORDER BY signature, template, params",
                (target.name, fingerprint(target))):
            schedule = decode_schedule(template, params, target)
            if schedule is not None:
                out.setdefault(signature, {})[schedule] = seconds
        return out

    def export_jsonl(self, out: IO[str]) -> int:
        """Every record as a line of JSON on ``out``; returns how many."""
        records = self.all()
        for r in records:
            out.write(json.dumps(asdict(r), sort_keys=True) + "\n")
        return len(records)

    def import_jsonl(self, lines: Iterable[str]) -> int:
        """Store the records of JSON ``lines`` (as ``export_jsonl`` writes them); a line that is no
        record raises RecordsError naming it, and nothing is stored."""
        return self.add(list(_parse(lines)))


def _parse(lines: Iterable[str]) -> Iterator[Record]:
    types: Mapping[str, tuple[type, ...]] = {
        "seconds": (float, int, type(None)), "error": (str, type(None)), "repeats": (int,),
        "created": (float, int)}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as e:
            raise RecordsError(f"line {n} is not JSON: {e}") from e
        if not isinstance(data, dict) or set(data) != set(COLUMNS) or not all(
                isinstance(data[c], types.get(c, (str,))) and type(data[c]) is not bool for c in COLUMNS):
            raise RecordsError(f"line {n} is not a tuning record (an object with {', '.join(COLUMNS)}): "
                               f"{line[:200]}")
        yield Record(**data)


def digest(records: Mapping[str, Mapping[Schedule, float | None]]) -> str:
    """A hash of ``Records.measured``'s answer: the compile cache's key changes with the records."""
    rows = sorted((sig, str(s), t) for sig, found in records.items() for s, t in found.items())
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def measured_pricing(records: Mapping[str, Mapping[Schedule, float | None]]) -> Reprice:
    """A ``Reprice`` hook from ``Records.measured``: a kernel with records is offered its measured
    schedules (failed ones dropped; Untiled at its predicted price when it was not measured), every
    other kernel its predicted ones. Measured seconds are scaled so that the measured schedule the
    cost model ranks first keeps its predicted price: the records decide the order of a kernel's
    schedules, the model the scale against the rest of the graph (a measured call of a kernel alone
    includes the call's overhead, which a kernel inside a model does not pay; unscaled, every
    measured kernel would look dearer than its unmeasured rivals: an unfused form, Winograd)."""

    def reprice(spec: KernelSpec, priced: Sequence[tuple[Schedule, float]],
                ) -> Sequence[tuple[Schedule, float]]:
        found = {s: t for s, t in records.get(spec.signature, {}).items() if t is not None}
        anchor = next(((s, p) for s, p in priced if s in found), None)
        if anchor is None:
            return priced
        scale = anchor[1] / found[anchor[0]]
        out = [(s, t * scale) for s, t in found.items()]
        if not any(isinstance(s, Untiled) for s in found):
            out += [(s, p) for s, p in priced if isinstance(s, Untiled)]
        return sorted(out, key=lambda pair: pair[1])

    return reprice
