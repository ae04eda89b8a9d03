// Fused element-wise operators for the AFF fusions and the bL-Net merge: maths and the CPU/GPU
// entry points (fuse_cpu.cc, fuse_gpu.cu; registered with MXNet in fuse_lib.cc).
//
// Every tensor is float32, NCHW and contiguous. A "plane" is one (b, c) slice of H*W values; a
// per-channel map has shape (B, C, 1, 1), one value per plane, broadcast over H x W.
//
// AFFGate (the soft selection of AFF / iAFF, docs/aff.md section 1):
//     w   = sigmoid(a + b)                 a, b: each (B,C,H,W) or per-channel (B,C,1,1)
//     out = scale * (y + w * (x - y))      = scale * (x w + y (1 - w))
//     [mean = mean over H x W of out]      (spatial_mean: iAFF's second attention pools xi)
//   backward, with g = g_out + g_mean / (H W) (g_mean absent: 0):
//     dx = scale g w,  dy = scale g (1 - w),  dlogit = scale g (x - y) w (1 - w)
//     da = dlogit (full a) or its sum over H x W (per-channel a); db likewise.
//
// AddMean (the MS-CAM input and its global average pool in one pass):
//     z = x + y,  m = mean over H x W of z          backward: dx = dy = g_z + g_m / (H W)
//
// UpsampleAdd (the bL-Net merge, docs/blnet.md: nearest upsampling of the Big map by `scale`,
// cropped to the Little map's size, plus the Little map, optionally followed by ReLU):
//     out[b,c,i,j] = act(little[b,c,i,j] + big[b,c,i/s,j/s])     (integer division; H <= s h, W <= s w)
//   backward: g' = g_out (or g_out [out > 0] with ReLU); dlittle = g';
//     dbig[b,c,p,q] = sum of g' over the cropped s x s block (i/s = p, j/s = q); 0 where it is empty.
//
// PlainBatchNorm (MXNet's BatchNorm over axis 1, for inputs in the plain NCHW layout, where
// oneDNN's BatchNorm is several times slower than on its blocked layout; docs/operators.md):
//   training:  mean_c, var_c (biased) over B x H x W; out = (x - mean) g / sqrt(var + eps) + beta
//              (g = gamma, or 1 with fix_gamma); moving = moving * momentum + batch * (1 - momentum)
//   inference: the same with the moving mean / variance, nothing updated
//   backward, M = B H W, xh = (x - mean) invstd with the statistics the forward used:
//     dbeta = sum dy, dgamma = sum dy xh (0 with fix_gamma),
//     dx = g invstd (dy - dbeta / M - xh dgamma_raw / M) with dgamma_raw = sum dy xh;
//     in inference too: MXNet's CPU BatchNorm computes its inference-mode data gradient with this
//     (training) formula and the moving statistics, and so does this one; only use_global_stats
//     gives dx = dy g invstd (in either mode), as MXNet's.
#pragma once
#include <cstdint>

namespace fuse {

struct GateGeom {
  int64_t planes = 0;   // B * C
  int64_t hw = 0;       // H * W
  bool a_full = true;   // a is (B,C,H,W) (else per-channel)
  bool b_full = false;  // b is (B,C,H,W) (else per-channel)
  float scale = 1.f;
  bool with_mean = false;
};

struct UpGeom {
  int64_t planes = 0;   // B * C
  int h = 0, w = 0;     // Big spatial size
  int H = 0, W = 0;     // Little (= output) spatial size
  int s = 2;            // nearest upsampling factor
  bool relu = false;
};

struct BNGeom {
  int64_t B = 0, C = 0, hw = 0;
  float eps = 1e-5f, momentum = 0.9f;
  bool fix_gamma = false;
  bool train = true;    // batch statistics (and moving-statistics update) or the moving ones
  bool global_stats = false;  // use_global_stats: the moving statistics, and dx = dy g invstd
};

// ---------------------------------------------------------------- CPU (fuse_cpu.cc, OpenMP)
// mean / gm may be null when with_mean is false. Outputs are written, never accumulated.
void gate_forward_cpu(const GateGeom& g, const float* x, const float* y, const float* a,
                      const float* b, float* out, float* mean);
void gate_backward_cpu(const GateGeom& g, const float* gout, const float* gmean, const float* x,
                       const float* y, const float* a, const float* b, float* dx, float* dy,
                       float* da, float* db);
void add_mean_forward_cpu(int64_t planes, int64_t hw, const float* x, const float* y, float* z,
                          float* m);
void add_mean_backward_cpu(int64_t planes, int64_t hw, const float* gz, const float* gm, float* dx,
                           float* dy);
void upadd_forward_cpu(const UpGeom& g, const float* big, const float* little, float* out);
void upadd_backward_cpu(const UpGeom& g, const float* gout, const float* out, float* dbig,
                        float* dlittle);

// mean / invstd (C each) receive the statistics used (batch or moving); in training the moving
// mean / variance mm / mv are updated in place.
void bn_forward_cpu(const BNGeom& g, const float* x, const float* gamma, const float* beta, float* mm,
                    float* mv, float* out, float* mean, float* invstd);
void bn_backward_cpu(const BNGeom& g, const float* gout, const float* x, const float* gamma,
                     const float* mean, const float* invstd, float* dx, float* dgamma, float* dbeta);

// The sigmoid both implementations use on the CPU (1 / (1 + e^-v) with a vectorisable e^x of
// about 1 ulp); exposed for the harness.
float sigmoid_ref(float v);

// ---------------------------------------------------------------- GPU (fuse_gpu.cu)
// Same maths on device pointers, launched on `stream` (a cudaStream_t). Per-plane reductions
// (means, per-channel gradients) run in a fixed order in shared memory: bitwise reproducible.
// Return 0 on success, the cudaError_t code otherwise.
int gate_forward_gpu(const GateGeom& g, const float* x, const float* y, const float* a,
                     const float* b, float* out, float* mean, void* stream);
int gate_backward_gpu(const GateGeom& g, const float* gout, const float* gmean, const float* x,
                      const float* y, const float* a, const float* b, float* dx, float* dy,
                      float* da, float* db, void* stream);
int add_mean_forward_gpu(int64_t planes, int64_t hw, const float* x, const float* y, float* z,
                         float* m, void* stream);
int add_mean_backward_gpu(int64_t planes, int64_t hw, const float* gz, const float* gm, float* dx,
                          float* dy, void* stream);
int upadd_forward_gpu(const UpGeom& g, const float* big, const float* little, float* out,
                      void* stream);
int upadd_backward_gpu(const UpGeom& g, const float* gout, const float* out, float* dbig,
                       float* dlittle, void* stream);
// PlainBatchNorm on the GPU: `mode` is the operator's one-element mode input on the device
// (inference where exactly 1), read by the kernels (no host synchronisation); g.train = false
// (use_global_stats) forces the inference path.
int bn_forward_gpu(const BNGeom& g, const float* mode, const float* x, const float* gamma,
                   const float* beta, float* mm, float* mv, float* out, float* mean, float* invstd,
                   void* stream);
int bn_backward_gpu(const BNGeom& g, const float* mode, const float* gout, const float* x,
                    const float* gamma, const float* mean, const float* invstd, float* dx,
                    float* dgamma, float* dbeta, void* stream);

}  // namespace fuse
