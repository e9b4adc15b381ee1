"""Host-side number formats: the bit patterns the kernel reads and the values they stand for.

numpy has no bfloat16 or FP8 types, so the runner hands the kernel raw bit patterns (uint16 for
BF16, uint8 for FP8) that the kernel reinterprets with ``NkiTensor.view``. The float32 reference is
computed from the same rounded values, so a correct device differs from it only by accumulation
order. The emulation uses the same functions to model what a store into a narrow type does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounding to nearest even (NaN stays NaN)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))) >> 16
    quiet_nan = (bits >> 16) | np.uint32(0x0040)
    return np.where(np.isnan(values), quiet_nan, rounded).astype(np.uint16)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns -> float32 values (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_bf16(values: np.ndarray) -> np.ndarray:
    return bf16_values(bf16_bits(values))


@dataclass(frozen=True)
class Fp8Format:
    """An 8-bit float with 1 sign, ``exponent_bits`` exponent and ``mantissa_bits`` mantissa bits.

    ``ieee_specials``: the top exponent is reserved for Inf/NaN (float8_e4m3, float8_e5m2);
    otherwise only the all-ones pattern is NaN and there is no Inf (float8_e4m3fn).
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    ieee_specials: bool

    @property
    def bias(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    def decode_table(self) -> np.ndarray:
        """float32 value of each of the 256 codes."""
        codes = np.arange(256, dtype=np.uint32)
        sign = np.where(codes & 0x80, -1.0, 1.0)
        exponent = (codes >> self.mantissa_bits) & ((1 << self.exponent_bits) - 1)
        mantissa = codes & ((1 << self.mantissa_bits) - 1)
        fraction = mantissa / float(1 << self.mantissa_bits)
        normal = (1.0 + fraction) * np.exp2(exponent.astype(np.float64) - self.bias)
        subnormal = fraction * np.exp2(1.0 - self.bias)
        values = sign * np.where(exponent == 0, subnormal, normal)
        top = exponent == (1 << self.exponent_bits) - 1
        if self.ieee_specials:
            values = np.where(top & (mantissa == 0), sign * np.inf, values)
            values = np.where(top & (mantissa != 0), np.nan, values)
        else:
            values = np.where(top & (mantissa == (1 << self.mantissa_bits) - 1), np.nan, values)
        return values.astype(np.float32)

    @property
    def max_finite(self) -> float:
        return float(np.nanmax(np.where(np.isinf(self.decode_table()), np.nan, self.decode_table())))

    def encode(self, values: np.ndarray) -> np.ndarray:
        """float -> codes, rounding to nearest (ties to the even code), saturating at max_finite."""
        table = self.decode_table()
        positive_codes = np.arange(0x80)
        finite = np.isfinite(table[positive_codes])
        grid_codes = positive_codes[finite]
        grid = table[grid_codes].astype(np.float64)
        magnitude = np.minimum(np.abs(np.asarray(values, dtype=np.float64)), grid[-1])
        upper = np.clip(np.searchsorted(grid, magnitude), 1, len(grid) - 1)
        lower = upper - 1
        below, above = magnitude - grid[lower], grid[upper] - magnitude
        pick_upper = (above < below) | ((above == below) & (grid_codes[upper] % 2 == 0))
        codes = np.where(pick_upper, grid_codes[upper], grid_codes[lower]).astype(np.uint8)
        return np.where(np.signbit(values), codes | np.uint8(0x80), codes).astype(np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.decode_table()[np.asarray(codes, dtype=np.uint8)]

    def round(self, values: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(values))


# Neuron's legacy FP8 (nl.float8_e4m3: IEEE-style specials, max 240) and OCP FP8 (max 448).
FLOAT8_E4M3 = Fp8Format("float8_e4m3", 4, 3, ieee_specials=True)
FLOAT8_E4M3FN = Fp8Format("float8_e4m3fn", 4, 3, ieee_specials=False)


def mx_interleave(matrix: np.ndarray, pmax: int) -> np.ndarray:
    """[K, C] -> [K/4, 4C]: the HBM layout whose contiguous [pmax, 4w] slices are MX-ready.

    nc_matmul_mx contracts over the partition dimension and the four values packed in each x4
    element; quantize_mx packs four consecutive free elements. So contraction rows
    j*pmax + p (j = 0..3) of each 4*pmax-row super-tile must sit side by side in partition p.
    """
    rows, cols = matrix.shape
    if rows % (4 * pmax):
        raise ValueError(f"MX interleave needs K a multiple of {4 * pmax}, got {rows}")
    tiles = matrix.reshape(rows // (4 * pmax), 4, pmax, cols)
    return tiles.transpose(0, 2, 3, 1).reshape(rows // 4, 4 * cols)
