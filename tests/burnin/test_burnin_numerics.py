import numpy as np
import pytest

from trn_burnin.numerics import FLOAT8_E4M3, FLOAT8_E4M3FN, bf16_bits, bf16_values, mx_interleave, round_bf16


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


def test_mx_interleave_puts_rows_pmax_apart_side_by_side():
    pmax, cols = 2, 3
    matrix = np.arange(4 * pmax * cols).reshape(4 * pmax, cols)
    out = mx_interleave(matrix, pmax)
    assert out.shape == (pmax, 4 * cols)
    # partition p, column c, packed slot j holds contraction row j * pmax + p
    for p in range(pmax):
        for c in range(cols):
            assert out[p, 4 * c:4 * c + 4].tolist() == [matrix[j * pmax + p, c] for j in range(4)]
    with pytest.raises(ValueError, match="multiple of 8"):
        mx_interleave(matrix[:6], pmax)
