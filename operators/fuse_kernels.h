// Per-plane CPU kernels of the fused operators (maths: fuse.h). NOT a normal header: fuse_cpu.cc
// includes it several times, each time inside its own namespace and under another
// `#pragma GCC target` (baseline x86-64, AVX2+FMA, AVX-512), and picks one set at run time from the
// CPU's features. Plain loops over contiguous planes that GCC vectorises; no intrinsics. The
// reductions (means, per-channel gradients) are float sums whose order depends on the vector
// width; everything else is the same IEEE arithmetic in every variant (no FMA contraction under
// -std=c++17). Loads inside conditional expressions are hoisted so that GCC if-converts them
// (a conditional load is "control flow" and keeps a loop scalar); check with -fopt-info-vec.

// e^x with Cephes' expf polynomial after a Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2; about
// 1 ulp. Branch-free (clamped input, round-to-nearest by the 1.5 * 2^23 trick, 2^n built in the
// exponent field) so that loops calling it vectorise.
static inline float exp_approx(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.f) - 12582912.f;  // rint(t) for |t| < 2^22
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  const int32_t e = (int32_t(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &e, sizeof two_n);
  return p * two_n;
}

static inline float sigmoid(float v) { return 1.f / (1.f + exp_approx(-v)); }

// ------------------------------------------------------------------------------ AFFGate
// One plane: out = scale (y + w (x - y)), w = sigmoid(a + b); a/b are full (AF/BF) or the
// plane's scalar a0/b0. Returns the sum of out (for the spatial mean).
template <bool AF, bool BF>
static float gate_fwd_plane(int64_t n, const float* __restrict x, const float* __restrict y,
                            const float* __restrict a, float a0, const float* __restrict b,
                            float b0, float scale, float* __restrict out) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    const float w = sigmoid((AF ? a[i] : a0) + (BF ? b[i] : b0));
    const float o = (y[i] + (x[i] - y[i]) * w) * scale;
    out[i] = o;
    sum += o;
  }
  return sum;
}

// One plane of the backward; g = gout + gadd (gadd: the plane's g_mean / HW). Full logit
// gradients are written to da/db; per-channel ones are returned through *sa/*sb (plane sums).
template <bool AF, bool BF>
static void gate_bwd_plane(int64_t n, const float* __restrict go, float gadd,
                           const float* __restrict x, const float* __restrict y,
                           const float* __restrict a, float a0, const float* __restrict b, float b0,
                           float scale, float* __restrict dx, float* __restrict dy,
                           float* __restrict da, float* __restrict db, float* sa, float* sb) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    const float w = sigmoid((AF ? a[i] : a0) + (BF ? b[i] : b0));
    const float sg = (go[i] + gadd) * scale;
    const float gx = sg * w;
    dx[i] = gx;
    dy[i] = sg - gx;
    const float dl = (sg * (x[i] - y[i])) * (w * (1.f - w));
    if (AF) da[i] = dl;
    if (BF) db[i] = dl;
    sum += dl;
  }
  if (!AF) *sa = sum;
  if (!BF) *sb = sum;
}

template <bool AF, bool BF>
static void gate_forward_t(const GateGeom& g, const float* x, const float* y, const float* a,
                           const float* b, float* out, float* mean) {
  const int64_t n = g.hw;
  const float inv = 1.f / float(n);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < g.planes; ++p) {
    const int64_t o = p * n;
    const float s = gate_fwd_plane<AF, BF>(n, x + o, y + o, AF ? a + o : nullptr, AF ? 0.f : a[p],
                                           BF ? b + o : nullptr, BF ? 0.f : b[p], g.scale, out + o);
    if (mean) mean[p] = s * inv;
  }
}

template <bool AF, bool BF>
static void gate_backward_t(const GateGeom& g, const float* go, const float* gm, const float* x,
                            const float* y, const float* a, const float* b, float* dx, float* dy,
                            float* da, float* db) {
  const int64_t n = g.hw;
  const float inv = 1.f / float(n);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < g.planes; ++p) {
    const int64_t o = p * n;
    gate_bwd_plane<AF, BF>(n, go + o, gm ? gm[p] * inv : 0.f, x + o, y + o, AF ? a + o : nullptr,
                           AF ? 0.f : a[p], BF ? b + o : nullptr, BF ? 0.f : b[p], g.scale, dx + o,
                           dy + o, AF ? da + o : nullptr, BF ? db + o : nullptr, AF ? nullptr : da + p,
                           BF ? nullptr : db + p);
  }
}

static void gate_forward(const GateGeom& g, const float* x, const float* y, const float* a,
                         const float* b, float* out, float* mean) {
  if (g.a_full && g.b_full) gate_forward_t<true, true>(g, x, y, a, b, out, mean);
  else if (g.a_full) gate_forward_t<true, false>(g, x, y, a, b, out, mean);
  else if (g.b_full) gate_forward_t<false, true>(g, x, y, a, b, out, mean);
  else gate_forward_t<false, false>(g, x, y, a, b, out, mean);
}

static void gate_backward(const GateGeom& g, const float* go, const float* gm, const float* x,
                          const float* y, const float* a, const float* b, float* dx, float* dy,
                          float* da, float* db) {
  if (g.a_full && g.b_full) gate_backward_t<true, true>(g, go, gm, x, y, a, b, dx, dy, da, db);
  else if (g.a_full) gate_backward_t<true, false>(g, go, gm, x, y, a, b, dx, dy, da, db);
  else if (g.b_full) gate_backward_t<false, true>(g, go, gm, x, y, a, b, dx, dy, da, db);
  else gate_backward_t<false, false>(g, go, gm, x, y, a, b, dx, dy, da, db);
}

// ------------------------------------------------------------------------------ AddMean
static void add_mean_forward(int64_t planes, int64_t n, const float* x, const float* y, float* z,
                             float* m) {
  const float inv = 1.f / float(n);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const float* __restrict xp = x + p * n;
    const float* __restrict yp = y + p * n;
    float* __restrict zp = z + p * n;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) {
      const float v = xp[i] + yp[i];
      zp[i] = v;
      sum += v;
    }
    m[p] = sum * inv;
  }
}

static void add_mean_backward(int64_t planes, int64_t n, const float* gz, const float* gm,
                              float* dx, float* dy) {
  const float inv = 1.f / float(n);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const float* __restrict g = gz + p * n;
    float* __restrict ox = dx + p * n;
    float* __restrict oy = dy + p * n;
    const float add = gm[p] * inv;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float v = g[i] + add;
      ox[i] = v;
      oy[i] = v;
    }
  }
}

// ------------------------------------------------------------------------------ UpsampleAdd
// One output row: o[j] = act(l[j] + br[j / s]) for j < W.
template <bool RELU>
static void upadd_row(int W, int s, const float* __restrict br, const float* __restrict l,
                      float* __restrict o) {
  if (s == 2) {
    const int half = W / 2;
#pragma omp simd
    for (int q = 0; q < half; ++q) {
      const float v = br[q];
      const float u0 = l[2 * q] + v, u1 = l[2 * q + 1] + v;
      o[2 * q] = RELU ? (u0 > 0.f ? u0 : 0.f) : u0;
      o[2 * q + 1] = RELU ? (u1 > 0.f ? u1 : 0.f) : u1;
    }
    if (W & 1) {
      const float u = l[W - 1] + br[half];
      o[W - 1] = RELU ? (u > 0.f ? u : 0.f) : u;
    }
  } else if (s == 1) {
#pragma omp simd
    for (int j = 0; j < W; ++j) {
      const float u = l[j] + br[j];
      o[j] = RELU ? (u > 0.f ? u : 0.f) : u;
    }
  } else {
    for (int j = 0; j < W; ++j) {
      const float u = l[j] + br[j / s];
      o[j] = RELU ? (u > 0.f ? u : 0.f) : u;
    }
  }
}

// One output row of the backward: gl[j] = g'[j]; acc[j / s] += g'[j] (acc zeroed by the caller).
template <bool RELU>
static void upadd_bwd_row(int W, int s, const float* __restrict go, const float* __restrict out,
                          float* __restrict gl, float* __restrict acc) {
  if (s == 2) {
    const int half = W / 2;
#pragma omp simd
    for (int q = 0; q < half; ++q) {
      const float a0 = go[2 * q], a1 = go[2 * q + 1];  // loaded unconditionally: a select, no branch
      const float g0 = RELU ? (out[2 * q] > 0.f ? a0 : 0.f) : a0;
      const float g1 = RELU ? (out[2 * q + 1] > 0.f ? a1 : 0.f) : a1;
      gl[2 * q] = g0;
      gl[2 * q + 1] = g1;
      acc[q] += g0 + g1;
    }
    if (W & 1) {
      const float g0 = RELU ? (out[W - 1] > 0.f ? go[W - 1] : 0.f) : go[W - 1];
      gl[W - 1] = g0;
      acc[half] += g0;
    }
  } else {
    for (int j = 0; j < W; ++j) {
      const float a0 = go[j];
      const float g0 = RELU ? (out[j] > 0.f ? a0 : 0.f) : a0;
      gl[j] = g0;
      acc[j / s] += g0;
    }
  }
}

template <bool RELU>
static void upadd_forward_t(const UpGeom& g, const float* big, const float* little, float* out) {
  const int64_t bn = int64_t(g.h) * g.w, ln = int64_t(g.H) * g.W;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < g.planes; ++p)
    for (int i = 0; i < g.H; ++i)
      upadd_row<RELU>(g.W, g.s, big + p * bn + int64_t(i / g.s) * g.w, little + p * ln + int64_t(i) * g.W,
                      out + p * ln + int64_t(i) * g.W);
}

template <bool RELU>
static void upadd_backward_t(const UpGeom& g, const float* go, const float* out, float* dbig,
                             float* dlittle) {
  const int64_t bn = int64_t(g.h) * g.w, ln = int64_t(g.H) * g.W;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < g.planes; ++p) {
    float* db = dbig + p * bn;
    for (int64_t k = 0; k < bn; ++k) db[k] = 0.f;
    for (int i = 0; i < g.H; ++i) {
      const int64_t o = p * ln + int64_t(i) * g.W;
      upadd_bwd_row<RELU>(g.W, g.s, go + o, out + o, dlittle + o, db + int64_t(i / g.s) * g.w);
    }
  }
}

static void upadd_forward(const UpGeom& g, const float* big, const float* little, float* out) {
  if (g.relu) upadd_forward_t<true>(g, big, little, out);
  else upadd_forward_t<false>(g, big, little, out);
}

static void upadd_backward(const UpGeom& g, const float* go, const float* out, float* dbig,
                           float* dlittle) {
  if (g.relu) upadd_backward_t<true>(g, go, out, dbig, dlittle);
  else upadd_backward_t<false>(g, go, out, dbig, dlittle);
}

// ------------------------------------------------------------------------------ PlainBatchNorm
// Channels run in parallel; each channel's B planes (contiguous H x W runs) are reduced with float
// vector sums per plane, accumulated across planes in double; the variance is a second pass around
// the mean (no E[x^2] - mean^2 cancellation).
static float plane_sum(int64_t n, const float* __restrict x) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i];
  return s;
}

static float plane_sq_dev(int64_t n, const float* __restrict x, float m) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) {
    const float d = x[i] - m;
    s += d * d;
  }
  return s;
}

static void plane_affine(int64_t n, const float* __restrict x, float m, float k, float b, float* __restrict o) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) o[i] = (x[i] - m) * k + b;
}

static void bn_forward(const BNGeom& g, const float* x, const float* gamma, const float* beta, float* mm,
                       float* mv, float* out, float* mean, float* invstd) {
  const int64_t n = g.hw, M = g.B * g.hw, stride = g.C * g.hw;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < g.C; ++c) {
    float m, var;
    if (g.train) {
      double s = 0.0;
      for (int64_t b = 0; b < g.B; ++b) s += plane_sum(n, x + b * stride + c * n);
      m = float(s / double(M));
      double v = 0.0;
      for (int64_t b = 0; b < g.B; ++b) v += plane_sq_dev(n, x + b * stride + c * n, m);
      var = float(v / double(M));
      mm[c] = mm[c] * g.momentum + m * (1.f - g.momentum);
      mv[c] = mv[c] * g.momentum + var * (1.f - g.momentum);
    } else {
      m = mm[c];
      var = mv[c];
    }
    const float is = 1.f / std::sqrt(var + g.eps);
    mean[c] = m;
    invstd[c] = is;
    const float k = (g.fix_gamma ? 1.f : gamma[c]) * is;
    for (int64_t b = 0; b < g.B; ++b)
      plane_affine(n, x + b * stride + c * n, m, k, beta[c], out + b * stride + c * n);
  }
}

static void plane_dy_sums(int64_t n, const float* __restrict dy, const float* __restrict x, float m,
                          float* sdy, float* sdyx) {
  float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
  for (int64_t i = 0; i < n; ++i) {
    a += dy[i];
    b += dy[i] * (x[i] - m);
  }
  *sdy = a;
  *sdyx = b;
}

static void plane_bn_dx(int64_t n, const float* __restrict dy, const float* __restrict x, float m, float k,
                        float a, float bb, float* __restrict dx) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i] = k * (dy[i] - a - (x[i] - m) * bb);
}

static void bn_backward(const BNGeom& g, const float* go, const float* x, const float* gamma, const float* mean,
                        const float* invstd, float* dx, float* dgamma, float* dbeta) {
  const int64_t n = g.hw, M = g.B * g.hw, stride = g.C * g.hw;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < g.C; ++c) {
    const float m = mean[c], is = invstd[c];
    double s1 = 0.0, s2 = 0.0;
    for (int64_t b = 0; b < g.B; ++b) {
      float a, bsum;
      plane_dy_sums(n, go + b * stride + c * n, x + b * stride + c * n, m, &a, &bsum);
      s1 += a;
      s2 += bsum;
    }
    const float sdy = float(s1), sdyx = float(s2);
    dbeta[c] = sdy;
    dgamma[c] = g.fix_gamma ? 0.f : sdyx * is;
    const float k = (g.fix_gamma ? 1.f : gamma[c]) * is;
    // dx = k (dy - mean(dy) - xh mean(dy xh)), with the moving statistics in inference too (MXNet's);
    // use_global_stats: dx = k dy
    const float a = g.global_stats ? 0.f : float(s1 / double(M));
    const float bb = g.global_stats ? 0.f : float(s2 / double(M)) * is * is;
    for (int64_t b = 0; b < g.B; ++b)
      plane_bn_dx(n, go + b * stride + c * n, x + b * stride + c * n, m, k, a, bb, dx + b * stride + c * n);
  }
}
