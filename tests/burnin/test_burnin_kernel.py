"""The real kernel source, executed on the EMULATION of documented NKI semantics (trn_burnin.emulation)."""

import numpy as np
import pytest

from trn_burnin.catalog import BF16, FP8, FP32, MXFP8, NEURONCORE_V3, NEURONCORE_V4
from trn_burnin.emulation import NkiLimitError
from trn_burnin.plan import DEFAULT_SHAPE, plan_gemm
from trn_burnin.workload import make_operands

# (core, dtype, M, K, N): full blocks, ragged M/N tiles, ragged last blocks of every dimension.
CASES = [
    (NEURONCORE_V3, BF16, 256, 256, 512),
    (NEURONCORE_V3, BF16, 300, 384, 700),
    (NEURONCORE_V3, BF16, 200, 1280, 2100),
    (NEURONCORE_V3, FP32, 130, 256, 520),
    (NEURONCORE_V3, FP8, 160, 768, 1100),
    (NEURONCORE_V4, BF16, 96, 128, 80),
    (NEURONCORE_V4, MXFP8, 130, 1024, 600),
]
# The reference multiplies the same rounded inputs in float64, so only FP32 accumulation order
# (and, for MXFP8, on-chip quantization) separates them. BF16 tolerance is BF16's own epsilon.
BF16_EPS = 2.0**-8
TOLERANCE = {BF16: BF16_EPS, FP32: BF16_EPS, FP8: BF16_EPS, MXFP8: 0.1}


def _small_plan(core, dtype, m, k, n):
    """The catalog plan, with blocks shrunk to two tiles so small shapes still cross block edges."""
    plan = plan_gemm(core, dtype, m, k, n)
    return plan.__class__(**{**plan.to_dict(), "block_m": 2 * plan.tile_m, "block_n": 2 * plan.tile_n,
                             "block_k": 2 * plan.tile_k})


@pytest.mark.parametrize("core, dtype, m, k, n", CASES, ids=lambda v: getattr(v, "name", v))
def test_kernel_matches_numpy_matmul(kernel_for, core, dtype, m, k, n):
    plan = _small_plan(core, dtype, m, k, n)
    operands = make_operands(plan, seed=1)
    emulator, kernel = kernel_for(core)
    result = kernel.burnin_gemm(operands.lhsT_bits, operands.rhs_bits, **plan.kernel_kwargs())
    reference = operands.lhsT.T.astype(np.float64) @ operands.rhs
    assert result.shape == (m, n) and result.dtype == np.float32
    rel = np.abs(result - reference).max() / np.abs(reference).max()
    assert rel < TOLERANCE[dtype]
    stats = emulator.stats()
    # every matmul stayed in one PSUM bank; SBUF and PSUM never overflowed (else NkiLimitError)
    assert stats.max_psum_dst_bytes_per_partition <= core.psum_bank_bytes_per_partition
    assert stats.peak_psum_banks <= core.psum_banks
    assert stats.peak_sbuf_bytes_per_partition <= core.sbuf_bytes // core.pmax
    assert stats.matmul_count == -(-m // plan.tile_m) * -(-n // plan.tile_n) * (k // plan.tile_k)


def test_repeat_redoes_the_whole_gemm(kernel_for):
    plan = _small_plan(NEURONCORE_V3, BF16, 128, 256, 512)
    operands = make_operands(plan, seed=2)
    emulator, kernel = kernel_for(NEURONCORE_V3)
    once = kernel.burnin_gemm(operands.lhsT_bits, operands.rhs_bits, **plan.kernel_kwargs(1))
    count = emulator.stats().matmul_count
    thrice = kernel.burnin_gemm(operands.lhsT_bits, operands.rhs_bits, **plan.kernel_kwargs(3))
    assert np.array_equal(once, thrice)
    assert emulator.stats().matmul_count == 4 * count


@pytest.mark.parametrize("core, dtype", [(NEURONCORE_V3, BF16), (NEURONCORE_V3, FP8), (NEURONCORE_V4, BF16)])
def test_default_shape_traffic_matches_the_plan_and_uses_full_tiles(kernel_for, core, dtype):
    plan = plan_gemm(core, dtype, *DEFAULT_SHAPE)
    emulator, kernel = kernel_for(core, compute=False)
    bits = np.broadcast_to(np.uint16(0) if dtype == BF16 else np.uint8(0), (plan.k, plan.m))
    kernel.burnin_gemm(bits, bits, **plan.kernel_kwargs())
    stats = emulator.stats()
    assert stats.hbm_bytes == plan.hbm_bytes
    assert stats.full_tile_fraction == 1.0
    assert plan.flops / stats.hbm_bytes >= 2 * core.ridge_flop_per_byte(BF16)


def _tile(emulator, shape, dtype, buffer):
    return emulator.ndarray(shape, dtype, buffer=buffer)


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


def test_partition_and_capacity_limits_are_caught(kernel_for):
    emulator, _ = kernel_for(NEURONCORE_V3)
    with pytest.raises(NkiLimitError, match="129 partitions; pmax is 128"):
        emulator.ndarray((129, 8), "bfloat16", buffer="sbuf")
    per_partition = NEURONCORE_V3.sbuf_bytes // NEURONCORE_V3.pmax
    keep = emulator.ndarray((128, per_partition // 4), "float32", buffer="sbuf")
    with pytest.raises(NkiLimitError, match="SBUF overflow"):
        emulator.ndarray((128, 1), "float32", buffer="sbuf")
    banks = [emulator.ndarray((128, 512), "float32", buffer="psum") for _ in range(NEURONCORE_V3.psum_banks)]
    with pytest.raises(NkiLimitError, match="PSUM overflow"):
        emulator.ndarray((128, 1), "float32", buffer="psum")
    del keep, banks
    emulator.ndarray((128, 512), "float32", buffer="psum")  # released when the tensors were dropped


def test_generation_features_are_enforced(kernel_for):
    plan = plan_gemm(NEURONCORE_V4, MXFP8, 128, 512, 512)
    operands = make_operands(plan, seed=3)
    _, v3_kernel = kernel_for(NEURONCORE_V3)
    with pytest.raises(NkiLimitError, match="quantize_mx is not available on NeuronCore-v3"):
        v3_kernel.burnin_gemm(operands.lhsT_bits, operands.rhs_bits, **plan.kernel_kwargs())
    no_double_row = NEURONCORE_V3.__class__(**{**NEURONCORE_V3.__dict__, "fp8_double_row": False})
    fp8_plan = plan_gemm(NEURONCORE_V3, FP8, 128, 512, 512)
    fp8 = make_operands(fp8_plan, seed=3)
    _, kernel = kernel_for(no_double_row)
    with pytest.raises(NkiLimitError, match="no double_row"):
        kernel.burnin_gemm(fp8.lhsT_bits, fp8.rhs_bits, **fp8_plan.kernel_kwargs())


def test_kernel_refuses_a_plan_larger_than_the_target(kernel_for):
    plan = plan_gemm(NEURONCORE_V4, BF16, 128, 128, 1024)
    too_wide = {**plan.kernel_kwargs(), "tile_n": 1024, "block_n": 1024}
    operands = make_operands(plan, seed=4)
    _, kernel = kernel_for(NEURONCORE_V3)
    with pytest.raises(ValueError, match="tile_n 1024 exceeds"):
        kernel.burnin_gemm(operands.lhsT_bits, operands.rhs_bits, **too_wide)
