"""A plain NumPy twin of the LSTM, written straight from the seed document's equations.

Slow and obvious on purpose: one time step, one gate at a time, with the seed's concatenation
[h_{t-1}, x_t] and one weight matrix per gate. The kernels must agree with it.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def gate_weights(tensors, k):
    """Per-gate W_gate (H, H + D_k) acting on [h_{t-1}, x_t] and b_gate, from torch's layout."""
    w_ih, w_hh = tensors[f"weight_ih_l{k}"], tensors[f"weight_hh_l{k}"]
    b = tensors[f"bias_ih_l{k}"] + tensors[f"bias_hh_l{k}"]
    H = w_hh.shape[1]
    out = {}
    for n, gate in enumerate("ifgo"):
        rows = slice(n * H, (n + 1) * H)
        out[gate] = (np.concatenate([w_hh[rows], w_ih[rows]], axis=1), b[rows])
    return out


def forward(tensors, x, num_layers, masks=None):
    """x (B, T, D) -> (y_hat (B, O), cache). masks[k-1] (B, T, H) scales layer k's input."""
    B, T, _ = x.shape
    seq = x
    cache = []
    for k in range(num_layers):
        W = gate_weights(tensors, k)
        H = W["i"][0].shape[0]
        if k > 0 and masks is not None:
            seq = seq * masks[k - 1]
        h = np.zeros((B, H))
        c = np.zeros((B, H))
        steps = []
        outs = []
        for t in range(T):
            hx = np.concatenate([h, seq[:, t]], axis=1)  # [h_{t-1}, x_t]
            f = sigmoid(hx @ W["f"][0].T + W["f"][1])
            i = sigmoid(hx @ W["i"][0].T + W["i"][1])
            g = np.tanh(hx @ W["g"][0].T + W["g"][1])  # C~_t
            o = sigmoid(hx @ W["o"][0].T + W["o"][1])
            c_prev = c
            c = f * c_prev + i * g
            h = o * np.tanh(c)
            steps.append(dict(hx=hx, f=f, i=i, g=g, o=o, c_prev=c_prev, c=c))
            outs.append(h)
        cache.append(dict(W=W, steps=steps, inp=seq))
        seq = np.stack(outs, axis=1)  # (B, T, H)
    h_last = seq[:, -1]
    y_hat = h_last @ tensors["head.weight"].T + tensors["head.bias"]
    return y_hat, dict(layers=cache, h_last=h_last)


def mse_backward(tensors, x, y, num_layers, masks=None):
    """Mean squared error and its gradient for every tensor, by BPTT as in seed section 3.3."""
    y_hat, cache = forward(tensors, x, num_layers, masks)
    n = y.size
    loss = np.sum((y_hat - y) ** 2) / n
    d_y = 2.0 * (y_hat - y) / n
    grads = {name: np.zeros_like(v) for name, v in tensors.items()}
    grads["head.weight"] = d_y.T @ cache["h_last"]
    grads["head.bias"] = d_y.sum(axis=0)
    B, T, _ = x.shape
    d_seq = np.zeros((B, T, tensors["weight_hh_l0"].shape[1]))
    d_seq[:, -1] = d_y @ tensors["head.weight"]
    for k in range(num_layers - 1, -1, -1):
        layer = cache["layers"][k]
        W = layer["W"]
        H = W["i"][0].shape[0]
        d_inp = np.zeros_like(layer["inp"])
        dW = {gate: np.zeros_like(W[gate][0]) for gate in "ifgo"}
        db = {gate: np.zeros_like(W[gate][1]) for gate in "ifgo"}
        dh_next = np.zeros((B, H))
        dc_next = np.zeros((B, H))
        f_next = np.zeros((B, H))
        for t in range(T - 1, -1, -1):
            s = layer["steps"][t]
            dh = d_seq[:, t] + dh_next
            tanh_c = np.tanh(s["c"])
            d_o = dh * tanh_c  # dL/do_t
            d_c = dh * s["o"] * (1 - tanh_c**2) + dc_next * f_next  # dL/dC_t
            d_f = d_c * s["c_prev"]
            d_i = d_c * s["g"]
            d_g = d_c * s["i"]  # dL/dC~_t
            dz = {
                "f": d_f * s["f"] * (1 - s["f"]),
                "i": d_i * s["i"] * (1 - s["i"]),
                "g": d_g * (1 - s["g"] ** 2),
                "o": d_o * s["o"] * (1 - s["o"]),
            }
            d_hx = np.zeros_like(s["hx"])
            for gate in "ifgo":
                dW[gate] += dz[gate].T @ s["hx"]
                db[gate] += dz[gate].sum(axis=0)
                d_hx += dz[gate] @ W[gate][0]
            dh_next = d_hx[:, :H]
            d_inp[:, t] = d_hx[:, H:]
            dc_next = d_c
            f_next = s["f"]
        for n, gate in enumerate("ifgo"):
            rows = slice(n * H, (n + 1) * H)
            grads[f"weight_hh_l{k}"][rows] = dW[gate][:, :H]
            grads[f"weight_ih_l{k}"][rows] = dW[gate][:, H:]
            grads[f"bias_ih_l{k}"][rows] = db[gate]
            grads[f"bias_hh_l{k}"][rows] = db[gate]
        if k > 0:
            d_seq = d_inp * masks[k - 1] if masks is not None else d_inp
    return loss, grads
