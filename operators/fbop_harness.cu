// Standalone check of the GPU kernels (fbop_gpu.cu) against the CPU implementation (fbop_cpu.cc):
// forward output and all three gradients (gx, gv, gbias) on fixed and random shapes (kernels > 1,
// stride, pad, dilation, F = 1, N = 1, odd sizes, several chunk sizes), both data-gradient modes,
// all three DropFactor scale modes with random masks, training and inference. Also checks the
// device-side scale resolution (bit-exact against an independent host version), bitwise
// run-to-run determinism, and that a too-small workspace is refused; then times forward+backward
// on two classifier heads. The fused element-wise operators (fuse.h) are checked and timed too
// (fuse_harness.cu; skipped with --only). No MXNet runtime is needed.
//
//   build/fbop_harness [--cases N] [--seed S] [--tol T] [--no-bench] [--reps R] [--only ID]
// Prints one line per case and a final "N passed, N failed" line; exits 1 on any failure.
#include "fbop.h"

#ifdef FBOP_CUDA_EMU
#include "cuda_emu.h"
#else
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using fbop::Geom;

#define CK(expr)                                                                        \
  do {                                                                                  \
    cudaError_t e_ = (expr);                                                            \
    if (e_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "CUDA error '%s' at %s:%d: %s\n", cudaGetErrorString(e_),    \
                   __FILE__, __LINE__, #expr);                                          \
      std::exit(2);                                                                     \
    }                                                                                   \
  } while (0)

namespace {

const char* kScaleNames[] = {"inverted", "reference", "paper"};

// Independent host version of the scale resolution (fbop.h / fbop_lib.cc resolve_scale).
std::vector<float> host_scale(const std::vector<float>& mask, float p, int mode) {
  const int F = int(mask.size());
  std::vector<float> s(F, 1.f);
  if (p == 0.f) return s;
  bool inference = std::all_of(mask.begin(), mask.end(), [](float m) { return m == 1.f; });
  for (int f = 0; f < F; ++f) {
    if (inference) s[f] = mode == 0 ? 1.f : 1.f - p;
    else s[f] = mode == 2 ? mask[f] * (1.f - p) : mask[f];
  }
  return s;
}

struct Dev {
  float* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t n_) : n(n_) { CK(cudaMalloc((void**)&p, std::max<size_t>(n, 1) * sizeof(float))); }
  Dev(const std::vector<float>& h) : Dev(h.size()) { put(h); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void put(const std::vector<float>& h) {
    CK(cudaMemcpy(p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  std::vector<float> get() const {
    std::vector<float> h(n);
    CK(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
  }
};

// max |a - ref| / max(max |ref|, mag)  (infinite if anything is not finite). `mag` bounds the
// size of the terms that were summed: results that cancel (y and the exact gx are exactly 0 when
// K = 1, since there is no pair k != l) are then judged against the rounding of those terms.
double rel_err(const std::vector<float>& a, const std::vector<float>& ref, double mag) {
  double num = 0, den = mag;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(ref[i])) return INFINITY;
    num = std::max(num, double(std::fabs(a[i] - ref[i])));
    den = std::max(den, double(std::fabs(ref[i])));
  }
  return den > 0 ? num / den : num;
}

// Magnitude bounds of the terms behind y, gx, gv and gbias, from |x|, |v|, |s|, |g| with plain
// loops (independent of both implementations). With A[s,jf] = sum_k |x_sk v_jfk| >= |T[s,jf]|:
//   y:  sum_f |s_f| A^2                  (bounds both (v.x)^2 and sum_k v^2 x^2)
//   gv: 2 sum_s 2|s_f g_sj| A |x_sk|       gx: 2 kh kw sum_jf 2|s_f g_sj| A |v_jfk| (+ reference
//   mode's 2 sum_jf |s_f g_sj| v_jfk^2, which has no factor x)      gbias: sum_s |g_sj|
struct Mags { double y = 0, gx = 0, gv = 0, gb = 0; };
Mags magnitudes(const Geom& g, int grad_mode, const std::vector<float>& x, const std::vector<float>& v,
                const std::vector<float>& sc, const std::vector<float>& gy) {
  const int64_t K = g.K(), NF = g.NF(), P = g.P(), S = int64_t(g.B) * P;
  std::vector<double> X(S * K, 0.0), A(S * NF, 0.0), G(S * g.N);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t b = s / P, p = s % P;
    const int oh = int(p / g.OW), ow = int(p % g.OW);
    int64_t k = 0;
    for (int c = 0; c < g.C; ++c)
      for (int i = 0; i < g.kh; ++i)
        for (int j = 0; j < g.kw; ++j, ++k) {
          const int h = oh * g.sh - g.ph + i * g.dh, w = ow * g.sw - g.pw + j * g.dw;
          if (h >= 0 && h < g.H && w >= 0 && w < g.W)
            X[s * K + k] = std::fabs(x[((b * g.C + c) * g.H + h) * g.W + w]);
        }
    for (int j = 0; j < g.N; ++j) G[s * g.N + j] = std::fabs(gy[(b * g.N + j) * P + p]);
    for (int64_t jf = 0; jf < NF; ++jf) {
      double a = 0;
      for (int64_t kk = 0; kk < K; ++kk) a += X[s * K + kk] * std::fabs(v[jf * K + kk]);
      A[s * NF + jf] = a;
    }
  }
  Mags m;
  std::vector<double> gv(NF * K, 0.0), gb(g.N, 0.0);
  for (int64_t s = 0; s < S; ++s) {
    std::vector<double> gx(K, 0.0);
    for (int64_t jf = 0; jf < NF; ++jf) {
      const int j = int(jf / g.F);
      const double sf = std::fabs(sc[jf % g.F]), a = A[s * NF + jf], gsj = G[s * g.N + j];
      const double w = 2 * sf * gsj * a;
      for (int64_t kk = 0; kk < K; ++kk) {
        const double vk = std::fabs(v[jf * K + kk]);
        gv[jf * K + kk] += w * X[s * K + kk];
        gx[kk] += w * vk + (grad_mode == fbop::kGradReference ? 2 * sf * gsj * vk * vk : 0.0);
      }
    }
    double ys = 0;
    for (int j = 0; j < g.N; ++j) {
      double yj = 0;
      for (int f = 0; f < g.F; ++f) yj += std::fabs(sc[f]) * std::pow(A[s * NF + j * g.F + f], 2);
      ys = std::max(ys, yj);
      gb[j] += G[s * g.N + j];
    }
    m.y = std::max(m.y, ys);
    for (double e : gx) m.gx = std::max(m.gx, 2.0 * g.kh * g.kw * e);
  }
  for (double e : gv) m.gv = std::max(m.gv, 2.0 * e);
  for (double e : gb) m.gb = std::max(m.gb, e);
  return m;
}

struct Case {
  Geom g;
  int ipc = 1;            // images per chunk on the GPU
  int grad_mode = fbop::kGradExact;
  int scale_mode = 0;
  float p = 0.5f;
  bool train = true;
  bool bias = true;
  bool cache_t = false;   // CPU path: FMConvolution3 (whole batch) or FMConvolution1 (chunked)
  bool want_gx = true, want_gv = true, want_gb = true;
  unsigned seed = 1;
};

std::string describe(const Case& c) {
  const Geom& g = c.g;
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "B%d C%d %dx%d N%d F%d k%dx%d s%dx%d p%dx%d d%dx%d ipc%d %s scale=%s p=%.2f %s%s%s"
                " grads=%s%s%s",
                g.B, g.C, g.H, g.W, g.N, g.F, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, c.ipc,
                c.grad_mode == fbop::kGradExact ? "exact" : "reference", kScaleNames[c.scale_mode],
                c.p, c.train ? "train" : "infer", c.bias ? " bias" : " nobias",
                c.cache_t ? " cpu=FMConv3" : " cpu=FMConv1", c.want_gx ? "x" : "", c.want_gv ? "v" : "",
                c.want_gb ? "b" : "");
  return buf;
}

bool run_case(int id, const Case& c, double tol, bool check_small_ws) {
  Geom g = c.g;
  std::mt19937 rng(c.seed);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  std::normal_distribution<float> nrm(0.f, 1.f);
  const int64_t K = g.K(), NF = g.NF();
  const size_t nx = size_t(g.B) * g.C * g.H * g.W, ny = size_t(g.B) * g.N * g.P();
  std::vector<float> x(nx), v(NF * K), bias(g.N), gy(ny), mask(g.F, 1.f);
  for (auto& a : x) a = uni(rng);
  const float vs = 1.f / std::sqrt(float(K * g.F));
  for (auto& a : v) a = nrm(rng) * vs;
  for (auto& a : bias) a = uni(rng);
  for (auto& a : gy) a = uni(rng);
  if (c.train && c.p > 0) {
    std::bernoulli_distribution keep(1.0 - c.p);
    for (auto& m : mask) m = keep(rng) ? 1.f / (1.f - c.p) : 0.f;
  }
  const std::vector<float> scale = host_scale(mask, c.p, c.scale_mode);

  // CPU reference
  fbop::CpuState st;
  st.cache_t = c.cache_t;
  st.budget_bytes = size_t(1) << 16;  // small: exercises the CPU's chunking too
  std::vector<float> y(ny), gx(nx), gv(NF * K), gb(g.N);
  fbop::cpu_forward(g, x.data(), v.data(), c.bias ? bias.data() : nullptr, scale.data(), y.data(),
                    &st);
  fbop::cpu_backward(g, c.grad_mode, gy.data(), x.data(), v.data(), scale.data(),
                     c.want_gx ? gx.data() : nullptr, c.want_gv ? gv.data() : nullptr,
                     c.want_gb ? gb.data() : nullptr, &st);

  // GPU
  cudaStream_t stream;
  CK(cudaStreamCreate(&stream));
  Dev dx(x), dv(v), dbias(bias), dgy(gy), dmask(mask), dscale(g.F), dy(ny), dgx(nx), dgv(NF * K),
      dgb(g.N);
  std::string why;
  int rc = fbop::gpu_resolve_scale(dmask.p, g.F, c.p, c.scale_mode, dscale.p, stream);
  CK(cudaStreamSynchronize(stream));
  if (rc) why += " resolve_scale rc=" + std::to_string(rc);
  const std::vector<float> gscale = dscale.get();
  if (std::memcmp(gscale.data(), scale.data(), scale.size() * sizeof(float)) != 0)
    why += " scale-mismatch";

  const size_t wsb = fbop::gpu_workspace_bytes(g, c.ipc);
  Dev ws((wsb + sizeof(float) - 1) / sizeof(float));
  if (check_small_ws) {
    int r1 = fbop::gpu_forward(g, dx.p, dv.p, dbias.p, dscale.p, dy.p, ws.p, wsb - 1, c.ipc, stream);
    int r2 = fbop::gpu_backward(g, c.grad_mode, dgy.p, dx.p, dv.p, dscale.p, dgx.p, dgv.p, dgb.p,
                                ws.p, wsb - 1, c.ipc, stream);
    if (r1 == 0 || r2 == 0) why += " small-workspace-accepted";
  }
  std::vector<float> out[2][4];
  for (int rep = 0; rep < 2; ++rep) {
    // poison outputs so that anything left unwritten shows up
    CK(cudaMemset(dy.p, 0xff, ny * sizeof(float)));
    CK(cudaMemset(dgx.p, 0xff, nx * sizeof(float)));
    CK(cudaMemset(dgv.p, 0xff, NF * K * sizeof(float)));
    CK(cudaMemset(dgb.p, 0xff, g.N * sizeof(float)));
    rc = fbop::gpu_forward(g, dx.p, dv.p, c.bias ? dbias.p : nullptr, dscale.p, dy.p, ws.p, wsb,
                           c.ipc, stream);
    if (rc) why += " forward rc=" + std::to_string(rc);
    rc = fbop::gpu_backward(g, c.grad_mode, dgy.p, dx.p, dv.p, dscale.p,
                            c.want_gx ? dgx.p : nullptr, c.want_gv ? dgv.p : nullptr,
                            c.want_gb ? dgb.p : nullptr, ws.p, wsb, c.ipc, stream);
    if (rc) why += " backward rc=" + std::to_string(rc);
    CK(cudaStreamSynchronize(stream));
    CK(cudaGetLastError());
    out[rep][0] = dy.get();
    out[rep][1] = dgx.get();
    out[rep][2] = dgv.get();
    out[rep][3] = dgb.get();
  }
  CK(cudaStreamDestroy(stream));
  for (int t = 0; t < 4; ++t)
    if (std::memcmp(out[0][t].data(), out[1][t].data(), out[0][t].size() * sizeof(float)) != 0) {
      why += " nondeterministic";
      break;
    }
  const Mags mag = magnitudes(g, c.grad_mode, x, v, scale, gy);
  const double ey = rel_err(out[0][0], y, mag.y);
  const double ex = c.want_gx ? rel_err(out[0][1], gx, mag.gx) : 0;
  const double ev = c.want_gv ? rel_err(out[0][2], gv, mag.gv) : 0;
  const double eb = c.want_gb ? rel_err(out[0][3], gb, mag.gb) : 0;
  if (!(ey <= tol)) why += " y";
  if (!(ex <= tol)) why += " gx";
  if (!(ev <= tol)) why += " gv";
  if (!(eb <= tol)) why += " gbias";
  const bool ok = why.empty();
  std::printf("%s case %3d: %s | err y %.1e gx %.1e gv %.1e gb %.1e%s%s\n", ok ? "PASS" : "FAIL",
              id, describe(c).c_str(), ey, ex, ev, eb, ok ? "" : " | failed:", why.c_str());
  std::fflush(stdout);
  return ok;
}

Case random_case(std::mt19937& rng, unsigned seed) {
  auto ri = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Case c;
  Geom& g = c.g;
  for (;;) {
    g = Geom();
    g.B = ri(1, 4); g.C = ri(1, 9); g.H = ri(1, 9); g.W = ri(1, 9);
    g.N = ri(1, 6); g.F = ri(1, 5);
    if (ri(0, 2) == 0) {  // pointwise fast path
      g.kh = g.kw = 1;
    } else {
      g.kh = ri(1, 3); g.kw = ri(1, 3); g.sh = ri(1, 3); g.sw = ri(1, 2);
      g.ph = ri(0, 2); g.pw = ri(0, 1); g.dh = ri(1, 2); g.dw = ri(1, 3);
    }
    if (g.finish()) break;
  }
  c.ipc = ri(1, g.B + 1);  // > B is clamped to B
  c.grad_mode = ri(0, 1);
  c.scale_mode = ri(0, 2);
  const float ps[] = {0.f, 0.2f, 0.5f, 0.75f};
  c.p = ps[ri(0, 3)];
  c.train = ri(0, 3) != 0;
  c.bias = ri(0, 3) != 0;
  c.cache_t = ri(0, 1);
  const int w = ri(0, 9);  // mostly all gradients; sometimes a subset
  c.want_gx = w != 1 && w != 3;
  c.want_gv = w != 2 && w != 3;
  c.want_gb = w != 4;
  c.seed = seed;
  return c;
}

Case make(int B, int C, int H, int W, int N, int F, int k, int s, int pad, int d, int ipc) {
  Case c;
  Geom& g = c.g;
  g.B = B; g.C = C; g.H = H; g.W = W; g.N = N; g.F = F;
  g.kh = g.kw = k; g.sh = g.sw = s; g.ph = g.pw = pad; g.dh = g.dw = d;
  g.finish();
  c.ipc = ipc;
  return c;
}

double median(std::vector<float> a) {
  std::sort(a.begin(), a.end());
  return a[a.size() / 2];
}

void bench(const char* name, int B, int C, int HW, int N, int F, int reps) {
  Case c = make(B, C, HW, HW, N, F, 1, 1, 0, 1, B);
  Geom g = c.g;
  const int64_t K = g.K(), NF = g.NF(), S = int64_t(B) * g.P();
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  std::vector<float> hx(size_t(B) * C * HW * HW), hv(NF * K), hb(N), hgy(size_t(B) * N * g.P()),
      hs(F, 1.f);
  for (auto& a : hx) a = uni(rng);
  for (auto& a : hv) a = 0.01f * uni(rng);
  for (auto& a : hgy) a = uni(rng);
  Dev x(hx), v(hv), b(hb), gy(hgy), s(hs), y(hgy.size()), gx(hx.size()), gv(hv.size()), gb(N);
  const size_t wsb = fbop::gpu_workspace_bytes(g, B);
  Dev ws((wsb + 3) / 4);
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cudaEvent_t e0, e1, e2;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaEventCreate(&e2));
  std::vector<float> tf, tfb;
  for (int r = 0; r < reps + 3; ++r) {
    CK(cudaEventRecord(e0, st));
    int rc = fbop::gpu_forward(g, x.p, v.p, b.p, s.p, y.p, ws.p, wsb, B, st);
    CK(cudaEventRecord(e1, st));
    rc |= fbop::gpu_backward(g, fbop::kGradExact, gy.p, x.p, v.p, s.p, gx.p, gv.p, gb.p, ws.p, wsb,
                             B, st);
    CK(cudaEventRecord(e2, st));
    CK(cudaEventSynchronize(e2));
    if (rc) {
      std::printf("bench %s: error %d\n", name, rc);
      std::exit(2);
    }
    float a, ab;
    CK(cudaEventElapsedTime(&a, e0, e1));
    CK(cudaEventElapsedTime(&ab, e0, e2));
    if (r >= 3) { tf.push_back(a); tfb.push_back(ab); }
  }
  // 4 large GEMMs of 2*S*K*NF flops (forward T, backward T recompute, dV, dX) + 3 small ones
  const double flops = 2.0 * S * K * NF * 4 + 2.0 * S * K * N * 3;
  const double mf = median(tf), mfb = median(tfb);
  std::printf("bench %-8s (B%d C%d %dx%d N%d F%d): forward %.3f ms, forward+backward %.3f ms "
              "(%.1f TFLOP/s), workspace %.1f MiB\n",
              name, B, C, HW, HW, N, F, mf, mfb, flops / (mfb * 1e-3) / 1e12, wsb / 1048576.0);
  std::fflush(stdout);
  cudaEventDestroy(e0); cudaEventDestroy(e1); cudaEventDestroy(e2);
  cudaStreamDestroy(st);
}

}  // namespace

// The fused element-wise operators' cases (fuse_harness.cu).
void fuse_harness_run(unsigned seed, double tol, bool do_bench, int reps, int* passed, int* failed);

int main(int argc, char** argv) {
  int ncases = 60, reps = 20, only = -1;
  unsigned seed = 2017;
  double tol = 3e-5;
  bool do_bench = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); std::exit(2); }
      return argv[++i];
    };
    if (a == "--cases") ncases = std::atoi(next());
    else if (a == "--seed") seed = unsigned(std::atoi(next()));
    else if (a == "--tol") tol = std::atof(next());
    else if (a == "--reps") reps = std::max(1, std::atoi(next()));
    else if (a == "--only") only = std::atoi(next());
    else if (a == "--no-bench") do_bench = false;
    else {
      std::printf("usage: %s [--cases N (random cases, default 60)] [--seed S] [--tol T "
                  "(error bound, default 3e-5)] [--reps R (timing repeats, default 20)] [--no-bench]\n"
                  "       [--only ID (run just that case of the same list, e.g. to re-check a failure)]\n",
                  argv[0]);
      return a == "-h" || a == "--help" ? 0 : 2;
    }
  }
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    std::printf("no CUDA device available: the harness needs a GPU\n");
    return 2;
  }
  int dev = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  std::printf("GPU: %s (sm_%d%d, %d SMs); CPU GEMM backend: %s\n", prop.name, prop.major,
              prop.minor, prop.multiProcessorCount, fbop::gemm_backend());

  std::vector<Case> cases;
  // Fixed cases: the paper's heads in miniature, every kernel feature, tiny/degenerate sizes,
  // GEMMs large enough for 128x128 tiles and split-K (with and without the X .* epilogue).
  cases.push_back(make(2, 8, 4, 4, 3, 2, 1, 1, 0, 1, 2));         // pointwise, one chunk
  cases.push_back(make(3, 5, 7, 6, 4, 3, 3, 1, 1, 1, 2));         // 3x3 pad 1, uneven chunks
  cases.push_back(make(2, 4, 9, 9, 2, 2, 3, 2, 1, 2, 1));         // stride 2, dilation 2
  cases.push_back(make(1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1));         // everything 1
  cases.push_back(make(1, 3, 5, 5, 1, 1, 2, 3, 2, 1, 1));         // N=1, F=1, even kernel
  cases.push_back(make(5, 3, 2, 3, 2, 4, 1, 2, 0, 1, 3));         // 1x1 but strided (not pointwise)
  cases.push_back(make(4, 16, 1, 1, 5, 3, 1, 1, 1, 1, 4));        // 1x1 with pad
  cases.push_back(make(36, 16, 8, 8, 64, 16, 1, 1, 0, 1, 36));    // 128x128 tiles, split-K gV/dX
  cases.push_back(make(2, 8, 4, 4, 300, 1, 1, 1, 0, 1, 2));       // split-K in dX -= 2 X.*(G Cs)
  cases.push_back(make(4, 32, 6, 6, 10, 20, 1, 1, 0, 1, 3));      // CIFAR-like head, chunked
  {
    Case c = make(2, 8, 4, 4, 300, 1, 1, 1, 0, 1, 1);
    c.grad_mode = fbop::kGradReference;
    cases.push_back(c);
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    Case& c = cases[i];
    c.seed = seed + unsigned(i);
    c.scale_mode = int(i % 3);
    c.train = i % 4 != 3;
    c.cache_t = i % 2;
  }
  std::mt19937 rng(seed);
  for (int i = 0; i < ncases; ++i) cases.push_back(random_case(rng, seed + 1000 + i));

  int passed = 0, failed = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    if (only >= 0 && int(i) != only) continue;
    if (run_case(int(i), cases[i], tol, i == 0)) ++passed;
    else ++failed;
  }
  if (only < 0) fuse_harness_run(seed, tol, do_bench, reps, &passed, &failed);
  if (do_bench) {
    bench("cifar", 128, 256, 8, 100, 20, reps);
    bench("imagenet", 32, 512, 7, 1000, 50, reps);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
