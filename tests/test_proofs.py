"""The z3 proofs (tensoregg.testing.proofs): every proof holds, every rule is proved or
property-tested, and a proof whose premise or right side is changed fails."""

import llvmlite.ir as ir
import pytest
import z3

from tensoregg.rules import ALL_RULES
from tensoregg.rules.algebra import ALL, SIGNED
from tensoregg.testing.proofs import Proof, all_proofs, check, discharge, lowering_proofs, status
from tensoregg.testing.proofs.formats import round_to_odd
from tensoregg.testing.proofs.fusion import residual_joins
from tensoregg.testing.proofs.index import transpose_compose
from tensoregg.testing.proofs.laws import LAWS, ElementLaw
from tensoregg.testing.proofs.layout import sink
from tensoregg.testing.proofs.parallel import merge_gemms, merge_split_biases
from tensoregg.testing.proofs.symbolic import along_axis, permutation, same_program, source, transpose
from tensoregg.testing.proofs.tiling import rows_cover_once

PROOFS = all_proofs()
ENCODINGS = list({p.key: p for p in [*PROOFS.values(), *lowering_proofs().values()]}.values())
"""One proof per encoding: rules with the same encoding share its run."""


def _failures(obligations) -> list[tuple[str, str]]:
    """The obligations that fail, each with a counterexample (a solver giving up fails the test)."""
    failed = [(label, problem) for label, claim in obligations if (problem := discharge(claim)) is not None]
    assert not [f for f in failed if f[1].startswith("unknown")], failed
    return failed


def test_every_rule_is_proved_or_property_tested():
    assert set(PROOFS) <= {r.name for r in ALL_RULES}, "a proof names no registered rule"
    counts = {s: list(status().values()).count(s) for s in ("proved", "property-tested", "neither")}
    print(f"rules: {counts}")
    assert counts["neither"] == 0
    assert counts["proved"] == len(PROOFS)


@pytest.mark.parametrize("proof", ENCODINGS, ids=lambda p: p.key)
def test_proof_holds(proof: Proof):
    verdict = check(proof)
    assert verdict.obligations > 0
    assert verdict.proved, verdict.failures


def test_dropping_a_premise_fails_the_proof():
    # neg-of-sub without its integer premise: -(a - a) is -0 where a - a is +0
    law = LAWS["neg-of-sub"]
    floats = ElementLaw(law.lhs, law.rhs, ("float16",), 2, law.operands)
    [(label, problem)] = _failures(floats.obligations())
    assert label == "float16: values agree" and "fpNaN" not in problem
    # relu-of-abs over relu's whole domain: |int8 -128| wraps to -128, which relu maps to 0
    relu_of_abs = LAWS["relu-of-abs"]
    failed = _failures(ElementLaw(relu_of_abs.lhs, relu_of_abs.rhs, SIGNED).obligations())
    assert [label for label, _ in failed] == [f"{t}: values agree" for t in SIGNED if t.startswith("int")]
    # a scalar-shaped operand with an explicit perm of no axes
    failed = _failures(sink("ts", empty_perm=True))
    assert [label for label, _ in failed] == [
        "rank 0, explicit perm, scalar ranks (1,): right side well typed"]


def test_changing_a_right_side_fails_the_proof():
    sub = ElementLaw(lambda o, x: o.sub(x[0], o.neg(x[1])), lambda o, x: o.sub(x[0], x[1]), ALL, 2)
    assert {label for label, _ in _failures(sub.obligations())} == {f"{t}: values agree" for t in ALL}

    def swapped(p, q):  # q∘p for p∘q: differs from rank 3 on
        k = z3.Int("k")
        return z3.Lambda([k], q[0][p[0][k]]), z3.Lambda([k], p[1][q[1][k]])
    assert not _failures(transpose_compose(2, swapped))
    assert _failures(transpose_compose(3, swapped))


def test_axis_proof_can_fail():
    x, axis, p = source("x", 3), z3.Int("axis"), permutation(3, "p")
    lhs = along_axis("g", transpose(x, p), axis)
    rhs = transpose(along_axis("g", x, p[1][(axis + 3) % 3]), p)  # the inverse perm's axis: wrong
    assert _failures(same_program("rank 3", lhs, rhs))


def test_tiling_proof_can_fail():
    # the last micro-tile of M without its clip at m: it would compute rows past the end of C
    assert [label for label, _ in _failures(rows_cover_once(clip=False))] == ["rows: only rows of C"]


def test_a_plain_narrowing_fails_the_round_to_odd_proof():
    # double -> float to nearest, then -> float16: a tie made by the first rounding rounds wrongly
    failed = _failures(round_to_odd(lambda b, x: b.fptrunc(x, ir.FloatType()), targets=((5, 11),)))
    assert [label for label, _ in failed] == ["round to odd, then to (5, 11) = one rounding"]


def test_a_wrong_bias_order_fails_the_merge_proof():
    failed = {label for label, _ in _failures(merge_split_biases(2, False, reverse=True))}
    assert failed == {f"rank {r}, part {k}: elements agree" for r in (1, 2, 3) for k in (0, 1)}


def test_joining_gemm_weights_on_the_wrong_axis_fails_the_merge_proof():
    failed = _failures(merge_gemms(2, False, row_axis=True))
    assert failed and all("transA" in label for label, _ in failed)


def test_a_broadcasting_residual_fails_the_conv_fusion_proof():
    # FusedConv's Z must have the Conv output's shape: without the premise, Z may broadcast
    failed = {label for label, _ in _failures(residual_joins("conv", True, False, premise=False))}
    assert failed == {f"rank {r}, Z rank {r}: right side well typed" for r in (3, 4, 5)}
