"""CUDA C for GPU-scheduled loop IR: one ``extern "C" __global__`` function per launch, readable
(one SSA line per operation, the loop IR's names kept) and self-contained (no CUDA headers: half
precision converts through PTX ``cvt``, so NVRTC needs no include path).

The arithmetic is the loop IR's (``tensoregg.targets.interp.numerics`` states it for the
interpreter): integers wrap (computed in the unsigned type of their width), ``div``/``rem``
truncate with x / 0 = 0, shifts past the width give 0, float ``max``/``min`` propagate NaN,
float16/bfloat16 compute in float32 and round back after every inexact operation, casts follow
``tensoregg.ir.ops.casts`` (float -> integer truncates, saturates to int64 with NaN -> 0, then keeps
the low bits). A store marked ``contract`` fuses ``acc + a * b`` into one ``fma``; nothing else
contracts (NVRTC runs with ``--fmad=false``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from tensoregg.errors import UnsupportedOperator
from tensoregg.ir.compute import INDEX, Buffer, Call, Const, Expr, Load, Var, walk
from tensoregg.ir.compute.expr import BOUND, is_float
from tensoregg.ir.intrinsics import (
    AsyncCommit,
    AsyncCopy,
    AsyncWait,
    LoadMatrix,
    VectorCopy,
    WarpMMA,
    WarpShuffle,
)
from tensoregg.ir.loops import Barrier, For, Invoke, Local, Ref, Stmt, Store, offset, statements
from tensoregg.runtime.cuda import C_TYPES
from tensoregg.targets.cuda.schedule import Launch

F16, BF16 = np.dtype(np.float16), np.dtype("bfloat16")
HALVES = {F16: "h", BF16: "b"}
"""The 16-bit float formats: held as their bits in memory, computed in ``float``."""
STORED = {np.dtype(name): c for name, c in C_TYPES.items()}
"""The C type of each supported dtype in memory (``tensoregg.runtime.cuda.C_TYPES``, by dtype)."""
UNSIGNED = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int", 8: "unsigned long long"}

PRELUDE = (Path(__file__).parent / "prelude.cuh").read_text()
"""What every module starts with: half-precision conversions (PTX ``cvt`` on the device; the CPU
check, ``host``, prepends C++ ones) and the helpers that give C the loop IR's arithmetic."""

BINARY_OPS = {"add": "+", "sub": "-", "mul": "*", "and": "&", "or": "|", "xor": "^",
              "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
FLOAT_FUNCTIONS = {"exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "erf", "floor", "ceil", "asin", "acos",
                   "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "expm1", "log1p", "pow", "abs", "rem",
                   "round"}
C_NAMES = {"abs": "fabs", "rem": "fmod", "round": "rint"}
Memo = dict[int, tuple[Expr, str]]
"""A statement's expressions already written: id -> (the expression, kept alive so that its id is
not reused; the C that names its value)."""
EXACT = {"max", "min", "abs", "floor", "ceil", "round", "neg"}
"""Float calls whose result needs no rounding back to a 16-bit format."""


def c_type(dtype: np.dtype, where: str) -> str:
    """The C type of ``dtype`` in memory; UnsupportedOperator naming ``where`` for one the target lacks."""
    if dtype not in STORED:
        raise UnsupportedOperator(f"dtype {dtype}", target="cuda", detail=f"in {where}")
    return STORED[dtype]


def value_type(dtype: np.dtype, where: str) -> str:
    """The C type a value of ``dtype`` is computed in (16-bit floats: ``float``)."""
    return "float" if dtype in HALVES else c_type(dtype, where)


def kernel_source(launch: Launch, params: Sequence[Buffer], written: set[int]) -> str:
    """The ``__global__`` function of ``launch`` taking the ``params`` it uses (``written``: the ids
    of those it stores into; the others are ``const``)."""
    return _Writer(launch, params, written).source()


def used_params(launch: Launch, params: Sequence[Buffer]) -> list[Buffer]:
    """The params ``launch`` loads or stores, in ``params`` order."""
    used = {id(b) for b in _buffers(launch.stage.body)}
    return [b for b in params if id(b) in used]


def _buffers(body: list[Stmt]) -> Iterator[Buffer]:
    for s in body:
        if isinstance(s, For):
            yield from (e.buffer for x in (s.start, s.stop) for e in walk(x) if isinstance(e, Load))
            yield from _buffers(s.body)
        elif isinstance(s, Local):
            yield from _buffers(s.body)
        elif isinstance(s, Store):
            yield s.buffer
            yield from (e.buffer for x in (*s.index, s.value) for e in walk(x) if isinstance(e, Load))
        elif isinstance(s, Invoke):
            yield from (r.buffer for r in s.refs)


class _Writer:
    def __init__(self, launch: Launch, params: Sequence[Buffer], written: set[int]) -> None:
        self.launch, self.params, self.written = launch, params, written
        self.where = f"kernel {launch.name}"
        self.names: dict[int, str] = {}
        self.taken: set[str] = set()
        self.lines: list[str] = []
        self.ssa = 0
        self.index = "int" if _narrow(launch.stage, params) else "long long"
        """The C type of index arithmetic: 32-bit where every buffer and loop is shorter than 2**31
        (an offset's terms then are too: 64-bit registers and divisions cost twice), else 64-bit.
        Indices computed from loaded values (a Gather's) stay 64-bit."""

    def name(self, key: int, wanted: str) -> str:
        if key not in self.names:
            base = "".join(c if c.isalnum() or c == "_" else "_" for c in wanted) or "v"
            base = base if not base[0].isdigit() else f"v{base}"
            chosen, k = base, 1
            while chosen in self.taken:
                chosen, k = f"{base}_{k}", k + 1
            self.taken.add(chosen)
            self.names[key] = chosen
        return self.names[key]

    def source(self) -> str:
        args = []
        for b in self.params:
            const = "" if id(b) in self.written else "const "
            args.append(f"{const}{c_type(b.dtype, self.where)}* __restrict__ {self.name(id(b), b.name)}")
        launch = self.launch
        # (threads, 1): one resident block is all it asks, so ptxas may give a thread up to 255
        # registers (with the thread count alone it held a 64-thread MMA kernel to 96 and spilled)
        head = (f'extern "C" __global__ void __launch_bounds__({launch.threads}, 1) {launch.name}('
                + ", ".join(args) + ") {")
        self.stmt(launch.stage, 1)
        return "\n".join([head, *self.lines, "}"])

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("  " * depth + text)

    # ---- statements -----------------------------------------------------------------------------

    def stmt(self, s: Stmt, depth: int) -> None:
        if isinstance(s, For):
            self.loop(s, depth)
        elif isinstance(s, Local):
            buf = s.buffer
            shared = "__shared__ " if s.scope == "shared" else ""
            self.emit(depth, f"{shared}{c_type(buf.dtype, self.where)} {self.name(id(buf), buf.name)}"
                             f"[{max(buf.size, 1)}];")
            for inner in s.body:
                self.stmt(inner, depth)
        elif isinstance(s, Store):
            self.store(s, depth)
        elif isinstance(s, Barrier):
            self.emit(depth, "__syncthreads();")
        elif isinstance(s, Invoke) and isinstance(s.intrinsic, WarpMMA):
            self.warp_mma(s, depth)
        elif isinstance(s, Invoke) and isinstance(s.intrinsic, WarpShuffle):
            self.warp_shuffle(s, depth)
        elif isinstance(s, Invoke) and isinstance(s.intrinsic, VectorCopy):
            self.vector_copy(s, depth)
        elif isinstance(s, Invoke) and isinstance(s.intrinsic, LoadMatrix):
            self.load_matrix(s, depth)
        elif isinstance(s, Invoke) and isinstance(s.intrinsic, AsyncCopy):
            self.async_copy(s, depth)
        elif isinstance(s, Invoke) and isinstance(s.intrinsic, AsyncCommit):
            self.emit(depth, "te_cp_async_commit();")
        elif isinstance(s, Invoke) and isinstance(s.intrinsic, AsyncWait):
            self.emit(depth, f"te_cp_async_wait<{s.intrinsic.pending}>();")
        else:
            raise UnsupportedOperator(f"statement {type(s).__name__}", target="cuda", detail=self.where)

    def loop(self, s: For, depth: int) -> None:
        var = self.name(id(s.var), s.var.name)
        if s.kind in ("block", "thread"):
            axis = "blockIdx.x" if s.kind == "block" else "threadIdx.x"
            self.emit(depth, f"const {self.index} {var} = {axis};")
            self.unpack(s, var, depth)
            for inner in s.body:
                self.stmt(inner, depth)
            return
        memo: Memo = {}
        start, stop = self.expr(s.start, memo, depth), self.expr(s.stop, memo, depth)
        self.emit(depth, f"for ({self.index} {var} = {start}; {var} < {stop}; ++{var}) {{")
        self.unpack(s, var, depth + 1)
        for inner in s.body:
            self.stmt(inner, depth + 1)
        self.emit(depth, "}")

    def unpack(self, s: For, var: str, depth: int) -> None:
        """The axes of a fused loop variable, in 32-bit arithmetic where its range allows (64-bit
        division is a call on the GPU)."""
        narrow = math.prod(n for _, n in s.unpack) < 1 << 31
        source, suffix = (f"(unsigned int){var}", "u") if narrow else (var, "")
        inner = 1
        for k, (v, n) in reversed(list(enumerate(s.unpack))):
            value = source if inner == 1 else f"{source} / {inner}{suffix}"
            if k > 0:
                value = f"{value} % {n}{suffix}"
            self.emit(depth, f"const {self.index} {self.name(id(v), v.name)} = {value};")
            inner *= n

    def store(self, s: Store, depth: int) -> None:
        memo: Memo = {}
        at = self.expr(offset(s.buffer, s.index), memo, depth)
        target = self.name(id(s.buffer), s.buffer.name)
        v = s.value
        if isinstance(v, Load) and v.buffer.dtype == s.buffer.dtype:  # a copy: the bits as they are
            source = self.name(id(v.buffer), v.buffer.name)
            where = self.expr(offset(v.buffer, v.index), memo, depth)
            self.emit(depth, f"{target}[{at}] = {source}[{where}];")
            return
        value = self.contracted(s, memo, depth) if s.contract else None
        if value is None:
            value = self.expr(v, memo, depth)
        self.emit(depth, f"{target}[{at}] = {_to_memory(value, s.buffer.dtype)};")

    def warp_mma(self, s: Invoke, depth: int) -> None:
        """``te_mma_<ab>(a, b, c, d)`` on the fragments' addresses (``prelude.cuh``: the PTX, halves
        packed in pairs)."""
        mma: WarpMMA = s.intrinsic
        memo: Memo = {}
        args = [f"&{self.name(id(r.buffer), r.buffer.name)}[{self.expr(r.offset, memo, depth)}]"
                for r in s.refs]
        if len(args) != 4 or len(s.args) != 4:
            raise UnsupportedOperator(mma.name, target="cuda", detail=f"takes 4 fragments in {self.where}")
        self.emit(depth, f"te_mma_{mma.ab}({', '.join(args)});")

    def warp_shuffle(self, s: Invoke, depth: int) -> None:
        """``dst = te_shfl_xor(src, mask)`` (``prelude.cuh``: ``shfl.sync.bfly.b32`` over the whole warp)."""
        memo: Memo = {}
        refs, mask = s.refs, s.args[-1]
        if len(refs) != 2 or len(s.args) != 3 or not isinstance(mask, Const):
            raise UnsupportedOperator(s.intrinsic.name, target="cuda",
                                      detail=f"takes two registers and a constant lane mask in {self.where}")
        dst, src = (f"{self.name(id(r.buffer), r.buffer.name)}[{self.expr(r.offset, memo, depth)}]"
                    for r in refs)
        self.emit(depth, f"{dst} = te_shfl_xor({src}, {int(mask.value)});")

    def vector_copy(self, s: Invoke, depth: int) -> None:
        """``te_load16(registers, global)`` or ``te_store16(global, registers)`` (``prelude.cuh``: one
        16-byte access of global memory)."""
        memo: Memo = {}
        if len(s.refs) != 2 or len(s.args) != 2:
            raise UnsupportedOperator(s.intrinsic.name, target="cuda",
                                      detail=f"takes two addresses in {self.where}")
        dst, src = (f"&{self.name(id(r.buffer), r.buffer.name)}[{self.expr(r.offset, memo, depth)}]"
                    for r in s.refs)
        store = any(s.refs[0].buffer is b for b in self.params)
        self.emit(depth, f"te_store16({dst}, {src});" if store else f"te_load16({dst}, {src});")

    def load_matrix(self, s: Invoke, depth: int) -> None:
        """``te_ldmatrix_x<n>(registers, row)`` (``prelude.cuh``: ``ldmatrix``, the registers unpacked
        into 16-bit elements)."""
        ldm: LoadMatrix = s.intrinsic
        memo: Memo = {}
        if len(s.refs) != 2 or len(s.args) != 2:
            raise UnsupportedOperator(ldm.name, target="cuda", detail=f"takes two addresses in {self.where}")
        dst, src = (f"&{self.name(id(r.buffer), r.buffer.name)}[{self.expr(r.offset, memo, depth)}]"
                    for r in s.refs)
        self.emit(depth, f"te_ldmatrix_x{ldm.count}{'_trans' if ldm.trans else ''}({dst}, {src});")

    def async_copy(self, s: Invoke, depth: int) -> None:
        """``te_cp_async<bytes>(dst, src, valid bytes)`` (``prelude.cuh``: ``cp.async`` on sm_80 and
        later, a plain copy before)."""
        copy: AsyncCopy = s.intrinsic
        memo: Memo = {}
        refs = s.refs
        if len(refs) != 2 or len(s.args) != 3 or isinstance(s.args[2], Ref):
            raise UnsupportedOperator(copy.name, target="cuda", detail="takes a shared and a global address "
                                      f"and a count in {self.where}")
        dst, src = (f"&{self.name(id(r.buffer), r.buffer.name)}[{self.expr(r.offset, memo, depth)}]"
                    for r in refs)
        count = self.expr(s.args[2], memo, depth)
        self.emit(depth, f"te_cp_async<{copy.bytes}>({dst}, {src}, {count} * {copy.dtype.itemsize});")

    def contracted(self, s: Store, memo: Memo, depth: int) -> str | None:
        """``fma(a, b, acc)`` for a contract store of ``add(acc, mul(a, b))`` in float32/float64."""
        v = s.value
        if not (isinstance(v, Call) and v.fn == "add" and v.dtype.kind == "f" and v.dtype not in HALVES):
            return None
        for acc, product in (v.args, v.args[::-1]):
            if isinstance(product, Call) and product.fn == "mul":
                a, b = (self.expr(x, memo, depth) for x in product.args)
                fma = "fmaf" if v.dtype == np.float32 else "fma"
                return self.bind(v.dtype, f"{fma}({a}, {b}, {self.expr(acc, memo, depth)})", depth)
        return None

    # ---- expressions ----------------------------------------------------------------------------

    def bind(self, dtype: np.dtype, text: str, depth: int, index: bool = False) -> str:
        """``text`` as a new named value (``index``: an index computed from loop variables alone)."""
        self.ssa += 1
        name = f"t{self.ssa}"
        self.emit(depth, f"const {self.index if index else value_type(dtype, self.where)} {name} = {text};")
        return name

    def expr(self, e: Expr, memo: Memo, depth: int) -> str:
        if isinstance(e, Const):
            return _literal(e.value, e.dtype, self.where)
        if isinstance(e, Var):
            if id(e) not in self.names:
                raise UnsupportedOperator(f"variable {e.name}", target="cuda",
                                          detail=f"unbound in {self.where}")
            return self.names[id(e)]
        if id(e) in memo:
            return memo[id(e)][1]
        if isinstance(e, Load):
            at = self.expr(offset(e.buffer, e.index), memo, depth)
            text = _from_memory(f"{self.name(id(e.buffer), e.buffer.name)}[{at}]", e.buffer.dtype)
        elif isinstance(e, Call):
            args = [self.expr(a, memo, depth) for a in e.args]
            text = self.call(e, args)
            if e.dtype == INDEX and e.fn in ("add", "sub", "mul", "div", "rem") and not _loads(e):
                memo[id(e)] = (e, f"({text})" if e.fn != "mul" or any(" " in a for a in args) else text)
                return memo[id(e)][1]
        else:
            raise UnsupportedOperator(f"expression {type(e).__name__}", target="cuda", detail=self.where)
        memo[id(e)] = (e, self.bind(e.dtype, text, depth, e.dtype == INDEX and not _loads(e)))
        return memo[id(e)][1]

    def call(self, c: Call, args: list[str]) -> str:
        fn = c.fn
        if fn == "select":
            return f"{args[0]} ? {args[1]} : {args[2]}"
        if fn == "cast":
            return _cast(args[0], c.args[0].dtype, c.dtype, self.where)
        if fn == "bitcast":
            return _bitcast(args[0], c.args[0].dtype, c.dtype, self.where)
        if fn == BOUND:  # clamped only: reporting the fault from the device is not built yet
            i, n = args
            return f"({i} < 0 ? 0 : {i} >= {n} ? {n} - 1 : {i})"
        dtype = c.args[0].dtype
        text = _float_call(fn, dtype, args) if is_float(dtype) else _int_call(fn, dtype, args, c.args)
        if text is None:
            raise UnsupportedOperator(f"call {fn}", target="cuda", detail=f"on {dtype} in {self.where}")
        if dtype in HALVES and fn not in EXACT and c.dtype == dtype:
            return f"te_r{HALVES[dtype]}({text})"
        return text


def _narrow(stage: For, params: Sequence[Buffer]) -> bool:
    limit = 1 << 31
    sizes = [b.size for b in params] + [s.buffer.size for s in statements([stage]) if isinstance(s, Local)]
    stops = [s.stop for s in statements([stage]) if isinstance(s, For)]
    return all(n < limit for n in sizes) and all(int(x.value) < limit for x in stops if isinstance(x, Const))


def _loads(e: Expr) -> bool:
    return any(isinstance(x, Load) for x in walk(e))


def _float_call(fn: str, dtype: np.dtype, args: list[str]) -> str | None:
    if dtype not in HALVES and dtype.kind != "f":
        return None
    single = dtype != np.float64
    if fn in BINARY_OPS and fn not in ("and", "or", "xor"):
        return f"{args[0]} {BINARY_OPS[fn]} {args[1]}"
    if fn == "div":
        return f"{args[0]} / {args[1]}"
    if fn in ("max", "min"):
        return f"te_{fn}({args[0]}, {args[1]})"
    if fn == "neg":
        return f"-{args[0]}"
    if fn in ("isnan", "isinf", "signbit"):
        return f"{fn}({args[0]})"
    if fn in FLOAT_FUNCTIONS:
        name = C_NAMES.get(fn, fn)
        return f"{name}{'f' if single else ''}({', '.join(args)})"
    return None


def _int_call(fn: str, dtype: np.dtype, args: list[str], operands: tuple[Expr, ...]) -> str | None:
    if dtype not in STORED:
        return None
    t = STORED[dtype]
    if dtype == np.bool_:
        return _bool_call(fn, args)
    u = UNSIGNED[dtype.itemsize]
    signed = dtype.kind == "i"
    wrap = signed and (dtype != INDEX or any(_loads(a) for a in operands))
    if fn in ("add", "sub", "mul"):
        op = BINARY_OPS[fn]
        return f"({t})(({u}){args[0]} {op} ({u}){args[1]})" if wrap else f"{args[0]} {op} {args[1]}"
    if fn in BINARY_OPS:
        return f"{args[0]} {BINARY_OPS[fn]} {args[1]}"
    if fn in ("div", "rem"):
        divisor = operands[1]
        if isinstance(divisor, Const) and int(divisor.value) > 0:  # C's / and % are the IR's then
            return f"{args[0]} {'/' if fn == 'div' else '%'} {args[1]}"
        return f"te_{fn}<{t}>({args[0]}, {args[1]})"
    if fn in ("shl", "shr"):
        return f"te_{fn}<{t}, {u}>({args[0]}, {args[1]})"
    if fn in ("max", "min"):
        return f"{args[0]} {'>' if fn == 'max' else '<'} {args[1]} ? {args[0]} : {args[1]}"
    if fn == "neg":
        return f"({t})(0 - ({u}){args[0]})"
    if fn == "not":
        return f"({t})~{args[0]}"
    if fn == "abs":
        return f"{args[0]} < 0 ? ({t})(0 - ({u}){args[0]}) : {args[0]}" if signed else args[0]
    return None


def _bool_call(fn: str, args: list[str]) -> str | None:
    """Bool arithmetic as on 1-bit integers."""
    logical = {"and": "&&", "or": "||", "xor": "!=", "eq": "==", "ne": "!=", "lt": "<", "le": "<=",
               "gt": ">", "ge": ">=", "add": "!=", "sub": "!=", "mul": "&&", "min": "&&", "max": "||"}
    if fn in logical:
        return f"{args[0]} {logical[fn]} {args[1]}"
    return {"not": f"!{args[0]}", "abs": args[0], "neg": args[0]}.get(fn)


def _cast(x: str, src: np.dtype, dst: np.dtype, where: str) -> str:
    c_type(src, where)  # an unsupported dtype is an error here
    c_type(dst, where)
    if dst == np.bool_:
        return f"{x} != 0"
    if dst in HALVES:
        k = HALVES[dst]
        if src == np.float64:
            return f"te_{k}2f(te_d2{k}({x}))" if k == "h" else f"te_b2f(te_d2b({x}))"
        return f"te_r{k}((float){x})"
    if dst.kind == "f":
        return f"({STORED[dst]}){x}"
    if is_float(src):
        to_int = "te_f2u" if dst == np.uint64 else "te_f2i"
        return f"({STORED[dst]}){to_int}((double){x})"
    return f"({STORED[dst]}){x}"


def _bitcast(x: str, src: np.dtype, dst: np.dtype, where: str) -> str:
    if src.itemsize != dst.itemsize:
        raise UnsupportedOperator("bitcast", target="cuda", detail=f"{src} -> {dst} in {where}")
    bits = f"te_f2{HALVES[src]}({x})" if src in HALVES else x
    stored = f"te_bits<{c_type(dst, where)}>(({c_type(src, where)}){bits})"
    if dst == np.bool_:
        return f"te_bits<unsigned char>({bits}) != 0"
    return _from_memory(stored, dst)


def _from_memory(text: str, dtype: np.dtype) -> str:
    return f"te_{HALVES[dtype]}2f({text})" if dtype in HALVES else text


def _to_memory(value: str, dtype: np.dtype) -> str:
    return f"te_f2{HALVES[dtype]}({value})" if dtype in HALVES else value


def _literal(value: object, dtype: np.dtype, where: str) -> str:
    if dtype == np.bool_:
        return "true" if bool(value) else "false"
    if is_float(dtype):
        v = float(value)  # type: ignore[arg-type]
        if dtype in HALVES or dtype == np.float32:
            if math.isfinite(v):
                return f"{float(np.float32(v)).hex()}f"
            return f"__int_as_float({int(np.float32(v).view(np.uint32)):#x})"
        if math.isfinite(v):
            return v.hex()
        return f"__longlong_as_double({int(np.float64(v).view(np.uint64)):#x}LL)"
    t = c_type(dtype, where)
    n = int(value)  # type: ignore[call-overload]
    if -(1 << 31) < n < (1 << 31):
        return str(n) if dtype in (INDEX, np.int32) else f"({t}){n}"
    return f"({t}){n & ((1 << 64) - 1):#x}ULL"
