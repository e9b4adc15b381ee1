import pytest

from trn_burnin.catalog import BF16, FP8, MXFP8, NEURONCORE_V3, NEURONCORE_V4
from trn_burnin.plan import DEFAULT_SHAPE, MODE_FP8_DOUBLE_ROW, MODE_MXFP8, SBUF_PLANNING_FRACTION, plan_gemm


@pytest.mark.parametrize("core", [NEURONCORE_V3, NEURONCORE_V4])
def test_tiles_come_from_the_generation_limits(core):
    plan = plan_gemm(core, BF16, *DEFAULT_SHAPE)
    bank_fp32 = core.psum_bank_bytes_per_partition // 4
    assert (plan.pmax, plan.tile_m, plan.tile_k) == (core.pmax, core.stationary_fmax, core.pmax)
    assert plan.tile_n == min(core.moving_fmax, bank_fp32) == 512
    assert plan.sbuf_bytes_per_partition <= core.usable_sbuf_bytes_per_partition * SBUF_PLANNING_FRACTION
    assert plan.intensity >= 2 * core.ridge_flop_per_byte(BF16)


def test_fp8_uses_double_row_and_mxfp8_packs_four_rows():
    fp8 = plan_gemm(NEURONCORE_V3, FP8, *DEFAULT_SHAPE)
    assert fp8.mode == MODE_FP8_DOUBLE_ROW and fp8.tile_k == 2 * NEURONCORE_V3.pmax
    mx = plan_gemm(NEURONCORE_V4, MXFP8, *DEFAULT_SHAPE)
    assert mx.mode == MODE_MXFP8 and mx.tile_k == 4 * NEURONCORE_V4.pmax
    assert mx.kernel_name == "burnin_gemm_mx" and "mode" not in mx.kernel_kwargs()
    # encoded once on the host: a data byte per element and a scale byte per 32 elements in HBM
    assert mx.hbm_bytes_per_element == 1 + 1 / 32


@pytest.mark.parametrize("core, dtype", [(c, d) for c in (NEURONCORE_V3, NEURONCORE_V4) for d in c.supported_dtypes],
                         ids=lambda v: getattr(v, "name", v))
def test_every_dtype_is_planned_compute_bound_at_the_default_shape(core, dtype):
    plan = plan_gemm(core, dtype, *DEFAULT_SHAPE)
    assert plan.intensity >= (2 if dtype == BF16 else 1) * core.ridge_flop_per_byte(dtype)


def test_blocks_cover_small_dimensions_whole():
    plan = plan_gemm(NEURONCORE_V3, BF16, 300, 384, 700)
    assert (plan.block_m, plan.block_n, plan.block_k) == (384, 1024, 384)


@pytest.mark.parametrize("core, dtype, shape, message", [
    (NEURONCORE_V3, BF16, (128, 100, 128), "K=100 must be a multiple of 128"),
    (NEURONCORE_V3, FP8, (128, 128, 128), "multiple of 256"),
    (NEURONCORE_V4, MXFP8, (127, 512, 128), "M=127 must be even"),
    (NEURONCORE_V3, MXFP8, (128, 512, 128), "not supported on NeuronCore-v3"),
    (NEURONCORE_V3, BF16, (0, 128, 128), "must be positive"),
])
def test_unsupported_shapes_are_refused_with_reasons(core, dtype, shape, message):
    with pytest.raises(ValueError, match=message):
        plan_gemm(core, dtype, *shape)
