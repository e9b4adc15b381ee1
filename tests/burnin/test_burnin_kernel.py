"""The real kernel source, executed on the EMULATION of documented NKI semantics (trn_burnin.emulation)."""

import numpy as np
import pytest

from trn_burnin.catalog import BF16, FP8, FP32, MXFP8, NEURONCORE_V3, NEURONCORE_V4
from trn_burnin.emulation import COMPILE_FAILURES, NkiLimitError, check_kernel_source
from trn_burnin.plan import DEFAULT_SHAPE, plan_gemm
from trn_burnin.workload import make_operands, shape_only_inputs

# (core, dtype, M, K, N): full blocks, ragged M/N tiles, ragged last blocks of every dimension.
CASES = [
    (NEURONCORE_V3, BF16, 256, 256, 512),
    (NEURONCORE_V3, BF16, 300, 384, 700),
    (NEURONCORE_V3, BF16, 200, 1280, 2100),
    (NEURONCORE_V3, FP32, 130, 256, 520),
    (NEURONCORE_V3, FP8, 160, 768, 1100),
    (NEURONCORE_V4, BF16, 96, 128, 80),
    (NEURONCORE_V4, MXFP8, 130, 1536, 600),
]
# The reference multiplies the same rounded inputs (MXFP8: the same encoded data and scales) in
# float64, so only FP32 accumulation order separates them. BF16_EPS is BF16's own epsilon.
BF16_EPS = 2.0**-8


def _small_plan(core, dtype, m, k, n, k_tiles=2):
    """The catalog plan, with blocks shrunk to two tiles so small shapes still cross block edges."""
    plan = plan_gemm(core, dtype, m, k, n)
    return plan.__class__(**{**plan.to_dict(), "block_m": 2 * plan.tile_m, "block_n": 2 * plan.tile_n,
                             "block_k": k_tiles * plan.tile_k})


def _run(kernel, plan, operands, repeat=1):
    return getattr(kernel, plan.kernel_name)(*operands.inputs.values(), **plan.kernel_kwargs(repeat))


@pytest.mark.parametrize("core, dtype, m, k, n", CASES, ids=lambda v: getattr(v, "name", v))
def test_kernel_matches_numpy_matmul(kernel_for, core, dtype, m, k, n):
    plan = _small_plan(core, dtype, m, k, n)
    operands = make_operands(plan, seed=1)
    emulator, kernel = kernel_for(core)
    result = _run(kernel, plan, operands)
    reference = operands.lhsT.T.astype(np.float64) @ operands.rhs
    assert result.shape == (m, n) and result.dtype == np.float32
    assert np.abs(result - reference).max() / np.abs(reference).max() < BF16_EPS
    stats = emulator.stats()
    # every matmul stayed in one PSUM bank; SBUF and PSUM never overflowed (else NkiLimitError)
    assert stats.max_psum_dst_bytes_per_partition <= core.psum_bank_bytes_per_partition
    assert stats.peak_psum_banks <= core.psum_banks
    assert stats.peak_sbuf_bytes_per_partition <= core.usable_sbuf_bytes_per_partition
    assert stats.matmul_count == -(-m // plan.tile_m) * -(-n // plan.tile_n) * (k // plan.tile_k)


def test_one_k_block_spanning_k_stores_each_tile_as_it_is_done(kernel_for):
    plan = _small_plan(NEURONCORE_V4, MXFP8, 256, 1024, 1024, k_tiles=2)  # 2 x 2 tiles, one K block
    assert plan.k_blocks == 1
    operands = make_operands(plan, seed=5)
    emulator, kernel = kernel_for(NEURONCORE_V4)
    result = _run(kernel, plan, operands)
    assert np.allclose(result, operands.lhsT.T.astype(np.float64) @ operands.rhs, rtol=0, atol=1e-3)
    # 2 x 2 output tiles of 128 x 512, each one DMA; no SBUF output block.
    assert emulator.stats().sbuf_to_hbm_bytes == 256 * 1024 * 4


def test_repeat_is_one_hardware_loop_over_the_whole_gemm(kernel_for):
    plan = _small_plan(NEURONCORE_V3, BF16, 128, 256, 512)
    operands = make_operands(plan, seed=2)
    once_emulator, once_kernel = kernel_for(NEURONCORE_V3)
    thrice_emulator, thrice_kernel = kernel_for(NEURONCORE_V3)
    once = _run(once_kernel, plan, operands, repeat=1)
    thrice = _run(thrice_kernel, plan, operands, repeat=3)
    assert np.array_equal(once, thrice)
    one, three = once_emulator.stats(), thrice_emulator.stats()
    assert three.program_instructions == one.program_instructions  # the body is in the program once
    assert three.matmul_count == 3 * one.matmul_count  # and runs three times
    assert three.executed_instructions - 1 == 3 * (one.executed_instructions - 1)  # minus the loop itself


@pytest.mark.parametrize("core, dtype", [(core, dtype) for core in (NEURONCORE_V3, NEURONCORE_V4)
                                         for dtype in core.supported_dtypes],
                         ids=lambda v: getattr(v, "name", v))
def test_default_shape_traffic_matches_the_plan_and_is_compute_bound(kernel_for, core, dtype):
    plan = plan_gemm(core, dtype, *DEFAULT_SHAPE)
    emulator, kernel = kernel_for(core, compute=False)
    getattr(kernel, plan.kernel_name)(*shape_only_inputs(plan).values(), **plan.kernel_kwargs())
    stats = emulator.stats()
    assert stats.hbm_bytes == plan.hbm_bytes
    assert stats.full_tile_fraction == 1.0
    assert stats.peak_sbuf_bytes_per_partition <= plan.sbuf_bytes_per_partition
    assert plan.flops / stats.hbm_bytes >= (2 if dtype == BF16 else 1) * core.ridge_flop_per_byte(dtype)


def _tile(emulator, shape, dtype, buffer):
    return emulator.ndarray(shape, dtype, buffer=emulator.modules()["nki.language"].__dict__[buffer])


@pytest.mark.parametrize("stationary, moving, message", [
    ((128, 129), (128, 512), "stationary free size 129 > 128"),
    ((128, 128), (128, 513), "moving free size 513 > 512"),
    ((64, 128), (128, 512), "partition sizes 64 and 128"),
])
def test_oversized_matmul_tiles_are_caught(kernel_for, stationary, moving, message):
    emulator, _ = kernel_for(NEURONCORE_V3)
    dst = _tile(emulator, (128, 512), "float32", "psum")  # limits are checked before dst's shape
    with pytest.raises(NkiLimitError, match=message):
        emulator.nc_matmul(dst, _tile(emulator, stationary, "bfloat16", "sbuf"),
                           _tile(emulator, moving, "bfloat16", "sbuf"))


def test_partition_and_usable_capacity_limits_are_caught(kernel_for):
    emulator, _ = kernel_for(NEURONCORE_V3)
    with pytest.raises(NkiLimitError, match="129 partitions; pmax is 128"):
        _tile(emulator, (129, 8), "bfloat16", "sbuf")
    usable = NEURONCORE_V3.usable_sbuf_bytes_per_partition
    assert usable < NEURONCORE_V3.sbuf_bytes // NEURONCORE_V3.pmax  # the compiler keeps part of each partition
    keep = _tile(emulator, (128, usable - 4), "uint8", "sbuf")
    with pytest.raises(NkiLimitError, match=f"SBUF overflow on NeuronCore-v3: {usable - 4} live \\+ 8 > "
                                            f"{usable} usable bytes per partition"):
        _tile(emulator, (128, 2), "float32", "sbuf")
    banks = [_tile(emulator, (128, 512), "float32", "psum") for _ in range(NEURONCORE_V3.psum_banks)]
    with pytest.raises(NkiLimitError, match="PSUM overflow"):
        _tile(emulator, (128, 1), "float32", "psum")
    del keep, banks
    _tile(emulator, (128, 512), "float32", "psum")  # released when the tensors were dropped


@pytest.mark.parametrize("core, stationary, moving, message", [
    (NEURONCORE_V3, "float8_e4m3fn", "float8_e4m3fn", "float8_e4m3fn only from NeuronCore-v4"),
    (NEURONCORE_V4, "float8_e4m3", "float8_e4m3fn", "cannot be mixed"),
    (NEURONCORE_V4, "float32", "bfloat16", "float32 operand needs a float32 partner"),
])
def test_matmul_operand_types_follow_the_isa_reference(kernel_for, core, stationary, moving, message):
    emulator, _ = kernel_for(core)
    dst = _tile(emulator, (128, 512), "float32", "psum")
    with pytest.raises(NkiLimitError, match=message):
        emulator.nc_matmul(dst, _tile(emulator, (128, 128), stationary, "sbuf"),
                           _tile(emulator, (128, 512), moving, "sbuf"))


def test_ocp_fp8_multiplies_on_v4(kernel_for):
    emulator, _ = kernel_for(NEURONCORE_V4)
    dst = _tile(emulator, (128, 512), "float32", "psum")
    emulator.nc_matmul(dst, _tile(emulator, (128, 128), "float8_e4m3fn", "sbuf"),
                       _tile(emulator, (128, 512), "float8_e4m3fn", "sbuf"))
    assert emulator.stats().matmul_count == 1


def test_generation_features_are_enforced(kernel_for):
    plan = plan_gemm(NEURONCORE_V4, MXFP8, 128, 512, 512)
    operands = make_operands(plan, seed=3)
    _, v3_kernel = kernel_for(NEURONCORE_V3)
    with pytest.raises(NkiLimitError, match="nc_matmul_mx is not available on NeuronCore-v3"):
        _run(v3_kernel, plan, operands)
    no_double_row = NEURONCORE_V3.__class__(**{**NEURONCORE_V3.__dict__, "fp8_double_row": False})
    fp8_plan = plan_gemm(NEURONCORE_V3, FP8, 128, 512, 512)
    _, kernel = kernel_for(no_double_row)
    with pytest.raises(NkiLimitError, match="no double_row"):
        _run(kernel, fp8_plan, make_operands(fp8_plan, seed=3))


def test_kernel_asserts_a_plan_larger_than_the_target(kernel_for):
    plan = plan_gemm(NEURONCORE_V4, BF16, 128, 128, 1024)
    too_wide = {**plan.kernel_kwargs(), "tile_n": 1024, "block_n": 1024}
    operands = make_operands(plan, seed=4)
    _, kernel = kernel_for(NEURONCORE_V3)
    with pytest.raises(AssertionError, match="tile_n 1024 exceeds"):
        kernel.burnin_gemm(*operands.inputs.values(), **too_wide)


# -- nl.fori_loop and what does not compile ------------------------------------------------------
def _loop(emulator, body, *bounds):
    emulator.modules()["nki.language"].fori_loop(*(bounds or (0, 2)), body)


def test_a_loop_variable_cannot_be_read_by_host_python(kernel_for):
    emulator, _ = kernel_for(NEURONCORE_V3)
    for use in (lambda i: i == 0, lambda i: int(i), lambda i: i + 1, lambda i: range(i)):
        with pytest.raises(NkiLimitError, match="loop variable is a device register"):
            _loop(emulator, lambda i: use(i) and None)


def test_a_loop_body_returns_nothing_and_keeps_its_tensors(kernel_for):
    emulator, _ = kernel_for(NEURONCORE_V3)
    with pytest.raises(NkiLimitError, match="cannot return a value"):
        _loop(emulator, lambda _: 1)
    inside = []
    _loop(emulator, lambda _: inside.append(_tile(emulator, (128, 8), "float32", "sbuf")))
    with pytest.raises(NkiLimitError, match="declared inside a fori_loop body cannot be referenced outside"):
        emulator.memset(inside[0], 0.0)


def test_a_loop_body_must_be_the_same_every_trip(kernel_for):
    emulator, _ = kernel_for(NEURONCORE_V3)
    trips = []

    def body(_):
        trips.append(1)
        emulator.memset(_tile(emulator, (128, 8 * len(trips)), "float32", "sbuf"), 0.0)

    with pytest.raises(NkiLimitError, match="must not depend on host-side state"):
        _loop(emulator, body)


@pytest.mark.parametrize("bounds", [(0, 2**31), (0, 4, 0), (0, 4, 1.5)])
def test_loop_bounds_are_32_bit_and_the_step_a_positive_integer(kernel_for, bounds):
    emulator, _ = kernel_for(NEURONCORE_V3)
    language = emulator.modules()["nki.language"]
    with pytest.raises(NkiLimitError, match="step must be a positive compile-time integer"):
        language.fori_loop(*bounds[:2], lambda _: None, *bounds[2:])


@pytest.mark.parametrize("source, line, rule", [
    ("def f(a, b):\n    return a is b\n", 2, "is"),
    ("import nki\n@nki.jit\ndef k(a, *, b):\n    return a\n", 3, "keyword_only"),
    ("import functools\n@functools.cache\ndef helper(a):\n    return a\n", 3, "decorator"),
    ("def f(a):\n    return {1: a}\n", 2, "dict_keys"),
    ("def f(a):\n    if a:\n        raise ValueError('no')\n", 3, "raise"),
])
def test_constructs_the_docs_say_fail_to_compile_are_found_in_the_source(source, line, rule):
    assert check_kernel_source(source, "k.py") == [f"k.py:{line}: {COMPILE_FAILURES[rule]}"]


def test_the_kernel_source_has_none_of_them():
    import trn_burnin.emulation as emulation

    spec = emulation.importlib.util.find_spec(emulation.KERNEL_MODULE)
    assert check_kernel_source(spec.loader.get_source(emulation.KERNEL_MODULE), spec.origin) == []


def test_calls_the_docs_say_fail_to_compile_are_refused(kernel_for):
    emulator, kernel = kernel_for(NEURONCORE_V3)
    language = emulator.modules()["nki.language"]
    plan = plan_gemm(NEURONCORE_V3, BF16, 128, 128, 512)
    operands = make_operands(plan, seed=6)
    with pytest.raises(NkiLimitError, match="list kernel arguments are not supported"):
        kernel.burnin_gemm(list(operands.inputs.values())[0].tolist(), *list(operands.inputs.values())[1:],
                           **plan.kernel_kwargs())
    with pytest.raises(NkiLimitError, match="string buffer names are rejected"):
        emulator.ndarray((128, 8), "float32", buffer="sbuf")
    with pytest.raises(NkiLimitError, match="works in simulation but fails when compiled"):
        language.fmod(1, 2)
    with pytest.raises(NkiLimitError, match="removed in NKI 0.7:"):
        language.dynamic_range(4)
    private = emulator.jit(lambda: emulator.ndarray((4, 4), "float32", buffer=language.private_hbm))
    with pytest.raises(NkiLimitError, match="outputs must be allocated with buffer=nl.shared_hbm"):
        private()
