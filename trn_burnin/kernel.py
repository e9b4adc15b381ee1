"""The burn-in GEMM as NKI kernels (current namespace: ``import nki``; every nisa call takes dst first).

result[M, N] (float32) = lhsT[K, M].T @ rhs[K, N], fully blocked for one NeuronCore:

* M, N and K blocks sized by trn_burnin.plan from the core generation's limits (passed in as
  compile-time arguments; checked here, with assert as NKI's own kernels do, against
  ``nl.tile_size`` of the compile target);
* every operand block is loaded once per (M block, N block, K block) in pmax-row DMAs, outside the
  matmul loops, so each loaded tile feeds block_m/tile_m or block_n/tile_n matmuls;
* each output tile accumulates a whole K block in one PSUM bank (tile_n FP32 values per partition).
  When K spans several blocks, tiles are folded into an SBUF-resident FP32 output block, stored once
  per block in DMAs of tile_m x block_n; when one K block spans K, each tile goes out as it is done;
* the whole GEMM is the body of one ``nl.fori_loop`` over ``repeat``: a hardware loop around a single
  copy of the body, so the program does not grow with ``repeat``. (NKI 0.7's signature; on NKI 0.8
  pass ``unroll=False``, or the compiler may decide to unroll it.)

Two entry points: ``burnin_gemm`` for bf16, fp32, fp8 (float8_e4m3) and fp8_double_row (FP8 with
``perf_mode=double_row``: each instruction contracts two pmax-row chunks laid out as [pmax, 2, F]),
operands as raw bit patterns (numpy has no BF16/FP8) reinterpreted with ``NkiTensor.view``; and
``burnin_gemm_mx`` for MXFP8 on NeuronCore-v4: data and scales encoded once on the host
(trn_burnin.numerics.mx_encode) and DMA'd as they are, multiplied with ``nc_matmul_mx``.

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
}
_MX_ROWS = 4  # contraction elements packed into one x4 element
_MX_GROUP_PARTITIONS = 8  # one scale per 8 partitions x 4 packed values
_QUADRANT = 32  # a quadrant's scales sit in its first partitions


def _check_target(tile_m, tile_n, tile_k, block_m, block_n, block_k):
    """The plan came from the hardware catalog; refuse to compile it for a target it does not fit."""
    pmax = nl.tile_size.pmax
    assert tile_m <= nl.tile_size.gemm_stationary_fmax, f"tile_m {tile_m} exceeds the stationary limit"
    assert tile_n <= nl.tile_size.gemm_moving_fmax, f"tile_n {tile_n} exceeds the moving limit"
    assert tile_n <= nl.tile_size.psum_bank_fmax, f"tile_n {tile_n} exceeds one PSUM bank"
    assert tile_k % pmax == 0, f"tile_k {tile_k} is not a multiple of pmax {pmax}"
    assert block_m % tile_m == 0 and block_n % tile_n == 0 and block_k % tile_k == 0, \
        "blocks must be whole numbers of tiles"


def _load_plain(src, k0, bk, c0, width):
    """Contraction rows [k0, k0+bk) x columns [c0, c0+width) of ``src`` as one [pmax, chunks, width]
    SBUF tile: chunk c holds contraction rows k0 + c*pmax ..."""
    pmax = nl.tile_size.pmax
    chunks = bk // pmax
    block = nl.ndarray((pmax, chunks, width), dtype=src.dtype, buffer=nl.sbuf)
    for c in range(chunks):
        nisa.dma_copy(dst=block[0:pmax, c, 0:width],
                      src=src[k0 + c * pmax:k0 + (c + 1) * pmax, c0:c0 + width])
    return block, None


def _load_mx(src, k0, bk, c0, width):
    """The same block of an MXFP8 operand: x4 data [K/4, C] and its scales [K/32, C], each scale
    group's code placed in the first partitions of its quadrant, where nc_matmul_mx reads it."""
    data_hbm, scales_hbm = src
    pmax = nl.tile_size.pmax
    chunks = bk // (pmax * _MX_ROWS)
    row0 = k0 // _MX_ROWS
    groups_per_quadrant = _QUADRANT // _MX_GROUP_PARTITIONS
    data = nl.ndarray((pmax, chunks, width), dtype=nl.float8_e4m3fn_x4, buffer=nl.sbuf)
    scales = nl.ndarray((pmax, chunks, width), dtype=nl.uint8, buffer=nl.sbuf)
    for c in range(chunks):
        first = row0 + c * pmax
        nisa.dma_copy(dst=data[0:pmax, c, 0:width], src=data_hbm[first:first + pmax, c0:c0 + width])
        for q in range(pmax // _QUADRANT):
            group = first // _MX_GROUP_PARTITIONS + q * groups_per_quadrant
            nisa.dma_copy(dst=scales[q * _QUADRANT:q * _QUADRANT + groups_per_quadrant, c, 0:width],
                          src=scales_hbm[group:group + groups_per_quadrant, c0:c0 + width])
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


def _output_block(gemm, m0, bm, n0, bn):
    """result[m0:m0+bm, n0:n0+bn], accumulated over all K blocks and stored."""
    lhsT, rhs, result, mode, load, k_total, tiles, block_k = gemm
    tile_m, tile_n, tile_k = tiles
    m_tiles = (bm + tile_m - 1) // tile_m
    one_k_block = block_k >= k_total
    acc = None if one_k_block else nl.ndarray((tile_m, m_tiles, bn), dtype=nl.float32, buffer=nl.sbuf)
    for k0 in range(0, k_total, block_k):
        bk = min(block_k, k_total - k0)
        # Loads hoisted out of the matmul loops: each tile below is reused across the block.
        stationary = load(lhsT, k0, bk, m0, bm)
        moving = load(rhs, k0, bk, n0, bn)
        for mi in range(m_tiles):
            msz = min(tile_m, bm - mi * tile_m)
            row = m0 + mi * tile_m
            for n_lo in range(0, bn, tile_n):
                nsz = min(tile_n, bn - n_lo)
                psum = nl.ndarray((tile_m, tile_n), dtype=nl.float32, buffer=nl.psum)
                for step in range(bk // tile_k):
                    _matmul(psum, mode, stationary, moving, step, mi * tile_m, msz, n_lo, nsz)
                if one_k_block:
                    out = nl.ndarray((tile_m, tile_n), dtype=nl.float32, buffer=nl.sbuf)
                    nisa.tensor_copy(dst=out[0:msz, 0:nsz], src=psum[0:msz, 0:nsz])
                    nisa.dma_copy(dst=result[row:row + msz, n0 + n_lo:n0 + n_lo + nsz], src=out[0:msz, 0:nsz])
                    continue
                dst = acc[0:msz, mi, n_lo:n_lo + nsz]
                if k0 == 0:
                    nisa.tensor_copy(dst=dst, src=psum[0:msz, 0:nsz])
                else:
                    nisa.tensor_tensor(dst=dst, data1=dst, data2=psum[0:msz, 0:nsz], op=nl.add)
    if one_k_block:
        return
    for mi in range(m_tiles):
        msz = min(tile_m, bm - mi * tile_m)
        row = m0 + mi * tile_m
        nisa.dma_copy(dst=result[row:row + msz, n0:n0 + bn], src=acc[0:msz, mi, 0:bn])


def _repeated_gemm(gemm, m, n, block_m, block_n, repeat):
    """``repeat`` whole GEMMs as one hardware loop; the result is written every trip."""

    def one_gemm(_trip):
        for m0 in range(0, m, block_m):
            for n0 in range(0, n, block_n):
                _output_block(gemm, m0, min(block_m, m - m0), n0, min(block_n, n - n0))

    nl.fori_loop(0, repeat, one_gemm)


@nki.jit
def burnin_gemm(lhsT_bits, rhs_bits, mode, tile_m, tile_n, tile_k, block_m, block_n, block_k, repeat=1):
    """float32 lhsT.T @ rhs, ``repeat`` times over (repeats amortise launch and transfer overhead).

    lhsT_bits: [K, M]; rhs_bits: [K, N], as bit patterns of the mode's operand type. The other
    arguments are compile-time constants from trn_burnin.plan.GemmPlan.kernel_kwargs.
    """
    assert mode in _OPERAND_DTYPE, f"unknown mode {mode!r}"
    _check_target(tile_m, tile_n, tile_k, block_m, block_n, block_k)
    lhsT = lhsT_bits.view(_OPERAND_DTYPE[mode])
    rhs = rhs_bits.view(_OPERAND_DTYPE[mode])
    assert lhsT.shape[0] == rhs.shape[0], "lhsT and rhs must share the contraction dimension"
    k_total, m, n = lhsT.shape[0], lhsT.shape[1], rhs.shape[1]
    assert k_total % tile_k == 0, f"K={k_total} is not a multiple of tile_k={tile_k}"
    result = nl.ndarray((m, n), dtype=nl.float32, buffer=nl.shared_hbm)
    gemm = (lhsT, rhs, result, mode, _load_plain, k_total, (tile_m, tile_n, tile_k), block_k)
    _repeated_gemm(gemm, m, n, block_m, block_n, repeat)
    return result


@nki.jit
def burnin_gemm_mx(lhsT_data, rhs_data, lhsT_scales, rhs_scales, tile_m, tile_n, tile_k, block_m, block_n,
                   block_k, repeat=1):
    """float32 lhsT.T @ rhs in MXFP8 (NeuronCore-v4), ``repeat`` times over.

    lhsT_data: [K/4, M], rhs_data: [K/4, N] uint32 (four float8_e4m3fn codes each); lhsT_scales:
    [K/32, M], rhs_scales: [K/32, N] uint8 E8M0 codes, as trn_burnin.numerics.mx_encode lays them out.
    """
    _check_target(tile_m, tile_n, tile_k, block_m, block_n, block_k)
    lhsT = (lhsT_data.view(nl.float8_e4m3fn_x4), lhsT_scales)
    rhs = (rhs_data.view(nl.float8_e4m3fn_x4), rhs_scales)
    assert lhsT[0].shape[0] == rhs[0].shape[0], "lhsT and rhs must share the contraction dimension"
    k_total, m, n = lhsT[0].shape[0] * _MX_ROWS, lhsT[0].shape[1], rhs[0].shape[1]
    assert k_total % tile_k == 0, f"K={k_total} is not a multiple of tile_k={tile_k}"
    assert lhsT_scales.shape[0] * _MX_GROUP_PARTITIONS == lhsT[0].shape[0], "one scale per 8 x4 rows"
    result = nl.ndarray((m, n), dtype=nl.float32, buffer=nl.shared_hbm)
    gemm = (lhsT, rhs, result, "mxfp8", _load_mx, k_total, (tile_m, tile_n, tile_k), block_k)
    _repeated_gemm(gemm, m, n, block_m, block_n, repeat)
    return result
