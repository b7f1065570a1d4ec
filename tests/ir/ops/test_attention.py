import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensoregg.errors import ShapeError
from tensoregg.testing import arrays, check_op


def test_attention_by_hand():
    # zero queries score every key alike: uniform weights, causal rows see a growing prefix
    q = np.zeros((1, 1, 2, 1), np.float32)
    v = np.array([1.0, 3.0], np.float32).reshape(1, 1, 2, 1)
    check_op("Attention", [q, q, v], expected=[np.full((1, 1, 2, 1), 2.0, np.float32)])
    causal = np.array([1.0, 2.0], np.float32).reshape(v.shape)
    check_op("Attention", [q, q, v], {"is_causal": 1}, expected=[causal])


def test_attention_fully_masked_row_is_zero():
    q = np.ones((1, 1, 2, 2), np.float32)
    mask = np.array([[False, False], [True, True]])
    y, _, _, probs = check_op("Attention", [q, q, q, mask], {"qk_matmul_output_mode": 3}, n_outputs=4)
    np.testing.assert_array_equal(y[0, 0, 0], [0, 0])
    np.testing.assert_array_equal(probs[0, 0], [[0, 0], [0.5, 0.5]])


def test_attention_mode0_is_raw_scores():
    # qk_matmul_output mode 0 is the scaled Q K^T before softcap (the spec and its function body)
    q = np.full((1, 1, 1, 4), 2.0, np.float32)
    check_op("Attention", [q, q, q], {"softcap": 1.0}, n_outputs=4, expected=[
        np.full((1, 1, 1, 4), 2.0, np.float32), q, q, np.full((1, 1, 1, 1), 8.0, np.float32)])


def test_attention_rejects_bad_heads():
    q = np.zeros((1, 2, 6), np.float32)
    with pytest.raises(ShapeError, match="multiple"):
        check_op("Attention", [q, q, q], {"q_num_heads": 4, "kv_num_heads": 4})


@st.composite
def attention_cases(draw):
    b, hkv, group = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    hq, sq, skv = hkv * group, draw(st.integers(1, 3)), draw(st.integers(1, 4))
    d, dv = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    past = draw(st.sampled_from([0, 0, 2]))
    total = past + skv
    rank3 = draw(st.booleans())
    attrs = {"is_causal": draw(st.integers(0, 1)),
             "softcap": draw(st.sampled_from([0.0, 0.0, 1.5])),
             "left_window_size": draw(st.sampled_from([-1, -1, 0, 1])),
             "right_window_size": draw(st.sampled_from([-1, -1, 1]))}
    if draw(st.booleans()):
        attrs["scale"] = draw(st.sampled_from([0.25, 2.0]))
    if draw(st.booleans()):
        attrs["softmax_precision"] = 11
    # mode 0 is the raw score; onnx's reference shows it after softcap, so only compare other modes then
    attrs["qk_matmul_output_mode"] = draw(st.integers(1 if attrs["softcap"] else 0, 3))
    shapes = [(b, hq, sq, d), (b, hkv, skv, d), (b, hkv, skv, dv)]
    if rank3:
        attrs.update(q_num_heads=hq, kv_num_heads=hkv)
        shapes = [(s[0], s[2], s[1] * s[3]) for s in shapes]
    inputs = [draw(arrays(np.float32, s, low=-2, high=2)) for s in shapes]
    mask_kind = draw(st.sampled_from([None, "bool", "float"]))
    mask = None
    if mask_kind:
        mshape = draw(st.sampled_from([(sq, total), (b, 1, sq, total), (hq, sq, total)]))
        if len(mshape) == 2 and draw(st.booleans()):
            mshape = (sq, draw(st.integers(1, total)))  # shorter masks are padded as masked
        mask = draw(arrays(np.bool_ if mask_kind == "bool" else np.float32, mshape, low=-2, high=2))
    extra = [mask]
    if past:
        extra += [draw(arrays(np.float32, (b, hkv, past, d))), draw(arrays(np.float32, (b, hkv, past, dv)))]
    elif draw(st.booleans()):
        extra += [None, None, np.array(draw(st.lists(st.integers(0, skv), min_size=b, max_size=b)), np.int64)]
    while extra and extra[-1] is None:
        extra.pop()
    return inputs + extra, attrs


@given(attention_cases())
def test_attention_matches_onnx(case):
    inputs, attrs = case
    check_op("Attention", inputs, attrs, n_outputs=4)


def test_rotary_embedding_by_hand():
    x = np.array([1.0, 0.0], np.float32).reshape(1, 1, 1, 2)
    cos, sin = np.zeros((1, 1), np.float32), np.ones((1, 1), np.float32)  # a quarter turn
    check_op("RotaryEmbedding", [x, cos, sin, np.zeros((1, 1), np.int64)],
             expected=[np.array([0.0, 1.0], np.float32).reshape(1, 1, 1, 2)])


@given(st.integers(1, 2), st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(0, 1),
       st.booleans(), st.booleans(), st.data())
def test_rotary_embedding_matches_onnx(b, heads, seq, half, partial, rank3, with_ids, data):
    head = 2 * half + 2 * partial
    attrs = {"interleaved": data.draw(st.integers(0, 1))}
    if partial:
        attrs["rotary_embedding_dim"] = 2 * half
    shape = (b, seq, heads * head) if rank3 else (b, heads, seq, head)
    if rank3:
        attrs["num_heads"] = heads
    x = data.draw(arrays(np.float32, shape))
    cache = (5, half) if with_ids else (b, seq, half)
    cos, sin = (data.draw(arrays(np.float32, cache, low=-1, high=1)) for _ in range(2))
    ids = np.array(data.draw(st.lists(st.integers(0, 4), min_size=b * seq, max_size=b * seq)),
                   np.int64).reshape(b, seq) if with_ids else None
    check_op("RotaryEmbedding", [x, cos, sin, ids], attrs)
