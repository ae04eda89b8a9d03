// Factorized Bilinear (FB) layer: shared geometry and the CPU/GPU compute entry points.
//
// Maths (fbn.md section 1.2, "FBN" ICCV 2017): for every output position s (im2col patch x_s in R^K,
// K = C*kh*kw) and output channel j with factors v_{j,f} in R^K and per-factor path scale s_f
// (the DropFactor mask, section 2):
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

namespace fbop {

struct Geom {
  int B = 0, C = 0, H = 0, W = 0;       // input (B, C, H, W)
  int N = 0, F = 0;                     // num_filter, num_factor
  int kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  int OH = 0, OW = 0;                   // output spatial size (as a convolution)
  bool has_bias = true;

  int K() const { return C * kh * kw; }
  int NF() const { return N * F; }
  int64_t P() const { return int64_t(OH) * OW; }      // positions per image
  bool is_pointwise() const {                           // 1x1, stride 1, pad 0: X is a transpose
    return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
  }
  // Fills OH/OW; returns false when the output would be empty.
  bool finish() {
    OH = (H + 2 * ph - (dh * (kh - 1) + 1)) / sh + 1;
    OW = (W + 2 * pw - (dw * (kw - 1) + 1)) / sw + 1;
    return OH > 0 && OW > 0;
  }
};

enum GradMode { kGradExact = 0, kGradReference = 1 };

// ---------------------------------------------------------------- CPU (fbop_cpu.cc)
// scale: F path scales (already resolved from the DropFactor mask and mode).
// T cache: when `tcache` is non-null the forward stores T (S, NF) there for the backward, which then
// skips one GEMM (FMConvolution3); with a null cache the backward recomputes T chunk by chunk
// within `ws_bytes` (FMConvolution1).
struct CpuWorkspace;  // opaque

// Bytes of scratch a CPU forward/backward will use for a chunk budget of `budget_bytes`.
size_t cpu_chunk_images(const Geom& g, size_t budget_bytes, bool cache_t);

void cpu_forward(const Geom& g, const float* x, const float* v, const float* bias,
                 const float* scale, float* y, float* tcache, size_t budget_bytes);
void cpu_backward(const Geom& g, int grad_mode, const float* gy, const float* x, const float* v,
                  const float* scale, const float* tcache, float* gx, float* gv, float* gbias,
                  size_t budget_bytes);

// ---------------------------------------------------------------- GPU (fbop_gpu.cu)
// Same maths on device pointers; `ws` is device scratch of at least gpu_workspace_bytes(g).
// Return 0 on success, a CUDA error code otherwise.
size_t gpu_workspace_bytes(const Geom& g, int images_per_chunk);
int gpu_forward(const Geom& g, const float* x, const float* v, const float* bias,
                const float* scale, float* y, void* ws, size_t ws_bytes, void* stream);
int gpu_backward(const Geom& g, int grad_mode, const float* gy, const float* x, const float* v,
                 const float* scale, float* gx, float* gv, float* gbias, void* ws,
                 size_t ws_bytes, void* stream);

}  // namespace fbop
