#!/usr/bin/env python
"""Benchmark of the FB operators: forward+backward ms/iter of FMConvolution1,
FMConvolution3 and the same maths composed from stock MXNet ops, the achieved GFLOP/s, the
machine's best sgemm rate (MXNet's MKLDNN FullyConnected on 2048^3) and the GEMM bound
(3 GEMMs of 2*B*H*W*C*N*F flops at that rate); plus the scratch peak of FMConvolution1 on a
ResNet-50-sized ImageNet head (B32, C2048, 7x7, N1000, F50).

    python tools/bench_fbop.py [--repeats 7] [--skip-memory]
"""
import argparse
import os
import sys
import time

import mxrepro  # noqa: E402  (sets OMP_NUM_THREADS before mxnet)
from mxrepro import ops  # noqa: E402

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd  # noqa: E402

SHAPES = [("CIFAR-100 ResNet-164 head", 128, 256, 8, 100, 20),
          ("ImageNet head", 32, 512, 7, 1000, 50)]


def time_ms(fn, repeats, warmup=2, stat=np.median):
    """`stat` (median by default) of `repeats` timed calls after `warmup` untimed ones, in ms."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000 * float(stat(ts))


def gemm_rate(repeats):
    """The machine's best sgemm rate: the fastest of `repeats` 2048^3 products (a single slow
    median, e.g. from a load burst, would otherwise flatter every 'x GEMM bound' figure)."""
    n = 2048
    a = mx.nd.random.uniform(shape=(n, n))
    b = mx.nd.random.uniform(shape=(n, n))
    fc = time_ms(lambda: mx.nd.FullyConnected(a, b, no_bias=True, num_hidden=n).wait_to_read(), repeats, stat=min)
    dot = time_ms(lambda: mx.nd.dot(a, b).wait_to_read(), repeats, stat=min)
    return 2 * n ** 3 / fc / 1e6, 2 * n ** 3 / dot / 1e6


def composite(x, w, b, N, F):
    """The FB maths from stock ops: Convolution with N*F outputs, square, group sum, minus a
    Convolution of x^2 with sum_f v^2."""
    C = x.shape[1]
    t = mx.nd.Convolution(x, w.reshape((N * F, C, 1, 1)), no_bias=True, kernel=(1, 1), num_filter=N * F)
    B, _, H, W = x.shape
    q = mx.nd.square(t).reshape((B, N, F, H, W)).sum(axis=2)
    c = mx.nd.square(w).sum(axis=1)                                     # (N, C, 1, 1)
    d = mx.nd.Convolution(mx.nd.square(x), c, b, kernel=(1, 1), num_filter=N)
    return q - d


def step(fn, x, w, b):
    with autograd.record():
        y = fn(x, w, b)
    y.backward()
    mx.nd.waitall()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="timed iterations per case (median reported)")
    ap.add_argument("--skip-memory", action="store_true", help="skip the ResNet-50 head memory run")
    args = ap.parse_args(argv)

    fc_rate, dot_rate = gemm_rate(args.repeats)
    results = []
    for title, B, C, HW, N, F in SHAPES:
        mx.random.seed(0)
        x = mx.nd.random.uniform(-1, 1, (B, C, HW, HW))
        w = mx.nd.random.normal(0, 0.02, (N, F, C, 1, 1))
        b = mx.nd.zeros((N,))
        for a in (x, w, b):
            a.attach_grad()
        kw = dict(num_filter=N, num_factor=F, kernel=(1, 1), p=0.5)
        impls = [
            ("FMConvolution1", lambda x, w, b: mx.nd.FMConvolution1(data=x, weight=w, bias=b, **kw)),
            ("FMConvolution3", lambda x, w, b: mx.nd.FMConvolution3(data=x, weight=w, bias=b, **kw)),
            ("stock-op composite", lambda x, w, b: composite(x, w, b, N, F)),
        ]
        res = {}
        for name, fn in impls:
            reps = args.repeats if name != "stock-op composite" or N * F < 10000 else max(3, args.repeats // 2)
            res[name] = time_ms(lambda: step(fn, x, w, b), reps)
        results.append(((title, B, C, HW, N, F), [name for name, _ in impls], res))
    # the rate again after the operators ran: the better of the two is the bound
    fc2, dot2 = gemm_rate(args.repeats)
    fc_rate, dot_rate = max(fc_rate, fc2), max(dot_rate, dot2)

    print("threads: %s   sgemm backend of the FB library: %s" % (os.environ.get("OMP_NUM_THREADS"), ops.gemm_backend()))
    print("best sgemm rate (fastest 2048^3 product, before and after): MKLDNN FullyConnected %.0f GFLOP/s "
          "(mx.nd.dot/OpenBLAS: %.0f)" % (fc_rate, dot_rate))
    print()
    hdr = "| shape | implementation | fwd+bwd ms/iter | GFLOP/s | x GEMM bound | speed-up vs composite |"
    print(hdr)
    print("|" + "---|" * 6)
    for (title, B, C, HW, N, F), names, res in results:
        flops = 3 * 2.0 * B * HW * HW * C * N * F
        bound_ms = flops / (fc_rate * 1e9) * 1000
        comp = res["stock-op composite"]
        for name in names:
            ms = res[name]
            print("| %s (B%d C%d %dx%d N%d F%d) | %s | %.1f | %.0f | %.2f | %.1fx |" % (
                title, B, C, HW, HW, N, F, name, ms, flops / ms / 1e6, ms / bound_ms, comp / ms))
        print("| | GEMM bound (3 GEMMs at %.0f GFLOP/s) | %.1f | | 1.00 | |" % (fc_rate, bound_ms))
    if not args.skip_memory:
        print()
        B, C, HW, N, F = 32, 2048, 7, 1000, 50
        x = mx.nd.random.uniform(-1, 1, (B, C, HW, HW))
        w = mx.nd.random.normal(0, 0.01, (N, F, C, 1, 1))
        b = mx.nd.zeros((N,))
        for a in (x, w, b):
            a.attach_grad()
        t = time.perf_counter()
        step(lambda x, w, b: mx.nd.FMConvolution1(data=x, weight=w, bias=b, num_filter=N, num_factor=F, kernel=(1, 1), p=0.5), x, w, b)
        dt = time.perf_counter() - t
        peak = ops.last_peak_bytes()
        tensors = 4 * (x.size * 2 + w.size * 2 + B * N * HW * HW * 2)
        print("FMConvolution1, ResNet-50 FBN head (B%d C%d %dx%d N%d F%d, workspace 512 MB): "
              "scratch peak %.0f MB (bounded by the workspace attribute; inputs, outputs and "
              "gradients another %.0f MB), fwd+bwd %.1f s" % (B, C, HW, HW, N, F, peak / 2 ** 20, tensors / 2 ** 20, dt))
        x2 = x[:4]
        mx.nd.FMConvolution1(data=x2, weight=w, bias=b, num_filter=N, num_factor=F, kernel=(1, 1), p=0.5,
                             workspace=64).wait_to_read()
        print("  with workspace=64 (B4): scratch peak %.0f MB (chunked over images/outputs, T recomputed "
              "in the backward)" % (ops.last_peak_bytes() / 2 ** 20))
        print("FMConvolution3 on the same head would keep T (S x N*F) = %.0f MB for the backward; the "
              "original's FMConvolution3 needed N*K*S floats = %.1f GB." % (
                  4 * B * HW * HW * N * F / 2 ** 20, 4 * N * C * B * HW * HW / 2 ** 30))


if __name__ == "__main__":
    main()
