// Factorized Bilinear (FB) layer: shared geometry and the CPU/GPU compute entry points.
//
// Maths (docs/reference/fbn.md §1.2, "FBN" ICCV 2017): for every output position s (im2col patch x_s in R^K,
// K = C*kh*kw) and output channel j with factors v_{j,f} in R^K and per-factor path scale s_f
// (the DropFactor mask, docs/reference/fbn.md §2):
//     y[s,j] = sum_f s_f * ( (v_{jf} . x_s)^2 - sum_k v_{jfk}^2 x_{sk}^2 ) + bias_j
// i.e. the pairwise terms sum_{k!=l} <w_k, w_l> x_k x_l with no 1/2 factor.
//
// Layout used by every kernel (S-major, so all three big GEMMs run at the best rate):
//   X  (S, K)   im2col of the input, s = (b, oh, ow), k = (c, i, j)
//   V  (NF, K)  weight (N, F, C, kh, kw) viewed as rows jf = j*F + f
//   T  (S, NF)  T[s, jf] = v_jf . x_s
//   Cs (N, K)   Cs[j,k] = sum_f s_f v_jfk^2
// Forward:  y[s,j] = sum_f s_f T[s,jf]^2 - (X.^2 Cs^T)[s,j] + b_j
// Backward: dT[s,jf] = 2 s_f g[s,j] T[s,jf]
//           dV = dT^T X - 2 (s_f v_jfk) * E[j,k],         E = g^T (X.^2)          (N, K)
//           dX = dT V   - 2 X .* (g Cs)                   ("exact", the default)
//           dX = dT V   - 2 (g Cs)                        ("reference": the original code's
//                                                          data gradient, missing the factor x)
//           db = sum_s g
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fbop {

struct Geom {
  int B = 0, C = 0, H = 0, W = 0;       // input (B, C, H, W)
  int N = 0, F = 0;                     // num_filter, num_factor
  int kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  int OH = 0, OW = 0;                   // output spatial size (as a convolution)

  int64_t K() const { return int64_t(C) * kh * kw; }
  int64_t NF() const { return int64_t(N) * F; }
  int64_t P() const { return int64_t(OH) * OW; }      // positions per image
  bool is_pointwise() const {                           // 1x1, stride 1, pad 0: X is a transpose
    return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
  }
  // Fills OH/OW; returns false when the output would be empty (the dilated kernel is larger
  // than the padded input). Computed in 64 bits; fbop_lib.cc has already checked that the
  // padded input fits an int.
  bool finish() {
    const int64_t eh = int64_t(dh) * (kh - 1) + 1, ew = int64_t(dw) * (kw - 1) + 1;
    const int64_t ph2 = int64_t(H) + 2 * int64_t(ph), pw2 = int64_t(W) + 2 * int64_t(pw);
    if (eh > ph2 || ew > pw2) {
      OH = OW = 0;
      return false;
    }
    OH = int((ph2 - eh) / sh + 1);
    OW = int((pw2 - ew) / sw + 1);
    return true;
  }
};

enum GradMode { kGradExact = 0, kGradReference = 1 };

// ---------------------------------------------------------------- CPU (fbop_cpu.cc)
// Uninitialised, 64-byte aligned float scratch. Memory comes from and goes back to a small
// process-wide pool: imperative calls (mx.nd, Gluon without static_alloc) create a new operator
// state per call, and allocating (zeroing, page-faulting) ~100 MB each time cost as much as the
// GEMMs. The pool keeps at most a few idle buffers.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { release(); }
  // At least n floats; contents are kept only when keep is true (then a copy if it must grow).
  float* ensure(size_t n, bool keep);
  void release();  // back to the pool

 private:
  float* p_ = nullptr;
  size_t cap_ = 0;
};

// Scratch kept between calls and, for FMConvolution3 (`cache_t`), the forward's X and T reused by
// the backward.
struct CpuState {
  bool cache_t = false;        // FMConvolution3: always whole batch in one chunk, keep T
  size_t budget_bytes = 512u << 20;  // FMConvolution1: scratch budget (the `workspace` attribute
                                     // capped by the memory limit); whole-batch caching only
                                     // while it fits, else chunks
  Scratch buf;                 // scratch (and cache) storage
  bool cache_valid = false;    // X and T of the last forward are in buf
  const float* cache_x = nullptr;  // identity of the cached input (sanity check)
  size_t peak_bytes = 0;       // largest scratch used by one call (reported by the benchmark)
};

// Scratch bytes the CPU implementation takes for one forward+backward call, in double precision
// so that absurd shapes cannot overflow: `batched` (FMConvolution3) keeps the whole batch,
// S*(4K + N*F + 2N) + 3*N*K floats with S = B*OH*OW; otherwise (FMConvolution1) the chunk plan
// within `budget_bytes`, at least one image and one output, P*(4K + F + N + 1) + K + 2*N*K floats.
// fbop_lib.cc refuses calls above the memory limit with this estimate on every device.
double cpu_scratch_bytes(const Geom& g, bool batched, size_t budget_bytes);

// scale: F path scales already resolved from the DropFactor mask and mode (see fbop_lib.cc).
// gx / gv / gbias may be null (not computed).
void cpu_forward(const Geom& g, const float* x, const float* v, const float* bias,
                 const float* scale, float* y, CpuState* st);
void cpu_backward(const Geom& g, int grad_mode, const float* gy, const float* x, const float* v,
                  const float* scale, float* gx, float* gv, float* gbias, CpuState* st);

// Row-major single-precision GEMM, C = alpha op(A) op(B) + beta C (oneDNN or OpenBLAS).
void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
const char* gemm_backend();

// ---------------------------------------------------------------- GPU (fbop_gpu.cu)
// Same maths on device pointers (x, v, bias, scale, y, gy, gx, gv, gbias all on the device);
// `ws` is device scratch of at least gpu_workspace_bytes(g, images_per_chunk) bytes and the work
// is split into chunks of `images_per_chunk` images. gx/gv/gbias may be null. Everything runs
// on `stream` (a cudaStream_t). Return 0 on success, the cudaError_t code otherwise.
size_t gpu_workspace_bytes(const Geom& g, int images_per_chunk);
int gpu_forward(const Geom& g, const float* x, const float* v, const float* bias,
                const float* scale, float* y, void* ws, size_t ws_bytes, int images_per_chunk,
                void* stream);
int gpu_backward(const Geom& g, int grad_mode, const float* gy, const float* x, const float* v,
                 const float* scale, float* gx, float* gv, float* gbias, void* ws,
                 size_t ws_bytes, int images_per_chunk, void* stream);
// Resolve the F path scales on the device from the Dropout mask (see resolve_scale in fbop_lib.cc).
int gpu_resolve_scale(const float* mask, int F, float p, int mode, float* scale, void* stream);

}  // namespace fbop
