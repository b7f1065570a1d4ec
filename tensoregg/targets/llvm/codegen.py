"""Loop IR -> LLVM IR (llvmlite): one function per kernel.

A kernel becomes ``void name(ptr noalias %b0, ..., i64 %tid, i64 %nthreads, ptr %context)`` taking
its buffers in ``params`` order, run by up to ``nthreads`` threads at once (thread ``tid``, with its
``sharing`` context). Each top-level statement is a region: a parallel loop's iterations are cut into
chunks, any other statement is one chunk, and the threads share out the chunks and move on to the
next region once all are done (``sharing``). Loops
are counted i64 loops (``nsw`` increments, ``inbounds`` GEPs), locals are entry-block allocas that
LLVM promotes to registers. Floating-point multiplies and adds carry ``contract`` (FMA formation)
only in a reduction's accumulate (``Store.contract``), never reassociation, so results do not depend
on vectorization or threads. Within one store, a sub-expression used twice is computed once.
Integer division and remainder are guarded so that x / 0 = 0 and MIN / -1 = MIN as in numpy, never
a trap; shifts by the width or more give 0. A ``bound`` index outside its range is clamped and sets
the module's global ``tensoregg_fault`` (``FAULT``) to 1, for the entry point to report. The dtypes
of ml_dtypes (bfloat16, float8, int4...) are held as ``formats`` says: float32 or i8 values, rounded
(wrapped) to the dtype after every operation, as numpy computes them.
"""

from __future__ import annotations

import os

os.environ.setdefault("LLVMLITE_ENABLE_IR_LAYER_TYPED_POINTERS", "0")

from collections.abc import Hashable, Sequence

import llvmlite.ir as ir
import numpy as np

from tensoregg.errors import UnsupportedOperator
from tensoregg.ir.compute import BOOL, Buffer, Call, Const, Expr, Load, Reduce, Var
from tensoregg.ir.compute.expr import BOUND, is_float
from tensoregg.ir.intrinsics import MicroKernel, PanelRuns, PanelTranspose
from tensoregg.ir.loops import For, Invoke, Kernel, Local, Ref, Stmt, Store
from tensoregg.runtime.native import FAULT
from tensoregg.targets.llvm.formats import (
    SmallFloat,
    SmallInt,
    decode,
    encode,
    format_of,
    round_to_odd_float,
    wrap,
)
from tensoregg.targets.llvm.irtypes import F32, I1, I8, I64, PTR, declare
from tensoregg.targets.llvm.mathfns import expf
from tensoregg.targets.llvm.packing import emit_panel_runs, emit_panel_transpose
from tensoregg.targets.llvm.sharing import chunk_count, claim_function, finish_function
from tensoregg.targets.llvm.ukernels import emit_microkernel

FLOATS: dict[str, ir.Type] = {"float16": ir.HalfType(), "float32": F32, "float64": ir.DoubleType()}
INTRINSIC = {"exp": "exp", "log": "log", "sqrt": "sqrt", "sin": "sin", "cos": "cos", "floor": "floor",
             "ceil": "ceil", "round": "roundeven", "abs": "fabs", "pow": "pow", "tanh": "tanh"}
"""Calls that are LLVM intrinsics on floats (``llvm.<name>.<type>``)."""
LIBM = {"erf", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "expm1", "log1p"}
"""Calls made to the C math library (``erff``/``erf``); half precision goes through float."""
SUFFIX = {"half": "f16", "float": "f32", "double": "f64"}
FCMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "=="}
FAST = ("contract",)
EXACT = {"max", "min", "abs", "floor", "ceil", "round"}
"""Float calls whose result is a value of the operands' dtype (no rounding to do for ml_dtypes' floats)."""
FLOAT_BITS = {"half": 16, "float": 32, "double": 64}


def fault_flag(module: ir.Module) -> ir.GlobalVariable:
    """The module's ``FAULT`` global (0 until a fault), defined on first use: a kernel sets it to 1
    when a ``bound`` index is out of range, and ``model.emit_model`` has the entry point replace that
    with the faulting node's position + 2 and return."""
    found = module.globals.get(FAULT)
    if found is not None:
        return found
    flag = ir.GlobalVariable(module, I64, FAULT)
    flag.initializer = ir.Constant(I64, 0)
    return flag


def llvm_type(dtype: np.dtype, *, storage: bool = False) -> ir.Type:
    """The LLVM type of a value of ``dtype`` (bool is i1 in registers, i8 in memory; see ``formats``
    for ml_dtypes' types)."""
    if dtype == BOOL:
        return I8 if storage else I1
    fmt = format_of(dtype)
    if fmt is not None:
        return fmt.storage if storage else fmt.value
    if dtype.kind in "iu":
        return ir.IntType(dtype.itemsize * 8)
    if dtype.name in FLOATS:
        return FLOATS[dtype.name]
    raise UnsupportedOperator(f"dtype {dtype}", target="llvm", detail="no LLVM type for this dtype")


def is_signed(dtype: np.dtype) -> bool:
    """Whether an integer ``dtype`` is signed."""
    fmt = format_of(dtype)
    return fmt.signed if isinstance(fmt, SmallInt) else dtype.kind == "i"


class KernelEmitter:
    """Emits one kernel into ``module``."""

    def __init__(self, module: ir.Module, kernel: Kernel, lanes: int, name: str = "",
                 shared: dict[Hashable, ir.Module] | None = None) -> None:
        self.module, self.kernel, self.lanes, self.shared = module, kernel, lanes, shared
        self.fn = ir.Function(module, kernel_type(kernel), name or kernel.name)
        self.fn.attributes.add("nounwind")
        self.fn.attributes.add("noinline")
        for arg in self.fn.args[:len(kernel.params)]:
            arg.add_attribute("noalias")
        self.tid, self.nthreads, self.context = self.fn.args[len(kernel.params):]
        self.entry = self.fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)
        self.ptrs: dict[int, ir.Value] = {id(buf): arg for buf, arg in zip(kernel.params, self.fn.args)}
        self.vars: dict[int, ir.Value] = {}
        self.values: dict[int, ir.Value] = {}
        """Values emitted for the current store's expression (one basic block), by expression id."""
        self.fast: tuple[str, ...] = ()

    def emit(self) -> ir.Function:
        for region in self.kernel.body:
            self.region(region)
        self.b.ret_void()
        return self.fn

    def region(self, s: Stmt) -> None:
        """``s`` run chunk by chunk as the threads claim them (``sharing``): a parallel loop's
        iterations in chunks, any other statement as one chunk."""
        self.values = {}
        b, one = self.b, ir.Constant(I64, 1)
        parallel = s if isinstance(s, For) and s.kind == "parallel" else None
        if parallel is not None:
            start = self.expr(parallel.start)
            trip = b.sub(self.expr(parallel.stop), start)
            chunks = chunk_count(b, trip, self.nthreads)
        else:
            chunks = one
        pre = b.block
        claim = self.fn.append_basic_block("claim")
        body = self.fn.append_basic_block("chunk")
        done = self.fn.append_basic_block("region.done")
        b.branch(claim)
        b.position_at_end(claim)
        first = b.phi(I64, "first")
        first.add_incoming(one, pre)
        chunk = b.call(claim_function(self.module), [self.context, self.tid, self.nthreads, chunks, first])
        b.cbranch(b.icmp_signed("<", chunk, ir.Constant(I64, 0)), done, body)
        b.position_at_end(body)
        if parallel is not None:  # chunk c: [start + trip * c / chunks, start + trip * (c + 1) / chunks)
            lo, hi = (b.add(start, b.sdiv(b.mul(trip, c), chunks)) for c in (chunk, b.add(chunk, one)))
            self.loop(parallel, (lo, hi))
        else:
            self.block([s])
        self.b.call(finish_function(self.module), [self.context, self.nthreads, chunks])
        first.add_incoming(ir.Constant(I64, 0), self.b.block)
        self.b.branch(claim)
        self.b.position_at_end(done)

    # ---- statements -------------------------------------------------------------------------------

    def block(self, body: Sequence[Stmt]) -> None:
        for s in body:
            if isinstance(s, For):
                self.loop(s)
            elif isinstance(s, Store):
                self.store(s)
            elif isinstance(s, Local):
                self.local(s)
            elif isinstance(s, Invoke):
                self.invoke(s)
            else:
                raise TypeError(f"unknown statement {s!r}")

    def loop(self, s: For, bounds: tuple[ir.Value, ir.Value] | None = None) -> None:
        """``s``, over ``bounds`` (a chunk's) rather than its own start and stop when given."""
        self.values = {}  # values cached for a store need not dominate this loop's preheader
        start, stop = bounds if bounds is not None else (self.expr(s.start), self.expr(s.stop))
        pre = self.b.block
        header = self.fn.append_basic_block(f"{s.var.name}.head")
        body = self.fn.append_basic_block(f"{s.var.name}.body")
        done = self.fn.append_basic_block(f"{s.var.name}.done")
        self.b.branch(header)
        self.b.position_at_end(header)
        i = self.b.phi(I64, s.var.name)
        i.add_incoming(start, pre)
        self.b.cbranch(self.b.icmp_signed("<", i, stop), body, done)
        self.b.position_at_end(body)
        self.vars[id(s.var)] = i
        rest: ir.Value = i
        for v, n in reversed(s.unpack):  # mixed radix, innermost last
            self.vars[id(v)] = self.b.srem(rest, ir.Constant(I64, n)) if v is not s.unpack[0][0] else rest
            rest = self.b.sdiv(rest, ir.Constant(I64, n))
        self.block(s.body)
        i.add_incoming(self.b.add(i, ir.Constant(I64, 1), flags=["nsw"]), self.b.block)
        self.b.branch(header)
        self.b.position_at_end(done)

    def local(self, s: Local) -> None:
        with self.b.goto_entry_block():
            slot = self.b.alloca(ir.ArrayType(llvm_type(s.buffer.dtype, storage=True), s.buffer.size))
        slot.align = 64  # packed tiles are read a cache line at a time
        slot.type = PTR  # llvmlite's alloca keeps a typed pointer even with opaque pointers on
        self.ptrs[id(s.buffer)] = slot
        self.block(s.body)

    def invoke(self, s: Invoke) -> None:
        self.values = {}
        if self.shared is None:
            fn = emit_intrinsic(self.module, s.intrinsic, self.lanes)
        else:  # defined in a module of its own (once per model), declared here
            if s.intrinsic not in self.shared:
                self.shared[s.intrinsic] = ir.Module(name=s.intrinsic.name)
            found = emit_intrinsic(self.shared[s.intrinsic], s.intrinsic, self.lanes)
            fn = declare(self.module, found.name, found.function_type.return_type, found.function_type.args)
        args = [self.b.gep(self.pointer(a.buffer), [self.expr(a.offset)], inbounds=True,
                           source_etype=llvm_type(a.buffer.dtype, storage=True))
                if isinstance(a, Ref) else self.expr(a) for a in s.args]
        self.b.call(fn, args)

    def pointer(self, buf: Buffer) -> ir.Value:
        if id(buf) not in self.ptrs:
            raise ValueError(f"kernel {self.kernel.name}: buffer {buf.name} is not a param or local")
        return self.ptrs[id(buf)]

    def address(self, buf: Buffer, index: Sequence[Expr]) -> ir.Value:
        flat: ir.Value | None = None
        stride = 1
        for d, i in reversed(list(zip(buf.shape, index))):
            if not (isinstance(i, Const) and i.value == 0):
                term = self.expr(i)
                if stride != 1:
                    term = self.b.mul(term, ir.Constant(I64, stride), flags=["nsw"])
                flat = term if flat is None else self.b.add(flat, term, flags=["nsw"])
            stride *= d
        offset = flat if flat is not None else ir.Constant(I64, 0)
        return self.b.gep(self.pointer(buf), [offset], inbounds=True,
                          source_etype=llvm_type(buf.dtype, storage=True))

    def store(self, s: Store) -> None:
        self.values, self.fast = {}, FAST if s.contract else ()
        if isinstance(s.value, Call) and s.value.fn == "bitcast":  # the bits as they are (NaN payloads too)
            value = self.bits(s.value.args[0])
        else:
            value = self.to_storage(self.expr(s.value), s.buffer.dtype)
        self.b.store(value, self.address(s.buffer, s.index))

    # ---- storage ----------------------------------------------------------------------------------

    def to_storage(self, value: ir.Value, dtype: np.dtype) -> ir.Value:
        """A value of ``dtype`` as it is stored (bool: a byte; ml_dtypes' types: their bits)."""
        fmt = format_of(dtype)
        if dtype == BOOL:
            return self.b.zext(value, I8)
        if isinstance(fmt, SmallFloat):
            return self.b.call(encode(self.module, dtype.name, fmt), [value])
        if isinstance(fmt, SmallInt):
            return self.b.and_(value, ir.Constant(I8, (1 << fmt.bits) - 1))
        return value

    def from_storage(self, stored: ir.Value, dtype: np.dtype) -> ir.Value:
        """The value of ``dtype`` whose storage is ``stored`` (bool: any nonzero byte is true)."""
        fmt = format_of(dtype)
        if dtype == BOOL:
            return self.b.icmp_unsigned("!=", stored, ir.Constant(I8, 0))
        if isinstance(fmt, SmallFloat):
            return self.b.call(decode(self.module, dtype.name, fmt), [stored])
        if isinstance(fmt, SmallInt):
            return wrap(self.b, fmt, stored)
        return stored

    def bits(self, e: Expr) -> ir.Value:
        """The stored bits of ``e``'s value as an integer (a load's read as they are in memory)."""
        ty = ir.IntType(e.dtype.itemsize * 8)
        if isinstance(e, Load):
            return self.b.load(self.address(e.buffer, e.index), typ=ty)
        value = self.to_storage(self.expr(e), e.dtype)
        return self.b.bitcast(value, ty) if value.type != ty else value

    def from_bits(self, bits: ir.Value, dtype: np.dtype) -> ir.Value:
        """The value of ``dtype`` stored as the integer ``bits`` (``bits`` reinterpreted)."""
        stored = llvm_type(dtype, storage=True)
        return self.from_storage(self.b.bitcast(bits, stored) if stored != bits.type else bits, dtype)

    def narrow(self, value: ir.Value, dtype: np.dtype) -> ir.Value:
        """``value`` (of ``dtype``'s value type) rounded or wrapped to a value of ``dtype``."""
        fmt = format_of(dtype)
        if isinstance(fmt, SmallFloat):
            return self.from_storage(self.to_storage(value, dtype), dtype)
        if isinstance(fmt, SmallInt):
            return wrap(self.b, fmt, value)
        return value

    # ---- expressions ------------------------------------------------------------------------------

    def expr(self, e: Expr) -> ir.Value:
        if isinstance(e, (Load, Call)):
            if id(e) not in self.values:
                self.values[id(e)] = self.emit_expr(e)
            return self.values[id(e)]
        return self.emit_expr(e)

    def emit_expr(self, e: Expr) -> ir.Value:
        if isinstance(e, Const):
            return self.constant(e.value, e.dtype)
        if isinstance(e, Var):
            if id(e) not in self.vars:
                raise ValueError(f"kernel {self.kernel.name}: index {e.name} used outside its loop")
            return self.vars[id(e)]
        if isinstance(e, Load):
            value = self.b.load(self.address(e.buffer, e.index), typ=llvm_type(e.dtype, storage=True))
            return self.from_storage(value, e.dtype)
        if isinstance(e, Call):
            return self.call(e)
        if isinstance(e, Reduce):
            raise ValueError("a Reduce reached code generation; lower it first")
        raise TypeError(f"unknown expression {e!r}")

    def constant(self, value: object, dtype: np.dtype) -> ir.Value:
        ty = llvm_type(dtype)
        if dtype == BOOL:
            return ir.Constant(I1, int(bool(value)))
        if is_float(dtype):
            return ir.Constant(ty, float(value))  # type: ignore[arg-type]
        return ir.Constant(ty, int(value) & ((1 << ty.width) - 1))  # type: ignore[call-overload, attr-defined]

    def intrinsic(self, name: str, ty: ir.Type, args: list[ir.Value]) -> ir.Value:
        return self.b.call(declare(self.module, f"llvm.{name}.{SUFFIX[str(ty)]}", ty, [ty] * len(args)), args)

    def libm(self, name: str, ty: ir.Type, x: ir.Value) -> ir.Value:
        wide = F32 if str(ty) == "half" else ty
        full = name + ("f" if str(wide) == "float" else "")
        arg = self.b.fpext(x, wide) if wide is not ty else x
        out = self.b.call(declare(self.module, full, wide, [wide]), [arg])
        return self.b.fptrunc(out, ty) if wide is not ty else out

    def call(self, e: Call) -> ir.Value:
        b, fn = self.b, e.fn
        if fn == "cast":
            return self.cast(self.expr(e.args[0]), e.args[0].dtype, e.dtype)
        if fn == "bitcast":
            return self.from_bits(self.bits(e.args[0]), e.dtype)
        args = [self.expr(a) for a in e.args]
        if fn == "select":
            return b.select(*args)
        if fn == BOUND:
            return self.bound(*args)
        dtype = e.args[0].dtype
        if is_float(dtype):
            out = self.float_call(fn, dtype, args)
            return self.narrow(out, dtype) if e.dtype == dtype and fn not in EXACT else out
        out = self.int_call(fn, dtype, args)
        return self.narrow(out, dtype) if e.dtype == dtype and fn not in ("max", "min") else out

    def bound(self, i: ir.Value, n: ir.Value) -> ir.Value:
        """``i`` clamped into [0, n); outside it, the fault flag set (a branch not taken on valid
        indices: no cost that shows beside the gathered load)."""
        b, zero = self.b, ir.Constant(I64, 0)
        with b.if_then(b.icmp_unsigned(">=", i, n), likely=False):
            b.store(ir.Constant(I64, 1), fault_flag(self.module))
        low = b.select(b.icmp_signed("<", i, zero), zero, i)
        return b.select(b.icmp_signed(">=", low, n), b.sub(n, ir.Constant(I64, 1)), low)

    def float_call(self, fn: str, dtype: np.dtype, args: list[ir.Value]) -> ir.Value:
        b, ty = self.b, llvm_type(dtype)
        if fn in ("add", "sub", "mul", "div", "rem"):
            op = {"add": b.fadd, "sub": b.fsub, "mul": b.fmul, "div": b.fdiv, "rem": b.frem}[fn]
            return op(*args, flags=self.fast if fn in ("add", "sub", "mul") else ())
        if fn in FCMP:
            return b.fcmp_ordered(FCMP[fn], *args)
        if fn == "ne":
            return b.fcmp_unordered("!=", *args)
        if fn == "neg":
            return b.fneg(args[0])
        if fn == "exp" and ty == F32:
            return expf(b, self.module, args[0])
        if fn in ("max", "min"):  # NaN if either is (numpy's maximum); llvm.maximum is ~10x slower on x86
            picked = self.intrinsic(f"{fn}num", ty, args)
            return b.select(b.fcmp_unordered("uno", *args), b.fadd(*args), picked)
        if fn in INTRINSIC:
            return self.intrinsic(INTRINSIC[fn], ty, args)
        if fn in LIBM:
            return self.libm(fn, ty, args[0])
        if fn == "isnan":
            return b.fcmp_unordered("uno", args[0], args[0])
        if fn == "isinf":
            return b.fcmp_ordered("==", self.intrinsic("fabs", ty, args), ir.Constant(ty, float("inf")))
        if fn == "signbit":
            bits = b.bitcast(args[0], ir.IntType(FLOAT_BITS[str(ty)]))
            return b.icmp_signed("<", bits, ir.Constant(bits.type, 0))
        raise UnsupportedOperator(f"call {fn}", target="llvm", detail=f"not defined on {dtype}")

    def int_call(self, fn: str, dtype: np.dtype, args: list[ir.Value]) -> ir.Value:
        b = self.b
        signed = is_signed(dtype)
        ty = args[0].type
        if fn in ("add", "sub", "mul", "and", "or", "xor"):
            op = {"add": b.add, "sub": b.sub, "mul": b.mul, "and": b.and_, "or": b.or_, "xor": b.xor}[fn]
            return op(*args)
        if fn in ("div", "rem"):
            return self.divide(fn, signed, *args)
        if fn in ("max", "min"):
            pick = b.icmp_signed if signed else b.icmp_unsigned
            return b.select(pick(">" if fn == "max" else "<", *args), *args)
        if fn in ("shl", "shr"):
            shifted = b.shl(*args) if fn == "shl" else b.lshr(*args)
            too_far = b.icmp_unsigned(">=", args[1], ir.Constant(ty, ty.width))
            return b.select(too_far, ir.Constant(ty, 0), shifted)
        if fn in FCMP or fn == "ne":
            pick = b.icmp_signed if signed else b.icmp_unsigned
            return pick({**FCMP, "ne": "!="}[fn], *args)
        if fn == "neg":
            return b.sub(ir.Constant(ty, 0), args[0])
        if fn == "abs":
            if not signed:
                return args[0]
            return b.select(b.icmp_signed("<", args[0], ir.Constant(ty, 0)), b.neg(args[0]), args[0])
        if fn == "not":
            return b.not_(args[0])
        raise UnsupportedOperator(f"call {fn}", target="llvm", detail=f"not defined on {dtype}")

    def divide(self, fn: str, signed: bool, a: ir.Value, d: ir.Value) -> ir.Value:
        """a / d or a % d (C: truncating, the dividend's sign) with 0 for d == 0 and no MIN / -1 trap."""
        b, ty = self.b, a.type
        zero, one = ir.Constant(ty, 0), ir.Constant(ty, 1)
        by_zero = b.icmp_unsigned("==", d, zero)
        unsafe = by_zero
        if signed:
            unsafe = b.or_(by_zero, b.icmp_signed("==", d, ir.Constant(ty, -1)))
        safe_d = b.select(unsafe, one, d)
        if fn == "div":
            q = b.sdiv(a, safe_d) if signed else b.udiv(a, safe_d)
            minus = b.sub(zero, a) if signed else q
            return b.select(by_zero, zero, b.select(unsafe, minus, q) if signed else q)
        r = b.srem(a, safe_d) if signed else b.urem(a, safe_d)
        return b.select(unsafe, zero, r)

    def cast(self, x: ir.Value, src: np.dtype, dst: np.dtype) -> ir.Value:
        b = self.b
        ty = llvm_type(dst)
        if src == dst:
            return x
        if format_of(src) is not None or format_of(dst) is not None:
            return self.format_cast(x, src, dst)
        if dst == BOOL:
            if src.kind == "f":
                return b.fcmp_unordered("!=", x, ir.Constant(x.type, 0.0))
            return b.icmp_unsigned("!=", x, ir.Constant(x.type, 0))
        if src == BOOL:
            return b.uitofp(x, ty) if dst.kind == "f" else b.zext(x, ty)
        if src.kind == "f" and dst.kind == "f":
            if dst.itemsize > src.itemsize:
                return b.fpext(x, ty)
            if src.itemsize == 8 and dst.itemsize == 2:  # no libcall (__truncdfhf2), one rounding
                x = round_to_odd_float(b, x)
            return b.fptrunc(x, ty)
        if src.kind == "f":
            return self.float_to_int(x, dst)
        if dst.kind == "f":
            return b.sitofp(x, ty) if src.kind == "i" else b.uitofp(x, ty)
        if dst.itemsize < src.itemsize:
            return b.trunc(x, ty)
        if dst.itemsize > src.itemsize:
            return b.sext(x, ty) if src.kind == "i" else b.zext(x, ty)
        return x

    def float_to_int(self, x: ir.Value, dst: np.dtype) -> ir.Value:
        """A float to an integer as ``tensoregg.ir.ops.casts`` states it: truncated toward zero to
        int64, saturating (NaN -> 0), then wrapped to the target's width (-1.0 -> uint16 is 65535);
        uint64 takes values >= 2^63 unsigned (saturating)."""
        b = self.b
        if str(x.type) == "half":  # exactly, and 2^63 is no half constant
            x = b.fpext(x, F32)
        suffix = SUFFIX[str(x.type)]
        wide = b.call(declare(self.module, f"llvm.fptosi.sat.i64.{suffix}", I64, [x.type]), [x])
        if dst.kind == "u" and dst.itemsize == 8:
            unsigned = b.call(declare(self.module, f"llvm.fptoui.sat.i64.{suffix}", I64, [x.type]), [x])
            return b.select(b.fcmp_ordered(">=", x, ir.Constant(x.type, 2.0 ** 63)), unsigned, wide)
        return wide if dst.itemsize == 8 else b.trunc(wide, llvm_type(dst))

    def format_cast(self, x: ir.Value, src: np.dtype, dst: np.dtype) -> ir.Value:
        """A cast from or to one of ml_dtypes' types (``tensoregg.ir.ops.casts`` states the rules): to
        a float format through float32 (float64 rounded to odd first, so that the value is rounded
        once; 64-bit integers through float64), to a small integer as to int64 (``float_to_int``),
        its low bits kept."""
        b = self.b
        sf, df = format_of(src), format_of(dst)
        if isinstance(sf, SmallFloat):  # the value is a float32 holding it exactly
            src = np.dtype(np.float32)
        elif isinstance(sf, SmallInt):  # an int8 holding it (zero-extended if unsigned: a uint8)
            src = np.dtype(np.int8 if sf.signed else np.uint8)
        if df is None:
            return self.cast(x, src, dst)
        if isinstance(df, SmallFloat):
            if src.itemsize == 8 and not is_float(src):
                x, src = self.cast(x, src, np.dtype(np.float64)), np.dtype(np.float64)
            if src == np.float64:
                return self.narrow(round_to_odd_float(b, x), dst)
            return self.narrow(self.cast(x, src, np.dtype(np.float32)), dst)
        if src == BOOL:
            return b.zext(x, I8)
        if is_float(src):
            x = self.float_to_int(x, np.dtype(np.int64))
        x = b.trunc(x, I8) if x.type.width > 8 else x
        return wrap(b, df, x)


def emit_intrinsic(module: ir.Module, intrinsic: object, lanes: int) -> ir.Function:
    """The function of ``module`` that computes ``intrinsic`` (a micro-kernel or a packing routine),
    defined on first use."""
    if isinstance(intrinsic, MicroKernel):
        return emit_microkernel(module, intrinsic, lanes)
    if isinstance(intrinsic, PanelTranspose):
        return emit_panel_transpose(module, intrinsic)
    if isinstance(intrinsic, PanelRuns):
        return emit_panel_runs(module, intrinsic, lanes)
    raise UnsupportedOperator(f"intrinsic {intrinsic!r}", target="llvm", detail="not offered")


def kernel_type(kernel: Kernel) -> ir.FunctionType:
    """``void (ptr param..., i64 tid, i64 nthreads, ptr context)``: a kernel function's type."""
    return ir.FunctionType(ir.VoidType(), [PTR] * len(kernel.params) + [I64, I64, PTR])


def emit_kernel(module: ir.Module, kernel: Kernel, lanes: int, name: str = "",
                shared: dict[Hashable, ir.Module] | None = None) -> ir.Function:
    """``kernel`` as a function of ``module`` named ``name`` (default: the kernel's), its intrinsics
    on vectors of ``lanes`` floats. With ``shared``, the functions of the micro-kernels and packing
    routines it calls are defined in ``shared``'s module for each (one added where there is none)
    and only declared in ``module``."""
    return KernelEmitter(module, kernel, lanes, name, shared).emit()

