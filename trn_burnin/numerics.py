"""Host-side number formats: the bit patterns the kernel reads and the values they stand for.

numpy has no bfloat16 or FP8 types, so the runner hands the kernel raw bit patterns (uint16 for
BF16, uint8 for FP8) that the kernel reinterprets with ``NkiTensor.view``. MXFP8 operands are encoded
here too, data and scales, so the kernel reads them from HBM as they are. The float32 reference is
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


# MXFP8 as nc_matmul_mx reads it (NKI ISA reference and the MXFP matmul deep dive): float8_e4m3fn_x4
# elements pack 4 contraction values; one E8M0 scale (2^(code - 127)) covers a group of 8 partitions
# x those 4 packed values, 32 values in all.
MX_PACK = 4
MX_GROUP_PARTITIONS = 8
MX_SCALE_BIAS = 127
# quantize_mx's rule, kept for the host-side encoding: scale 2^(floor(log2 amax) - (Emax - 1)) with
# Emax = 8 for float8_e4m3fn, so every scaled value stays below 2^8 (448 is e4m3fn's largest).
_E4M3FN_MAX_EXPONENT = 8


@dataclass(frozen=True)
class MxOperand:
    """One GEMM operand encoded for nc_matmul_mx, ready to be copied to HBM once."""

    data: np.ndarray  # [K/4, C] little-endian uint32: four float8_e4m3fn codes per x4 element
    scales: np.ndarray  # [K/32, C] uint8 E8M0 codes, one per group of 8 x4 rows of a column
    values: np.ndarray  # [K, C] float32: exactly the values data and scales stand for


def mx_encode(matrix: np.ndarray, pmax: int) -> MxOperand:
    """float32 [K, C] -> MXFP8 in the layout the kernel DMAs straight into SBUF.

    nc_matmul_mx contracts over the partition dimension and the four values packed in each x4
    element, so x4 row s*pmax + p (super-tile s of 4*pmax contraction rows, partition p) packs rows
    s*4*pmax + j*pmax + p for j = 0..3 (any fixed packing works: both operands use the same one).
    """
    rows, cols = matrix.shape
    if rows % (MX_PACK * pmax):
        raise ValueError(f"MXFP8 needs K a multiple of {MX_PACK * pmax}, got {rows}")
    # [super-tile, slot j, partition p, column] -> [x4 row (s, p), column, slot j]
    packed = np.asarray(matrix, np.float64).reshape(rows // (MX_PACK * pmax), MX_PACK, pmax, cols)
    packed = packed.transpose(0, 2, 3, 1).reshape(rows // MX_PACK, cols, MX_PACK)
    groups = packed.reshape(rows // MX_PACK // MX_GROUP_PARTITIONS, MX_GROUP_PARTITIONS, cols, MX_PACK)
    amax = np.abs(groups).max(axis=(1, 3))
    with np.errstate(divide="ignore"):
        exponent = np.where(amax > 0, np.floor(np.log2(amax)) - (_E4M3FN_MAX_EXPONENT - 1), -MX_SCALE_BIAS)
    exponent = np.clip(exponent, -MX_SCALE_BIAS, MX_SCALE_BIAS)
    factor = np.exp2(exponent)[:, None, :, None]
    codes = FLOAT8_E4M3FN.encode(groups / factor)
    decoded = (FLOAT8_E4M3FN.decode(codes).astype(np.float64) * factor).reshape(packed.shape)
    values = decoded.reshape(rows // (MX_PACK * pmax), pmax, cols, MX_PACK).transpose(0, 3, 1, 2)
    data = np.ascontiguousarray(codes.reshape(packed.shape)).view("<u4").reshape(rows // MX_PACK, cols)
    return MxOperand(data=data, scales=(exponent + MX_SCALE_BIAS).astype(np.uint8),
                     values=values.reshape(rows, cols).astype(np.float32))


def mx_decode_data(data: np.ndarray) -> np.ndarray:
    """[R, C] uint32 x4 elements -> [R, C, 4] float32 codes' values (unscaled)."""
    codes = np.ascontiguousarray(data, dtype="<u4").view(np.uint8).reshape(*data.shape, MX_PACK)
    return FLOAT8_E4M3FN.decode(codes)
