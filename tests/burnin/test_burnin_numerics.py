import numpy as np
import pytest

from trn_burnin.numerics import (
    FLOAT8_E4M3, FLOAT8_E4M3FN, MX_SCALE_BIAS, bf16_bits, bf16_values, mx_decode_data, mx_encode, round_bf16,
)


def test_bf16_rounds_to_nearest_even():
    # 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
    # 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): it rounds up.
    values = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -2.0], np.float32)
    assert round_bf16(values).tolist() == [1.0, 1 + 2**-6, 1 + 2**-7, -2.0]
    assert bf16_bits(np.array([1.0], np.float32)).tolist() == [0x3F80]


def test_bf16_keeps_nan_and_inf():
    out = bf16_values(bf16_bits(np.array([np.nan, np.inf, -np.inf], np.float32)))
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == -np.inf


def test_fp8_formats_match_their_documented_ranges():
    assert FLOAT8_E4M3.max_finite == 240.0  # Neuron legacy float8_e4m3
    assert FLOAT8_E4M3FN.max_finite == 448.0  # OCP float8_e4m3fn
    assert np.isinf(FLOAT8_E4M3.decode(np.array([0x78], np.uint8)))[0]
    assert np.isnan(FLOAT8_E4M3FN.decode(np.array([0x7F], np.uint8)))[0]


@pytest.mark.parametrize("fmt", [FLOAT8_E4M3, FLOAT8_E4M3FN])
def test_fp8_encode_is_exact_on_representable_values_and_saturates(fmt):
    table = fmt.decode_table()
    finite = np.isfinite(table)
    codes = np.arange(256, dtype=np.uint8)[finite]
    assert np.array_equal(fmt.decode(fmt.encode(table[finite])), table[finite])
    assert fmt.encode(np.array([1e6], np.float32))[0] == codes[np.argmax(table[finite])]
    # 1.0625 lies halfway between 1.0 (even code) and 1.125: ties to even.
    assert fmt.round(np.array([1.0625], np.float32))[0] == 1.0


def test_mx_encode_packs_rows_pmax_apart_and_scales_each_group_of_32():
    pmax, cols = 8, 3
    rng = np.random.default_rng(0)
    matrix = rng.uniform(-4, 4, (2 * 4 * pmax, cols)).astype(np.float32)
    matrix[:, 1] *= 1e-3  # another column, another scale
    mx = mx_encode(matrix, pmax)
    assert mx.data.shape == (2 * pmax, cols) and mx.data.dtype == np.dtype("<u4")
    assert mx.scales.shape == (2 * pmax // 8, cols) and mx.scales.dtype == np.uint8
    unscaled = mx_decode_data(mx.data)  # [x4 row, column, packed slot]
    factors = np.exp2(mx.scales.astype(np.float64) - MX_SCALE_BIAS)
    for s in range(2):
        for p in range(pmax):
            for j in range(4):
                row = s * 4 * pmax + j * pmax + p
                value = unscaled[s * pmax + p, :, j] * factors[(s * pmax + p) // 8]
                # the values the kernel multiplies are exactly the reference's values
                assert np.array_equal(value.astype(np.float32), mx.values[row])
    # quantize_mx's scale rule keeps every scaled value within 2^8 (rounding may reach it), inside 448
    assert np.abs(unscaled).max() <= 256 and np.abs(mx.values - matrix).max() <= np.abs(matrix).max() / 8
    assert mx.scales[0, 1] < mx.scales[0, 0]


def test_mx_encode_needs_whole_super_tiles_and_keeps_zero_groups_zero():
    zero = mx_encode(np.zeros((32, 2), np.float32), 8)
    assert not zero.values.any() and (zero.scales == 0).all()
    with pytest.raises(ValueError, match="multiple of 32"):
        mx_encode(np.zeros((24, 2), np.float32), 8)
