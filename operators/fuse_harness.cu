// Harness part for the fused element-wise operators (fuse.h): the GPU kernels (fuse_gpu.cu) and
// the CPU kernels (fuse_cpu.cc) against an independent double-precision reference written with
// plain loops here, on fixed and random shapes covering every variant (full / per-channel logits,
// spatial mean, scale; AddMean; UpsampleAdd with factors 1-3, crops of 0..s-1 and larger, ReLU;
// PlainBatchNorm in training and inference, use_global_stats, fix_gamma), plus bitwise run-to-run
// determinism of the GPU results. Called by fbop_harness.cu's main (host
// code only; runs under the CUDA emulator too).
#include "fuse.h"

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

namespace {

#define FCK(expr)                                                                     \
  do {                                                                                \
    cudaError_t e_ = (expr);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "CUDA error '%s' at %s:%d: %s\n", cudaGetErrorString(e_),  \
                   __FILE__, __LINE__, #expr);                                        \
      std::exit(2);                                                                   \
    }                                                                                 \
  } while (0)

using Vec = std::vector<float>;
using DVec = std::vector<double>;

struct Buf {
  float* p = nullptr;
  size_t n = 0;
  explicit Buf(size_t n_) : n(n_) { FCK(cudaMalloc((void**)&p, std::max<size_t>(n, 1) * sizeof(float))); }
  explicit Buf(const Vec& h) : Buf(h.size()) {
    FCK(cudaMemcpy(p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  Vec get() const {
    Vec h(n);
    FCK(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
  }
};

// max |a - ref| / max(max |ref|, 1e-30); infinite on non-finite values or a size mismatch.
double rel_err(const Vec& a, const DVec& ref) {
  if (a.size() != ref.size()) return INFINITY;
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num = std::max(num, std::fabs(double(a[i]) - ref[i]));
    den = std::max(den, std::fabs(ref[i]));
  }
  return num / den;
}

Vec rnd(std::mt19937& rng, size_t n, float lo = -2.f, float hi = 2.f) {
  std::uniform_real_distribution<float> u(lo, hi);
  Vec v(n);
  for (auto& a : v) a = u(rng);
  return v;
}

double dsig(double v) { return 1.0 / (1.0 + std::exp(-v)); }

struct Report {
  int passed = 0, failed = 0;
  void line(const std::string& what, const std::vector<std::pair<const char*, double>>& errs, double tol,
            bool deterministic) {
    std::string why;
    char buf[64];
    std::string es;
    for (const auto& e : errs) {
      std::snprintf(buf, sizeof buf, " %s %.1e", e.first, e.second);
      es += buf;
      if (!(e.second <= tol)) why += std::string(" ") + e.first;
    }
    if (!deterministic) why += " (GPU not bitwise reproducible)";
    const bool ok = why.empty();
    std::printf("%s fuse %s | err%s%s%s\n", ok ? "PASS" : "FAIL", what.c_str(), es.c_str(), ok ? "" : " | failed:",
                why.c_str());
    std::fflush(stdout);
    (ok ? passed : failed)++;
  }
};

// ------------------------------------------------------------------------------ AFFGate
void gate_case(Report& R, std::mt19937& rng, int B, int C, int H, int W, bool af, bool bf, bool mean, float scale,
               double tol) {
  fuse::GateGeom g;
  g.planes = int64_t(B) * C;
  g.hw = int64_t(H) * W;
  g.a_full = af;
  g.b_full = bf;
  g.scale = scale;
  g.with_mean = mean;
  const size_t N = size_t(g.planes * g.hw), P = size_t(g.planes);
  const Vec x = rnd(rng, N), y = rnd(rng, N), a = rnd(rng, af ? N : P, -4, 4), b = rnd(rng, bf ? N : P, -4, 4),
            go = rnd(rng, N), gm = rnd(rng, P);
  // reference
  DVec out(N), m(P, 0.0), dx(N), dy(N), da(af ? N : P, 0.0), db(bf ? N : P, 0.0);
  for (size_t p = 0; p < P; ++p)
    for (int64_t i = 0; i < g.hw; ++i) {
      const size_t k = p * g.hw + i;
      const double w = dsig(double(af ? a[k] : a[p]) + double(bf ? b[k] : b[p]));
      out[k] = scale * (double(x[k]) * w + double(y[k]) * (1 - w));
      m[p] += out[k] / double(g.hw);
      const double gg = double(go[k]) + (mean ? double(gm[p]) / double(g.hw) : 0.0);
      dx[k] = scale * gg * w;
      dy[k] = scale * gg * (1 - w);
      const double dl = scale * gg * (double(x[k]) - double(y[k])) * w * (1 - w);
      (af ? da[k] : da[p]) += dl;
      (bf ? db[k] : db[p]) += dl;
    }
  // CPU
  Vec c_out(N), c_m(P), c_dx(N), c_dy(N), c_da(da.size()), c_db(db.size());
  fuse::gate_forward_cpu(g, x.data(), y.data(), a.data(), b.data(), c_out.data(), c_m.data());
  fuse::gate_backward_cpu(g, go.data(), gm.data(), x.data(), y.data(), a.data(), b.data(), c_dx.data(),
                          c_dy.data(), c_da.data(), c_db.data());
  // GPU (twice, for determinism)
  Buf X(x), Y(y), A(a), Bb(b), GO(go), GM(gm), O(N), M(P), DX(N), DY(N), DA(da.size()), DB(db.size());
  std::vector<Vec> runs[6];
  for (int r = 0; r < 2; ++r) {
    int rc = fuse::gate_forward_gpu(g, X.p, Y.p, A.p, Bb.p, O.p, M.p, nullptr);
    rc |= fuse::gate_backward_gpu(g, GO.p, GM.p, X.p, Y.p, A.p, Bb.p, DX.p, DY.p, DA.p, DB.p, nullptr);
    FCK(cudaDeviceSynchronize());
    if (rc) {
      std::printf("FAIL fuse AFFGate: CUDA error %d\n", rc);
      R.failed++;
      return;
    }
    runs[0].push_back(O.get()); runs[1].push_back(M.get()); runs[2].push_back(DX.get());
    runs[3].push_back(DY.get()); runs[4].push_back(DA.get()); runs[5].push_back(DB.get());
  }
  bool det = true;
  for (auto& rr : runs) det = det && std::memcmp(rr[0].data(), rr[1].data(), rr[0].size() * sizeof(float)) == 0;
  char what[160];
  std::snprintf(what, sizeof what, "AFFGate B%d C%d %dx%d a=%s b=%s scale=%g%s", B, C, H, W, af ? "full" : "chan",
                bf ? "full" : "chan", scale, mean ? " spatial_mean" : "");
  std::vector<std::pair<const char*, double>> e = {
      {"gpu out", rel_err(runs[0][0], out)}, {"gpu dx", rel_err(runs[2][0], dx)}, {"gpu dy", rel_err(runs[3][0], dy)},
      {"gpu da", rel_err(runs[4][0], da)},   {"gpu db", rel_err(runs[5][0], db)}, {"cpu out", rel_err(c_out, out)},
      {"cpu dx", rel_err(c_dx, dx)},         {"cpu dy", rel_err(c_dy, dy)},       {"cpu da", rel_err(c_da, da)},
      {"cpu db", rel_err(c_db, db)}};
  if (mean) {
    e.push_back({"gpu mean", rel_err(runs[1][0], m)});
    e.push_back({"cpu mean", rel_err(c_m, m)});
  }
  R.line(what, e, tol, det);
}

// ------------------------------------------------------------------------------ AddMean
void add_mean_case(Report& R, std::mt19937& rng, int B, int C, int H, int W, double tol) {
  const int64_t planes = int64_t(B) * C, hw = int64_t(H) * W;
  const size_t N = size_t(planes * hw), P = size_t(planes);
  const Vec x = rnd(rng, N), y = rnd(rng, N), gz = rnd(rng, N), gm = rnd(rng, P);
  DVec z(N), m(P, 0.0), dxy(N);
  for (size_t p = 0; p < P; ++p)
    for (int64_t i = 0; i < hw; ++i) {
      const size_t k = p * hw + i;
      z[k] = double(x[k]) + double(y[k]);
      m[p] += z[k] / double(hw);
      dxy[k] = double(gz[k]) + double(gm[p]) / double(hw);
    }
  Vec cz(N), cm(P), cdx(N), cdy(N);
  fuse::add_mean_forward_cpu(planes, hw, x.data(), y.data(), cz.data(), cm.data());
  fuse::add_mean_backward_cpu(planes, hw, gz.data(), gm.data(), cdx.data(), cdy.data());
  Buf X(x), Y(y), GZ(gz), GM(gm), Z(N), M(P), DX(N), DY(N);
  std::vector<Vec> runs[4];
  for (int r = 0; r < 2; ++r) {
    int rc = fuse::add_mean_forward_gpu(planes, hw, X.p, Y.p, Z.p, M.p, nullptr);
    rc |= fuse::add_mean_backward_gpu(planes, hw, GZ.p, GM.p, DX.p, DY.p, nullptr);
    FCK(cudaDeviceSynchronize());
    if (rc) {
      std::printf("FAIL fuse AddMean: CUDA error %d\n", rc);
      R.failed++;
      return;
    }
    runs[0].push_back(Z.get()); runs[1].push_back(M.get()); runs[2].push_back(DX.get()); runs[3].push_back(DY.get());
  }
  bool det = true;
  for (auto& rr : runs) det = det && std::memcmp(rr[0].data(), rr[1].data(), rr[0].size() * sizeof(float)) == 0;
  char what[96];
  std::snprintf(what, sizeof what, "AddMean B%d C%d %dx%d", B, C, H, W);
  R.line(what, {{"gpu z", rel_err(runs[0][0], z)}, {"gpu mean", rel_err(runs[1][0], m)},
                {"gpu dx", rel_err(runs[2][0], dxy)}, {"gpu dy", rel_err(runs[3][0], dxy)},
                {"cpu z", rel_err(cz, z)}, {"cpu mean", rel_err(cm, m)}, {"cpu dx", rel_err(cdx, dxy)},
                {"cpu dy", rel_err(cdy, dxy)}}, tol, det);
}

// ------------------------------------------------------------------------------ UpsampleAdd
void upadd_case(Report& R, std::mt19937& rng, int B, int C, int h, int w, int H, int W, int s, bool relu,
                double tol) {
  fuse::UpGeom g;
  g.planes = int64_t(B) * C;
  g.h = h; g.w = w; g.H = H; g.W = W; g.s = s; g.relu = relu;
  const size_t NB = size_t(g.planes) * h * w, NL = size_t(g.planes) * H * W;
  const Vec big = rnd(rng, NB), little = rnd(rng, NL), go = rnd(rng, NL);
  DVec out(NL), dl(NL), dbig(NB, 0.0);
  for (int64_t p = 0; p < g.planes; ++p)
    for (int i = 0; i < H; ++i)
      for (int j = 0; j < W; ++j) {
        const size_t k = (size_t(p) * H + i) * W + j, kb = (size_t(p) * h + i / s) * w + j / s;
        double u = double(little[k]) + double(big[kb]);
        if (relu) u = std::max(u, 0.0);
        out[k] = u;
        const double gg = relu && !(u > 0) ? 0.0 : double(go[k]);
        dl[k] = gg;
        dbig[kb] += gg;
      }
  Vec co(NL), cdb(NB), cdl(NL);
  fuse::upadd_forward_cpu(g, big.data(), little.data(), co.data());
  fuse::upadd_backward_cpu(g, go.data(), co.data(), cdb.data(), cdl.data());
  Buf BG(big), LT(little), GO(go), O(NL), DB(NB), DL(NL);
  std::vector<Vec> runs[3];
  for (int r = 0; r < 2; ++r) {
    int rc = fuse::upadd_forward_gpu(g, BG.p, LT.p, O.p, nullptr);
    rc |= fuse::upadd_backward_gpu(g, GO.p, O.p, DB.p, DL.p, nullptr);
    FCK(cudaDeviceSynchronize());
    if (rc) {
      std::printf("FAIL fuse UpsampleAdd: CUDA error %d\n", rc);
      R.failed++;
      return;
    }
    runs[0].push_back(O.get()); runs[1].push_back(DB.get()); runs[2].push_back(DL.get());
  }
  bool det = true;
  for (auto& rr : runs) det = det && std::memcmp(rr[0].data(), rr[1].data(), rr[0].size() * sizeof(float)) == 0;
  char what[128];
  std::snprintf(what, sizeof what, "UpsampleAdd B%d C%d big %dx%d little %dx%d scale=%d%s", B, C, h, w, H, W, s,
                relu ? " relu" : "");
  R.line(what, {{"gpu out", rel_err(runs[0][0], out)}, {"gpu dbig", rel_err(runs[1][0], dbig)},
                {"gpu dlittle", rel_err(runs[2][0], dl)}, {"cpu out", rel_err(co, out)},
                {"cpu dbig", rel_err(cdb, dbig)}, {"cpu dlittle", rel_err(cdl, dl)}}, tol, det);
}

// ------------------------------------------------------------------------------ PlainBatchNorm
void bn_case(Report& R, std::mt19937& rng, int B, int C, int H, int W, bool train, bool global_stats, bool fix_gamma,
             double tol) {
  fuse::BNGeom g;
  g.B = B; g.C = C; g.hw = int64_t(H) * W; g.eps = 1e-3f; g.momentum = 0.8f; g.fix_gamma = fix_gamma;
  g.train = !global_stats;
  g.global_stats = global_stats;
  const size_t N = size_t(B) * C * H * W;
  Vec x = rnd(rng, N, -3.f, 5.f);
  const Vec gy = rnd(rng, N), gamma = rnd(rng, C, -1.5f, 1.5f), beta = rnd(rng, C), mm0 = rnd(rng, C, -1.f, 1.f),
            mv0 = rnd(rng, C, 0.5f, 2.f), mode = {train ? 0.f : 1.f};
  const bool batch = train && !global_stats;
  // reference (double)
  const int64_t M = int64_t(B) * g.hw;
  DVec out(N), mean(C), invstd(C), mm(C), mv(C), dx(N), dg(C), db(C);
  for (int c = 0; c < C; ++c) {
    double m = 0, v = 0;
    for (int b = 0; b < B; ++b)
      for (int64_t i = 0; i < g.hw; ++i) m += x[(size_t(b) * C + c) * g.hw + i];
    m /= double(M);
    for (int b = 0; b < B; ++b)
      for (int64_t i = 0; i < g.hw; ++i) v += std::pow(x[(size_t(b) * C + c) * g.hw + i] - m, 2);
    v /= double(M);
    mm[c] = batch ? mm0[c] * 0.8 + m * 0.2 : mm0[c];
    mv[c] = batch ? mv0[c] * 0.8 + v * 0.2 : mv0[c];
    const double mu = batch ? m : mm0[c], var = batch ? v : mv0[c], is = 1.0 / std::sqrt(var + double(g.eps));
    const double k = (fix_gamma ? 1.0 : gamma[c]) * is;
    mean[c] = mu;
    invstd[c] = is;
    double sdy = 0, sdyx = 0;
    for (int b = 0; b < B; ++b)
      for (int64_t i = 0; i < g.hw; ++i) {
        const size_t q = (size_t(b) * C + c) * g.hw + i;
        out[q] = (x[q] - mu) * k + beta[c];
        sdy += gy[q];
        sdyx += gy[q] * (x[q] - mu) * is;
      }
    db[c] = sdy;
    dg[c] = fix_gamma ? 0.0 : sdyx;
    for (int b = 0; b < B; ++b)
      for (int64_t i = 0; i < g.hw; ++i) {
        const size_t q = (size_t(b) * C + c) * g.hw + i;
        dx[q] = global_stats ? gy[q] * k : k * (gy[q] - sdy / M - (x[q] - mu) * is * sdyx / M);
      }
  }
  // CPU
  fuse::BNGeom gc = g;
  gc.train = batch;
  Vec cmm = mm0, cmv = mv0, co(N), cmean(C), cis(C), cdx(N), cdg(C), cdb(C);
  fuse::bn_forward_cpu(gc, x.data(), gamma.data(), beta.data(), cmm.data(), cmv.data(), co.data(), cmean.data(),
                       cis.data());
  fuse::bn_backward_cpu(gc, gy.data(), x.data(), gamma.data(), cmean.data(), cis.data(), cdx.data(), cdg.data(),
                        cdb.data());
  // GPU (twice from the same moving statistics, for determinism)
  std::vector<Vec> runs[8];
  for (int r = 0; r < 2; ++r) {
    Buf X(x), GY(gy), GA(gamma), BE(beta), MM(mm0), MV(mv0), MO(mode), O(N), ME(C), IS(C), DX(N), DG(C), DB(C);
    int rc = fuse::bn_forward_gpu(g, MO.p, X.p, GA.p, BE.p, MM.p, MV.p, O.p, ME.p, IS.p, nullptr);
    rc |= fuse::bn_backward_gpu(g, MO.p, GY.p, X.p, GA.p, ME.p, IS.p, DX.p, DG.p, DB.p, nullptr);
    FCK(cudaDeviceSynchronize());
    if (rc) {
      std::printf("FAIL fuse PlainBatchNorm: CUDA error %d\n", rc);
      R.failed++;
      return;
    }
    runs[0].push_back(O.get()); runs[1].push_back(ME.get()); runs[2].push_back(IS.get());
    runs[3].push_back(MM.get()); runs[4].push_back(MV.get()); runs[5].push_back(DX.get());
    runs[6].push_back(DG.get()); runs[7].push_back(DB.get());
  }
  bool det = true;
  for (auto& rr : runs) det = det && std::memcmp(rr[0].data(), rr[1].data(), rr[0].size() * sizeof(float)) == 0;
  char what[160];
  std::snprintf(what, sizeof what, "PlainBatchNorm B%d C%d %dx%d %s%s%s", B, C, H, W, train ? "train" : "infer",
                global_stats ? " use_global_stats" : "", fix_gamma ? " fix_gamma" : "");
  R.line(what, {{"gpu out", rel_err(runs[0][0], out)}, {"gpu mean", rel_err(runs[1][0], mean)},
                {"gpu invstd", rel_err(runs[2][0], invstd)}, {"gpu moving_mean", rel_err(runs[3][0], mm)},
                {"gpu moving_var", rel_err(runs[4][0], mv)}, {"gpu dx", rel_err(runs[5][0], dx)},
                {"gpu dgamma", rel_err(runs[6][0], dg)}, {"gpu dbeta", rel_err(runs[7][0], db)},
                {"cpu out", rel_err(co, out)}, {"cpu mean", rel_err(cmean, mean)}, {"cpu invstd", rel_err(cis, invstd)},
                {"cpu moving_mean", rel_err(cmm, mm)}, {"cpu moving_var", rel_err(cmv, mv)},
                {"cpu dx", rel_err(cdx, dx)}, {"cpu dgamma", rel_err(cdg, dg)}, {"cpu dbeta", rel_err(cdb, db)}},
         tol, det);
}

// GPU time of forward + backward (median of reps) and the bytes they move.
template <class F>
void time_gpu(const char* name, double bytes, int reps, F run) {
  cudaEvent_t e0, e1;
  FCK(cudaEventCreate(&e0));
  FCK(cudaEventCreate(&e1));
  std::vector<float> t;
  for (int r = 0; r < reps + 3; ++r) {
    FCK(cudaEventRecord(e0, nullptr));
    run();
    FCK(cudaEventRecord(e1, nullptr));
    FCK(cudaEventSynchronize(e1));
    float ms;
    FCK(cudaEventElapsedTime(&ms, e0, e1));
    if (r >= 3) t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  const double ms = t[t.size() / 2];
  std::printf("bench fuse %-34s forward+backward %.3f ms (%.0f GB/s)\n", name, ms, bytes / (ms * 1e-3) / 1e9);
  std::fflush(stdout);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

void bench(int reps) {
  {  // AFF gate, CIFAR stage 1 at batch 128: local (full) + global (per-channel) logits
    fuse::GateGeom g;
    g.planes = 128 * 64; g.hw = 32 * 32; g.a_full = true; g.b_full = false; g.scale = 2.f;
    const size_t N = size_t(g.planes * g.hw), P = size_t(g.planes);
    Buf x(N), y(N), a(N), b(P), o(N), go(N), dx(N), dy(N), da(N), db(P);
    FCK(cudaMemset(x.p, 0, N * 4)); FCK(cudaMemset(y.p, 0, N * 4)); FCK(cudaMemset(a.p, 0, N * 4));
    FCK(cudaMemset(b.p, 0, P * 4)); FCK(cudaMemset(go.p, 0, N * 4));
    time_gpu("AFFGate (128,64,32,32)", 4.0 * N * (4 + 7), reps, [&] {
      fuse::gate_forward_gpu(g, x.p, y.p, a.p, b.p, o.p, nullptr, nullptr);
      fuse::gate_backward_gpu(g, go.p, nullptr, x.p, y.p, a.p, b.p, dx.p, dy.p, da.p, db.p, nullptr);
    });
  }
  {  // bL-Net layer1 merge at batch 64
    fuse::UpGeom g;
    g.planes = 64 * 256; g.h = 28; g.w = 28; g.H = 56; g.W = 56; g.s = 2; g.relu = true;
    const size_t NB = size_t(g.planes) * 28 * 28, NL = size_t(g.planes) * 56 * 56;
    Buf big(NB), little(NL), o(NL), go(NL), db(NB), dl(NL);
    FCK(cudaMemset(big.p, 0, NB * 4)); FCK(cudaMemset(little.p, 0, NL * 4)); FCK(cudaMemset(go.p, 0, NL * 4));
    time_gpu("UpsampleAdd (64,256,28->56) relu", 4.0 * (NB + 2 * NL + 3 * NL + NB), reps, [&] {
      fuse::upadd_forward_gpu(g, big.p, little.p, o.p, nullptr);
      fuse::upadd_backward_gpu(g, go.p, o.p, db.p, dl.p, nullptr);
    });
  }
}

}  // namespace

// Runs every fused-operator case; adds to *passed / *failed.
void fuse_harness_run(unsigned seed, double tol, bool do_bench, int reps, int* passed, int* failed) {
  Report R;
  std::mt19937 rng(seed ^ 0x5eedu);
  // AFFGate: every logit layout, with and without the spatial mean, AFF's factor 2; one plane
  // larger than a GPU block (323 > 256 values) and a 1x1 map.
  for (int v = 0; v < 8; ++v)
    gate_case(R, rng, 2, 3, 5, 7, v & 1, v & 2, v & 4, v & 1 ? 2.f : 1.f, tol);
  gate_case(R, rng, 2, 3, 17, 19, true, false, true, 2.f, tol);
  gate_case(R, rng, 3, 4, 1, 1, true, false, false, 1.f, tol);
  auto ri = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int k = 0; k < 4; ++k)
    gate_case(R, rng, ri(1, 3), ri(1, 6), ri(1, 9), ri(1, 9), ri(0, 1), ri(0, 1), ri(0, 1), ri(0, 1) ? 2.f : 1.f,
              tol);
  // AddMean
  add_mean_case(R, rng, 2, 3, 5, 7, tol);
  add_mean_case(R, rng, 1, 2, 16, 20, tol);
  add_mean_case(R, rng, 3, 2, 1, 1, tol);
  // UpsampleAdd: exact doubling, odd (cropped) sizes, factors 1 and 3, a Little map much smaller than
  // the upsampled Big one (Big rows/columns with no gradient), ReLU on and off.
  upadd_case(R, rng, 2, 3, 4, 5, 8, 10, 2, true, tol);
  upadd_case(R, rng, 2, 3, 4, 5, 7, 9, 2, true, tol);
  upadd_case(R, rng, 1, 2, 4, 4, 7, 8, 2, false, tol);
  upadd_case(R, rng, 2, 2, 3, 3, 3, 3, 1, true, tol);
  upadd_case(R, rng, 1, 3, 3, 4, 7, 12, 3, false, tol);
  upadd_case(R, rng, 2, 2, 5, 6, 3, 4, 2, true, tol);
  upadd_case(R, rng, 1, 1, 1, 1, 1, 2, 2, true, tol);
  // PlainBatchNorm: training, inference (MXNet's training-formula data gradient), use_global_stats,
  // fix_gamma, a channel larger than a GPU block (2 x 17 x 19 = 646 values)
  bn_case(R, rng, 3, 4, 5, 6, true, false, false, tol);
  bn_case(R, rng, 3, 4, 5, 6, false, false, false, tol);
  bn_case(R, rng, 2, 3, 4, 4, true, true, false, tol);
  bn_case(R, rng, 2, 3, 4, 4, true, false, true, tol);
  bn_case(R, rng, 2, 5, 17, 19, true, false, false, tol);
  bn_case(R, rng, 1, 2, 1, 1, false, true, true, tol);
  if (do_bench) bench(reps);
  *passed += R.passed;
  *failed += R.failed;
}
