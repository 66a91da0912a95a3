"""Every Numba kernel of lstm: the LSTM cell forward and backward, the dense head, the losses,
gradient clipping and the optimizers. Nothing here knows of pandas, files or the command line.

The cell (seed document, sections 3-4), for each layer and time step t::

    f_t  = sigmoid(W_f . [h_{t-1}, x_t] + b_f)          forget gate
    i_t  = sigmoid(W_i . [h_{t-1}, x_t] + b_i)          input gate
    C~_t = tanh   (W_C . [h_{t-1}, x_t] + b_C)          candidate
    o_t  = sigmoid(W_o . [h_{t-1}, x_t] + b_o)          output gate
    C_t  = f_t * C_{t-1} + i_t * C~_t
    h_t  = o_t * tanh(C_t)

Parameter layout (PyTorch ``nn.LSTM``, so weights move to torch and ONNX by renaming only): the
seed's W_gate . [h, x] is split as W_hh[gate] . h + W_ih[gate] . x and its b_gate as
b_ih[gate] + b_hh[gate]; the four gates are stacked in the order i, f, g(=C~), o:

    weight_ih_l{k}  (4H, D_k)   D_0 = D input features, D_k = H above
    weight_hh_l{k}  (4H, H)
    bias_ih_l{k}    (4H,)
    bias_hh_l{k}    (4H,)
    head.weight     (O, H)      dense head on the last layer's last hidden state
    head.bias       (O,)

All tensors live in one flat parameter vector; ``offsets`` (int64, 4L+2 entries, built by
``network.ParamLayout``) gives where each starts, in the order above.

Arrays are time-major: a batch of windows is x (T, B, D), so x[t] is a C-contiguous (B, D)
matrix and the products are BLAS GEMMs (Numba calls SciPy's OpenBLAS for ``np.dot``), shaped for
its small-matrix path where that was measured faster (see _matmul); inference of single windows
uses loops written here. docs/benchmarks.md has the measurements.

Decorator policy: ``cache=True`` (compiled once, loaded from disk after), ``nogil=True`` (the
batch is split in shards that run on Python threads), ``error_model="numpy"`` (no
zero-division branch, so gate loops vectorize) and a fastmath set without nnan/ninf so NaN
checks keep working. float32 uses a rational tanh (Eigen's, ~1 ulp); float64 uses libm, so
float64 results match PyTorch to ~1e-12.
"""

from __future__ import annotations

import math
import platform

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

FASTMATH = {"nsz", "arcp", "contract"}
KERNEL = dict(cache=True, nogil=True, error_model="numpy", fastmath=FASTMATH)

LOSS_MSE = 0
LOSS_PINBALL = 1
CELL_LSTM = 0  # lstm_cli.cells.KERNEL_CODE
CELL_GRU = 1

# --- activations -------------------------------------------------------------------------

_TANH_CLAMP = np.float32(7.90531110763549805)
_A1 = np.float32(4.89352455891786e-03)
_A3 = np.float32(6.37261928875436e-04)
_A5 = np.float32(1.48572235717979e-05)
_A7 = np.float32(5.12229709037114e-08)
_A9 = np.float32(-8.60467152213735e-11)
_A11 = np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0 = np.float32(4.89352518554385e-03)
_B2 = np.float32(2.26843463243900e-03)
_B4 = np.float32(1.18534705686654e-04)
_B6 = np.float32(1.19825839466702e-06)
_HALF32 = np.float32(0.5)
_ONE32 = np.float32(1.0)


def tanh_(x):
    """tanh for the kernels: a vectorizable rational form in float32, libm in float64."""
    return math.tanh(x)


def sigmoid_(x):
    return 1.0 / (1.0 + math.exp(-x))


@overload(tanh_, jit_options={"fastmath": FASTMATH})
def _tanh_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:

        def tanh32(x):
            # Branch-free so that LLVM vectorizes the gate loops (no libm call per element).
            x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
            x2 = x * x
            p = x2 * _A13 + _A11
            p = x2 * p + _A9
            p = x2 * p + _A7
            p = x2 * p + _A5
            p = x2 * p + _A3
            p = x2 * p + _A1
            p = x * p
            q = x2 * _B6 + _B4
            q = x2 * q + _B2
            q = x2 * q + _B0
            return p / q

        return tanh32

    def tanh64(x):
        return math.tanh(x)

    return tanh64


@overload(sigmoid_, jit_options={"fastmath": FASTMATH})
def _sigmoid_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:

        def sigmoid32(x):
            return _HALF32 * tanh_(_HALF32 * x) + _HALF32

        return sigmoid32

    def sigmoid64(x):
        return 1.0 / (1.0 + math.exp(-x))

    return sigmoid64


# --- denormals ---------------------------------------------------------------------------
# float32 BPTT over long windows drifts into denormal numbers, which x86 handles ~100x slower.
# The kernels set flush-to-zero and denormals-are-zero for their own thread and restore the
# caller's MXCSR on return. Elsewhere (ARM...) these are no-ops.

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
_FTZ_DAZ = 0x8040


if _X86:

    @intrinsic
    def _read_mxcsr(typingctx):
        from llvmlite import ir
        from numba.core import cgutils

        def codegen(context, builder, signature, args):
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.stmxcsr")
            builder.call(fn, [builder.bitcast(slot, ir.IntType(8).as_pointer())])
            return builder.load(slot)

        return types.uint32(), codegen

    @intrinsic
    def _write_mxcsr(typingctx, value):
        from llvmlite import ir
        from numba.core import cgutils

        def codegen(context, builder, signature, args):
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            builder.store(args[0], slot)
            fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.ldmxcsr")
            builder.call(fn, [builder.bitcast(slot, ir.IntType(8).as_pointer())])
            return context.get_dummy_value()

        return types.void(types.uint32), codegen

    @njit(cache=True, nogil=True)
    def _flush_denormals():
        old = _read_mxcsr()
        _write_mxcsr(old | np.uint32(_FTZ_DAZ))
        return old

    @njit(cache=True, nogil=True)
    def _restore_fp(old):
        _write_mxcsr(old)

else:

    @njit(cache=True, nogil=True)
    def _flush_denormals():
        return np.uint32(0)

    @njit(cache=True, nogil=True)
    def _restore_fp(old):
        pass


# --- parameter views ---------------------------------------------------------------------


@njit(**KERNEL)
def _layer_views(params, offsets, k, D, H, G):
    """Layer k's weight_ih (G, D_k), weight_hh (G, H), bias_ih, bias_hh (G,); G = gates x H."""
    d_in = D if k == 0 else H
    o = offsets[4 * k : 4 * k + 4]
    w_ih = params[o[0] : o[0] + G * d_in].reshape((G, d_in))
    w_hh = params[o[1] : o[1] + G * H].reshape((G, H))
    b_ih = params[o[2] : o[2] + G]
    b_hh = params[o[3] : o[3] + G]
    return w_ih, w_hh, b_ih, b_hh


@njit(**KERNEL)
def _head_views(params, offsets, L, H, O):  # noqa: E741
    ow = offsets[4 * L]
    ob = offsets[4 * L + 1]
    return params[ow : ow + O * H].reshape((O, H)), params[ob : ob + O]


@njit(**KERNEL)
def _head(params, offsets, L, H, O, h_last, out):  # noqa: E741
    """out (B, O) = the dense head on the last layer's last hidden state h_last (B, H)."""
    w_out, b_out = _head_views(params, offsets, L, H, O)
    np.dot(h_last, w_out.T, out)
    for b in range(out.shape[0]):
        for j in range(O):
            out[b, j] += b_out[j]


# --- GEMM ----------------------------------------------------------------------------------
# np.dot in a kernel calls SciPy's OpenBLAS. Below M*N*K = 2^20 it multiplies without packing
# the operands (its small-matrix path): ~112 GFLOP/s here, against 82 for the packed path on
# (64, 64) x (64, 256), the per-step product at B=64, H=64, and ~90-99 on large M. _matmul cuts
# a product into blocks of rows that fit the small path when that was measured faster: a
# per-step product (M <= 128) in blocks of 32 rows or more, a tall one in blocks of 128 or more
# (blocks of ~63 rows of a tall product ran at 71-80 GFLOP/s).
SMALL_GEMM = 1 << 20
SMALL_D = 16  # GRU inference of a few windows: inputs narrower than this as loops, not BLAS


@njit(**KERNEL)
def _matmul(a, b, out):
    """out = a . b for C-contiguous a (M, K), b (K, N), out (M, N)."""
    M, K = a.shape
    N = b.shape[1]
    rows = (SMALL_GEMM - 1) // max(N * K, 1)  # the most rows a block may have
    if M > rows and (rows >= 128 or (M <= 128 and rows >= 32)):
        blocks = -(-M // rows)
        for i in range(blocks):
            lo = M * i // blocks
            hi = M * (i + 1) // blocks
            np.dot(a[lo:hi], b, out[lo:hi])
    else:
        np.dot(a, b, out)


# --- one time step of the cell for a block of windows, after the GEMMs ---------------------
# LLVM vectorizes an inner loop (16 float32 lanes with the rational tanh) when it starts at 0
# and writes each array at one offset: a loop writing i, f, g, o into one array at j, H+j, 2H+j,
# 3H+j, or a loop over range(a, b), stays scalar (measured 2.7 against 0.3 ns per element). So
# the forward cell writes the gates gate-major, each into its own (B, H) array (one fused loop:
# 1.1 against 2.3 us a step at B=64, H=16; 1.8 against 2.8 at H=32; 3.3 against 4.1 at H=64,
# against passes over a (B, 4H) row layout), and the backward, which must write dL/dz in the row
# layout its GEMMs take, makes one pass per gate. Blocks are indexed [b, j] rather than sliced
# into rows: a row view costs a reference count per window.


@njit(**KERNEL)
def _cell_forward(z, bias, rec, c_prev, gi, gf, gg, go, c, tc, h):
    """z (B, 4H) the input part W_ih.x_t of the pre-activations (read only), bias (4H,)
    b_ih + b_hh, rec (B, 4H) the recurrent part W_hh.h_{t-1}; c_prev (B, H) C_{t-1}. Writes the
    gates i, f, g (= C~_t), o into gi, gf, gg, go and c = C_t, tc = tanh(C_t), h = h_t (all
    (B, H), distinct arrays)."""
    B, H = c.shape
    for b in range(B):
        for j in range(H):
            i = sigmoid_(z[b, j] + bias[j] + rec[b, j])
            f = sigmoid_(z[b, H + j] + bias[H + j] + rec[b, H + j])
            g = tanh_(z[b, 2 * H + j] + bias[2 * H + j] + rec[b, 2 * H + j])
            o = sigmoid_(z[b, 3 * H + j] + bias[3 * H + j] + rec[b, 3 * H + j])
            c_t = f * c_prev[b, j] + i * g  # f C_{t-1} + i C~_t
            t = tanh_(c_t)
            gi[b, j] = i
            gf[b, j] = f
            gg[b, j] = g
            go[b, j] = o
            c[b, j] = c_t
            tc[b, j] = t
            h[b, j] = o * t  # h_t = o tanh(C_t)


@njit(**KERNEL)
def _cell_infer(z, c, h):
    """One step without keeping the gates: z (B, 4H) pre-activations (read only), c (B, H) the
    cell state C_{t-1} in, C_t out, h (B, H) h_t out. One fused loop writing two arrays
    vectorizes, and keeps the gates in registers (measured 20% faster than _cell_forward's passes
    at B=1024, H=16)."""
    B, H = c.shape
    for b in range(B):
        for j in range(H):
            i = sigmoid_(z[b, j])
            f = sigmoid_(z[b, H + j])
            g = tanh_(z[b, 2 * H + j])
            o = sigmoid_(z[b, 3 * H + j])
            c_t = f * c[b, j] + i * g
            c[b, j] = c_t
            h[b, j] = o * tanh_(c_t)


@njit(**KERNEL)
def _cell_backward(gi, gf, gg, go, c_prev, tc, d_above, dh, dc, dz, g_bias):
    """Seed 3.3 for one step of a block. gi, gf, gg, go (B, H) the gates i, f, g, o; c_prev
    C_{t-1}; tc tanh(C_t); d_above (B, H) dL/dh_t from the layer above or the head; dh (B, H) in:
    dL/dh_t through h_{t+1}, out: the total; dc (B, H) in: dL/dC_{t+1} f_{t+1}, out: dL/dC_t f_t;
    dz (B, 4H) out: dL/d(pre-activation) of i, f, g, o, also summed into g_bias (4H,) float64
    (over the block first, in dz's dtype, then once per step into float64)."""
    B, H = tc.shape
    one = tc.dtype.type(1.0)
    part = np.zeros(4 * H, dtype=dz.dtype)  # this step's bias gradient, in the array's dtype
    for b in range(B):
        for j in range(H):
            dh[b, j] += d_above[b, j]
        for j in range(H):  # dL/do . sigmoid'
            dz[b, 3 * H + j] = dh[b, j] * tc[b, j] * go[b, j] * (one - go[b, j])
        for j in range(H):  # dL/dC_t
            dc[b, j] += dh[b, j] * go[b, j] * (one - tc[b, j] * tc[b, j])
        for j in range(H):  # dL/di = dL/dC_t C~_t
            dz[b, j] = dc[b, j] * gg[b, j] * gi[b, j] * (one - gi[b, j])
        for j in range(H):  # dL/df = dL/dC_t C_{t-1}
            dz[b, H + j] = dc[b, j] * c_prev[b, j] * gf[b, j] * (one - gf[b, j])
        for j in range(H):  # dL/dC~ = dL/dC_t i
            dz[b, 2 * H + j] = dc[b, j] * gi[b, j] * (one - gg[b, j] * gg[b, j])
        for j in range(H):  # carried to step t-1
            dc[b, j] *= gf[b, j]
        for q in range(4 * H):
            part[q] += dz[b, q]
    for q in range(4 * H):
        g_bias[q] += part[q]


# --- training forward --------------------------------------------------------------------


@njit(**KERNEL)
def _input_part(x, w_ih_t, b_ih, out):
    """out (B, G) = x (B, Din) . w_ih_t (Din, G) + b_ih, as loops: for a few input features the
    product is cheaper than a BLAS call."""
    B, d_in = x.shape
    G = out.shape[1]
    for b in range(B):
        for q in range(G):
            out[b, q] = b_ih[q]
        for d in range(d_in):
            v = x[b, d]
            for q in range(G):
                out[b, q] += v * w_ih_t[d, q]


@njit(**KERNEL)
def _input_all_steps(x, w_ih_t, gates):
    """gates (T, B, G) = the input part of every gate for all steps at once, x (T, B, Din) .
    w_ih_t (Din, G): one (T*B, Din) x (Din, G) GEMM, whatever Din (for D = 1..8 measured 11-26%
    faster per training step than loops fused into each step, and equal at D = 1). The cells
    add the biases: a pass over (T, B, G) here would stream it through memory once more."""
    T, B, d_in = x.shape
    G = gates.shape[2]
    _matmul(x.reshape((T * B, d_in)), w_ih_t, gates.reshape((T * B, G)))


@njit(**KERNEL)
def _layer_forward(x, w_ih, w_hh, b_ih, b_hh, pre, gates, cells, tanh_cells, hidden, rec):
    """One layer over a whole window, keeping what backward needs.

    x (T, B, Din); pre (T, B, 4H) scratch for the input part of the pre-activations; gates
    (T, B, 4H), each step's block holding the activated i, f, g, o gate-major (as (4, B, H));
    cells, tanh_cells, hidden (T, B, H); rec (B, 4H) scratch for the recurrent product
    W_hh . h_{t-1}.
    """
    T, B, d_in = x.shape
    H = w_hh.shape[1]
    bias = b_ih + b_hh  # (4H,)
    zeros = np.zeros((B, H), dtype=gates.dtype)  # C_0
    # Weights transposed to (in, 4H), contiguous: OpenBLAS's small-matrix path then takes the
    # per-step GEMM (measured 110 against 75 GFLOP/s at B=64, H=32 with W_hh.T as a view).
    w_ih_t = np.ascontiguousarray(w_ih.T)  # (Din, 4H)
    w_hh_t = np.ascontiguousarray(w_hh.T)  # (H, 4H)
    _input_all_steps(x, w_ih_t, pre)
    rec[:, :] = 0.0  # W_hh.h_{-1} = 0
    for t in range(T):
        if t > 0:
            _matmul(hidden[t - 1], w_hh_t, rec)  # (B, H) x (H, 4H)
        g4 = gates[t].reshape((4, B, H))
        _cell_forward(pre[t], bias, rec, cells[t - 1] if t > 0 else zeros, g4[0], g4[1], g4[2], g4[3],
                      cells[t], tanh_cells[t], hidden[t])


@njit(**KERNEL)
def _layer_backward(w_ih, w_hh, gates, cells, tanh_cells, d_hidden, inp, hidden, d_gates, dh_rec,
                    dc_next, g_bias, gw_ih, gw_hh, d_low, want_low):
    """BPTT through one layer (seed 3.3). d_hidden (T, B, H) is dL/dh_t from above; inp
    (T, B, Din) the layer's input, gates (gate-major per step), cells, tanh_cells and hidden
    (T, B, H) its values from _layer_forward.

    Writes dL/dz_t for the pre-activations of i, f, g, o into d_gates (T, B, 4H), their sum over
    steps and windows into g_bias (4H,) float64, the weight gradients gw_ih = sum_t dz_t^T x_t and
    gw_hh = sum_t dz_t^T h_{t-1}, and, if want_low, d_low (T, B, Din) = dz_t W_ih, the gradient
    wrt the input. Products small enough for OpenBLAS's small-matrix path are done step by step
    while dz_t is still in cache; the others as one GEMM over all steps after the loop.
    """
    T, B, H = d_hidden.shape
    d_in = inp.shape[2]
    G = 4 * H
    dt = gates.dtype
    zeros = np.zeros((B, H), dtype=dt)  # C_{-1}
    dc_next[:, :] = 0
    dh_rec[:, :] = 0
    g_bias[:] = 0.0
    blocks_ih = _step_blocks(G, d_in, B)
    blocks_hh = _step_blocks(G, H, B)
    part_ih = np.empty((G, d_in), dtype=dt)
    part_hh = np.empty((G, H), dtype=dt)
    if blocks_ih > 0:
        gw_ih[:, :] = 0.0
    if blocks_hh > 0 or T == 1:
        gw_hh[:, :] = 0.0
    # When every product with dz_t is done step by step, only dz_t and dz_{t+1} are kept: two
    # slots of d_gates in turn, which stay in cache (T=168: 5.5 MB less to write and read).
    low_step = want_low and blocks_ih > 0  # dz_t W_ih fits the small-matrix path too
    ring = blocks_ih > 0 and (blocks_hh > 0 or T == 1) and (low_step or not want_low)
    for t in range(T - 1, -1, -1):
        s = t % 2 if ring else t
        if t < T - 1:
            s_next = (t + 1) % 2 if ring else t + 1
            _matmul(d_gates[s_next], w_hh, dh_rec)  # (B, 4H) x (4H, H): dL/dh_t through h_{t+1}
        c_prev = cells[t - 1] if t > 0 else zeros
        dz = d_gates[s]
        g4 = gates[t].reshape((4, B, H))
        _cell_backward(g4[0], g4[1], g4[2], g4[3], c_prev, tanh_cells[t], d_hidden[t], dh_rec, dc_next, dz,
                       g_bias)
        if blocks_ih > 0:
            _add_step_grad(dz, inp[t], gw_ih, part_ih, blocks_ih)
        if blocks_hh > 0 and t > 0:
            _add_step_grad(dz, hidden[t - 1], gw_hh, part_hh, blocks_hh)
        if low_step:
            _matmul(dz, w_ih, d_low[t])  # (B, 4H) x (4H, Din)
    if blocks_ih == 0:
        n = T * B
        np.dot(d_gates.reshape((n, G)).T, inp.reshape((n, d_in)), gw_ih)
    if blocks_hh == 0 and T > 1:
        n = (T - 1) * B
        np.dot(d_gates[1:].reshape((n, G)).T, hidden[: T - 1].reshape((n, H)), gw_hh)
    if want_low and not low_step:  # one GEMM packs W_ih once, not once per step
        _matmul(d_gates.reshape((T * B, G)), w_ih, d_low.reshape((T * B, d_in)))


@njit(**KERNEL)
def _step_blocks(G, d_in, B):
    """In how many blocks of windows a step's weight gradient dz_t^T (4H, B) x (B, Din) fits
    OpenBLAS's small-matrix path with blocks of 32 windows or more; 0: not at all (one GEMM over
    all steps is then faster: measured 251 against 421 us at H=32, B=64, T=48 the other way)."""
    rows = (SMALL_GEMM - 1) // (G * d_in)
    if rows >= B:
        return 1
    if rows >= 32:
        return -(-B // rows)
    return 0


@njit(**KERNEL)
def _add_step_grad(dz, inp, gw, part, blocks):
    """gw (4H, Din) += dz^T (4H, B) x inp (B, Din), in `blocks` blocks of windows."""
    B, G = dz.shape
    d_in = inp.shape[1]
    for i in range(blocks):
        lo = B * i // blocks
        hi = B * (i + 1) // blocks
        np.dot(dz[lo:hi].T, inp[lo:hi], part)
        for q in range(G):
            for j in range(d_in):
                gw[q, j] += part[q, j]


@njit(**KERNEL)
def _loss_and_grad_out(y_hat, y, quantiles, loss_kind, n_total, d_out):
    """Sum of the loss over this shard; d_out = dL/dy_hat with L the mean over all n_total."""
    B, O = y_hat.shape  # noqa: E741
    total = 0.0
    scale = 1.0 / n_total
    for b in range(B):
        for j in range(O):
            e = y_hat[b, j] - y[b, j]
            if loss_kind == LOSS_MSE:
                total += e * e
                d_out[b, j] = 2.0 * e * scale
            else:
                q = quantiles[j]
                # pinball: q*(y - y_hat) above, (1-q)*(y_hat - y) below
                if e < 0.0:
                    total += -q * e
                    d_out[b, j] = -q * scale
                else:
                    total += (1.0 - q) * e
                    d_out[b, j] = (1.0 - q) * scale
    return total


# --- the GRU cell ------------------------------------------------------------------------
# torch's nn.GRU, gates stacked r, z, n; the reset gate scales the recurrent projection of the
# candidate (torch's formulation, ONNX's linear_before_reset=1):
#     r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
#     z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
#     n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
#     h_t = (1 - z_t) * n_t + z_t * h_{t-1}
# The products are split as for the LSTM: the input part for all steps as one GEMM, the
# recurrent part h_{t-1} . W_hh^T one GEMM per step.


@njit(**KERNEL)
def _gru_cell_forward(z, b_ih, rec, b_hh, h_prev, hn, h):
    """z (B, 3H) the input part W_ih.x_t without its bias b_ih, overwritten by the gates r, z, n;
    rec (B, 3H) W_hh.h_{t-1} without its bias b_hh; writes hn = W_hn.h_{t-1} + b_hn (kept for
    backward) and h_t."""
    B, H = h.shape
    for b in range(B):
        for j in range(2 * H):
            z[b, j] = sigmoid_(z[b, j] + b_ih[j] + rec[b, j] + b_hh[j])  # r, z
        for j in range(H):
            hn[b, j] = rec[b, 2 * H + j] + b_hh[2 * H + j]
        for j in range(H):
            z[b, 2 * H + j] = tanh_(z[b, 2 * H + j] + b_ih[2 * H + j] + z[b, j] * hn[b, j])  # n
        for j in range(H):
            h[b, j] = z[b, 2 * H + j] + z[b, H + j] * (h_prev[b, j] - z[b, 2 * H + j])


@njit(**KERNEL)
def _gru_cell_backward(g, hn, h_prev, d_above, dh, carry, d_gi, d_gh, gb_ih, gb_hh):
    """One step of GRU BPTT for a block. g (B, 3H) the gates r, z, n; hn (B, H); dh (B, H) in:
    dL/dh_t through the next step's recurrent product, out: the total dL/dh_t; carry (B, H) in:
    dL/dh_{t+1} z_{t+1} (the direct path), out: dL/dh_t z_t. Writes d_gi (B, 3H) dL/d(input part
    of r, z, n) and d_gh (B, 3H) dL/d(recurrent part), and adds their sums over the block to gb_ih
    and gb_hh (float64)."""
    B, H = h_prev.shape
    one = g.dtype.type(1.0)
    part_ih = np.zeros(3 * H, dtype=d_gi.dtype)
    part_hh = np.zeros(3 * H, dtype=d_gi.dtype)
    for b in range(B):
        for j in range(H):
            dh[b, j] += d_above[b, j] + carry[b, j]
        for j in range(H):  # dL/d(pre-activation of n)
            d_gi[b, 2 * H + j] = dh[b, j] * (one - g[b, H + j]) * (one - g[b, 2 * H + j] * g[b, 2 * H + j])
        for j in range(H):  # ... through r_t * (W_hn h + b_hn)
            d_gh[b, 2 * H + j] = d_gi[b, 2 * H + j] * g[b, j]
        for j in range(H):  # r
            d_gi[b, j] = d_gi[b, 2 * H + j] * hn[b, j] * g[b, j] * (one - g[b, j])
        for j in range(H):  # z
            d_gi[b, H + j] = dh[b, j] * (h_prev[b, j] - g[b, 2 * H + j]) * g[b, H + j] * (one - g[b, H + j])
        for j in range(2 * H):
            d_gh[b, j] = d_gi[b, j]
        for j in range(H):
            carry[b, j] = dh[b, j] * g[b, H + j]
        for q in range(3 * H):
            part_ih[q] += d_gi[b, q]
        for q in range(3 * H):
            part_hh[q] += d_gh[b, q]
    for q in range(3 * H):
        gb_ih[q] += part_ih[q]
        gb_hh[q] += part_hh[q]


@njit(**KERNEL)
def _gru_layer_forward(x, w_ih, w_hh, b_ih, b_hh, gates, hn, hidden, rec):
    """One GRU layer over a whole window, keeping what backward needs: gates (T, B, 3H) r, z, n;
    hn, hidden (T, B, H); rec (B, 3H) scratch."""
    T, B, d_in = x.shape
    H = w_hh.shape[1]
    zeros = np.zeros((B, H), dtype=gates.dtype)  # h_0
    w_ih_t = np.ascontiguousarray(w_ih.T)
    w_hh_t = np.ascontiguousarray(w_hh.T)
    _input_all_steps(x, w_ih_t, gates)
    rec[:, :] = 0.0
    for t in range(T):
        if t > 0:
            _matmul(hidden[t - 1], w_hh_t, rec)
        _gru_cell_forward(gates[t], b_ih, rec, b_hh, hidden[t - 1] if t > 0 else zeros, hn[t], hidden[t])


@njit(**KERNEL)
def _gru_layer_backward(w_ih, w_hh, gates, hn, d_hidden, inp, hidden, d_gi, d_gh, dh_rec, carry,
                        gb_ih, gb_hh, gw_ih, gw_hh, d_low, want_low):
    """BPTT through one GRU layer. d_hidden (T, B, H) dL/dh_t from above; writes d_gi, d_gh
    (T, B, 3H) for every step, the bias sums into gb_ih, gb_hh (3H,) float64, then the weight
    gradients gw_ih = sum_t d_gi_t^T x_t, gw_hh = sum_t d_gh_t^T h_{t-1} and, if want_low,
    d_low (T, B, Din) = d_gi W_ih as GEMMs over all steps."""
    T, B, H = d_hidden.shape
    d_in = inp.shape[2]
    G = 3 * H
    zeros = np.zeros((B, H), dtype=gates.dtype)
    carry[:, :] = 0.0
    dh_rec[:, :] = 0.0
    gb_ih[:] = 0.0
    gb_hh[:] = 0.0
    for t in range(T - 1, -1, -1):
        if t < T - 1:
            _matmul(d_gh[t + 1], w_hh, dh_rec)  # (B, 3H) x (3H, H)
        _gru_cell_backward(gates[t], hn[t], hidden[t - 1] if t > 0 else zeros, d_hidden[t], dh_rec,
                           carry, d_gi[t], d_gh[t], gb_ih, gb_hh)
    n = T * B
    np.dot(d_gi.reshape((n, G)).T, inp.reshape((n, d_in)), gw_ih)
    if T > 1:
        m = (T - 1) * B
        np.dot(d_gh[1:].reshape((m, G)).T, hidden[: T - 1].reshape((m, H)), gw_hh)
    else:
        gw_hh[:, :] = 0.0
    if want_low:
        _matmul(d_gi.reshape((n, G)), w_ih, d_low.reshape((n, d_in)))


@njit(**KERNEL)
def forward_backward(params, offsets, cell, D, H, L, O, x, y, masks, use_masks, quantiles,  # noqa: E741
                     loss_kind, n_total, grad, gates, cells, tanh_cells, hidden, layer_in, rec, y_hat,
                     d_out, d_gates, d_rec, d_a, d_b, dh_rec, dc_next):
    """Loss (summed over this shard) and its gradient wrt every parameter, written into grad.

    cell: CELL_LSTM or CELL_GRU; G below is 4H for the LSTM, 3H for the GRU.
    x (T, B, D); y (B, O); masks (max(L-1,1), T, B, H) dropout masks already scaled by 1/(1-p);
    gates (L, T, B, G) (the LSTM's gate-major per step); cells, hidden (L, T, B, H) (the GRU keeps
    W_hn.h + b_hn in cells);
    tanh_cells (L, T, B, H) tanh(C_t) (LSTM only); layer_in (max(L-1,1), T, B, H) the dropped-out
    inputs of layers 1..L-1; rec (B, G); y_hat, d_out (B, O); d_gates (T, B, G);
    d_rec (T, B, G) (GRU only); d_a, d_b (T, B, H); dh_rec, dc_next (B, H). d_gates also holds
    the LSTM's input products during the forward pass.
    """
    old_fp = _flush_denormals()
    T, B, _ = x.shape
    G = (4 if cell == CELL_LSTM else 3) * H
    for k in range(L):
        w_ih, w_hh, b_ih, b_hh = _layer_views(params, offsets, k, D, H, G)
        if k == 0:
            inp = x
        else:
            inp = layer_in[k - 1]
            if use_masks:
                for t in range(T):
                    for b in range(B):
                        for j in range(H):
                            inp[t, b, j] = hidden[k - 1, t, b, j] * masks[k - 1, t, b, j]
            else:
                inp[:, :, :] = hidden[k - 1]
        if cell == CELL_LSTM:
            _layer_forward(inp, w_ih, w_hh, b_ih, b_hh, d_gates, gates[k], cells[k], tanh_cells[k],
                           hidden[k], rec)
        else:
            _gru_layer_forward(inp, w_ih, w_hh, b_ih, b_hh, gates[k], cells[k], hidden[k], rec)

    h_last = hidden[L - 1, T - 1]  # (B, H)
    _head(params, offsets, L, H, O, h_last, y_hat)
    loss = _loss_and_grad_out(y_hat, y, quantiles, loss_kind, n_total, d_out)

    # head gradients
    gw_out, gb_out = _head_views(grad, offsets, L, H, O)
    np.dot(d_out.T, h_last, gw_out)  # (O, B) x (B, H)
    for j in range(O):
        s = 0.0
        for b in range(B):
            s += d_out[b, j]
        gb_out[j] = s
    d_top = d_a
    d_top[:, :, :] = 0.0
    np.dot(d_out, _head_views(params, offsets, L, H, O)[0], d_top[T - 1])  # dL/dh_T of the last layer

    d_cur = d_a
    d_low = d_b
    g_bias = np.empty(G, dtype=np.float64)  # bias gradients summed in float64
    g_bias_hh = np.empty(G, dtype=np.float64)
    for k in range(L - 1, -1, -1):
        w_ih, w_hh, b_ih, b_hh = _layer_views(params, offsets, k, D, H, G)
        gw_ih, gw_hh, gb_ih, gb_hh = _layer_views(grad, offsets, k, D, H, G)
        inp = x if k == 0 else layer_in[k - 1]
        # For k > 0 also dL/d(input of layer k) into d_low, then back through the dropout mask
        # to layer k-1's outputs.
        if cell == CELL_LSTM:
            _layer_backward(w_ih, w_hh, gates[k], cells[k], tanh_cells[k], d_cur, inp, hidden[k],
                            d_gates, dh_rec, dc_next, g_bias, gw_ih, gw_hh, d_low, k > 0)
            g_bias_hh[:] = g_bias  # b_ih and b_hh enter the LSTM's gates as one sum
        else:
            _gru_layer_backward(w_ih, w_hh, gates[k], cells[k], d_cur, inp, hidden[k], d_gates,
                                d_rec, dh_rec, dc_next, g_bias, g_bias_hh, gw_ih, gw_hh, d_low,
                                k > 0)
        for j in range(G):
            gb_ih[j] = g_bias[j]
            gb_hh[j] = g_bias_hh[j]
        if k > 0:
            if use_masks:
                for t in range(T):
                    for b in range(B):
                        for j in range(H):
                            d_low[t, b, j] *= masks[k - 1, t, b, j]
            d_cur, d_low = d_low, d_cur
    _restore_fp(old_fp)
    return loss


# --- inference ---------------------------------------------------------------------------


GEMV_MAX_B = 4  # windows; up to this many, inference runs matrix-vector products per window
AXPY_MAX_H = 64  # above, BLAS's matrix-vector product is faster than _infer_axpy's


@njit(**KERNEL)
def forward_infer(params, offsets, cell, D, H, L, O, x, out):  # noqa: E741
    """Head outputs out (B, O) for windows x (T, B, D) without training caches: memory
    O(L*B*(D+H)), not O(T*B*H). Few windows (the latency path) avoid GEMM."""
    if cell == CELL_GRU:
        _gru_infer(params, offsets, D, H, L, O, x, out)
    elif x.shape[1] > GEMV_MAX_B:
        _infer_gemm(params, offsets, D, H, L, O, x, out)
    elif H <= AXPY_MAX_H:
        _infer_axpy(params, offsets, D, H, L, O, x, out)
    else:
        _infer_gemv(params, offsets, D, H, L, O, x, out)


@njit(**KERNEL)
def _infer_gemv(params, offsets, D, H, L, O, x, out):  # noqa: E741
    """Two BLAS matrix-vector products per window, step and layer on the weights as they lie in
    params: a GEMM with one row would pack (copy) all of W every step."""
    old_fp = _flush_denormals()
    T, B, _ = x.shape
    G = 4 * H
    dt = params.dtype
    bias = np.empty((L, G), dtype=dt)
    for k in range(L):
        w_ih, w_hh, b_ih, b_hh = _layer_views(params, offsets, k, D, H, 4 * H)
        for q in range(G):
            bias[k, q] = b_ih[q] + b_hh[q]
    h = np.zeros((L, B, H), dtype=dt)
    c = np.zeros((L, B, H), dtype=dt)
    z = np.empty((B, G), dtype=dt)
    rec = np.empty((B, G), dtype=dt)
    for t in range(T):
        for k in range(L):
            w_ih, w_hh, b_ih, b_hh = _layer_views(params, offsets, k, D, H, 4 * H)
            for b in range(B):
                np.dot(w_ih, x[t, b] if k == 0 else h[k - 1, b], z[b])  # (4H, Din) . (Din,)
                np.dot(w_hh, h[k, b], rec[b])  # (4H, H) . (H,)
            b_k = bias[k]
            for b in range(B):
                for q in range(G):
                    z[b, q] += rec[b, q] + b_k[q]
            _cell_infer(z, c[k], h[k])
    _head(params, offsets, L, H, O, h[L - 1], out)
    _restore_fp(old_fp)


@njit(**KERNEL)
def _infer_axpy(params, offsets, D, H, L, O, x, out):  # noqa: E741
    """Matrix-vector products per window, step and layer, written here rather than called from
    BLAS: a BLAS call costs ~0.15 us, more than the product itself at small H. The weights are first transposed and stacked,
    wt[k] = [W_ih | W_hh]^T (Din+H, 4H), so that the product is a sum of rows (axpy), which
    vectorizes over the 4H outputs without reassociating any sum."""
    old_fp = _flush_denormals()
    T, B, _ = x.shape
    G = 4 * H
    dt = params.dtype
    K0 = D + H  # rows of wt[0]; the layers above have 2H
    wt = np.empty((L, max(K0, 2 * H), G), dtype=dt)
    bias = np.empty((L, G), dtype=dt)
    for k in range(L):
        d_in = D if k == 0 else H
        w_ih, w_hh, b_ih, b_hh = _layer_views(params, offsets, k, D, H, 4 * H)
        for j in range(d_in):
            for q in range(G):
                wt[k, j, q] = w_ih[q, j]
        for j in range(H):
            for q in range(G):
                wt[k, d_in + j, q] = w_hh[q, j]
        for q in range(G):
            bias[k, q] = b_ih[q] + b_hh[q]
    xh = np.zeros((L, B, max(K0, 2 * H)), dtype=dt)  # [input, h_{t-1}] of each layer
    c = np.zeros((L, B, H), dtype=dt)
    z = np.empty((B, G), dtype=dt)
    h = np.empty((B, H), dtype=dt)
    for t in range(T):
        for b in range(B):
            for j in range(D):
                xh[0, b, j] = x[t, b, j]
        for k in range(L):
            d_in = D if k == 0 else H
            K = d_in + H
            for b in range(B):
                for q in range(G):
                    z[b, q] = bias[k, q]
                j = 0
                while j + 4 <= K:  # four rows per pass, summed in the order of a plain loop
                    v0 = xh[k, b, j]
                    v1 = xh[k, b, j + 1]
                    v2 = xh[k, b, j + 2]
                    v3 = xh[k, b, j + 3]
                    for q in range(G):
                        z[b, q] = (((z[b, q] + v0 * wt[k, j, q]) + v1 * wt[k, j + 1, q])
                                   + v2 * wt[k, j + 2, q]) + v3 * wt[k, j + 3, q]
                    j += 4
                while j < K:
                    v0 = xh[k, b, j]
                    for q in range(G):
                        z[b, q] += v0 * wt[k, j, q]
                    j += 1
            _cell_infer(z, c[k], h)
            for b in range(B):
                for j in range(H):
                    xh[k, b, d_in + j] = h[b, j]
                if k + 1 < L:
                    for j in range(H):
                        xh[k + 1, b, j] = h[b, j]
    _head(params, offsets, L, H, O, h, out)
    _restore_fp(old_fp)


@njit(**KERNEL)
def _infer_gemm(params, offsets, D, H, L, O, x, out):  # noqa: E741
    """Each layer does one GEMM per step, [x_t, h_{t-1}, 1] (B, Din+H+1) x [W_ih | W_hh | b]^T
    (Din+H+1, 4H),
    on a buffer xh whose left part holds the layer's input (x_t for layer 0, the layer below's
    h_t above), its middle part the layer's own h_{t-1} and its last column ones (the bias)."""
    old_fp = _flush_denormals()
    T, B, _ = x.shape
    G = 4 * H
    dt = params.dtype
    # Per layer, views of flat buffers (np.dot needs contiguous operands): the concatenated
    # weights, transposed, (Din+H+1, 4H) and xh (B, Din+H+1).
    w_off = np.zeros(L + 1, dtype=np.int64)
    xh_off = np.zeros(L + 1, dtype=np.int64)
    for k in range(L):
        width = (D if k == 0 else H) + H + 1
        w_off[k + 1] = w_off[k] + G * width
        xh_off[k + 1] = xh_off[k] + B * width
    w_all = np.empty(w_off[L], dtype=dt)
    xh_all = np.zeros(xh_off[L], dtype=dt)  # h_0 = 0
    for k in range(L):
        d_in = D if k == 0 else H
        w_ih, w_hh, b_ih, b_hh = _layer_views(params, offsets, k, D, H, 4 * H)
        w_cat = w_all[w_off[k] : w_off[k + 1]].reshape((d_in + H + 1, G))  # transposed
        for j in range(d_in):
            for q in range(G):
                w_cat[j, q] = w_ih[q, j]
        for j in range(H):
            for q in range(G):
                w_cat[d_in + j, q] = w_hh[q, j]
        for q in range(G):
            w_cat[d_in + H, q] = b_ih[q] + b_hh[q]
        xh = xh_all[xh_off[k] : xh_off[k + 1]].reshape((B, d_in + H + 1))
        for b in range(B):
            xh[b, d_in + H] = 1.0
    c = np.zeros((L, B, H), dtype=dt)  # C_0 = 0
    z = np.empty((B, G), dtype=dt)
    h = np.empty((B, H), dtype=dt)
    # Layers advance in lockstep, so no layer needs its whole output sequence stored.
    for t in range(T):
        xh = xh_all[0 : xh_off[1]].reshape((B, D + H + 1))
        for b in range(B):
            for j in range(D):
                xh[b, j] = x[t, b, j]
        for k in range(L):
            d_in = D if k == 0 else H
            xh = xh_all[xh_off[k] : xh_off[k + 1]].reshape((B, d_in + H + 1))
            w_cat = w_all[w_off[k] : w_off[k + 1]].reshape((d_in + H + 1, G))
            _matmul(xh, w_cat, z)  # (B, Din+H+1) x (Din+H+1, 4H)
            _cell_infer(z, c[k], h)
            for b in range(B):
                for j in range(H):
                    xh[b, d_in + j] = h[b, j]  # h_{t-1} of the next step
            if k + 1 < L:
                up = xh_all[xh_off[k + 1] : xh_off[k + 2]].reshape((B, 2 * H + 1))
                for b in range(B):
                    for j in range(H):
                        up[b, j] = h[b, j]  # the input of the layer above
    _head(params, offsets, L, H, O, h, out)
    _restore_fp(old_fp)


@njit(**KERNEL)
def _rows_product(a, wt, out):
    """out (B, N) = a (B, K) . wt (K, N) as a sum of rows of wt (axpy): for single windows and
    narrow inputs, where a BLAS call costs more than the product."""
    B, K = a.shape
    N = wt.shape[1]
    for b in range(B):
        for q in range(N):
            out[b, q] = 0.0
        for j in range(K):
            v = a[b, j]
            for q in range(N):
                out[b, q] += v * wt[j, q]


@njit(**KERNEL)
def _gru_infer(params, offsets, D, H, L, O, x, out):  # noqa: E741
    """The GRU stack in lockstep over layers, keeping only each layer's h: per step and layer
    the input part (B, Din) . W_ih^T and the recurrent part (B, H) . W_hh^T, as GEMMs for many
    windows; for a few, as row sums over transposed weights, or as BLAS matrix-vector products on
    the weights as they lie in params when H > AXPY_MAX_H and the window is short (T < H/2).
    The row sums are faster per step but need the transposed copy first; measured for one window
    (1 thread): H=256 copy ~220 us, steps 4.9 against 6.9-8.3 us; H=128 copy ~55 us, steps 1.0
    against 2.0 us: break-even near T=90 and T=55."""
    old_fp = _flush_denormals()
    T, B, _ = x.shape
    G = 3 * H
    dt = params.dtype
    gemm = B > GEMV_MAX_B
    gemv = not gemm and H > AXPY_MAX_H and 2 * T < H
    # transposed weights, per layer, in flat buffers (np.dot needs contiguous operands)
    w_off = np.zeros(L + 1, dtype=np.int64)
    if not gemv:
        for k in range(L):
            w_off[k + 1] = w_off[k] + G * ((D if k == 0 else H) + H)
    w_all = np.empty(w_off[L], dtype=dt)
    for k in range(L if not gemv else 0):
        d_in = D if k == 0 else H
        w_ih, w_hh, b_ih, b_hh = _layer_views(params, offsets, k, D, H, G)
        base = w_off[k]
        w_all[base : base + d_in * G].reshape((d_in, G))[:, :] = w_ih.T
        w_all[base + d_in * G : w_off[k + 1]].reshape((H, G))[:, :] = w_hh.T
    h = np.zeros((L, B, H), dtype=dt)  # h_0 = 0
    gi = np.empty((B, G), dtype=dt)
    gh = np.empty((B, G), dtype=dt)
    # gemv with a few input features: layer 0's input part as row sums over W_ih^T (small)
    w_in_t = np.ascontiguousarray(_layer_views(params, offsets, 0, D, H, G)[0].T)
    for t in range(T):
        for k in range(L):
            d_in = D if k == 0 else H
            w_ih, w_hh, b_ih, b_hh = _layer_views(params, offsets, k, D, H, G)
            inp = x[t] if k == 0 else h[k - 1]
            if gemv:
                for b in range(B):
                    np.dot(w_hh, h[k, b], gh[b])  # (3H, H) . (H,)
                if d_in >= SMALL_D:
                    for b in range(B):
                        np.dot(w_ih, inp[b], gi[b])
                        for q in range(G):
                            gi[b, q] += b_ih[q]
                else:  # a few inputs (layer 0 only: H > AXPY_MAX_H above): cheaper than BLAS
                    _input_part(inp, w_in_t, b_ih, gi)
            else:
                base = w_off[k]
                w_ih_t = w_all[base : base + d_in * G].reshape((d_in, G))
                w_hh_t = w_all[base + d_in * G : w_off[k + 1]].reshape((H, G))
                if gemm and d_in >= SMALL_D:
                    _matmul(inp, w_ih_t, gi)
                    for b in range(B):
                        for q in range(G):
                            gi[b, q] += b_ih[q]
                else:
                    _input_part(inp, w_ih_t, b_ih, gi)
                if gemm:
                    _matmul(h[k], w_hh_t, gh)
                else:
                    _rows_product(h[k], w_hh_t, gh)
            hk = h[k]
            for b in range(B):
                for j in range(H):
                    r = sigmoid_(gi[b, j] + gh[b, j] + b_hh[j])
                    u = sigmoid_(gi[b, H + j] + gh[b, H + j] + b_hh[H + j])
                    n = tanh_(gi[b, 2 * H + j] + r * (gh[b, 2 * H + j] + b_hh[2 * H + j]))
                    hk[b, j] = n + u * (hk[b, j] - n)
    _head(params, offsets, L, H, O, h[L - 1], out)
    _restore_fp(old_fp)


# --- optimizers ------------------------------------------------------------------------


@njit(**KERNEL)
def add_into(dst, src):
    for i in range(dst.shape[0]):
        dst[i] += src[i]


@njit(**KERNEL)
def clip_grad_norm(grad, max_norm):
    """Scale grad in place to a global L2 norm of at most max_norm (torch's clip_grad_norm_)."""
    s = 0.0
    for i in range(grad.shape[0]):
        s += np.float64(grad[i]) * np.float64(grad[i])
    norm = math.sqrt(s)
    if max_norm > 0.0:
        coef = max_norm / (norm + 1e-6)
        if coef < 1.0:
            c = grad.dtype.type(coef)
            for i in range(grad.shape[0]):
                grad[i] *= c
    return norm


@njit(**KERNEL)
def adam_step(params, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One Adam update with torch.optim.Adam semantics (L2 weight decay added to the gradient)."""
    one = params.dtype.type(1.0)
    b1 = params.dtype.type(beta1)
    b2 = params.dtype.type(beta2)
    wd = params.dtype.type(weight_decay)
    bias1 = 1.0 - beta1**step
    bias2_sqrt = math.sqrt(1.0 - beta2**step)
    step_size = params.dtype.type(lr / bias1)
    inv_b2 = params.dtype.type(1.0 / bias2_sqrt)
    e = params.dtype.type(eps)
    for i in range(params.shape[0]):
        g = grad[i] + wd * params[i]
        m[i] += (one - b1) * (g - m[i])
        v[i] = b2 * v[i] + (one - b2) * g * g
        params[i] -= step_size * m[i] / (math.sqrt(v[i]) * inv_b2 + e)


@njit(**KERNEL)
def sgd_step(params, grad, velocity, step, lr, momentum, weight_decay):
    """The seed's update W <- W - eta * dL/dW, with torch.optim.SGD's momentum and decay."""
    a = params.dtype.type(lr)
    mu = params.dtype.type(momentum)
    wd = params.dtype.type(weight_decay)
    for i in range(params.shape[0]):
        g = grad[i] + wd * params[i]
        if momentum != 0.0:
            if step == 1:
                velocity[i] = g
            else:
                velocity[i] = mu * velocity[i] + g
            g = velocity[i]
        params[i] -= a * g
