// MXNet 1.9.1 external operator library (lib_api.h): FMConvolution1 and FMConvolution3.
//
// Inputs: data (B,C,H,W), weight (N,F,C,kh,kw), [bias (N) unless no_bias], mask (F).
// `mask` is the output of MXNet's own Dropout on ones(F) (built by mxrepro/ops.py): lib_api passes
// no train/inference flag to operators, but Dropout knows the mode. In training it holds
// {0, 1/(1-p)}, in inference exactly 1. resolve_scale turns it into per-factor path scales
// according to `dropfactor_mode` (fbn.md section 2):
//   inverted  (default) train: mask          inference: 1      (E[train] == inference)
//   reference            train: mask          inference: 1-p    (the released code)
//   paper                train: mask*(1-p)    inference: 1-p    (Fig. 1 of the paper)
// `grad_mode`: exact (default) or reference (the original's data gradient, fbn.md 1.4).
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "fbop.h"
#include "mxnet/lib_api.h"

#ifdef FBOP_WITH_CUDA
#include <cuda_runtime.h>
#endif

using namespace mxnet::ext;

namespace {

enum ScaleMode { kInverted = 0, kReference = 1, kPaper = 2 };

struct Params {
  std::string op;
  int N = 0, F = 1;
  int kh = 0, kw = 0, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  bool no_bias = false;
  float p = 0.5f;
  int workspace_mb = 512;
  int scale_mode = kInverted;
  int grad_mode = fbop::kGradExact;
  int num_inputs() const { return no_bias ? 3 : 4; }
  int mask_index() const { return no_bias ? 2 : 3; }
};

bool parse_int(const std::string& s, long* out) {
  const char* b = s.c_str();
  while (*b == ' ') ++b;
  char* e = nullptr;
  long v = std::strtol(b, &e, 10);
  if (e == b) return false;
  while (*e == ' ') ++e;
  if (*e != '\0') return false;
  *out = v;
  return true;
}

// "(1, 1)", "[1,1]", "(1,)", "1" -> two ints (a scalar is used for both).
bool parse_pair(const std::string& s, int* a, int* b) {
  std::string t;
  for (char c : s)
    if (c != '(' && c != ')' && c != '[' && c != ']' && c != ' ') t += c;
  if (!t.empty() && t.back() == ',') t.pop_back();
  std::vector<long> vals;
  std::stringstream ss(t);
  std::string item;
  while (std::getline(ss, item, ',')) {
    long v;
    if (!parse_int(item, &v)) return false;
    vals.push_back(v);
  }
  if (vals.size() == 1) vals.push_back(vals[0]);
  if (vals.size() != 2) return false;
  *a = int(vals[0]);
  *b = int(vals[1]);
  return true;
}

bool parse_bool(const std::string& s, bool* out) {
  if (s == "True" || s == "true" || s == "1") { *out = true; return true; }
  if (s == "False" || s == "false" || s == "0") { *out = false; return true; }
  return false;
}

bool parse_float(const std::string& s, float* out) {
  const char* b = s.c_str();
  char* e = nullptr;
  double v = std::strtod(b, &e);
  if (e == b) return false;
  while (*e == ' ') ++e;
  if (*e != '\0' || !std::isfinite(v)) return false;
  *out = float(v);
  return true;
}

// Parses and validates every attribute; on failure writes an MXNet error naming the operator.
bool parse_params(const std::unordered_map<std::string, std::string>& attrs, const char* op,
                  Params* P) {
  P->op = op;
  bool has_filter = false, has_kernel = false;
  for (const auto& kv : attrs) {
    const std::string& k = kv.first;
    const std::string& v = kv.second;
    if (k.rfind("__", 0) == 0) continue;  // MXNet-internal (__ext_dtype__, __profiler_scope__...)
    long iv = 0;
    bool ok = true;
    if (k == "num_filter") {
      ok = parse_int(v, &iv);
      if (ok && (iv < 1 || iv > 1000000)) {
        MX_ERROR_MSG << op << ": num_filter must be >= 1, got " << v;
        return false;
      }
      P->N = int(iv);
      has_filter = true;
    } else if (k == "num_factor") {
      ok = parse_int(v, &iv);
      if (ok && (iv < 1 || iv > 100000)) {
        MX_ERROR_MSG << op << ": num_factor must be >= 1, got " << v;
        return false;
      }
      P->F = int(iv);
    } else if (k == "kernel") {
      ok = parse_pair(v, &P->kh, &P->kw) && P->kh >= 1 && P->kw >= 1;
      has_kernel = true;
    } else if (k == "stride") {
      ok = parse_pair(v, &P->sh, &P->sw) && P->sh >= 1 && P->sw >= 1;
    } else if (k == "pad") {
      ok = parse_pair(v, &P->ph, &P->pw) && P->ph >= 0 && P->pw >= 0;
    } else if (k == "dilate") {
      ok = parse_pair(v, &P->dh, &P->dw) && P->dh >= 1 && P->dw >= 1;
    } else if (k == "no_bias") {
      ok = parse_bool(v, &P->no_bias);
    } else if (k == "p") {
      ok = parse_float(v, &P->p);
      if (ok && !(P->p >= 0.f && P->p < 1.f)) {
        MX_ERROR_MSG << op << ": p (the DropFactor drop rate) must be in [0, 1), got " << v;
        return false;
      }
    } else if (k == "workspace") {
      ok = parse_int(v, &iv) && iv >= 1 && iv <= (1 << 20);
      P->workspace_mb = int(iv);
    } else if (k == "num_group") {
      ok = parse_int(v, &iv);
      if (ok && iv != 1) {
        MX_ERROR_MSG << op << ": num_group must be 1 (grouped FB layers are not implemented), got " << v;
        return false;
      }
    } else if (k == "eps") {  // declared but unused in the original (fbn.md 1.1)
      float f;
      ok = parse_float(v, &f);
    } else if (k == "dropfactor_mode") {
      if (v == "inverted") P->scale_mode = kInverted;
      else if (v == "reference") P->scale_mode = kReference;
      else if (v == "paper") P->scale_mode = kPaper;
      else {
        MX_ERROR_MSG << op << ": dropfactor_mode must be 'inverted', 'reference' or 'paper', got '" << v << "'";
        return false;
      }
    } else if (k == "grad_mode") {
      if (v == "exact") P->grad_mode = fbop::kGradExact;
      else if (v == "reference") P->grad_mode = fbop::kGradReference;
      else {
        MX_ERROR_MSG << op << ": grad_mode must be 'exact' or 'reference', got '" << v << "'";
        return false;
      }
    } else {
      MX_ERROR_MSG << op << ": unknown attribute '" << k << "' (known: num_filter, num_factor, kernel, "
                   << "stride, pad, dilate, no_bias, p, workspace, num_group, eps, dropfactor_mode, grad_mode)";
      return false;
    }
    if (!ok) {
      MX_ERROR_MSG << op << ": cannot parse attribute " << k << "='" << v << "'";
      return false;
    }
  }
  if (!has_filter) {
    MX_ERROR_MSG << op << ": the attribute num_filter is required";
    return false;
  }
  if (!has_kernel) {
    MX_ERROR_MSG << op << ": the attribute kernel is required, e.g. kernel=(1,1)";
    return false;
  }
  return true;
}

bool make_geom(const Params& P, const std::vector<int64_t>& dshape, fbop::Geom* g) {
  g->B = int(dshape[0]); g->C = int(dshape[1]); g->H = int(dshape[2]); g->W = int(dshape[3]);
  g->N = P.N; g->F = P.F;
  g->kh = P.kh; g->kw = P.kw; g->sh = P.sh; g->sw = P.sw;
  g->ph = P.ph; g->pw = P.pw; g->dh = P.dh; g->dw = P.dw;
  return g->finish();
}

// Per-factor path scales from the Dropout mask (see the file comment).
void resolve_scale(const Params& P, const float* mask, std::vector<float>* scale) {
  scale->assign(P.F, 1.f);
  if (P.p == 0.f) return;
  bool inference = true;
  for (int f = 0; f < P.F; ++f) inference = inference && mask[f] == 1.f;
  const float q = 1.f - P.p;
  for (int f = 0; f < P.F; ++f) {
    switch (P.scale_mode) {
      case kInverted: (*scale)[f] = inference ? 1.f : mask[f]; break;
      case kReference: (*scale)[f] = inference ? q : mask[f]; break;
      default: (*scale)[f] = inference ? q : mask[f] * q; break;
    }
  }
}

#define FB_PARSE(op)                                      \
  Params P;                                               \
  if (!parse_params(attrs, op, &P)) return MX_FAIL;

template <const char* OP>
MXReturnValue parseAttrs(const std::unordered_map<std::string, std::string>& attrs, int* num_in,
                         int* num_out) {
  FB_PARSE(OP);
  *num_in = P.num_inputs();
  *num_out = 1;
  return MX_SUCCESS;
}

// MXNet passes unknown dimensions of partially known shapes as -1 (as unsigned) or 0.
constexpr unsigned kUnknownDim = 0xFFFFFFFFu;

const char* kInputNames[] = {"data", "weight", "bias", "mask"};

template <const char* OP>
MXReturnValue inferType(const std::unordered_map<std::string, std::string>& attrs,
                        std::vector<int>* in_types, std::vector<int>* out_types) {
  FB_PARSE(OP);
  int known = -1;
  for (int t : *in_types)
    if (t != -1) { known = t; break; }
  if (known == -1 && !out_types->empty()) known = (*out_types)[0];
  if (known == -1) return MX_SUCCESS;  // nothing known yet (partial inference)
  for (size_t i = 0; i < in_types->size(); ++i) {
    int t = (*in_types)[i];
    if (t != -1 && t != kFloat32) {
      MX_ERROR_MSG << OP << ": input '" << (i < 4 ? kInputNames[P.no_bias && i >= 2 ? i + 1 : i] : "?")
                   << "' has dtype code " << t << "; only float32 is supported (cast with astype('float32'))";
      return MX_FAIL;
    }
  }
  for (auto& t : *in_types) t = kFloat32;
  (*out_types)[0] = kFloat32;
  return MX_SUCCESS;
}

template <const char* OP>
MXReturnValue inferShape(const std::unordered_map<std::string, std::string>& attrs,
                         std::vector<std::vector<unsigned int>>* in_shapes,
                         std::vector<std::vector<unsigned int>>* out_shapes) {
  FB_PARSE(OP);
  const auto& ds = (*in_shapes)[0];
  if (ds.empty()) return MX_SUCCESS;  // data shape not known yet (partial inference)
  if (ds.size() != 4) {
    MX_ERROR_MSG << OP << ": data must be 4-D (batch, channel, height, width), got " << ds.size() << "-D";
    return MX_FAIL;
  }
  for (unsigned d : ds)
    if (d == 0 || d == kUnknownDim) return MX_SUCCESS;  // unknown dimension
  fbop::Geom g;
  if (!make_geom(P, std::vector<int64_t>(ds.begin(), ds.end()), &g)) {
    MX_ERROR_MSG << OP << ": kernel " << P.kh << "x" << P.kw << " (dilate " << P.dh << "x" << P.dw
                 << ", pad " << P.ph << "x" << P.pw << ") does not fit the " << ds[2] << "x" << ds[3]
                 << " input";
    return MX_FAIL;
  }
  std::vector<std::vector<unsigned int>> want = {
      {unsigned(P.N), unsigned(P.F), ds[1], unsigned(P.kh), unsigned(P.kw)}};
  if (!P.no_bias) want.push_back({unsigned(P.N)});
  want.push_back({unsigned(P.F)});
  const char* names[] = {"weight", P.no_bias ? "mask" : "bias", "mask"};
  for (size_t i = 0; i < want.size(); ++i) {
    auto& have = (*in_shapes)[i + 1];
    bool known = !have.empty();
    for (unsigned d : have) known = known && d != 0 && d != kUnknownDim;
    if (known && have != want[i]) {
      std::ostringstream a, b;
      for (unsigned d : have) a << d << ",";
      for (unsigned d : want[i]) b << d << ",";
      MX_ERROR_MSG << OP << ": " << names[i] << " has shape (" << a.str() << ") but data with "
                   << ds[1] << " channels, num_filter=" << P.N << ", num_factor=" << P.F
                   << " and kernel " << P.kh << "x" << P.kw << " needs (" << b.str() << ")";
      return MX_FAIL;
    }
    have = want[i];
  }
  (*out_shapes)[0] = {ds[0], unsigned(P.N), unsigned(g.OH), unsigned(g.OW)};
  return MX_SUCCESS;
}

bool check_runtime(const Params& P, const std::vector<MXTensor>& in, fbop::Geom* g) {
  for (size_t i = 0; i < in.size(); ++i)
    if (in[i].dtype != kFloat32) {
      MX_ERROR_MSG << P.op << ": only float32 inputs are supported";
      return false;
    }
  if (in[0].shape.size() != 4) {
    MX_ERROR_MSG << P.op << ": data must be 4-D (batch, channel, height, width), got "
                 << in[0].shape.size() << "-D";
    return false;
  }
  if (!make_geom(P, in[0].shape, g)) {
    MX_ERROR_MSG << P.op << ": kernel does not fit the input";
    return false;
  }
  const auto& ws = in[1].shape;
  if (ws.size() != 5 || ws[0] != P.N || ws[1] != P.F || ws[2] != g->C || ws[3] != P.kh || ws[4] != P.kw) {
    MX_ERROR_MSG << P.op << ": weight must have shape (num_filter, num_factor, channels, kh, kw) = ("
                 << P.N << ", " << P.F << ", " << g->C << ", " << P.kh << ", " << P.kw << ")";
    return false;
  }
  if (!P.no_bias && (in[2].shape.size() != 1 || in[2].shape[0] != P.N)) {
    MX_ERROR_MSG << P.op << ": bias must have shape (" << P.N << ",)";
    return false;
  }
  const auto& ms = in[P.mask_index()].shape;
  if (ms.size() != 1 || ms[0] != P.F) {
    MX_ERROR_MSG << P.op << ": mask must have shape (" << P.F << ",)";
    return false;
  }
  return true;
}

// Last call's scratch peak, for tools/bench_fbop.py (read through ctypes).
size_t g_last_peak_bytes = 0;

class FBOpCPU : public CustomStatefulOp {
 public:
  FBOpCPU(const Params& P, bool cache_t) : P_(P) {
    st_.cache_t = cache_t;
    st_.budget_bytes = size_t(P.workspace_mb) << 20;
  }
  MXReturnValue Forward(std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                        const OpResource& res) override {
    auto& in = *inputs;
    fbop::Geom g;
    if (!check_runtime(P_, in, &g)) return MX_FAIL;
    std::vector<float> scale;
    resolve_scale(P_, in[P_.mask_index()].data<float>(), &scale);
    st_.peak_bytes = 0;
    fbop::cpu_forward(g, in[0].data<float>(), in[1].data<float>(),
                      P_.no_bias ? nullptr : in[2].data<float>(), scale.data(),
                      (*outputs)[0].data<float>(), &st_);
    g_last_peak_bytes = st_.peak_bytes;
    return MX_SUCCESS;
  }
  // inputs: [out_grad, data, weight, (bias), mask, output]; outputs: grads of data, weight, (bias), mask
  MXReturnValue Backward(std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                         const OpResource& res) override {
    auto& in = *inputs;
    auto& out = *outputs;
    std::vector<MXTensor> fwd_in(in.begin() + 1, in.begin() + 1 + P_.num_inputs());
    fbop::Geom g;
    if (!check_runtime(P_, fwd_in, &g)) return MX_FAIL;
    std::vector<float> scale;
    resolve_scale(P_, fwd_in[P_.mask_index()].data<float>(), &scale);
    st_.peak_bytes = 0;
    fbop::cpu_backward(g, P_.grad_mode, in[0].data<float>(), fwd_in[0].data<float>(),
                       fwd_in[1].data<float>(), scale.data(), out[0].data<float>(),
                       out[1].data<float>(), P_.no_bias ? nullptr : out[2].data<float>(), &st_);
    float* gm = out[P_.mask_index()].data<float>();  // the mask is a constant: zero gradient
    std::memset(gm, 0, sizeof(float) * P_.F);
    g_last_peak_bytes = st_.peak_bytes;
    return MX_SUCCESS;
  }

 private:
  Params P_;
  fbop::CpuState st_;
};

#ifdef FBOP_WITH_CUDA
class FBOpGPU : public CustomStatefulOp {
 public:
  explicit FBOpGPU(const Params& P) : P_(P) {}
  int chunk(const fbop::Geom& g) const {
    const size_t budget = size_t(P_.workspace_mb) << 20;
    int nb = g.B;
    while (nb > 1 && fbop::gpu_workspace_bytes(g, nb) > budget) nb = (nb + 1) / 2;
    return nb;
  }
  MXReturnValue Forward(std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                        const OpResource& res) override {
    auto& in = *inputs;
    fbop::Geom g;
    if (!check_runtime(P_, in, &g)) return MX_FAIL;
    const int nb = chunk(g);
    const size_t wsb = fbop::gpu_workspace_bytes(g, nb) + sizeof(float) * P_.F;
    void* ws = res.alloc_gpu(int(wsb));
    float* scale = reinterpret_cast<float*>(static_cast<char*>(ws) + fbop::gpu_workspace_bytes(g, nb));
    void* stream = res.get_cuda_stream();
    int rc = fbop::gpu_resolve_scale(in[P_.mask_index()].data<float>(), P_.F, P_.p, P_.scale_mode, scale, stream);
    if (!rc)
      rc = fbop::gpu_forward(g, in[0].data<float>(), in[1].data<float>(),
                             P_.no_bias ? nullptr : in[2].data<float>(), scale,
                             (*outputs)[0].data<float>(), ws, wsb, nb, stream);
    if (rc) {
      MX_ERROR_MSG << P_.op << ": CUDA error " << rc << " (" << cudaGetErrorString(cudaError_t(rc)) << ")";
      return MX_FAIL;
    }
    return MX_SUCCESS;
  }
  MXReturnValue Backward(std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                         const OpResource& res) override {
    auto& in = *inputs;
    auto& out = *outputs;
    std::vector<MXTensor> fwd_in(in.begin() + 1, in.begin() + 1 + P_.num_inputs());
    fbop::Geom g;
    if (!check_runtime(P_, fwd_in, &g)) return MX_FAIL;
    const int nb = chunk(g);
    const size_t wsb = fbop::gpu_workspace_bytes(g, nb) + sizeof(float) * P_.F;
    void* ws = res.alloc_gpu(int(wsb));
    float* scale = reinterpret_cast<float*>(static_cast<char*>(ws) + fbop::gpu_workspace_bytes(g, nb));
    void* stream = res.get_cuda_stream();
    int rc = fbop::gpu_resolve_scale(fwd_in[P_.mask_index()].data<float>(), P_.F, P_.p, P_.scale_mode, scale, stream);
    if (!rc)
      rc = fbop::gpu_backward(g, P_.grad_mode, in[0].data<float>(), fwd_in[0].data<float>(),
                              fwd_in[1].data<float>(), scale, out[0].data<float>(),
                              out[1].data<float>(), P_.no_bias ? nullptr : out[2].data<float>(),
                              ws, wsb, nb, stream);
    if (!rc)
      rc = int(cudaMemsetAsync(out[P_.mask_index()].data<float>(), 0, sizeof(float) * P_.F,
                               static_cast<cudaStream_t>(stream)));
    if (rc) {
      MX_ERROR_MSG << P_.op << ": CUDA error " << rc << " (" << cudaGetErrorString(cudaError_t(rc)) << ")";
      return MX_FAIL;
    }
    return MX_SUCCESS;
  }

 private:
  Params P_;
};
#endif

template <const char* OP, bool CACHE>
MXReturnValue createStateCPU(const std::unordered_map<std::string, std::string>& attrs,
                             const MXContext& ctx,
                             const std::vector<std::vector<unsigned int>>& in_shapes,
                             const std::vector<int> in_types, CustomStatefulOp** op_inst) {
  FB_PARSE(OP);
  *op_inst = CustomStatefulOp::create<FBOpCPU>(P, CACHE);
  return MX_SUCCESS;
}

#ifdef FBOP_WITH_CUDA
template <const char* OP>
MXReturnValue createStateGPU(const std::unordered_map<std::string, std::string>& attrs,
                             const MXContext& ctx,
                             const std::vector<std::vector<unsigned int>>& in_shapes,
                             const std::vector<int> in_types, CustomStatefulOp** op_inst) {
  FB_PARSE(OP);
  *op_inst = CustomStatefulOp::create<FBOpGPU>(P);
  return MX_SUCCESS;
}
#endif

char kFM1[] = "FMConvolution1";
char kFM3[] = "FMConvolution3";

}  // namespace

REGISTER_OP(FMConvolution1)
    .setParseAttrs(parseAttrs<kFM1>)
    .setInferType(inferType<kFM1>)
    .setInferShape(inferShape<kFM1>)
#ifdef FBOP_WITH_CUDA
    .setCreateOpState(createStateGPU<kFM1>, "gpu")
#endif
    .setCreateOpState(createStateCPU<kFM1, false>, "cpu");

REGISTER_OP(FMConvolution3)
    .setParseAttrs(parseAttrs<kFM3>)
    .setInferType(inferType<kFM3>)
    .setInferShape(inferShape<kFM3>)
#ifdef FBOP_WITH_CUDA
    .setCreateOpState(createStateGPU<kFM3>, "gpu")
#endif
    .setCreateOpState(createStateCPU<kFM3, true>, "cpu");

MXReturnValue initialize(int version) {
  if (version >= 10900) return MX_SUCCESS;
  MX_ERROR_MSG << "libfbop: MXNet " << version << " is too old; this library needs MXNet >= 1.9.0";
  return MX_FAIL;
}

// Introspection for tools and tests (ctypes).
extern "C" const char* fbop_gemm_backend() { return fbop::gemm_backend(); }
extern "C" size_t fbop_last_peak_bytes() { return g_last_peak_bytes; }
extern "C" int fbop_has_cuda() {
#ifdef FBOP_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}
