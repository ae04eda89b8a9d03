"""Independent NumPy reference of the FB layer (docs/reference/fbn.md §1.2-1.4), in float64.

Written from the maths, not from the C++ code: explicit im2col with loops, the closed form
sum_f s_f[(v.x)^2 - sum_k v_k^2 x_k^2], the explicit pairwise sum over k != l, and hand-derived
gradients (exact, and the original code's data gradient that lacks the factor x_k)."""
import numpy as np


def out_size(n, k, s, p, d):
    return (n + 2 * p - (d * (k - 1) + 1)) // s + 1


def im2col(x, kernel=(1, 1), stride=(1, 1), pad=(0, 0), dilate=(1, 1)):
    """x (B,C,H,W) -> cols (B, OH, OW, C*kh*kw) with k ordered (c, i, j)."""
    B, C, H, W = x.shape
    kh, kw = kernel
    OH = out_size(H, kh, stride[0], pad[0], dilate[0])
    OW = out_size(W, kw, stride[1], pad[1], dilate[1])
    xp = np.zeros((B, C, H + 2 * pad[0], W + 2 * pad[1]))
    xp[:, :, pad[0]:pad[0] + H, pad[1]:pad[1] + W] = x
    cols = np.zeros((B, OH, OW, C, kh, kw))
    for oh in range(OH):
        for ow in range(OW):
            for i in range(kh):
                for j in range(kw):
                    cols[:, oh, ow, :, i, j] = xp[:, :, oh * stride[0] + i * dilate[0], ow * stride[1] + j * dilate[1]]
    return cols.reshape(B, OH, OW, C * kh * kw)


def col2im(cols, x_shape, kernel=(1, 1), stride=(1, 1), pad=(0, 0), dilate=(1, 1)):
    B, C, H, W = x_shape
    kh, kw = kernel
    _, OH, OW, _ = cols.shape
    cols = cols.reshape(B, OH, OW, C, kh, kw)
    xp = np.zeros((B, C, H + 2 * pad[0], W + 2 * pad[1]))
    for oh in range(OH):
        for ow in range(OW):
            for i in range(kh):
                for j in range(kw):
                    xp[:, :, oh * stride[0] + i * dilate[0], ow * stride[1] + j * dilate[1]] += cols[:, oh, ow, :, i, j]
    return xp[:, :, pad[0]:pad[0] + H, pad[1]:pad[1] + W]


def forward(x, w, b, scale=None, **geo):
    """Closed form. x (B,C,H,W), w (N,F,C,kh,kw), b (N,) or None, scale (F,) path scales."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    N, F = w.shape[:2]
    s = np.ones(F) if scale is None else np.asarray(scale, np.float64)
    X = im2col(x, **geo)                       # (B,OH,OW,K)
    V = w.reshape(N, F, -1)                    # (N,F,K)
    T = np.einsum("bhwk,nfk->bhwnf", X, V)
    y = np.einsum("bhwnf,f->bhwn", T ** 2, s) - np.einsum("bhwk,nfk,f->bhwn", X ** 2, V ** 2, s)
    if b is not None:
        y = y + np.asarray(b, np.float64)
    return y.transpose(0, 3, 1, 2)


def forward_pairwise(x, w, b, scale=None, **geo):
    """The same quantity as sum_{k != l} <w_k, w_l> x_k x_l (no 1/2), by an explicit double sum."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    N, F = w.shape[:2]
    s = np.ones(F) if scale is None else np.asarray(scale, np.float64)
    X = im2col(x, **geo)
    B, OH, OW, K = X.shape
    V = w.reshape(N, F, K)
    y = np.zeros((B, OH, OW, N))
    for n in range(N):
        G = np.einsum("fk,fl,f->kl", V[n], V[n], s)   # <w_k, w_l> with the path scales
        for k in range(K):
            for l in range(K):
                if k != l:
                    y[..., n] += G[k, l] * X[..., k] * X[..., l]
        if b is not None:
            y[..., n] += b[n]
    return y.transpose(0, 3, 1, 2)


def backward(x, w, gy, scale=None, compat=False, **geo):
    """(gx, gw, gb) for upstream gy (B,N,OH,OW). compat=True: the original data gradient."""
    x, w, gy = (np.asarray(a, np.float64) for a in (x, w, gy))
    N, F = w.shape[:2]
    s = np.ones(F) if scale is None else np.asarray(scale, np.float64)
    X = im2col(x, **geo)
    V = w.reshape(N, F, -1)
    g = gy.transpose(0, 2, 3, 1)                 # (B,OH,OW,N)
    T = np.einsum("bhwk,nfk->bhwnf", X, V)
    gb = g.sum(axis=(0, 1, 2))
    # d/dV of s_f[(V x)^2 - V^2 x^2]
    gV = 2 * np.einsum("bhwn,f,bhwnf,bhwk->nfk", g, s, T, X) - 2 * np.einsum("bhwn,f,nfk,bhwk->nfk", g, s, V, X ** 2)
    c = np.einsum("nfk,f->nk", V ** 2, s)        # column norms c_j[k]
    quad = 2 * np.einsum("bhwn,f,bhwnf,nfk->bhwk", g, s, T, V)
    diag = 2 * np.einsum("bhwn,nk->bhwk", g, c)
    gX = quad - (diag if compat else diag * X)
    gx = col2im(gX, x.shape, **geo)
    return gx, gV.reshape(w.shape), gb
