// GPU implementation of the Factorized Bilinear layer (maths and S-major layout: fbop.h).
//
// Self-contained: no cuBLAS/cuDNN (the library must load where those are absent; nvcc links cudart
// statically). Per chunk of `images_per_chunk` images (S = images * OH * OW positions):
//   forward   X = im2col(x); T = X V^T; D = X.^2 Cs^T; Y = sum_f s_f T^2 - D + b; y = Y^T per image
//   backward  X, G = gy^T, T = X V^T (recomputed), dT = 2 s_f G T,
//             gV += dT^T X, E += G^T X.^2, dX = dT V - 2 [X .*] (G Cs), gx = col2im(dX);
//             after the last chunk gV -= 2 s_f V .* E, and gbias = sum_s g over the whole batch.
// Every reduction runs in a fixed order (tree reductions in shared memory, split-K partial sums
// added in split order, chunk accumulation through beta = 1), with no atomics: results are
// bitwise reproducible for a given shape, chunk size and GPU.
#include "fbop.h"

#include <algorithm>

#ifdef FBOP_CUDA_EMU  // host-thread emulation used to test these kernels without a GPU
#include "cuda_emu.h"
#define FB_LAUNCH(kern, grid, block, stream, ...) ::emu::launch(grid, block, kern, __VA_ARGS__)
#else
#include <cuda_runtime.h>
#define FB_LAUNCH(kern, grid, block, stream, ...) kern<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif

namespace fbop {
namespace {

constexpr int kThreads = 256;        // threads of every 1-D kernel and of the GEMM kernel
constexpr int kBK = 8;               // GEMM k-tile
constexpr int kTargetBlocks = 264;   // GEMM: split K until about this many blocks (2 x 132 SMs)
constexpr int kMaxSplits = 32;
constexpr int kMinSplitK = 128;      // at least this much K per split
#ifndef FBOP_IDX32_LIMIT  // (tests set it to 0 to run the 64-bit index path on small shapes)
#define FBOP_IDX32_LIMIT (int64_t(1) << 30)
#endif
constexpr int64_t kIdx32 = FBOP_IDX32_LIMIT;  // extents below this use 32-bit indexing

// Geometry passed by value to the kernels (plain ints; Geom's helpers are host-only).
struct Conv {
  int C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
};

Conv conv_of(const Geom& g) {
  return Conv{g.C, g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.OH, g.OW};
}

dim3 grid1d(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return dim3(unsigned(std::max<int64_t>(1, std::min<int64_t>(b, 1 << 16))));
}

// Element-wise kernels are templated on the index type I: int whenever every extent of the call
// is below 2^30 (64-bit division is emulated and several times slower on the GPU), else int64_t.
#define FB_GRID_STRIDE(I, i, n)                                                   \
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < I(n);          \
       i += I(gridDim.x) * I(blockDim.x))

#define FB_LAUNCH_IDX(use32, kern, grid, block, stream, ...)                      \
  do {                                                                            \
    if (use32) FB_LAUNCH(kern<int>, grid, block, stream, __VA_ARGS__);            \
    else FB_LAUNCH(kern<int64_t>, grid, block, stream, __VA_ARGS__);              \
  } while (0)

// ------------------------------------------------------------------------ layout kernels
// Per batch item z: dst (Cc, R) = src (R, Cc)^T, both contiguous. Block (32, 8).
__global__ void transpose_kernel(const float* __restrict__ src, float* __restrict__ dst, int R,
                                 int Cc) {
  __shared__ float tile[32][33];
  const int64_t off = int64_t(blockIdx.z) * R * Cc;
  const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int i = ty; i < 32; i += 8) {
    const int r = r0 + i, c = c0 + tx;
    if (r < R && c < Cc) tile[i][tx] = src[off + int64_t(r) * Cc + c];
  }
  __syncthreads();
  for (int i = ty; i < 32; i += 8) {
    const int c = c0 + i, r = r0 + tx;
    if (c < Cc && r < R) dst[off + int64_t(c) * R + r] = tile[tx][i];
  }
}

void transpose(const float* src, float* dst, int nb, int R, int Cc, cudaStream_t st) {
  dim3 grid((Cc + 31) / 32, (R + 31) / 32, nb), block(32, 8);
  FB_LAUNCH(transpose_kernel, grid, block, st, src, dst, R, Cc);
}

// X[s, k] for the nb images starting at x (s = (b, oh, ow), k = (c, i, j)); zero padding.
template <typename I>
__global__ void im2col_kernel(const float* __restrict__ x, float* __restrict__ X, Conv c,
                              int64_t total) {
  const int khw = c.kh * c.kw, K = c.C * khw, P = c.OH * c.OW;
  FB_GRID_STRIDE(I, idx, total) {
    const I s = idx / K;
    const int k = int(idx - s * K);
    const I b = s / P;
    const int p = int(s - b * P);
    const int oh = p / c.OW, ow = p - oh * c.OW;
    const int ch = k / khw, r = k - ch * khw;
    const int i = r / c.kw, j = r - i * c.kw;
    const int h = oh * c.sh - c.ph + i * c.dh, w = ow * c.sw - c.pw + j * c.dw;
    float val = 0.f;
    if (h >= 0 && h < c.H && w >= 0 && w < c.W) val = x[((b * c.C + ch) * c.H + h) * I(c.W) + w];
    X[idx] = val;
  }
}

// gx (nb, C, H, W) = col2im(dX), as a gather (each input element sums its own taps): no atomics.
template <typename I>
__global__ void col2im_kernel(const float* __restrict__ dX, float* __restrict__ gx, Conv c,
                              int64_t total) {
  const int khw = c.kh * c.kw;
  const I K = I(c.C) * khw;
  FB_GRID_STRIDE(I, idx, total) {
    const int w = int(idx % c.W);
    I t = idx / c.W;
    const int h = int(t % c.H);
    t /= c.H;
    const int ch = int(t % c.C);
    const I b = t / c.C;
    float sum = 0.f;
    for (int i = 0; i < c.kh; ++i) {
      const int hh = h + c.ph - i * c.dh;
      if (hh < 0 || hh % c.sh != 0) continue;
      const int oh = hh / c.sh;
      if (oh >= c.OH) continue;
      for (int j = 0; j < c.kw; ++j) {
        const int ww = w + c.pw - j * c.dw;
        if (ww < 0 || ww % c.sw != 0) continue;
        const int ow = ww / c.sw;
        if (ow >= c.OW) continue;
        sum += dX[((b * c.OH + oh) * c.OW + ow) * K + I(ch) * khw + i * c.kw + j];
      }
    }
    gx[idx] = sum;
  }
}

// ------------------------------------------------------------------------ element-wise kernels
// Cs[j, k] = sum_f s_f V[jF+f, k]^2
template <typename I>
__global__ void colnorm_kernel(const float* __restrict__ v, const float* __restrict__ scale,
                               float* __restrict__ Cs, int F, int64_t K_, int64_t total) {
  const I K = I(K_);
  FB_GRID_STRIDE(I, idx, total) {
    const I j = idx / K, k = idx - j * K;
    const float* row = v + j * F * K + k;
    float acc = 0.f;
    for (int f = 0; f < F; ++f) {
      const float a = row[I(f) * K];
      acc += scale[f] * a * a;
    }
    Cs[idx] = acc;
  }
}

// D[s, j] <- sum_f s_f T[s, jF+f]^2 - D[s, j] + bias_j
template <typename I>
__global__ void reduce_y_kernel(const float* __restrict__ T, float* __restrict__ D,
                                const float* __restrict__ scale, const float* __restrict__ bias,
                                int N, int F, int64_t total) {
  FB_GRID_STRIDE(I, idx, total) {
    const I s = idx / N;
    const int j = int(idx - s * N);
    const float* t = T + idx * F;  // (s * N + j) * F
    float acc = 0.f;
    for (int f = 0; f < F; ++f) acc += scale[f] * t[f] * t[f];
    acc -= D[idx];
    if (bias) acc += bias[j];
    D[idx] = acc;
  }
}

// T[s, jf] <- 2 s_f G[s, j] T[s, jf]
template <typename I>
__global__ void dt_kernel(float* __restrict__ T, const float* __restrict__ G,
                          const float* __restrict__ scale, int N, int F, int64_t total) {
  const I NF = I(N) * F;
  FB_GRID_STRIDE(I, idx, total) {
    const I s = idx / NF;
    const int jf = int(idx - s * NF);
    const int j = jf / F, f = jf - j * F;
    T[idx] *= 2.f * scale[f] * G[s * N + j];
  }
}

// gV[jf, k] -= 2 s_f V[jf, k] E[j, k]
template <typename I>
__global__ void gv_diag_kernel(float* __restrict__ gv, const float* __restrict__ v,
                               const float* __restrict__ E, const float* __restrict__ scale,
                               int F, int64_t K_, int64_t total) {
  const I K = I(K_);
  FB_GRID_STRIDE(I, idx, total) {
    const I jf = idx / K, k = idx - jf * K;
    const I j = jf / F;
    const int f = int(jf - j * F);
    gv[idx] -= 2.f * scale[f] * v[idx] * E[j * K + k];
  }
}

// gbias[j] = sum_{b, p} gy[b, j, p]; one block per j, fixed-order tree reduction.
__global__ void bias_grad_kernel(const float* __restrict__ gy, float* __restrict__ gbias, int B,
                                 int N, int64_t P) {
  __shared__ float buf[kThreads];
  const int j = blockIdx.x;
  const int64_t n = int64_t(B) * P;
  float acc = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const int64_t b = i / P, p = i - b * P;
    acc += gy[(b * N + j) * P + p];
  }
  buf[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) buf[threadIdx.x] += buf[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) gbias[j] = buf[0];
}

// Path scales from the DropFactor mask (see resolve_scale in fbop_lib.cc). One block.
__global__ void resolve_scale_kernel(const float* __restrict__ mask, int F, float p, int mode,
                                     float* __restrict__ scale) {
  __shared__ int train[kThreads];
  int t = 0;
  if (mask)
    for (int f = threadIdx.x; f < F; f += kThreads) t |= mask[f] != 1.f;
  train[threadIdx.x] = t;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) train[threadIdx.x] |= train[threadIdx.x + w];
    __syncthreads();
  }
  const bool training = train[0] != 0;
  const float q = 1.f - p;
  for (int f = threadIdx.x; f < F; f += kThreads) {
    float s = 1.f;
    if (p != 0.f) {
      if (mode == 0) s = training ? mask[f] : 1.f;
      else if (mode == 1) s = training ? mask[f] : q;
      else s = training ? mask[f] * q : q;
    }
    scale[f] = s;
  }
}

// ------------------------------------------------------------------------ SGEMM
// Row-major C (M, N) = alpha * op(A) op(B) [.* Mul] + beta * C, op(A) (M, K), op(B) (K, N);
// SQA / SQB square the elements of A / B as they are loaded. A block computes a BM x BN tile
// with 256 threads, each a TM x TN micro-tile made of float4 groups (conflict-free shared loads);
// the next k-tile is prefetched into registers while the current one is multiplied.
// With split-K (gridDim.z > 1) block z covers k in [z*kchunk, (z+1)*kchunk) and writes its raw
// partial sum to C + z * split_stride (ldc = N); splitk_reduce_kernel finishes the job.
template <int BM, int BN, int TM, int TN, bool TA, bool TB, bool SQA, bool SQB>
__global__ void __launch_bounds__(kThreads)
sgemm_kernel(int M, int N, int K, float alpha, const float* __restrict__ A, int64_t lda,
             const float* __restrict__ B, int64_t ldb, float beta, float* C, int64_t ldc,
             const float* __restrict__ Mul, int64_t ldm, int kchunk, int64_t split_stride) {
  static_assert((BM / TM) * (BN / TN) == kThreads, "256 threads per block");
  static_assert(TM % 4 == 0 && TN % 4 == 0, "float4 micro-tiles");
  constexpr int LA = BM * kBK / kThreads, LB = BN * kBK / kThreads;
  constexpr int RM = BM / TM, RN = BN / TN;     // threads along m and n
  constexpr int GM = TM / 4, GN = TN / 4;       // float4 groups per thread
  __shared__ __align__(16) float As[kBK][BM + 4];
  __shared__ __align__(16) float Bs[kBK][BN + 4];

  const int tid = threadIdx.x, tx = tid % RN, ty = tid / RN;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int kb = blockIdx.z * kchunk, ke = min(K, kb + kchunk);

  float ra[LA], rb[LB];
  auto load = [&](int k0) {
#pragma unroll
    for (int l = 0; l < LA; ++l) {
      const int idx = tid + l * kThreads;
      const int m = TA ? idx % BM : idx / kBK, k = TA ? idx / BM : idx % kBK;
      const int gm = m0 + m, gk = k0 + k;
      float a = 0.f;
      if (gm < M && gk < ke) a = TA ? A[int64_t(gk) * lda + gm] : A[int64_t(gm) * lda + gk];
      ra[l] = SQA ? a * a : a;
    }
#pragma unroll
    for (int l = 0; l < LB; ++l) {
      const int idx = tid + l * kThreads;
      const int n = TB ? idx / kBK : idx % BN, k = TB ? idx % kBK : idx / BN;
      const int gn = n0 + n, gk = k0 + k;
      float b = 0.f;
      if (gn < N && gk < ke) b = TB ? B[int64_t(gn) * ldb + gk] : B[int64_t(gk) * ldb + gn];
      rb[l] = SQB ? b * b : b;
    }
  };

  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

  if (kb < ke) load(kb);
  for (int k0 = kb; k0 < ke; k0 += kBK) {
#pragma unroll
    for (int l = 0; l < LA; ++l) {
      const int idx = tid + l * kThreads;
      const int m = TA ? idx % BM : idx / kBK, k = TA ? idx / BM : idx % kBK;
      As[k][m] = ra[l];
    }
#pragma unroll
    for (int l = 0; l < LB; ++l) {
      const int idx = tid + l * kThreads;
      const int n = TB ? idx / kBK : idx % BN, k = TB ? idx % kBK : idx / BN;
      Bs[k][n] = rb[l];
    }
    __syncthreads();
    if (k0 + kBK < ke) load(k0 + kBK);
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      float a[TM], b[TN];
#pragma unroll
      for (int g = 0; g < GM; ++g) {
        const float4 v = *reinterpret_cast<const float4*>(&As[k][g * 4 * RM + ty * 4]);
        a[g * 4 + 0] = v.x; a[g * 4 + 1] = v.y; a[g * 4 + 2] = v.z; a[g * 4 + 3] = v.w;
      }
#pragma unroll
      for (int g = 0; g < GN; ++g) {
        const float4 v = *reinterpret_cast<const float4*>(&Bs[k][g * 4 * RN + tx * 4]);
        b[g * 4 + 0] = v.x; b[g * 4 + 1] = v.y; b[g * 4 + 2] = v.z; b[g * 4 + 3] = v.w;
      }
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }

  const bool partial = gridDim.z > 1;
  float* Cz = partial ? C + int64_t(blockIdx.z) * split_stride : C;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int gm = m0 + (i / 4) * 4 * RM + ty * 4 + (i % 4);
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int gn = n0 + (j / 4) * 4 * RN + tx * 4 + (j % 4);
      if (gn >= N) continue;
      const int64_t o = int64_t(gm) * ldc + gn;
      if (partial) {
        Cz[o] = acc[i][j];
      } else {
        float val = alpha * acc[i][j];
        if (Mul) val *= Mul[int64_t(gm) * ldm + gn];
        if (beta != 0.f) val += beta * C[o];
        C[o] = val;
      }
    }
  }
}

// C = alpha * (sum_z Part[z]) [.* Mul] + beta * C, the partials summed in split order.
template <typename I>
__global__ void splitk_reduce_kernel(const float* __restrict__ Part, int splits, int M, int N,
                                     float alpha, float beta, float* C, int64_t ldc,
                                     const float* __restrict__ Mul, int64_t ldm) {
  const I MN = I(M) * N;
  FB_GRID_STRIDE(I, idx, MN) {
    float acc = 0.f;
    for (int z = 0; z < splits; ++z) acc += Part[int64_t(z) * MN + idx];
    const I m = idx / N, n = idx - m * N;
    float val = alpha * acc;
    if (Mul) val *= Mul[m * ldm + n];
    const int64_t o = m * ldc + n;
    if (beta != 0.f) val += beta * C[o];
    C[o] = val;
  }
}

struct GemmPlan {
  bool big;        // 128x128 tiles (else 64x64)
  int splits;      // split-K factor
  int kchunk;      // K per split (multiple of kBK)
  int64_t part;    // floats of partial-sum scratch needed
};

// Deterministic in the shape only (not the device), so gpu_workspace_bytes can predict it.
GemmPlan plan_gemm(int64_t M, int64_t N, int64_t K) {
  GemmPlan p;
  const int64_t tiles128 = ((M + 127) / 128) * ((N + 127) / 128);
  p.big = tiles128 >= kTargetBlocks / 2;
  const int64_t bm = p.big ? 128 : 64;
  const int64_t blocks = ((M + bm - 1) / bm) * ((N + bm - 1) / bm);
  int64_t splits = 1;
  if (blocks < kTargetBlocks) {
    splits = std::min<int64_t>((kTargetBlocks + blocks - 1) / blocks, kMaxSplits);
    splits = std::max<int64_t>(1, std::min<int64_t>(splits, K / kMinSplitK));
  }
  int64_t kchunk = (K + splits - 1) / splits;
  kchunk = (kchunk + kBK - 1) / kBK * kBK;
  if (kchunk < 1) kchunk = kBK;
  splits = (K + kchunk - 1) / kchunk;
  if (splits < 1) splits = 1;
  p.splits = int(splits);
  p.kchunk = int(splits > 1 ? kchunk : std::max<int64_t>(K, 1));
  p.part = splits > 1 ? splits * M * N : 0;
  return p;
}

template <bool TA, bool TB, bool SQA, bool SQB>
void gemm_t(const GemmPlan& pl, int M, int N, int K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* Mul,
            int64_t ldm, float* part, cudaStream_t st) {
  const bool split = pl.splits > 1;
  float* out = split ? part : C;
  const int64_t ldo = split ? N : ldc;
  const int64_t sstride = int64_t(M) * N;
  if (pl.big) {
    auto kern = sgemm_kernel<128, 128, 8, 8, TA, TB, SQA, SQB>;
    dim3 grid((N + 127) / 128, (M + 127) / 128, pl.splits);
    FB_LAUNCH(kern, grid, dim3(kThreads), st, M, N, K, alpha, A, lda, B, ldb, beta, out, ldo, Mul,
              ldm, pl.kchunk, sstride);
  } else {
    auto kern = sgemm_kernel<64, 64, 4, 4, TA, TB, SQA, SQB>;
    dim3 grid((N + 63) / 64, (M + 63) / 64, pl.splits);
    FB_LAUNCH(kern, grid, dim3(kThreads), st, M, N, K, alpha, A, lda, B, ldb, beta, out, ldo, Mul,
              ldm, pl.kchunk, sstride);
  }
  if (split)
    FB_LAUNCH_IDX(sstride < kIdx32, splitk_reduce_kernel, grid1d(sstride), dim3(kThreads), st,
                  part, pl.splits, M, N, alpha, beta, C, ldc, Mul, ldm);
}

// The GEMMs of one chunk of S positions, in the order forward/backward issue them.
enum GemmId { kT, kD, kGV, kE, kDX, kDXC, kNumGemms };

void gemm_dims(const Geom& g, int64_t S, GemmId id, int64_t* M, int64_t* N, int64_t* K) {
  const int64_t Kc = g.K(), NF = g.NF(), Nn = g.N;
  switch (id) {
    case kT:   *M = S;  *N = NF; *K = Kc; break;  // T  = X V^T
    case kD:   *M = S;  *N = Nn; *K = Kc; break;  // D  = X.^2 Cs^T
    case kGV:  *M = NF; *N = Kc; *K = S;  break;  // gV += dT^T X
    case kE:   *M = Nn; *N = Kc; *K = S;  break;  // E  += G^T X.^2
    case kDX:  *M = S;  *N = Kc; *K = NF; break;  // dX = dT V
    default:   *M = S;  *N = Kc; *K = Nn; break;  // dX -= 2 [X .*] G Cs
  }
}

GemmPlan plan_of(const Geom& g, int64_t S, GemmId id) {
  int64_t M, N, K;
  gemm_dims(g, S, id, &M, &N, &K);
  return plan_gemm(M, N, K);
}

int clamp_chunk(const Geom& g, int images_per_chunk) {
  return std::max(1, std::min(images_per_chunk <= 0 ? g.B : images_per_chunk, std::max(g.B, 1)));
}

constexpr int64_t kAlign = 64;  // floats (256 bytes) between sub-buffers
int64_t up(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

struct Layout {
  int64_t cs, e, x, t, g, dx, part, total;  // offsets in floats
};

Layout layout(const Geom& g, int ipc) {
  const int64_t K = g.K(), NF = g.NF(), N = g.N, P = g.P();
  const int64_t S = int64_t(ipc) * P;
  int64_t part = 0;
  for (int64_t nb : {int64_t(ipc), int64_t(g.B % ipc)}) {
    if (nb == 0) continue;
    for (int id = 0; id < kNumGemms; ++id)
      part = std::max(part, plan_of(g, nb * P, GemmId(id)).part);
  }
  Layout L;
  int64_t o = 0;
  L.cs = o; o += up(N * K);
  L.e = o; o += up(N * K);
  L.x = o; o += up(S * K);
  L.t = o; o += up(S * NF);
  L.g = o; o += up(S * N);
  L.dx = o; o += up(S * K);
  L.part = o; o += up(part);
  L.total = o;
  return L;
}

int finish(cudaStream_t) { return int(cudaGetLastError()); }

// True when every element-wise extent of a call (chunk buffers, whole-batch tensors, weights)
// fits 32-bit indexing with room for the grid stride.
bool fits32(const Geom& g, int ipc) {
  const int64_t S = int64_t(ipc) * g.P();
  const int64_t ext[] = {int64_t(g.B) * g.C * g.H * g.W, int64_t(g.B) * g.N * g.P(), S * g.K(),
                         S * g.NF(), S * g.N, g.NF() * g.K()};
  return *std::max_element(std::begin(ext), std::end(ext)) < kIdx32;
}

void im2col(const Geom& g, const float* x, int b0, int nb, float* X, bool i32, cudaStream_t st) {
  const float* xb = x + int64_t(b0) * g.C * g.H * g.W;
  if (g.is_pointwise()) {  // X image (P, C) = x image (C, P)^T
    transpose(xb, X, nb, g.C, int(g.P()), st);
  } else {
    const int64_t total = int64_t(nb) * g.P() * g.K();
    FB_LAUNCH_IDX(i32, im2col_kernel, grid1d(total), dim3(kThreads), st, xb, X, conv_of(g),
                  total);
  }
}

}  // namespace

size_t gpu_workspace_bytes(const Geom& g, int images_per_chunk) {
  return size_t(layout(g, clamp_chunk(g, images_per_chunk)).total) * sizeof(float);
}

int gpu_resolve_scale(const float* mask, int F, float p, int mode, float* scale, void* stream) {
  if (F < 1 || !scale) return int(cudaErrorInvalidValue);
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  FB_LAUNCH(resolve_scale_kernel, dim3(1), dim3(kThreads), st, mask, F, p, mode, scale);
  return finish(st);
}

int gpu_forward(const Geom& g, const float* x, const float* v, const float* bias,
                const float* scale, float* y, void* ws, size_t ws_bytes, int images_per_chunk,
                void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int ipc = clamp_chunk(g, images_per_chunk);
  const Layout L = layout(g, ipc);
  if (!ws || ws_bytes < size_t(L.total) * sizeof(float)) return int(cudaErrorInvalidValue);
  float* base = static_cast<float*>(ws);
  float *Cs = base + L.cs, *X = base + L.x, *T = base + L.t, *D = base + L.g, *part = base + L.part;
  const int64_t K = g.K(), NF = g.NF(), N = g.N, P = g.P();
  const bool i32 = fits32(g, ipc);

  FB_LAUNCH_IDX(i32, colnorm_kernel, grid1d(N * K), dim3(kThreads), st, v, scale, Cs, g.F, K,
                N * K);
  for (int b0 = 0; b0 < g.B; b0 += ipc) {
    const int nb = std::min(ipc, g.B - b0);
    const int64_t S = int64_t(nb) * P;
    im2col(g, x, b0, nb, X, i32, st);
    gemm_t<false, true, false, false>(plan_of(g, S, kT), int(S), int(NF), int(K), 1.f, X, K, v, K,
                                      0.f, T, NF, nullptr, 0, part, st);
    gemm_t<false, true, true, false>(plan_of(g, S, kD), int(S), int(N), int(K), 1.f, X, K, Cs, K,
                                     0.f, D, N, nullptr, 0, part, st);
    FB_LAUNCH_IDX(i32, reduce_y_kernel, grid1d(S * N), dim3(kThreads), st, T, D, scale, bias,
                  g.N, g.F, S * N);
    transpose(D, y + int64_t(b0) * N * P, nb, int(P), int(N), st);  // (P, N) -> (N, P)
  }
  return finish(st);
}

int gpu_backward(const Geom& g, int grad_mode, const float* gy, const float* x, const float* v,
                 const float* scale, float* gx, float* gv, float* gbias, void* ws,
                 size_t ws_bytes, int images_per_chunk, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int ipc = clamp_chunk(g, images_per_chunk);
  const Layout L = layout(g, ipc);
  if (!ws || ws_bytes < size_t(L.total) * sizeof(float)) return int(cudaErrorInvalidValue);
  float* base = static_cast<float*>(ws);
  float *Cs = base + L.cs, *E = base + L.e, *X = base + L.x, *T = base + L.t, *G = base + L.g;
  float *dX = base + L.dx, *part = base + L.part;
  const int64_t K = g.K(), NF = g.NF(), N = g.N, P = g.P();
  const bool i32 = fits32(g, ipc);

  if (gbias)
    FB_LAUNCH(bias_grad_kernel, dim3(g.N), dim3(kThreads), st, gy, gbias, g.B, g.N, P);
  if (!gx && !gv) return finish(st);
  if (gx)
    FB_LAUNCH_IDX(i32, colnorm_kernel, grid1d(N * K), dim3(kThreads), st, v, scale, Cs, g.F, K,
                  N * K);
  for (int b0 = 0; b0 < g.B; b0 += ipc) {
    const int nb = std::min(ipc, g.B - b0);
    const int64_t S = int64_t(nb) * P;
    const float beta = b0 == 0 ? 0.f : 1.f;
    im2col(g, x, b0, nb, X, i32, st);
    transpose(gy + int64_t(b0) * N * P, G, nb, int(N), int(P), st);  // (N, P) -> (P, N)
    gemm_t<false, true, false, false>(plan_of(g, S, kT), int(S), int(NF), int(K), 1.f, X, K, v, K,
                                      0.f, T, NF, nullptr, 0, part, st);
    FB_LAUNCH_IDX(i32, dt_kernel, grid1d(S * NF), dim3(kThreads), st, T, G, scale, g.N, g.F,
                  S * NF);
    if (gv) {
      gemm_t<true, false, false, false>(plan_of(g, S, kGV), int(NF), int(K), int(S), 1.f, T, NF,
                                        X, K, beta, gv, K, nullptr, 0, part, st);
      gemm_t<true, false, false, true>(plan_of(g, S, kE), int(N), int(K), int(S), 1.f, G, N, X, K,
                                       beta, E, K, nullptr, 0, part, st);
    }
    if (gx) {
      gemm_t<false, false, false, false>(plan_of(g, S, kDX), int(S), int(K), int(NF), 1.f, T, NF,
                                         v, K, 0.f, dX, K, nullptr, 0, part, st);
      const float* mul = grad_mode == kGradReference ? nullptr : X;
      gemm_t<false, false, false, false>(plan_of(g, S, kDXC), int(S), int(K), int(N), -2.f, G, N,
                                         Cs, K, 1.f, dX, K, mul, K, part, st);
      float* gxb = gx + int64_t(b0) * g.C * g.H * g.W;
      if (g.is_pointwise()) {
        transpose(dX, gxb, nb, int(P), g.C, st);  // (P, C) -> (C, P)
      } else {
        const int64_t total = int64_t(nb) * g.C * g.H * g.W;
        FB_LAUNCH_IDX(i32, col2im_kernel, grid1d(total), dim3(kThreads), st, dX, gxb,
                      conv_of(g), total);
      }
    }
  }
  if (gv)
    FB_LAUNCH_IDX(i32, gv_diag_kernel, grid1d(NF * K), dim3(kThreads), st, gv, v, E, scale, g.F,
                  K, NF * K);
  return finish(st);
}

}  // namespace fbop
