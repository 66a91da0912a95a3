"""A plain NumPy twin of the GRU, written straight from its equations (torch's nn.GRU form).

One time step, one gate at a time, one weight matrix per gate and per input (x or h), because
the reset gate multiplies the recurrent part of the candidate alone:

    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Slow and obvious on purpose. The kernels must agree with it.
"""

from __future__ import annotations

import numpy as np

from tests.naive import sigmoid

GATES = "rzn"


def gate_weights(tensors, k):
    """{gate: (W_i (H, D_k), W_h (H, H), b_i (H,), b_h (H,))} from torch's stacked layout."""
    w_ih, w_hh = tensors[f"weight_ih_l{k}"], tensors[f"weight_hh_l{k}"]
    b_ih, b_hh = tensors[f"bias_ih_l{k}"], tensors[f"bias_hh_l{k}"]
    H = w_hh.shape[1]
    return {g: (w_ih[n * H:(n + 1) * H], w_hh[n * H:(n + 1) * H], b_ih[n * H:(n + 1) * H],
                b_hh[n * H:(n + 1) * H]) for n, g in enumerate(GATES)}


def forward(tensors, x, num_layers, masks=None):
    """x (B, T, D) -> (y_hat (B, O), cache). masks[k-1] (B, T, H) scales layer k's input."""
    B, T, _ = x.shape
    seq = x
    cache = []
    for k in range(num_layers):
        W = gate_weights(tensors, k)
        H = W["r"][1].shape[0]
        if k > 0 and masks is not None:
            seq = seq * masks[k - 1]
        h = np.zeros((B, H))
        steps, outs = [], []
        for t in range(T):
            xt = seq[:, t]
            r = sigmoid(xt @ W["r"][0].T + W["r"][2] + h @ W["r"][1].T + W["r"][3])
            z = sigmoid(xt @ W["z"][0].T + W["z"][2] + h @ W["z"][1].T + W["z"][3])
            hn = h @ W["n"][1].T + W["n"][3]
            n = np.tanh(xt @ W["n"][0].T + W["n"][2] + r * hn)
            h_prev = h
            h = (1 - z) * n + z * h_prev
            steps.append(dict(x=xt, r=r, z=z, n=n, hn=hn, h_prev=h_prev))
            outs.append(h)
        cache.append(dict(W=W, steps=steps, inp=seq))
        seq = np.stack(outs, axis=1)
    h_last = seq[:, -1]
    y_hat = h_last @ tensors["head.weight"].T + tensors["head.bias"]
    return y_hat, dict(layers=cache, h_last=h_last)


def mse_backward(tensors, x, y, num_layers, masks=None):
    """Mean squared error and its gradient for every tensor, by backpropagation through time."""
    y_hat, cache = forward(tensors, x, num_layers, masks)
    n_el = y.size
    loss = np.sum((y_hat - y) ** 2) / n_el
    d_y = 2.0 * (y_hat - y) / n_el
    grads = {name: np.zeros_like(v) for name, v in tensors.items()}
    grads["head.weight"] = d_y.T @ cache["h_last"]
    grads["head.bias"] = d_y.sum(axis=0)
    B, T, _ = x.shape
    d_seq = np.zeros((B, T, tensors["weight_hh_l0"].shape[1]))
    d_seq[:, -1] = d_y @ tensors["head.weight"]
    for k in range(num_layers - 1, -1, -1):
        layer = cache["layers"][k]
        W = layer["W"]
        H = W["r"][1].shape[0]
        d_inp = np.zeros_like(layer["inp"])
        dWi = {g: np.zeros_like(W[g][0]) for g in GATES}
        dWh = {g: np.zeros_like(W[g][1]) for g in GATES}
        dbi = {g: np.zeros(H) for g in GATES}
        dbh = {g: np.zeros(H) for g in GATES}
        dh_next = np.zeros((B, H))
        for t in range(T - 1, -1, -1):
            s = layer["steps"][t]
            dh = d_seq[:, t] + dh_next
            d_n = dh * (1 - s["z"])
            d_z = dh * (s["h_prev"] - s["n"])
            d_n_pre = d_n * (1 - s["n"] ** 2)
            d_r = d_n_pre * s["hn"]
            pre_i = {"r": d_r * s["r"] * (1 - s["r"]), "z": d_z * s["z"] * (1 - s["z"]), "n": d_n_pre}
            pre_h = {"r": pre_i["r"], "z": pre_i["z"], "n": d_n_pre * s["r"]}
            d_x = np.zeros_like(s["x"])
            d_h_prev = dh * s["z"]
            for g in GATES:
                dWi[g] += pre_i[g].T @ s["x"]
                dWh[g] += pre_h[g].T @ s["h_prev"]
                dbi[g] += pre_i[g].sum(axis=0)
                dbh[g] += pre_h[g].sum(axis=0)
                d_x += pre_i[g] @ W[g][0]
                d_h_prev += pre_h[g] @ W[g][1]
            dh_next = d_h_prev
            d_inp[:, t] = d_x
        for n, g in enumerate(GATES):
            rows = slice(n * H, (n + 1) * H)
            grads[f"weight_ih_l{k}"][rows] = dWi[g]
            grads[f"weight_hh_l{k}"][rows] = dWh[g]
            grads[f"bias_ih_l{k}"][rows] = dbi[g]
            grads[f"bias_hh_l{k}"][rows] = dbh[g]
        if k > 0:
            d_seq = d_inp * masks[k - 1] if masks is not None else d_inp
    return loss, grads
