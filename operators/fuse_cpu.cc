// CPU implementation of the fused element-wise operators (maths: fuse.h). The kernels
// (fuse_kernels.h) are compiled three times, for baseline x86-64, AVX2+FMA and AVX-512, and the
// widest set the CPU supports is used: the library is built with -march=x86-64-v2 so that one
// build runs on every x86-64 machine, while these memory-bound loops (with a vectorised e^x in the
// sigmoid) still use the full vector width where there is one. Planes run in parallel (OpenMP).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fuse.h"

namespace fuse {

namespace isa_base {
#include "fuse_kernels.h"
}  // namespace isa_base

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FUSE_MULTI_ISA 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
#include "fuse_kernels.h"
}  // namespace isa_avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
namespace isa_avx512 {
#include "fuse_kernels.h"
}  // namespace isa_avx512
#pragma GCC pop_options
#endif

namespace {

enum Isa { kBase = 0, kAvx2 = 1, kAvx512 = 2 };

int detect_isa() {
#ifdef FUSE_MULTI_ISA
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    return kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kAvx2;
#endif
  return kBase;
}

int isa() {
  static const int v = detect_isa();
  return v;
}

}  // namespace

#ifdef FUSE_MULTI_ISA
#define FUSE_DISPATCH(fn, ...)                                   \
  do {                                                           \
    switch (isa()) {                                             \
      case kAvx512: isa_avx512::fn(__VA_ARGS__); break;          \
      case kAvx2: isa_avx2::fn(__VA_ARGS__); break;              \
      default: isa_base::fn(__VA_ARGS__); break;                 \
    }                                                            \
  } while (0)
#else
#define FUSE_DISPATCH(fn, ...) isa_base::fn(__VA_ARGS__)
#endif

void gate_forward_cpu(const GateGeom& g, const float* x, const float* y, const float* a,
                      const float* b, float* out, float* mean) {
  FUSE_DISPATCH(gate_forward, g, x, y, a, b, out, g.with_mean ? mean : nullptr);
}

void gate_backward_cpu(const GateGeom& g, const float* gout, const float* gmean, const float* x,
                       const float* y, const float* a, const float* b, float* dx, float* dy,
                       float* da, float* db) {
  FUSE_DISPATCH(gate_backward, g, gout, g.with_mean ? gmean : nullptr, x, y, a, b, dx, dy, da, db);
}

void add_mean_forward_cpu(int64_t planes, int64_t hw, const float* x, const float* y, float* z,
                          float* m) {
  FUSE_DISPATCH(add_mean_forward, planes, hw, x, y, z, m);
}

void add_mean_backward_cpu(int64_t planes, int64_t hw, const float* gz, const float* gm, float* dx,
                           float* dy) {
  FUSE_DISPATCH(add_mean_backward, planes, hw, gz, gm, dx, dy);
}

void upadd_forward_cpu(const UpGeom& g, const float* big, const float* little, float* out) {
  FUSE_DISPATCH(upadd_forward, g, big, little, out);
}

void upadd_backward_cpu(const UpGeom& g, const float* gout, const float* out, float* dbig,
                        float* dlittle) {
  FUSE_DISPATCH(upadd_backward, g, gout, out, dbig, dlittle);
}

void bn_forward_cpu(const BNGeom& g, const float* x, const float* gamma, const float* beta, float* mm,
                    float* mv, float* out, float* mean, float* invstd) {
  FUSE_DISPATCH(bn_forward, g, x, gamma, beta, mm, mv, out, mean, invstd);
}

void bn_backward_cpu(const BNGeom& g, const float* gout, const float* x, const float* gamma,
                     const float* mean, const float* invstd, float* dx, float* dgamma, float* dbeta) {
  FUSE_DISPATCH(bn_backward, g, gout, x, gamma, mean, invstd, dx, dgamma, dbeta);
}

float sigmoid_ref(float v) { return isa_base::sigmoid(v); }

}  // namespace fuse

// Which kernel set runs here (for tools and tests, through ctypes).
extern "C" const char* fuse_cpu_isa() {
  static const char* names[] = {"x86-64", "avx2", "avx512"};
  return names[fuse::isa()];
}
