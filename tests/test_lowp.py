"""float16 and bfloat16 in the spec: validation, the two bounds of the tolerance model, overflow,
and the low-precision vectors of spec/lowp.yaml."""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest

from nutshell import spec
from nutshell.errors import DTypeError, SpecError
from nutshell.spec import generate_lowp, lowp, tolerance, validate
from nutshell.spec.reference import tracked

S = spec.load()
TOL = S.tolerance
BF16 = ml_dtypes.bfloat16


@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_low_precision_inputs_are_accepted(dtype):
    x = np.array([[1.0, -2.0]], dtype)
    _, _, name = validate.check(S.concept("dense"), {"x": x, "w": np.ones((2, 3), dtype)}, {})
    assert name == np.dtype(dtype).name


def test_other_dtypes_and_mixed_formats_are_refused():
    with pytest.raises(DTypeError) as e:
        validate.check(S.concept("relu"), {"x": np.zeros(2, np.complex64)}, {})
    assert e.value.concept == "relu" and e.value.argument == "x" and "bfloat16" in str(e.value)
    with pytest.raises(DTypeError, match="mixed"):
        validate.check(S.concept("dense"), {"x": np.zeros((1, 2), np.float16), "w": np.zeros((2, 2), BF16)}, {})


def test_the_unit_roundoffs_are_the_formats():
    assert TOL["unit_roundoff"]["float16"] == 2.0**-11 == np.finfo(np.float16).eps / 2
    assert TOL["unit_roundoff"]["bfloat16"] == 2.0**-8 == float(ml_dtypes.finfo(BF16).eps) / 2


def test_overflow_thresholds():
    assert tolerance.overflow_threshold("float16") == 65520.0
    with np.errstate(over="ignore"):
        assert float(np.float16(65519.0)) == 65504.0 and np.isinf(np.float16(65520.0))
    edge = tolerance.overflow_threshold("bfloat16")
    assert np.isinf(np.array(edge).astype(BF16)) and not np.isinf(np.array(np.nextafter(edge, 0)).astype(BF16))


def test_a_result_past_the_range_must_be_inf():
    golden, e = np.array([131008.0]), np.array([2 * 131008.0])       # 65504 + 65504, a 2-term sum
    assert tolerance.compare(np.array([np.inf], np.float16), golden, e, "float16", TOL).ok
    assert not tolerance.compare(np.array([65504.0], np.float16), golden, e, "float16", TOL).ok
    assert not tolerance.compare(np.array([-np.inf], np.float16), golden, e, "float16", TOL).ok


def test_within_its_bound_of_the_edge_either_is_accepted():
    golden, e = np.array([65510.0]), np.array([100.0])               # bound 2·2⁻¹¹·100 ≈ 0.1: not enough
    assert not tolerance.compare(np.array([np.inf], np.float16), golden, e, "float16", TOL).ok
    e = np.array([20000.0])                                            # bound ≈ 19.5 reaches 65520
    for got in (65504.0, np.inf):
        assert tolerance.compare(np.array([got], np.float16), golden, e, "float16", TOL).ok


def test_a_sum_tracks_both_accumulations():
    """2048 + eight ones: e = 8·2056 in the storage format; in float32, a = 8·2056 (float32's u)
    and one rounding r = 2056 of the result."""
    s = tracked.T(np.array([2048.0] + [1.0] * 8)).sum()
    assert s.v == 2056 and s.e == 8 * 2056 and s.a == 8 * 2056 and s.r == 2056
    storage = tolerance.bound(s.e, "float16", TOL)
    tight = tolerance.bound_float32_accumulation(s.r, s.a, "float16", TOL)
    assert 8 < storage < 20 and tight < 2.1                          # 2048 passes only the looser one


def test_a_single_term_and_exact_operations_add_no_rounding():
    one = tracked.T(np.array([3.0])).sum()
    assert one.e == one.r == one.a == 0
    y = tracked.maximum(tracked.T(np.array([-1.0, 2.0])), 0.0)
    assert (y.e == 0).all() and (y.r == 0).all() and (y.a == 0).all()


def test_a_value_without_the_split_bounds_both():
    t = tracked.T(np.array([1.0]), np.array([5.0]))
    assert t.r == 5 and t.a == 0


def test_constants_exact_in_float32_may_not_be_in_bfloat16():
    assert tracked.T.const(257.0).e == 0
    with tracked.constants_exact_in(np.float32, np.float16, BF16):
        assert tracked.T.const(257.0).e == 257 and tracked.T.const(256.0).e == 0


def test_every_concept_has_a_low_precision_vector_in_both_formats():
    covered = {(lv.concept, dt) for lv in lowp.load() for dt in lv.dtypes}
    assert {(c, dt) for c in S.concepts for dt in ("float16", "bfloat16")} <= covered


def test_low_precision_vectors_hold_exact_inputs_and_both_bounds():
    for lv in lowp.load():
        data = lv.vector.load()
        for key, a in data.items():
            if key.startswith("in.") and a.dtype == np.float64:
                assert all(lowp.exact_in(a, dt) for dt in lv.dtypes), (lv.concept, lv.vector.name, key)
        for out in S.concept(lv.concept).outputs:
            assert {f"err.{out}", f"err_r.{out}", f"err_a.{out}"} <= set(data)


def test_an_input_a_format_cannot_hold_is_refused():
    lv = next(v for v in lowp.load() if v.vector.name == "accumulation_probe_f16")
    bad = dataclasses.replace(lv.vector, inputs={**lv.vector.inputs, "x": [[2049.0] + [1.0] * 8]})
    with pytest.raises(SpecError, match="float16 cannot represent"):
        generate_lowp.inputs(S.concept("dense"), lowp.LowpVector(bad, ("float16",)))


def test_the_low_precision_vectors_regenerate_byte_for_byte():
    assert generate_lowp.generate_all(check=True, log=lambda line: None) == []


def test_the_readme_numbers_for_a_3x3x64_convolution():
    """spec/README.md: for y = −0.4095 of conv2d/c64_k3, bounds 77.7 and 622 (storage format)
    against 0.011 and 0.022 (float32 accumulation)."""
    lv = next(v for v in lowp.load() if v.vector.name == "c64_k3")
    d, at = lv.vector.load(), (0, 0, 1, 1)
    assert d["out.y"][at] == pytest.approx(-0.4095, abs=1e-4)
    want = {"float16": (77.7, 0.0110), "bfloat16": (622.0, 0.0217)}
    for dt, (storage, tight) in want.items():
        assert tolerance.bound(d["err.y"][at], dt, TOL) == pytest.approx(storage, rel=2e-3)
        assert tolerance.bound_float32_accumulation(d["err_r.y"][at], d["err_a.y"][at], dt, TOL) == \
            pytest.approx(tight, rel=1e-2)


def test_onnx_names_the_float16_operators_onnx_runtime_runs_in_float32():
    """ONNX Runtime puts Casts around a float16 node it has no kernel for; the backend reads them
    from the optimised graph and says so (which operators depends on the build and the machine)."""
    onnx_impl = pytest.importorskip("nutshell.backends.onnx_impl.backend")
    b = onnx_impl.OnnxBackend(device="cpu")
    ops = b.float32_ops("conv2d")
    built = {n.op_type for d in ("forward", "vjp") for n in b.build(
        "conv2d", validate._check_attrs(S.concept("conv2d"), {}), {"x": (2, 3, 6, 6), "w": (4, 3, 3, 3), "b": (4,)},
        "float16", d).graph.node}
    assert set(ops) <= built
    why = b.widened("conv2d", "float16")
    assert (why is None) == (not ops) and all(op in why for op in ops)
    assert b.widened("relu", "bfloat16").startswith("float32: ONNX Runtime's CPU provider has no bfloat16 kernels")


def test_spec_verify_rederives_the_low_precision_goldens_too():
    from nutshell.spec import verify

    s = spec.load()
    lowp_relu = [lv for lv in lowp.load() if lv.concept == "relu"]
    (rep,) = verify.verify(s, use_tf=False, concepts=["relu"])
    assert lowp_relu and rep.vectors == len(s.concept("relu").vectors) + len(lowp_relu) and rep.ok
