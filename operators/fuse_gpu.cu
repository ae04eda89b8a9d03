// GPU implementation of the fused element-wise operators (maths: fuse.h).
//
// Memory-bound kernels: one block of kThreads per plane (grid-stride over planes) wherever a plane
// needs a reduction (the spatial means, the per-channel logit gradients, AddMean), one block per
// channel for PlainBatchNorm, with a fixed shared-memory tree, so results are bitwise
// reproducible; plain grid-stride loops otherwise.
// UpsampleAdd's Big gradient is a gather over each cropped s x s block (no atomics).
#include "fuse.h"

#include <algorithm>

#ifdef FBOP_CUDA_EMU  // host-thread emulation used to test these kernels without a GPU
#include "cuda_emu.h"
#define FUSE_LAUNCH(kern, grid, block, stream, ...) ::emu::launch(grid, block, kern, __VA_ARGS__)
#else
#include <cuda_runtime.h>
#define FUSE_LAUNCH(kern, grid, block, stream, ...) kern<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif

namespace fuse {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = 65535;

dim3 plane_grid(int64_t planes) { return dim3(unsigned(std::max<int64_t>(1, std::min(planes, kMaxGrid)))); }

dim3 flat_grid(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return dim3(unsigned(std::max<int64_t>(1, std::min<int64_t>(b, kMaxGrid * 4))));
}

__device__ __forceinline__ float sigm(float v) { return 1.f / (1.f + expf(-v)); }

// Sum of v over the block (every thread calls it; the result is valid in every thread).
__device__ float block_sum(float v, float* buf) {
  const int t = threadIdx.x;
  buf[t] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (t < s) buf[t] += buf[t + s];
    __syncthreads();
  }
  const float r = buf[0];
  __syncthreads();
  return r;
}

// ------------------------------------------------------------------------------ AFFGate
__global__ void gate_fwd_kernel(GateGeom g, const float* __restrict__ x, const float* __restrict__ y,
                                const float* __restrict__ a, const float* __restrict__ b,
                                float* __restrict__ out, float* __restrict__ mean) {
  __shared__ float buf[kThreads];
  const int64_t n = g.hw;
  for (int64_t p = blockIdx.x; p < g.planes; p += gridDim.x) {
    const int64_t o = p * n;
    const float a0 = g.a_full ? 0.f : a[p], b0 = g.b_full ? 0.f : b[p];
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const float w = sigm((g.a_full ? a[o + i] : a0) + (g.b_full ? b[o + i] : b0));
      const float v = (y[o + i] + (x[o + i] - y[o + i]) * w) * g.scale;
      out[o + i] = v;
      s += v;
    }
    if (mean) {
      s = block_sum(s, buf);
      if (threadIdx.x == 0) mean[p] = s / float(n);
    }
  }
}

__global__ void gate_bwd_kernel(GateGeom g, const float* __restrict__ go, const float* __restrict__ gm,
                                const float* __restrict__ x, const float* __restrict__ y,
                                const float* __restrict__ a, const float* __restrict__ b,
                                float* __restrict__ dx, float* __restrict__ dy, float* __restrict__ da,
                                float* __restrict__ db) {
  __shared__ float buf[kThreads];
  const int64_t n = g.hw;
  for (int64_t p = blockIdx.x; p < g.planes; p += gridDim.x) {
    const int64_t o = p * n;
    const float a0 = g.a_full ? 0.f : a[p], b0 = g.b_full ? 0.f : b[p];
    const float gadd = gm ? gm[p] / float(n) : 0.f;
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const float w = sigm((g.a_full ? a[o + i] : a0) + (g.b_full ? b[o + i] : b0));
      const float sg = (go[o + i] + gadd) * g.scale;
      const float gx = sg * w;
      dx[o + i] = gx;
      dy[o + i] = sg - gx;
      const float dl = (sg * (x[o + i] - y[o + i])) * (w * (1.f - w));
      if (g.a_full) da[o + i] = dl;
      if (g.b_full) db[o + i] = dl;
      s += dl;
    }
    if (!g.a_full || !g.b_full) {
      s = block_sum(s, buf);
      if (threadIdx.x == 0) {
        if (!g.a_full) da[p] = s;
        if (!g.b_full) db[p] = s;
      }
    }
  }
}

// ------------------------------------------------------------------------------ AddMean
__global__ void add_mean_fwd_kernel(int64_t planes, int64_t n, const float* __restrict__ x,
                                    const float* __restrict__ y, float* __restrict__ z,
                                    float* __restrict__ m) {
  __shared__ float buf[kThreads];
  for (int64_t p = blockIdx.x; p < planes; p += gridDim.x) {
    const int64_t o = p * n;
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const float v = x[o + i] + y[o + i];
      z[o + i] = v;
      s += v;
    }
    s = block_sum(s, buf);
    if (threadIdx.x == 0) m[p] = s / float(n);
  }
}

__global__ void add_mean_bwd_kernel(int64_t planes, int64_t n, const float* __restrict__ gz,
                                    const float* __restrict__ gm, float* __restrict__ dx,
                                    float* __restrict__ dy) {
  for (int64_t p = blockIdx.x; p < planes; p += gridDim.x) {
    const int64_t o = p * n;
    const float add = gm[p] / float(n);
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const float v = gz[o + i] + add;
      dx[o + i] = v;
      dy[o + i] = v;
    }
  }
}

// ------------------------------------------------------------------------------ UpsampleAdd
__global__ void upadd_fwd_kernel(UpGeom g, const float* __restrict__ big, const float* __restrict__ little,
                                 float* __restrict__ out) {
  const int64_t ln = int64_t(g.H) * g.W, total = g.planes * ln;
  for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < total; k += int64_t(gridDim.x) * kThreads) {
    const int64_t p = k / ln;
    const int r = int(k - p * ln), i = r / g.W, j = r - i * g.W;
    const float u = little[k] + big[(p * g.h + i / g.s) * g.w + j / g.s];
    out[k] = g.relu ? (u > 0.f ? u : 0.f) : u;
  }
}

__global__ void upadd_bwd_little_kernel(UpGeom g, const float* __restrict__ go, const float* __restrict__ out,
                                        float* __restrict__ dlittle) {
  const int64_t total = g.planes * int64_t(g.H) * g.W;
  for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < total; k += int64_t(gridDim.x) * kThreads)
    dlittle[k] = g.relu ? (out[k] > 0.f ? go[k] : 0.f) : go[k];
}

__global__ void upadd_bwd_big_kernel(UpGeom g, const float* __restrict__ go, const float* __restrict__ out,
                                     float* __restrict__ dbig) {
  const int64_t bn = int64_t(g.h) * g.w, total = g.planes * bn;
  for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < total; k += int64_t(gridDim.x) * kThreads) {
    const int64_t p = k / bn;
    const int r = int(k - p * bn), bi = r / g.w, bj = r - bi * g.w;
    const int i1 = min(bi * g.s + g.s, g.H), j1 = min(bj * g.s + g.s, g.W);
    float s = 0.f;
    for (int i = bi * g.s; i < i1; ++i)
      for (int j = bj * g.s; j < j1; ++j) {
        const int64_t q = (p * g.H + i) * g.W + j;
        s += g.relu ? (out[q] > 0.f ? go[q] : 0.f) : go[q];
      }
    dbig[k] = s;
  }
}

// ------------------------------------------------------------------------------ PlainBatchNorm
// One block per channel (grid-stride over channels) for the statistics and the per-channel sums;
// element-wise passes over the channel's B planes inside the same block.
__device__ __forceinline__ bool bn_train(const BNGeom& g, const float* mode) { return g.train && mode[0] != 1.f; }

__global__ void bn_fwd_kernel(BNGeom g, const float* __restrict__ mode, const float* __restrict__ x,
                              const float* __restrict__ gamma, const float* __restrict__ beta,
                              float* __restrict__ mm, float* __restrict__ mv, float* __restrict__ out,
                              float* __restrict__ mean, float* __restrict__ invstd) {
  __shared__ float buf[kThreads];
  const bool train = bn_train(g, mode);
  const int64_t n = g.hw, M = g.B * g.hw, stride = g.C * g.hw;
  for (int64_t c = blockIdx.x; c < g.C; c += gridDim.x) {
    float m, var;
    if (train) {
      float s = 0.f;
      for (int64_t k = threadIdx.x; k < M; k += kThreads) s += x[(k / n) * stride + c * n + k % n];
      m = block_sum(s, buf) / float(M);
      float v = 0.f;
      for (int64_t k = threadIdx.x; k < M; k += kThreads) {
        const float d = x[(k / n) * stride + c * n + k % n] - m;
        v += d * d;
      }
      var = block_sum(v, buf) / float(M);
    } else {
      m = mm[c];
      var = mv[c];
    }
    const float is = 1.f / sqrtf(var + g.eps);
    const float kk = (g.fix_gamma ? 1.f : gamma[c]) * is;
    for (int64_t k = threadIdx.x; k < M; k += kThreads) {
      const int64_t q = (k / n) * stride + c * n + k % n;
      out[q] = (x[q] - m) * kk + beta[c];
    }
    if (threadIdx.x == 0) {
      mean[c] = m;
      invstd[c] = is;
      if (train) {
        mm[c] = mm[c] * g.momentum + m * (1.f - g.momentum);
        mv[c] = mv[c] * g.momentum + var * (1.f - g.momentum);
      }
    }
  }
}

__global__ void bn_bwd_kernel(BNGeom g, const float* __restrict__ mode, const float* __restrict__ go,
                              const float* __restrict__ x, const float* __restrict__ gamma,
                              const float* __restrict__ mean, const float* __restrict__ invstd,
                              float* __restrict__ dx, float* __restrict__ dgamma, float* __restrict__ dbeta) {
  __shared__ float buf[kThreads];
  const int64_t n = g.hw, M = g.B * g.hw, stride = g.C * g.hw;
  for (int64_t c = blockIdx.x; c < g.C; c += gridDim.x) {
    const float m = mean[c], is = invstd[c];
    float a = 0.f, b = 0.f;
    for (int64_t k = threadIdx.x; k < M; k += kThreads) {
      const int64_t q = (k / n) * stride + c * n + k % n;
      a += go[q];
      b += go[q] * (x[q] - m);
    }
    const float sdy = block_sum(a, buf), sdyx = block_sum(b, buf);
    const float kk = (g.fix_gamma ? 1.f : gamma[c]) * is;
    // the training formula in inference too (MXNet's CPU BatchNorm); use_global_stats: k dy
    const float ma = g.global_stats ? 0.f : sdy / float(M);
    const float mb = g.global_stats ? 0.f : sdyx / float(M) * is * is;
    for (int64_t k = threadIdx.x; k < M; k += kThreads) {
      const int64_t q = (k / n) * stride + c * n + k % n;
      dx[q] = kk * (go[q] - ma - (x[q] - m) * mb);
    }
    if (threadIdx.x == 0) {
      dbeta[c] = sdy;
      dgamma[c] = g.fix_gamma ? 0.f : sdyx * is;
    }
  }
}

int finish() { return int(cudaGetLastError()); }

}  // namespace

int gate_forward_gpu(const GateGeom& g, const float* x, const float* y, const float* a, const float* b,
                     float* out, float* mean, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  FUSE_LAUNCH(gate_fwd_kernel, plane_grid(g.planes), dim3(kThreads), st, g, x, y, a, b, out,
              g.with_mean ? mean : nullptr);
  return finish();
}

int gate_backward_gpu(const GateGeom& g, const float* gout, const float* gmean, const float* x,
                      const float* y, const float* a, const float* b, float* dx, float* dy, float* da,
                      float* db, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  FUSE_LAUNCH(gate_bwd_kernel, plane_grid(g.planes), dim3(kThreads), st, g, gout,
              g.with_mean ? gmean : nullptr, x, y, a, b, dx, dy, da, db);
  return finish();
}

int add_mean_forward_gpu(int64_t planes, int64_t hw, const float* x, const float* y, float* z, float* m,
                         void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  FUSE_LAUNCH(add_mean_fwd_kernel, plane_grid(planes), dim3(kThreads), st, planes, hw, x, y, z, m);
  return finish();
}

int add_mean_backward_gpu(int64_t planes, int64_t hw, const float* gz, const float* gm, float* dx, float* dy,
                          void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  FUSE_LAUNCH(add_mean_bwd_kernel, plane_grid(planes), dim3(kThreads), st, planes, hw, gz, gm, dx, dy);
  return finish();
}

int upadd_forward_gpu(const UpGeom& g, const float* big, const float* little, float* out, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  FUSE_LAUNCH(upadd_fwd_kernel, flat_grid(g.planes * int64_t(g.H) * g.W), dim3(kThreads), st, g, big, little,
              out);
  return finish();
}

int upadd_backward_gpu(const UpGeom& g, const float* gout, const float* out, float* dbig, float* dlittle,
                       void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  FUSE_LAUNCH(upadd_bwd_little_kernel, flat_grid(g.planes * int64_t(g.H) * g.W), dim3(kThreads), st, g, gout,
              out, dlittle);
  FUSE_LAUNCH(upadd_bwd_big_kernel, flat_grid(g.planes * int64_t(g.h) * g.w), dim3(kThreads), st, g, gout, out,
              dbig);
  return finish();
}

int bn_forward_gpu(const BNGeom& g, const float* mode, const float* x, const float* gamma, const float* beta,
                   float* mm, float* mv, float* out, float* mean, float* invstd, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  FUSE_LAUNCH(bn_fwd_kernel, plane_grid(g.C), dim3(kThreads), st, g, mode, x, gamma, beta, mm, mv, out, mean,
              invstd);
  return finish();
}

int bn_backward_gpu(const BNGeom& g, const float* mode, const float* gout, const float* x, const float* gamma,
                    const float* mean, const float* invstd, float* dx, float* dgamma, float* dbeta, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  FUSE_LAUNCH(bn_bwd_kernel, plane_grid(g.C), dim3(kThreads), st, g, mode, gout, x, gamma, mean, invstd, dx,
              dgamma, dbeta);
  return finish();
}

}  // namespace fuse
