"""Compute definition of Einsum: the product of the operands at the output's labels, summed over
the other labels (float16 in float32, as the reference), with ``...`` axes broadcast.

Each label is one index: an output label is an output index variable, a summed label a reduction
axis; an operand reads each of its axes at its label's index (0 where its dim is 1 and broadcasts).
"""

from __future__ import annotations

from collections.abc import Sequence

from tensoregg.ir.compute.expr import INDEX, Buffer, ComputeCtx, Expr, cast, const, define, is_float, reduce
from tensoregg.ir.compute.linalg import wide


def _term(term: str, rank: int) -> tuple[str, str, int]:
    """A term's labels before and after its ``...`` and how many axes the ``...`` stands for."""
    before, _, after = term.partition("...")
    return before, after, rank - len(before) - len(after)


@define("Einsum")
def _einsum(ctx: ComputeCtx) -> Sequence[Expr]:
    xs: list[Buffer] = [b for b in ctx.inputs if b is not None]
    dtype = xs[0].dtype
    if dtype.kind not in "iu" and not is_float(dtype):
        raise ctx.unsupported(f"Einsum on {dtype}")
    inputs, arrow, output = ctx.attrs["equation"].replace(" ", "").partition("->")
    terms = [_term(t, len(x.shape)) for t, x in zip(inputs.split(","), xs)]
    n_batch = max((n for _, _, n in terms), default=0)
    counts: dict[str, int] = {}
    for before, after, _ in terms:
        for ch in before + after:
            counts[ch] = counts.get(ch, 0) + 1
    if arrow:
        out_before, _, out_after = output.partition("...")
        dots = "..." in output
    else:
        out_before, out_after, dots = "", "".join(sorted(ch for ch, k in counts.items() if k == 1)), True
    out = ctx.index()
    at: dict[str, Expr] = dict(zip(out_before, out))
    batch = out[len(out_before):len(out_before) + n_batch] if dots else ()
    at.update(zip(out_after, out[len(out) - len(out_after):]))
    sizes: dict[str, int] = {}
    for (before, after, n), x in zip(terms, xs):
        for ch, d in zip(before + after, x.shape[:len(before)] + x.shape[len(before) + n:]):
            sizes[ch] = max(sizes.get(ch, 1), d)
    summed = [ch for ch in sizes if ch not in at]
    acc = wide(dtype)

    def product(*r: Expr) -> Expr:
        index = {**at, **dict(zip(summed, r))}
        value: Expr | None = None
        for (before, after, n), x in zip(terms, xs):
            lead = [index[ch] for ch in before]
            mid = list(batch[n_batch - n:]) if n else []
            full = [*lead, *mid, *[index[ch] for ch in after]]
            load = cast(x[tuple(const(0, INDEX) if d == 1 else i for i, d in zip(full, x.shape))], acc)
            value = load if value is None else value * load
        assert value is not None
        return value

    y = reduce("add", [sizes[ch] for ch in summed], product, 0) if summed else product()
    return [cast(y, dtype)]
