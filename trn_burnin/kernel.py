"""The burn-in GEMM as an NKI kernel (current namespace: ``import nki``; every nisa call takes dst first).

result[M, N] (float32) = lhsT[K, M].T @ rhs[K, N], fully blocked for one NeuronCore:

* M, N and K blocks sized by trn_burnin.plan from the core generation's limits (passed in as
  compile-time arguments; checked here against ``nl.tile_size`` of the compile target);
* every operand block is loaded once per (M block, N block, K block) in pmax-row DMAs, outside the
  matmul loops, so each loaded tile feeds block_m/tile_m or block_n/tile_n matmuls;
* each output tile accumulates a whole K block in one PSUM bank (tile_n FP32 values per partition),
  then is folded into an SBUF-resident FP32 output block, which is written back once per block in
  DMAs of tile_m x block_n elements.

Operands arrive as raw bit patterns (numpy has no BF16/FP8) and are reinterpreted with
``NkiTensor.view``. Modes: bf16, fp32, fp8 (float8_e4m3), fp8_double_row (FP8 with
``perf_mode=double_row``: each instruction contracts two pmax-row chunks laid out as [pmax, 2, F]),
mxfp8 (BF16 operands in the MX-interleaved layout of trn_burnin.numerics.mx_interleave, quantized
on-chip with ``quantize_mx`` and multiplied with ``nc_matmul_mx``).

This module imports the Neuron ``nki`` package at import time; the rest of trn_burnin never imports
it, so the runner works (and is tested) on machines without Neuron packages.
"""

import nki
import nki.isa as nisa
import nki.language as nl

_OPERAND_DTYPE = {
    "bf16": nl.bfloat16,
    "fp32": nl.float32,
    "fp8": nl.float8_e4m3,
    "fp8_double_row": nl.float8_e4m3,
    "mxfp8": nl.bfloat16,
}
_MX_ROWS = 4  # contraction elements packed into one x4 element


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def _check_target(mode, tile_m, tile_n, tile_k, block_m, block_n, block_k):
    """The plan came from the hardware catalog; refuse to compile it for a target it does not fit."""
    pmax = nl.tile_size.pmax
    _require(mode in _OPERAND_DTYPE, f"unknown mode {mode!r}")
    _require(tile_m <= nl.tile_size.gemm_stationary_fmax, f"tile_m {tile_m} exceeds the stationary limit")
    _require(tile_n <= nl.tile_size.gemm_moving_fmax, f"tile_n {tile_n} exceeds the moving limit")
    _require(tile_n <= nl.tile_size.psum_bank_fmax, f"tile_n {tile_n} exceeds one PSUM bank")
    _require(tile_k % pmax == 0, f"tile_k {tile_k} is not a multiple of pmax {pmax}")
    _require(block_m % tile_m == 0 and block_n % tile_n == 0 and block_k % tile_k == 0,
             "blocks must be whole numbers of tiles")


def _rows_per_partition(mode):
    return _MX_ROWS if mode == "mxfp8" else 1


def _load_block(src, mode, k0, bk, c0, width):
    """Contraction rows [k0, k0+bk) x columns [c0, c0+width) of ``src`` into SBUF.

    Returns a list of per-chunk operands: for the plain modes one [pmax, chunks, width] tile
    (chunk c holds contraction rows k0 + c*pmax ...); for mxfp8 the quantized x4 data and scales.
    """
    pmax = nl.tile_size.pmax
    rows = _rows_per_partition(mode)
    chunks = bk // (pmax * rows)
    row0 = k0 // rows
    if mode != "mxfp8":
        block = nl.ndarray((pmax, chunks, width), dtype=src.dtype, buffer=nl.sbuf)
        for c in range(chunks):
            nisa.dma_copy(dst=block[0:pmax, c, 0:width],
                          src=src[row0 + c * pmax:row0 + (c + 1) * pmax, c0:c0 + width])
        return block, None
    data = nl.ndarray((pmax, chunks, width), dtype=nl.float8_e4m3fn_x4, buffer=nl.sbuf)
    scales = nl.ndarray((pmax, chunks, width), dtype=nl.uint8, buffer=nl.sbuf)
    for c in range(chunks):
        # One BF16 chunk at a time: the staging tile lives only until it is quantized.
        staged = nl.ndarray((pmax, rows * width), dtype=nl.bfloat16, buffer=nl.sbuf)
        nisa.dma_copy(dst=staged,
                      src=src[row0 + c * pmax:row0 + (c + 1) * pmax,
                              rows * c0:rows * (c0 + width)])
        nisa.quantize_mx(dst=data[0:pmax, c, 0:width], src=staged,
                         dst_scale=scales[0:pmax, c, 0:width])
    return data, scales


def _matmul(psum, mode, stationary, moving, step, m_lo, msz, n_lo, nsz):
    """One Tensor Engine instruction: psum[0:msz, 0:nsz] (+)= step-th chunk(s) of the blocks."""
    pmax = nl.tile_size.pmax
    dst = psum[0:msz, 0:nsz]
    stat_data, stat_scale = stationary
    mov_data, mov_scale = moving
    if mode == "mxfp8":
        nisa.nc_matmul_mx(dst, stat_data[0:pmax, step, m_lo:m_lo + msz],
                          mov_data[0:pmax, step, n_lo:n_lo + nsz],
                          stat_scale[0:pmax, step, m_lo:m_lo + msz],
                          mov_scale[0:pmax, step, n_lo:n_lo + nsz])
    elif mode == "fp8_double_row":
        nisa.nc_matmul(dst, stat_data[0:pmax, 2 * step:2 * step + 2, m_lo:m_lo + msz],
                       mov_data[0:pmax, 2 * step:2 * step + 2, n_lo:n_lo + nsz],
                       perf_mode=nisa.matmul_perf_mode.double_row)
    else:
        nisa.nc_matmul(dst, stat_data[0:pmax, step, m_lo:m_lo + msz],
                       mov_data[0:pmax, step, n_lo:n_lo + nsz])


def _output_block(lhsT, rhs, result, mode, tiles, m0, bm, n0, bn, block_k):
    """result[m0:m0+bm, n0:n0+bn], accumulated over all K blocks in SBUF and stored once."""
    tile_m, tile_n, tile_k = tiles
    k_total = lhsT.shape[0] * _rows_per_partition(mode)
    m_tiles = (bm + tile_m - 1) // tile_m
    acc = nl.ndarray((tile_m, m_tiles, bn), dtype=nl.float32, buffer=nl.sbuf)
    for k0 in range(0, k_total, block_k):
        bk = min(block_k, k_total - k0)
        # Loads hoisted out of the matmul loops: each tile below is reused across the block.
        stationary = _load_block(lhsT, mode, k0, bk, m0, bm)
        moving = _load_block(rhs, mode, k0, bk, n0, bn)
        for mi in range(m_tiles):
            msz = min(tile_m, bm - mi * tile_m)
            for n_lo in range(0, bn, tile_n):
                nsz = min(tile_n, bn - n_lo)
                psum = nl.ndarray((tile_m, tile_n), dtype=nl.float32, buffer=nl.psum)
                for step in range(bk // tile_k):
                    _matmul(psum, mode, stationary, moving, step, mi * tile_m, msz, n_lo, nsz)
                dst = acc[0:msz, mi, n_lo:n_lo + nsz]
                if k0 == 0:
                    nisa.tensor_copy(dst=dst, src=psum[0:msz, 0:nsz])
                else:
                    nisa.tensor_tensor(dst=dst, data1=dst, data2=psum[0:msz, 0:nsz], op=nl.add)
    for mi in range(m_tiles):
        msz = min(tile_m, bm - mi * tile_m)
        row = m0 + mi * tile_m
        nisa.dma_copy(dst=result[row:row + msz, n0:n0 + bn], src=acc[0:msz, mi, 0:bn])


@nki.jit
def burnin_gemm(lhsT_bits, rhs_bits, mode, tile_m, tile_n, tile_k, block_m, block_n, block_k,
                repeat=1):
    """float32 lhsT.T @ rhs, ``repeat`` times over (repeats amortise launch and transfer overhead).

    lhsT_bits: [K, M] (mxfp8: [K/4, 4M], MX-interleaved); rhs_bits: [K, N] (mxfp8: [K/4, 4N]).
    The other arguments are compile-time constants from trn_burnin.plan.GemmPlan.kernel_kwargs.
    """
    _check_target(mode, tile_m, tile_n, tile_k, block_m, block_n, block_k)
    lhsT = lhsT_bits.view(_OPERAND_DTYPE[mode])
    rhs = rhs_bits.view(_OPERAND_DTYPE[mode])
    rows = _rows_per_partition(mode)
    _require(lhsT.shape[0] == rhs.shape[0], "lhsT and rhs must share the contraction dimension")
    k_total, m, n = lhsT.shape[0] * rows, lhsT.shape[1] // rows, rhs.shape[1] // rows
    _require(k_total % tile_k == 0, f"K={k_total} is not a multiple of tile_k={tile_k}")
    result = nl.ndarray((m, n), dtype=nl.float32, buffer=nl.shared_hbm)
    tiles = (tile_m, tile_n, tile_k)
    for _ in range(repeat):
        for m0 in range(0, m, block_m):
            for n0 in range(0, n, block_n):
                _output_block(lhsT, rhs, result, mode, tiles, m0, min(block_m, m - m0), n0,
                              min(block_n, n - n0), block_k)
    return result
