// MXNet 1.9.1 lib_api registration of the fused element-wise operators (maths: fuse.h):
//
//   AFFGate(x, y, a, b; scale=1, spatial_mean=False) -> out [, mean]
//       out = scale * (y + sigmoid(a + b) * (x - y)); a, b each (B,C,H,W) or (B,C,1,1);
//       spatial_mean adds the (B,C,1,1) mean of out over H x W as a second output.
//   AddMean(x, y) -> z, mean                 z = x + y, mean = its (B,C,1,1) mean over H x W
//   UpsampleAdd(big, little; scale=2, relu=False) -> out
//       out = [ReLU](little + nearest_upsample(big, scale) cropped to little's H x W)
//   PlainBatchNorm(data, gamma, beta, moving_mean, moving_var, mode; eps=1e-5, momentum=0.9,
//                  fix_gamma=False, use_global_stats=False) -> out, mean, invstd
//       MXNet's BatchNorm (axis 1) for plain-layout inputs; moving_mean / moving_var are mutable
//       (auxiliary) inputs, updated in the training forward. lib_api gives operators no
//       train/inference flag: `mode` is a one-element input that is exactly 1 in inference (MXNet's
//       Dropout on ones(1), built by mxrepro.models.fused; 0 or 2 in training). mean / invstd are
//       the statistics used (batch or moving), for the backward.
//
// Stateless operators (forward and backward per context). Every input and output is float32 and
// 4-D (NCHW, contiguous); shapes are checked at shape inference and again at run time, and every
// error names the operator.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "fuse.h"
#include "mxnet/lib_api.h"

#ifdef FBOP_WITH_CUDA
#include <cuda_runtime.h>
#endif

using namespace mxnet::ext;

namespace {

using Attrs = std::unordered_map<std::string, std::string>;
using Shape = std::vector<int64_t>;

constexpr unsigned kUnknownDim = 0xFFFFFFFFu;  // MXNet's unknown dimension (-1 as unsigned)

// ------------------------------------------------------------------------------ attribute parsing
bool parse_bool(const std::string& s, bool* out) {
  if (s == "True" || s == "true" || s == "1") { *out = true; return true; }
  if (s == "False" || s == "false" || s == "0") { *out = false; return true; }
  return false;
}

bool parse_float(const std::string& s, float* out) {
  const char* b = s.c_str();
  char* e = nullptr;
  const double v = std::strtod(b, &e);
  if (e == b) return false;
  while (*e == ' ') ++e;
  if (*e != '\0' || !std::isfinite(v)) return false;
  *out = float(v);
  return true;
}

bool parse_int(const std::string& s, long* out) {
  const char* b = s.c_str();
  while (*b == ' ') ++b;
  char* e = nullptr;
  const long v = std::strtol(b, &e, 10);
  if (e == b) return false;
  while (*e == ' ') ++e;
  if (*e != '\0') return false;
  *out = v;
  return true;
}

struct GateParams {
  float scale = 1.f;
  bool spatial_mean = false;
};

struct UpParams {
  int scale = 2;
  bool relu = false;
};

struct BNParams {
  float eps = 1e-5f;
  float momentum = 0.9f;
  bool fix_gamma = false;
  bool use_global_stats = false;
};

bool internal(const std::string& k) { return k.rfind("__", 0) == 0; }  // __profiler_scope__ ...

bool parse(const Attrs& attrs, const char* op, GateParams* P) {
  for (const auto& kv : attrs) {
    if (internal(kv.first)) continue;
    bool ok;
    if (kv.first == "scale") ok = parse_float(kv.second, &P->scale);
    else if (kv.first == "spatial_mean") ok = parse_bool(kv.second, &P->spatial_mean);
    else {
      MX_ERROR_MSG << op << ": unknown attribute '" << kv.first << "' (known: scale, spatial_mean)";
      return false;
    }
    if (!ok) {
      MX_ERROR_MSG << op << ": cannot parse attribute " << kv.first << "='" << kv.second
                   << "' (scale: a finite number; spatial_mean: True or False)";
      return false;
    }
  }
  return true;
}

bool parse(const Attrs& attrs, const char* op, UpParams* P) {
  for (const auto& kv : attrs) {
    if (internal(kv.first)) continue;
    bool ok;
    if (kv.first == "scale") {
      long v = 0;
      ok = parse_int(kv.second, &v);
      if (ok && (v < 1 || v > 64)) {
        MX_ERROR_MSG << op << ": scale (the integer upsampling factor) must be in [1, 64], got " << kv.second;
        return false;
      }
      P->scale = int(v);
    } else if (kv.first == "relu") {
      ok = parse_bool(kv.second, &P->relu);
    } else {
      MX_ERROR_MSG << op << ": unknown attribute '" << kv.first << "' (known: scale, relu)";
      return false;
    }
    if (!ok) {
      MX_ERROR_MSG << op << ": cannot parse attribute " << kv.first << "='" << kv.second
                   << "' (scale: an integer; relu: True or False)";
      return false;
    }
  }
  return true;
}

bool parse(const Attrs& attrs, const char* op, BNParams* P) {
  for (const auto& kv : attrs) {
    if (internal(kv.first)) continue;
    bool ok;
    if (kv.first == "eps") {
      ok = parse_float(kv.second, &P->eps);
      if (ok && !(P->eps > 0.f)) {
        MX_ERROR_MSG << op << ": eps must be > 0, got " << kv.second;
        return false;
      }
    } else if (kv.first == "momentum") {
      ok = parse_float(kv.second, &P->momentum);
      if (ok && !(P->momentum >= 0.f && P->momentum <= 1.f)) {
        MX_ERROR_MSG << op << ": momentum must be in [0, 1], got " << kv.second;
        return false;
      }
    } else if (kv.first == "fix_gamma") {
      ok = parse_bool(kv.second, &P->fix_gamma);
    } else if (kv.first == "use_global_stats") {
      ok = parse_bool(kv.second, &P->use_global_stats);
    } else {
      MX_ERROR_MSG << op << ": unknown attribute '" << kv.first
                   << "' (known: eps, momentum, fix_gamma, use_global_stats)";
      return false;
    }
    if (!ok) {
      MX_ERROR_MSG << op << ": cannot parse attribute " << kv.first << "='" << kv.second
                   << "' (eps, momentum: numbers; fix_gamma, use_global_stats: True or False)";
      return false;
    }
  }
  return true;
}

bool parse(const Attrs& attrs, const char* op, int*) {  // AddMean: no attributes
  for (const auto& kv : attrs) {
    if (internal(kv.first)) continue;
    MX_ERROR_MSG << op << ": unknown attribute '" << kv.first << "' (the operator has none)";
    return false;
  }
  return true;
}

// ------------------------------------------------------------------------------ shapes
std::string str(const Shape& s) {
  std::ostringstream o;
  o << "(";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << (s.size() == 1 ? ",)" : ")");
  return o.str();
}

Shape per_channel(const Shape& s) { return {s[0], s[1], 1, 1}; }

bool check_4d(const char* op, const char* name, const Shape& s) {
  if (s.size() != 4) {
    MX_ERROR_MSG << op << ": input '" << name << "' must be 4-D (batch, channel, height, width), got "
                 << s.size() << "-D " << str(s);
    return false;
  }
  for (int64_t d : s)
    if (d <= 0) {
      MX_ERROR_MSG << op << ": input '" << name << "' has an empty dimension " << str(s);
      return false;
    }
  return true;
}

// AFFGate: x and y equal; a and b each x's shape (full) or (B, C, 1, 1) (per channel).
bool gate_geom(const char* op, const GateParams& P, const std::vector<Shape>& in, fuse::GateGeom* g) {
  const char* names[] = {"x", "y", "a", "b"};
  for (int i = 0; i < 4; ++i)
    if (!check_4d(op, names[i], in[i])) return false;
  if (in[1] != in[0]) {
    MX_ERROR_MSG << op << ": x " << str(in[0]) << " and y " << str(in[1]) << " must have the same shape";
    return false;
  }
  bool full[2];
  for (int i = 2; i < 4; ++i) {
    full[i - 2] = in[i] == in[0];
    if (!full[i - 2] && in[i] != per_channel(in[0])) {
      MX_ERROR_MSG << op << ": logit '" << names[i] << "' has shape " << str(in[i]) << "; it must be x's shape "
                   << str(in[0]) << " or per-channel " << str(per_channel(in[0]));
      return false;
    }
  }
  g->planes = in[0][0] * in[0][1];
  g->hw = in[0][2] * in[0][3];
  g->a_full = full[0];
  g->b_full = full[1];
  g->scale = P.scale;
  g->with_mean = P.spatial_mean;
  return true;
}

bool add_mean_geom(const char* op, const std::vector<Shape>& in, int64_t* planes, int64_t* hw) {
  if (!check_4d(op, "x", in[0]) || !check_4d(op, "y", in[1])) return false;
  if (in[1] != in[0]) {
    MX_ERROR_MSG << op << ": x " << str(in[0]) << " and y " << str(in[1]) << " must have the same shape";
    return false;
  }
  *planes = in[0][0] * in[0][1];
  *hw = in[0][2] * in[0][3];
  return true;
}

bool up_geom(const char* op, const UpParams& P, const std::vector<Shape>& in, fuse::UpGeom* g) {
  if (!check_4d(op, "big", in[0]) || !check_4d(op, "little", in[1])) return false;
  const Shape& b = in[0];
  const Shape& l = in[1];
  if (b[0] != l[0] || b[1] != l[1]) {
    MX_ERROR_MSG << op << ": big " << str(b) << " and little " << str(l)
                 << " must have the same batch size and channels";
    return false;
  }
  if (b[2] * P.scale < l[2] || b[3] * P.scale < l[3]) {
    MX_ERROR_MSG << op << ": big " << str(b) << " upsampled x" << P.scale << " is " << b[2] * P.scale << "x"
                 << b[3] * P.scale << ", smaller than little " << str(l) << " (it is cropped to little's size, "
                 << "never padded)";
    return false;
  }
  if (b[2] > (int64_t(1) << 30) || b[3] > (int64_t(1) << 30) || l[2] > (int64_t(1) << 30) ||
      l[3] > (int64_t(1) << 30)) {
    MX_ERROR_MSG << op << ": spatial sizes must be below 2^30";
    return false;
  }
  g->planes = l[0] * l[1];
  g->h = int(b[2]);
  g->w = int(b[3]);
  g->H = int(l[2]);
  g->W = int(l[3]);
  g->s = P.scale;
  g->relu = P.relu;
  return true;
}

const char* kBNInputs[] = {"data", "gamma", "beta", "moving_mean", "moving_var", "mode"};

// PlainBatchNorm: data 4-D; gamma, beta, moving_mean, moving_var (C,); mode (1,).
bool bn_geom(const char* op, const BNParams& P, const std::vector<Shape>& in, fuse::BNGeom* g) {
  if (!check_4d(op, "data", in[0])) return false;
  const Shape chan = {in[0][1]};
  for (int i = 1; i < 5; ++i)
    if (in[i] != chan) {
      MX_ERROR_MSG << op << ": input '" << kBNInputs[i] << "' has shape " << str(in[i]) << " but data "
                   << str(in[0]) << " has " << in[0][1] << " channels (axis 1): it must be " << str(chan);
      return false;
    }
  if (in[5] != Shape{1}) {
    MX_ERROR_MSG << op << ": input 'mode' must have shape (1,), got " << str(in[5]);
    return false;
  }
  g->B = in[0][0];
  g->C = in[0][1];
  g->hw = in[0][2] * in[0][3];
  g->eps = P.eps;
  g->momentum = P.momentum;
  g->fix_gamma = P.fix_gamma;
  g->train = !P.use_global_stats;
  g->global_stats = P.use_global_stats;
  return true;
}

// ------------------------------------------------------------------------------ per-op traits
struct GateOp {
  using Params = GateParams;
  static int num_in(const Params&) { return 4; }
  static int num_out(const Params& P) { return P.spatial_mean ? 2 : 1; }
  static const char* input_name(int i) {
    static const char* n[] = {"x", "y", "a", "b"};
    return n[i];
  }
  static bool out_shapes(const char* op, const Params& P, const std::vector<Shape>& in, std::vector<Shape>* out) {
    fuse::GateGeom g;
    if (!gate_geom(op, P, in, &g)) return false;
    *out = {in[0]};
    if (P.spatial_mean) out->push_back(per_channel(in[0]));
    return true;
  }
};

struct AddMeanOp {
  using Params = int;
  static int num_in(const Params&) { return 2; }
  static int num_out(const Params&) { return 2; }
  static const char* input_name(int i) { return i ? "y" : "x"; }
  static bool out_shapes(const char* op, const Params&, const std::vector<Shape>& in, std::vector<Shape>* out) {
    int64_t planes, hw;
    if (!add_mean_geom(op, in, &planes, &hw)) return false;
    *out = {in[0], per_channel(in[0])};
    return true;
  }
};

struct UpOp {
  using Params = UpParams;
  static int num_in(const Params&) { return 2; }
  static int num_out(const Params&) { return 1; }
  static const char* input_name(int i) { return i ? "little" : "big"; }
  static bool out_shapes(const char* op, const Params& P, const std::vector<Shape>& in, std::vector<Shape>* out) {
    fuse::UpGeom g;
    if (!up_geom(op, P, in, &g)) return false;
    *out = {in[1]};
    return true;
  }
};

struct BNOp {
  using Params = BNParams;
  static int num_in(const Params&) { return 6; }
  static int num_out(const Params&) { return 3; }
  static const char* input_name(int i) { return kBNInputs[i]; }
};

// ------------------------------------------------------------------------------ generic callbacks
template <class Op, const char* NAME>
MXReturnValue parseAttrs(const Attrs& attrs, int* num_in, int* num_out) {
  typename Op::Params P{};
  if (!parse(attrs, NAME, &P)) return MX_FAIL;
  *num_in = Op::num_in(P);
  *num_out = Op::num_out(P);
  return MX_SUCCESS;
}

template <class Op, const char* NAME>
MXReturnValue inferType(const Attrs& attrs, std::vector<int>* in_types, std::vector<int>* out_types) {
  typename Op::Params P{};
  if (!parse(attrs, NAME, &P)) return MX_FAIL;
  for (size_t i = 0; i < in_types->size(); ++i) {
    const int t = (*in_types)[i];
    if (t != -1 && t != kFloat32) {
      MX_ERROR_MSG << NAME << ": input '" << Op::input_name(int(i)) << "' has dtype code " << t
                   << "; only float32 is supported (cast with astype('float32'))";
      return MX_FAIL;
    }
  }
  for (auto& t : *in_types) t = kFloat32;
  for (auto& t : *out_types) t = kFloat32;
  return MX_SUCCESS;
}

template <class Op, const char* NAME>
MXReturnValue inferShape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                         std::vector<std::vector<unsigned int>>* out_shapes) {
  typename Op::Params P{};
  if (!parse(attrs, NAME, &P)) return MX_FAIL;
  std::vector<Shape> in;
  for (const auto& s : *in_shapes) {
    if (s.empty()) return MX_SUCCESS;  // not known yet (partial inference)
    for (unsigned d : s)
      if (d == 0 || d == kUnknownDim) return MX_SUCCESS;
    in.emplace_back(s.begin(), s.end());
  }
  std::vector<Shape> out;
  if (!Op::out_shapes(NAME, P, in, &out)) return MX_FAIL;
  for (size_t i = 0; i < out.size(); ++i) (*out_shapes)[i].assign(out[i].begin(), out[i].end());
  return MX_SUCCESS;
}

// PlainBatchNorm: the parameter shapes follow from data (deferred initialisation), as BatchNorm's.
MXReturnValue bnInferShape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                           std::vector<std::vector<unsigned int>>* out_shapes);

MXReturnValue bnMutateInputs(const Attrs& attrs, std::vector<int>* input_indices);

bool check_float(const char* op, const std::vector<MXTensor>& t, const char* what) {
  for (const auto& x : t)
    if (x.dtype != kFloat32) {
      MX_ERROR_MSG << op << ": only float32 " << what << " are supported";
      return false;
    }
  return true;
}

std::vector<Shape> shapes_of(const std::vector<MXTensor>& t, size_t from, size_t n) {
  std::vector<Shape> s;
  for (size_t i = from; i < from + n; ++i) s.push_back(t[i].shape);
  return s;
}

bool on_gpu(const std::vector<MXTensor>& t) { return !t.empty() && t[0].ctx.dev_type == "gpu"; }

#ifdef FBOP_WITH_CUDA
MXReturnValue cuda_result(const char* op, int rc) {
  if (!rc) return MX_SUCCESS;
  MX_ERROR_MSG << op << ": CUDA error " << rc << " (" << cudaGetErrorString(cudaError_t(rc)) << ")";
  return MX_FAIL;
}
#define FUSE_GPU_CALL(op, call) return cuda_result(op, call)
#else
#define FUSE_GPU_CALL(op, call)                                                       \
  do {                                                                                \
    MX_ERROR_MSG << op << ": this library was built without CUDA (make -C operators gpu)"; \
    return MX_FAIL;                                                                   \
  } while (0)
#endif

float* f(MXTensor& t) { return t.data<float>(); }

// ------------------------------------------------------------------------------ AFFGate
char kGate[] = "AFFGate";

MXReturnValue gateForward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                          const OpResource& res) {
  GateParams P;
  if (!parse(attrs, kGate, &P)) return MX_FAIL;
  auto& in = *inputs;
  auto& out = *outputs;
  fuse::GateGeom g;
  if (!check_float(kGate, in, "inputs") || !gate_geom(kGate, P, shapes_of(in, 0, 4), &g)) return MX_FAIL;
  float* mean = P.spatial_mean ? f(out[1]) : nullptr;
  if (on_gpu(in))
    FUSE_GPU_CALL(kGate, fuse::gate_forward_gpu(g, f(in[0]), f(in[1]), f(in[2]), f(in[3]), f(out[0]), mean,
                                                res.get_cuda_stream()));
  fuse::gate_forward_cpu(g, f(in[0]), f(in[1]), f(in[2]), f(in[3]), f(out[0]), mean);
  return MX_SUCCESS;
}

// inputs: g_out, [g_mean], x, y, a, b, out, [mean]; outputs: dx, dy, da, db
MXReturnValue gateBackward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                           const OpResource& res) {
  GateParams P;
  if (!parse(attrs, kGate, &P)) return MX_FAIL;
  auto& in = *inputs;
  auto& out = *outputs;
  const size_t nout = P.spatial_mean ? 2 : 1;
  fuse::GateGeom g;
  if (!check_float(kGate, in, "inputs") || !gate_geom(kGate, P, shapes_of(in, nout, 4), &g)) return MX_FAIL;
  const float* gm = P.spatial_mean ? f(in[1]) : nullptr;
  MXTensor* X = &in[nout];
  if (on_gpu(in))
    FUSE_GPU_CALL(kGate, fuse::gate_backward_gpu(g, f(in[0]), gm, f(X[0]), f(X[1]), f(X[2]), f(X[3]), f(out[0]),
                                                 f(out[1]), f(out[2]), f(out[3]), res.get_cuda_stream()));
  fuse::gate_backward_cpu(g, f(in[0]), gm, f(X[0]), f(X[1]), f(X[2]), f(X[3]), f(out[0]), f(out[1]), f(out[2]),
                          f(out[3]));
  return MX_SUCCESS;
}

// ------------------------------------------------------------------------------ AddMean
char kAddMean[] = "AddMean";

MXReturnValue addMeanForward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                             const OpResource& res) {
  int P = 0;
  if (!parse(attrs, kAddMean, &P)) return MX_FAIL;
  auto& in = *inputs;
  auto& out = *outputs;
  int64_t planes, hw;
  if (!check_float(kAddMean, in, "inputs") || !add_mean_geom(kAddMean, shapes_of(in, 0, 2), &planes, &hw))
    return MX_FAIL;
  if (on_gpu(in))
    FUSE_GPU_CALL(kAddMean, fuse::add_mean_forward_gpu(planes, hw, f(in[0]), f(in[1]), f(out[0]), f(out[1]),
                                                       res.get_cuda_stream()));
  fuse::add_mean_forward_cpu(planes, hw, f(in[0]), f(in[1]), f(out[0]), f(out[1]));
  return MX_SUCCESS;
}

// inputs: g_z, g_mean, x, y, z, mean; outputs: dx, dy
MXReturnValue addMeanBackward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                              const OpResource& res) {
  int P = 0;
  if (!parse(attrs, kAddMean, &P)) return MX_FAIL;
  auto& in = *inputs;
  auto& out = *outputs;
  int64_t planes, hw;
  if (!check_float(kAddMean, in, "inputs") || !add_mean_geom(kAddMean, shapes_of(in, 2, 2), &planes, &hw))
    return MX_FAIL;
  if (on_gpu(in))
    FUSE_GPU_CALL(kAddMean, fuse::add_mean_backward_gpu(planes, hw, f(in[0]), f(in[1]), f(out[0]), f(out[1]),
                                                        res.get_cuda_stream()));
  fuse::add_mean_backward_cpu(planes, hw, f(in[0]), f(in[1]), f(out[0]), f(out[1]));
  return MX_SUCCESS;
}

// ------------------------------------------------------------------------------ UpsampleAdd
char kUp[] = "UpsampleAdd";

MXReturnValue upForward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                        const OpResource& res) {
  UpParams P;
  if (!parse(attrs, kUp, &P)) return MX_FAIL;
  auto& in = *inputs;
  auto& out = *outputs;
  fuse::UpGeom g;
  if (!check_float(kUp, in, "inputs") || !up_geom(kUp, P, shapes_of(in, 0, 2), &g)) return MX_FAIL;
  if (on_gpu(in))
    FUSE_GPU_CALL(kUp, fuse::upadd_forward_gpu(g, f(in[0]), f(in[1]), f(out[0]), res.get_cuda_stream()));
  fuse::upadd_forward_cpu(g, f(in[0]), f(in[1]), f(out[0]));
  return MX_SUCCESS;
}

// inputs: g_out, big, little, out; outputs: dbig, dlittle
MXReturnValue upBackward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                         const OpResource& res) {
  UpParams P;
  if (!parse(attrs, kUp, &P)) return MX_FAIL;
  auto& in = *inputs;
  auto& out = *outputs;
  fuse::UpGeom g;
  if (!check_float(kUp, in, "inputs") || !up_geom(kUp, P, shapes_of(in, 1, 2), &g)) return MX_FAIL;
  if (on_gpu(in))
    FUSE_GPU_CALL(kUp, fuse::upadd_backward_gpu(g, f(in[0]), f(in[3]), f(out[0]), f(out[1]), res.get_cuda_stream()));
  fuse::upadd_backward_cpu(g, f(in[0]), f(in[3]), f(out[0]), f(out[1]));
  return MX_SUCCESS;
}

}  // namespace

#ifdef FBOP_WITH_CUDA
#define FUSE_REGISTER_GPU(fwd, bwd) .setForward(fwd, "gpu").setBackward(bwd, "gpu")
#else
#define FUSE_REGISTER_GPU(fwd, bwd)
#endif

REGISTER_OP(AFFGate)
    .setParseAttrs(parseAttrs<GateOp, kGate>)
    .setInferType(inferType<GateOp, kGate>)
    .setInferShape(inferShape<GateOp, kGate>)
    .setForward(gateForward, "cpu")
    .setBackward(gateBackward, "cpu") FUSE_REGISTER_GPU(gateForward, gateBackward);

REGISTER_OP(AddMean)
    .setParseAttrs(parseAttrs<AddMeanOp, kAddMean>)
    .setInferType(inferType<AddMeanOp, kAddMean>)
    .setInferShape(inferShape<AddMeanOp, kAddMean>)
    .setForward(addMeanForward, "cpu")
    .setBackward(addMeanBackward, "cpu") FUSE_REGISTER_GPU(addMeanForward, addMeanBackward);

REGISTER_OP(UpsampleAdd)
    .setParseAttrs(parseAttrs<UpOp, kUp>)
    .setInferType(inferType<UpOp, kUp>)
    .setInferShape(inferShape<UpOp, kUp>)
    .setForward(upForward, "cpu")
    .setBackward(upBackward, "cpu") FUSE_REGISTER_GPU(upForward, upBackward);

namespace {

char kBN[] = "PlainBatchNorm";

bool known(const std::vector<unsigned int>& s) {
  if (s.empty()) return false;
  for (unsigned d : s)
    if (d == 0 || d == kUnknownDim) return false;
  return true;
}

MXReturnValue bnInferShape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                           std::vector<std::vector<unsigned int>>* out_shapes) {
  BNParams P;
  if (!parse(attrs, kBN, &P)) return MX_FAIL;
  auto& in = *in_shapes;
  if (!known(in[0])) return MX_SUCCESS;  // data not known yet (partial inference)
  if (in[0].size() != 4) {
    MX_ERROR_MSG << kBN << ": input 'data' must be 4-D (batch, channel, height, width), got " << in[0].size() << "-D";
    return MX_FAIL;
  }
  const unsigned C = in[0][1];
  for (int i = 1; i < 5; ++i)
    if (!known(in[i])) in[i] = {C};
  if (!known(in[5])) in[5] = {1};
  std::vector<Shape> sh;
  for (const auto& s : in) sh.emplace_back(s.begin(), s.end());
  fuse::BNGeom g;
  if (!bn_geom(kBN, P, sh, &g)) return MX_FAIL;
  (*out_shapes)[0] = in[0];
  (*out_shapes)[1] = {C};
  (*out_shapes)[2] = {C};
  return MX_SUCCESS;
}

MXReturnValue bnMutateInputs(const Attrs& attrs, std::vector<int>* input_indices) {
  input_indices->push_back(3);  // moving_mean
  input_indices->push_back(4);  // moving_var
  return MX_SUCCESS;
}

// inputs: data, gamma, beta, moving_mean, moving_var, mode; outputs: out, mean, invstd
MXReturnValue bnForward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                        const OpResource& res) {
  BNParams P;
  if (!parse(attrs, kBN, &P)) return MX_FAIL;
  auto& in = *inputs;
  auto& out = *outputs;
  fuse::BNGeom g;
  if (!check_float(kBN, in, "inputs") || !bn_geom(kBN, P, shapes_of(in, 0, 6), &g)) return MX_FAIL;
  if (on_gpu(in))
    FUSE_GPU_CALL(kBN, fuse::bn_forward_gpu(g, f(in[5]), f(in[0]), f(in[1]), f(in[2]), f(in[3]), f(in[4]),
                                            f(out[0]), f(out[1]), f(out[2]), res.get_cuda_stream()));
  g.train = g.train && f(in[5])[0] != 1.f;
  fuse::bn_forward_cpu(g, f(in[0]), f(in[1]), f(in[2]), f(in[3]), f(in[4]), f(out[0]), f(out[1]), f(out[2]));
  return MX_SUCCESS;
}

// inputs: g_out, g_mean, g_invstd, data, gamma, beta, moving_mean, moving_var, mode, out, mean, invstd;
// outputs: ddata, dgamma, dbeta, and the gradient slots of moving_mean, moving_var and mode, left
// unwritten: the first two are auxiliary states and mode a constant behind BlockGrad; nothing reads
// them.
MXReturnValue bnBackward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                         const OpResource& res) {
  BNParams P;
  if (!parse(attrs, kBN, &P)) return MX_FAIL;
  auto& in = *inputs;
  auto& out = *outputs;
  fuse::BNGeom g;
  if (!check_float(kBN, in, "inputs") || !bn_geom(kBN, P, shapes_of(in, 3, 6), &g)) return MX_FAIL;
  if (on_gpu(in)) {
#ifdef FBOP_WITH_CUDA
    cudaStream_t st = static_cast<cudaStream_t>(res.get_cuda_stream());
    return cuda_result(kBN, fuse::bn_backward_gpu(g, f(in[8]), f(in[0]), f(in[3]), f(in[4]), f(in[10]),
                                                  f(in[11]), f(out[0]), f(out[1]), f(out[2]), st));
#else
    FUSE_GPU_CALL(kBN, 0);
#endif
  }
  g.train = g.train && f(in[8])[0] != 1.f;
  fuse::bn_backward_cpu(g, f(in[0]), f(in[3]), f(in[4]), f(in[10]), f(in[11]), f(out[0]), f(out[1]), f(out[2]));
  return MX_SUCCESS;
}

}  // namespace

REGISTER_OP(PlainBatchNorm)
    .setParseAttrs(parseAttrs<BNOp, kBN>)
    .setInferType(inferType<BNOp, kBN>)
    .setInferShape(bnInferShape)
    .setMutateInputs(bnMutateInputs)
    .setForward(bnForward, "cpu")
    .setBackward(bnBackward, "cpu") FUSE_REGISTER_GPU(bnForward, bnBackward);
