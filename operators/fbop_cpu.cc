// CPU implementation of the Factorized Bilinear layer (maths and layout: fbop.h).
//
// Three large GEMMs per training step (T = X V^T, dV = dT^T X, dX = dT V), each 2*S*K*N*F flops,
// plus three small ones (1/F of the work). FMConvolution3 (`cache_t`) keeps X and T of the whole
// batch from the forward so the backward needs no fourth GEMM. FMConvolution1 does the same while
// that fits its scratch budget (the `workspace` attribute, MB); beyond it, it works in image (and
// if needed output) chunks inside the budget and recomputes T in the backward.
#include "fbop.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>
#include <omp.h>

#ifdef FBOP_USE_DNNL
#include <dnnl.h>
#else
extern "C" void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha,
                            const float* A, int lda, const float* B, int ldb, float beta, float* C,
                            int ldc);
#endif

namespace fbop {

const char* gemm_backend() {
#ifdef FBOP_USE_DNNL
  return "onednn";
#else
  return "openblas";
#endif
}

void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
#ifdef FBOP_USE_DNNL
  dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
  cblas_sgemm(101, ta ? 112 : 111, tb ? 112 : 111, int(M), int(N), int(K), alpha, A, int(lda), B,
              int(ldb), beta, C, int(ldc));
#endif
}

// ---------------------------------------------------------------- scratch pool
namespace {
std::mutex g_pool_mu;
std::vector<std::pair<float*, size_t>> g_pool;  // idle buffers (pointer, floats)
constexpr size_t kPoolMax = 2;

float* raw_alloc(size_t n) {
  void* p = std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
  if (!p) throw std::bad_alloc();
  return static_cast<float*>(p);
}
}  // namespace

float* Scratch::ensure(size_t n, bool keep) {
  if (n <= cap_) return p_;
  float* q = nullptr;
  size_t qcap = 0;
  {
    std::lock_guard<std::mutex> lk(g_pool_mu);
    size_t best = g_pool.size();
    for (size_t i = 0; i < g_pool.size(); ++i)  // the smallest idle buffer that is big enough
      if (g_pool[i].second >= n && (best == g_pool.size() || g_pool[i].second < g_pool[best].second))
        best = i;
    if (best < g_pool.size()) {
      q = g_pool[best].first;
      qcap = g_pool[best].second;
      g_pool.erase(g_pool.begin() + best);
    }
  }
  if (!q) {
    q = raw_alloc(n);
    qcap = n;
  }
  if (keep && p_) std::memcpy(q, p_, cap_ * sizeof(float));
  release();
  p_ = q;
  cap_ = qcap;
  return p_;
}

void Scratch::release() {
  if (!p_) return;
  std::lock_guard<std::mutex> lk(g_pool_mu);
  g_pool.emplace_back(p_, cap_);
  p_ = nullptr;
  cap_ = 0;
  if (g_pool.size() > kPoolMax) {  // drop the smallest idle buffer
    size_t small = 0;
    for (size_t i = 1; i < g_pool.size(); ++i)
      if (g_pool[i].second < g_pool[small].second) small = i;
    std::free(g_pool[small].first);
    g_pool.erase(g_pool.begin() + small);
  }
}

namespace {

// FBOP_PROFILE=1: per-stage wall times of each call on stderr (for tuning; off by default).
struct Prof {
  bool on;
  double t;
  Prof() : on(std::getenv("FBOP_PROFILE") != nullptr), t(on ? omp_get_wtime() : 0.0) {}
  void lap(const char* what) {
    if (!on) return;
    double now = omp_get_wtime();
    std::fprintf(stderr, "  %-14s %8.2f ms\n", what, 1000.0 * (now - t));
    t = now;
  }
};

// X[(b,oh,ow), (c,i,j)] for images [b0, b0+nb).
void im2col(const Geom& g, const float* x, int b0, int nb, float* X) {
  const int64_t K = g.K(), P = g.P(), HW = int64_t(g.H) * g.W;
  if (g.is_pointwise()) {  // a per-image transpose (C, P) -> (P, C), blocked for the cache
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < nb; ++b)
      for (int64_t c0 = 0; c0 < K; c0 += 64) {
        const float* src = x + (int64_t(b0 + b) * g.C) * HW;
        float* dst = X + int64_t(b) * P * K;
        int64_t c1 = std::min<int64_t>(K, c0 + 64);
        for (int64_t p = 0; p < P; ++p)
          for (int64_t c = c0; c < c1; ++c) dst[p * K + c] = src[c * HW + p];
      }
    return;
  }
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < nb; ++b)
    for (int oh = 0; oh < g.OH; ++oh) {
      const float* src = x + int64_t(b0 + b) * g.C * HW;
      for (int ow = 0; ow < g.OW; ++ow) {
        float* row = X + ((int64_t(b) * g.OH + oh) * g.OW + ow) * K;
        int64_t k = 0;
        for (int c = 0; c < g.C; ++c)
          for (int i = 0; i < g.kh; ++i) {
            int h = oh * g.sh - g.ph + i * g.dh;
            for (int j = 0; j < g.kw; ++j, ++k) {
              int w = ow * g.sw - g.pw + j * g.dw;
              row[k] = (h >= 0 && h < g.H && w >= 0 && w < g.W) ? src[(int64_t(c) * g.H + h) * g.W + w] : 0.f;
            }
          }
      }
    }
}

// gx[b0+b] = col2im(dXc) for images [b0, b0+nb); dXc (S, K) holds the final column gradient.
void col2im(const Geom& g, const float* dXc, int b0, int nb, float* gx) {
  const int64_t K = g.K(), P = g.P(), HW = int64_t(g.H) * g.W;
  if (g.is_pointwise()) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < nb; ++b)
      for (int64_t c0 = 0; c0 < K; c0 += 64) {
        const float* src = dXc + int64_t(b) * P * K;
        float* dst = gx + int64_t(b0 + b) * g.C * HW;
        int64_t c1 = std::min<int64_t>(K, c0 + 64);
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t p = 0; p < P; ++p) dst[c * HW + p] = src[p * K + c];
      }
    return;
  }
  // Each (image, channel) plane is written by one thread: no races.
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < nb; ++b)
    for (int c = 0; c < g.C; ++c) {
      float* dst = gx + (int64_t(b0 + b) * g.C + c) * HW;
      std::fill(dst, dst + HW, 0.f);
      for (int oh = 0; oh < g.OH; ++oh)
        for (int ow = 0; ow < g.OW; ++ow) {
          const float* row = dXc + ((int64_t(b) * g.OH + oh) * g.OW + ow) * K + int64_t(c) * g.kh * g.kw;
          for (int i = 0; i < g.kh; ++i) {
            int h = oh * g.sh - g.ph + i * g.dh;
            if (h < 0 || h >= g.H) continue;
            for (int j = 0; j < g.kw; ++j) {
              int w = ow * g.sw - g.pw + j * g.dw;
              if (w >= 0 && w < g.W) dst[int64_t(h) * g.W + w] += row[i * g.kw + j];
            }
          }
        }
    }
}

void square(const float* a, float* out, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * a[i];
}

// Cs[j,k] = sum_f s_f V[jf,k]^2 for outputs [j0, j0+nj)
void column_norms(const Geom& g, const float* v, const float* scale, int j0, int nj, float* Cs) {
  const int64_t K = g.K();
#pragma omp parallel for schedule(static)
  for (int j = 0; j < nj; ++j) {
    float* out = Cs + int64_t(j) * K;
    std::fill(out, out + K, 0.f);
    for (int f = 0; f < g.F; ++f) {
      const float s = scale[f];
      if (s == 0.f) continue;
      const float* row = v + (int64_t(j0 + j) * g.F + f) * K;
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) out[k] += s * row[k] * row[k];
    }
  }
}

struct Plan {
  int nb;  // images per chunk
  int jb;  // outputs per block
};

// Scratch floats of one call: X | X2 | T block | D block | Cs block, and in the backward also
// G | dX | GC | E | Cs of all outputs. The forward of a whole-batch call reserves the backward's
// size at once (X and T stay in place for it). In double precision, so that planning cannot
// overflow; the sizes actually allocated are bounded by the memory limit (fbop_lib.cc) and are
// exact integers far below 2^53.
double chunk_floats(const Geom& g, int64_t nb, int64_t jb, bool backward) {
  const double S = double(nb) * double(g.P()), K = double(g.K()), N = g.N, F = g.F, J = double(jb);
  double f = S * K * 2 + S * J * F + S * J + J * K;
  if (backward) f += S * N + S * K * 2 + N * K * 2;
  return f;
}

Plan make_plan(const Geom& g, size_t budget, bool whole) {
  if (whole) return {g.B, g.N};
  const double fl = double(budget / sizeof(float));
  Plan p{1, g.N};
  if (chunk_floats(g, 1, g.N, true) > fl) {  // one image does not fit: block the outputs
    int lo = 1, hi = g.N;
    while (lo < hi) {
      int mid = (lo + hi + 1) / 2;
      if (chunk_floats(g, 1, mid, true) <= fl) lo = mid; else hi = mid - 1;
    }
    p.jb = lo;
    return p;
  }
  int lo = 1, hi = g.B;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (chunk_floats(g, mid, g.N, true) <= fl) lo = mid; else hi = mid - 1;
  }
  p.nb = lo;
  return p;
}

// Whole batch in one chunk with X and T kept for the backward: always for FMConvolution3, and for
// FMConvolution1 whenever that fits its scratch budget (so it is only slower when it must chunk).
bool use_whole(const Geom& g, bool cache_t, size_t budget_bytes) {
  return cache_t || chunk_floats(g, g.B, g.N, true) * sizeof(float) <= double(budget_bytes);
}
bool use_whole(const Geom& g, const CpuState* st) { return use_whole(g, st->cache_t, st->budget_bytes); }

float* reserve(CpuState* st, double floats, bool keep = false) {
  const size_t n = size_t(floats);
  st->peak_bytes = std::max(st->peak_bytes, n * sizeof(float));
  return st->buf.ensure(n, keep);
}

// T block (S, jb*F) = X (S,K) . V[j0*F .. (j0+jb)*F)^T
void compute_t(const Geom& g, const float* X, const float* v, int64_t S, int j0, int jb, float* T) {
  const int64_t K = g.K(), nf = int64_t(jb) * g.F;
  sgemm(false, true, S, nf, K, 1.f, X, K, v + int64_t(j0) * g.F * K, K, 0.f, T, nf);
}

}  // namespace

double cpu_scratch_bytes(const Geom& g, bool batched, size_t budget_bytes) {
  const bool whole = use_whole(g, batched, budget_bytes);
  const Plan pl = make_plan(g, budget_bytes, whole);
  return chunk_floats(g, pl.nb, pl.jb, true) * double(sizeof(float));
}

void cpu_forward(const Geom& g, const float* x, const float* v, const float* bias,
                 const float* scale, float* y, CpuState* st) {
  Prof pr;
  const bool whole = use_whole(g, st);
  const Plan pl = make_plan(g, st->budget_bytes, whole);
  const int64_t K = g.K(), P = g.P(), N = g.N, F = g.F;
  const int64_t Smax = int64_t(pl.nb) * P;
  // buffer layout: X | X2 | T | D | Cs
  const size_t nX = Smax * K, nT = Smax * pl.jb * F, nD = Smax * pl.jb, nC = int64_t(pl.jb) * K;
  // when X and T stay for the backward, take the backward's room now (no copy to grow later)
  float* base = reserve(st, chunk_floats(g, pl.nb, pl.jb, /*backward=*/whole));
  float *X = base, *X2 = X + nX, *T = X2 + nX, *D = T + nT, *Cs = D + nD;
  st->cache_valid = false;
  pr.lap("fwd-reserve");
  for (int b0 = 0; b0 < g.B; b0 += pl.nb) {
    const int nb = std::min(pl.nb, g.B - b0);
    const int64_t S = int64_t(nb) * P;
    im2col(g, x, b0, nb, X);
    square(X, X2, S * K);
    pr.lap("im2col+sq");
    for (int j0 = 0; j0 < g.N; j0 += pl.jb) {
      const int jb = std::min<int>(pl.jb, g.N - j0);
      const int64_t nf = int64_t(jb) * F;
      compute_t(g, X, v, S, j0, jb, T);
      pr.lap("gemm T");
      column_norms(g, v, scale, j0, jb, Cs);
      sgemm(false, true, S, jb, K, 1.f, X2, K, Cs, K, 0.f, D, jb);
      pr.lap("Cs + gemm D");
#pragma omp parallel for schedule(static)
      for (int64_t s = 0; s < S; ++s) {
        const int64_t b = s / P, p = s % P;
        const float* t = T + s * nf;
        float* out = y + (b0 + b) * N * P + p;
        for (int j = 0; j < jb; ++j) {
          float acc = 0.f;
          const float* tj = t + int64_t(j) * F;
#pragma omp simd reduction(+ : acc)
          for (int64_t f = 0; f < F; ++f) acc += scale[f] * tj[f] * tj[f];
          acc -= D[s * jb + j];
          if (bias) acc += bias[j0 + j];
          out[int64_t(j0 + j) * P] = acc;
        }
      }
      pr.lap("reduce T");
    }
  }
  if (whole) {  // X and T of the whole batch stay in buf for the backward
    st->cache_valid = true;
    st->cache_x = x;
  }
}

void cpu_backward(const Geom& g, int grad_mode, const float* gy, const float* x, const float* v,
                  const float* scale, float* gx, float* gv, float* gbias, CpuState* st) {
  Prof pr;
  const bool whole = use_whole(g, st);
  const Plan pl = make_plan(g, st->budget_bytes, whole);
  const int64_t K = g.K(), P = g.P(), N = g.N, F = g.F, NF = g.NF();
  const int64_t Smax = int64_t(pl.nb) * P;
  const bool cached = whole && st->cache_valid && st->cache_x == x;
  // buffer layout (forward-compatible prefix): X | X2 | T | D(unused) | Cs | G | dX | GC | E
  const size_t nX = Smax * K, nT = Smax * pl.jb * F, nD = Smax * pl.jb, nC = int64_t(pl.jb) * K;
  const size_t nG = Smax * N, nE = size_t(N) * K;
  float* base = reserve(st, chunk_floats(g, pl.nb, pl.jb, true), cached);  // cached: keep X and T
  float *X = base, *X2 = X + nX, *T = X2 + nX, *D = T + nT, *Cs = D + nD, *G = Cs + nC;
  float *dX = G + nG, *GC = dX + nX, *E = GC + nX, *Csall = E + nE;
  (void)D;
  pr.lap("bwd-reserve");
  column_norms(g, v, scale, 0, g.N, Csall);
  if (gbias) std::fill(gbias, gbias + N, 0.f);
  for (int b0 = 0; b0 < g.B; b0 += pl.nb) {
    const int nb = std::min(pl.nb, g.B - b0);
    const int64_t S = int64_t(nb) * P;
    if (!cached) {  // else X and X2 are still in place from the forward
      im2col(g, x, b0, nb, X);
      square(X, X2, S * K);
    }
    // G (S, N) gathered from gy (B, N, P)
#pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < S; ++s) {
      const int64_t b = s / P, p = s % P;
      const float* src = gy + (b0 + b) * N * P + p;
      for (int64_t j = 0; j < N; ++j) G[s * N + j] = src[j * P];
    }
    if (gbias) {
      for (int64_t s = 0; s < S; ++s)
        for (int64_t j = 0; j < N; ++j) gbias[j] += G[s * N + j];
    }
    pr.lap("sq+G+gbias");
    const float beta = b0 == 0 ? 0.f : 1.f;
    if (gv) sgemm(true, false, N, K, S, 1.f, G, N, X2, K, beta, E, K);  // E += G^T X2
    pr.lap("gemm E");
    for (int j0 = 0; j0 < g.N; j0 += pl.jb) {
      const int jb = std::min<int>(pl.jb, g.N - j0);
      const int64_t nf = int64_t(jb) * F;
      if (!cached) compute_t(g, X, v, S, j0, jb, T);
      // dT = 2 s_f g T, in place
#pragma omp parallel for schedule(static)
      for (int64_t s = 0; s < S; ++s) {
        float* t = T + s * nf;
        for (int j = 0; j < jb; ++j) {
          const float gj = 2.f * G[s * N + j0 + j];
          float* tj = t + int64_t(j) * F;
#pragma omp simd
          for (int64_t f = 0; f < F; ++f) tj[f] *= gj * scale[f];
        }
      }
      pr.lap("dT scale");
      const float* vb = v + int64_t(j0) * F * K;
      if (gv) sgemm(true, false, nf, K, S, 1.f, T, nf, X, K, beta, gv + int64_t(j0) * F * K, K);
      pr.lap("gemm dV");
      if (gx) sgemm(false, false, S, K, nf, 1.f, T, nf, vb, K, j0 == 0 ? 0.f : 1.f, dX, K);
      pr.lap("gemm dX");
    }
    if (cached) st->cache_valid = false;  // T was overwritten by dT
    if (gx) {
      sgemm(false, false, S, K, N, 1.f, G, N, Csall, K, 0.f, GC, K);  // G Cs
      pr.lap("gemm GC");
      const int64_t n = S * K;
      if (grad_mode == kGradReference) {
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < n; ++i) dX[i] -= 2.f * GC[i];
      } else {
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < n; ++i) dX[i] -= 2.f * X[i] * GC[i];
      }
      col2im(g, dX, b0, nb, gx);
      pr.lap("dX fix+col2im");
    }
  }
  if (gv) {  // diagonal term: dV[jf,k] -= 2 s_f V[jf,k] E[j,k]
#pragma omp parallel for schedule(static)
    for (int64_t jf = 0; jf < NF; ++jf) {
      const float s2 = 2.f * scale[jf % F];
      const float* e = E + (jf / F) * K;
      const float* vr = v + jf * K;
      float* out = gv + jf * K;
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) out[k] -= s2 * vr[k] * e[k];
    }
  }
  pr.lap("dV diag");
}

}  // namespace fbop
