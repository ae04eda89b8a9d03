// MXNet 1.9.1 external operator library (lib_api.h): FMConvolution1 and FMConvolution3.
//
// Inputs: data (B,C,H,W), weight (N,F,C,kh,kw), [bias (N) unless no_bias], mask (F).
// `mask` is the output of MXNet's own Dropout on ones(F) (built by mxrepro/ops.py): lib_api passes
// no train/inference flag to operators, but Dropout knows the mode. In training it holds
// {0, 1/(1-p)}, in inference exactly 1. resolve_scale turns it into per-factor path scales
// according to `dropfactor_mode` (docs/reference/fbn.md §2):
//   inverted  (default) train: mask          inference: 1      (E[train] == inference)
//   reference            train: mask          inference: 1-p    (the released code)
//   paper                train: mask*(1-p)    inference: 1-p    (Fig. 1 of the paper)
// `grad_mode`: exact (default) or reference (the original's data gradient, docs/reference/fbn.md §1.4).
//
// Every attribute is validated with MXNet's grammar and a stated range, shapes in the operator's
// own shape function, and FMConvolution3's batched buffers against a memory limit; each error
// names the operator and the attribute or input and is the only message of its call
// (docs/operators.md, "Input checking").
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
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

constexpr int64_t kIntMax = 2147483647;          // every size and geometry entry fits an int
constexpr int64_t kMaxTensorElems = 2147483647;  // MXNet 1.9.1 pip builds index tensors with int32
constexpr int64_t kMaxFilter = 1000000, kMaxFactor = 100000;
constexpr int64_t kMaxWorkspaceMB = 1 << 20;
constexpr int64_t kMaxMemoryLimitMB = int64_t(1) << 30;  // 1 PB; 0 = no limit
constexpr int64_t kDefaultMemoryLimitMB = 4096;
const char* kMemoryLimitEnv = "FBOP_MEMORY_LIMIT_MB";

struct Params {
  std::string op;
  int N = 0, F = 1;
  int kh = 0, kw = 0, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  bool no_bias = false;
  float p = 0.5f;
  int workspace_mb = 512;
  int64_t memory_limit_mb = -1;  // -1: not given (environment variable, else the default)
  int scale_mode = kInverted;
  int grad_mode = fbop::kGradExact;
  int num_inputs() const { return no_bias ? 3 : 4; }
  int mask_index() const { return no_bias ? 2 : 3; }
  const char* input_name(size_t i) const {
    static const char* with_bias[] = {"data", "weight", "bias", "mask"};
    static const char* without[] = {"data", "weight", "mask"};
    if (i >= size_t(num_inputs())) return "?";
    return no_bias ? without[i] : with_bias[i];
  }
};

// ---------------------------------------------------------------- error messages
// lib_api keeps every message ever added in one process-wide list and MXNet prints the whole
// list with each failure, so the first line shown would be the first error of the process.
// Each error of ours therefore starts a fresh list. The list is a private member of
// MXerrorMsgs; an explicit template instantiation may name it (access checks do not apply
// there), which gives a standard way to reach it without touching lib_api.
using MsgList = std::vector<std::stringstream*>;
MsgList& message_list(mxnet::ext::MXerrorMsgs* m);
template <MsgList mxnet::ext::MXerrorMsgs::*Member>
struct MessageListAccess {
  friend MsgList& message_list(mxnet::ext::MXerrorMsgs* m) { return m->*Member; }
};
template struct MessageListAccess<&mxnet::ext::MXerrorMsgs::messages>;

std::mutex g_error_mu;

void clear_messages() {
  std::lock_guard<std::mutex> lk(g_error_mu);
  MsgList& list = message_list(mxnet::ext::MXerrorMsgs::get());
  for (auto* m : list) delete m;
  list.clear();
}

std::stringstream& new_error(const char* file, int line) {
  clear_messages();
  std::lock_guard<std::mutex> lk(g_error_mu);
  return mxnet::ext::MXerrorMsgs::get()->add(file, line);
}
#define FB_ERROR new_error(__FILE__, __LINE__)

// The text of the current error without lib_api's "file[line]: " prefix (for fbop_parse_attrs).
std::string last_error_text() {
  std::lock_guard<std::mutex> lk(g_error_mu);
  MsgList& list = message_list(mxnet::ext::MXerrorMsgs::get());
  if (list.empty()) return "";
  std::string t = list.back()->str();
  size_t cut = t.find("]: ");
  return cut == std::string::npos ? t : t.substr(cut + 3);
}

template <class V>
std::string shape_str(const V& s) {
  std::ostringstream o;
  o << "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) o << ", ";
    if (uint64_t(s[i]) == 0xFFFFFFFFull) o << "?";
    else o << s[i];
  }
  o << (s.size() == 1 ? ",)" : ")");
  return o.str();
}

const char* dtype_name(int t) {
  switch (t) {
    case kFloat32: return "float32";
    case kFloat64: return "float64";
    case kFloat16: return "float16";
    case kUint8: return "uint8";
    case kInt32: return "int32";
    case kInt8: return "int8";
    case kInt64: return "int64";
    default: return "an unsupported type";
  }
}

// ---------------------------------------------------------------- attribute grammar
// The grammar of MXNet's own parameter parser (dmlc), kept strict: an integer is an optional
// sign and decimal digits; a pair is "(a, b)" or "[a, b]" (an optional trailing comma inside)
// or one integer used for both; a boolean is True/False/true/false/1/0; a number is a finite
// decimal float. Surrounding spaces are ignored.
std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\n"), e = s.find_last_not_of(" \t\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// Saturates at +-2^62 so that a range check reports a huge value as out of range.
bool parse_int(const std::string& raw, int64_t* out) {
  const std::string s = trim(raw);
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  if (i == s.size()) return false;
  int64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    if (v < (int64_t(1) << 58)) v = v * 10 + (s[i] - '0');
    else v = int64_t(1) << 62;
  }
  *out = neg ? -v : v;
  return true;
}

bool parse_pair(const std::string& raw, int64_t v[2], size_t* count) {
  const std::string s = trim(raw);
  *count = 0;
  if (s.empty()) return false;
  if (s[0] != '(' && s[0] != '[') {  // one integer for both entries
    if (!parse_int(s, &v[0])) return false;
    v[1] = v[0];
    *count = 2;
    return true;
  }
  const char close = s[0] == '(' ? ')' : ']';
  if (s.size() < 2 || s.back() != close) return false;
  std::string inner = trim(s.substr(1, s.size() - 2));
  if (inner.empty()) return true;  // "()": no entries
  if (inner.back() == ',') inner = trim(inner.substr(0, inner.size() - 1));  // "(1,)" is a 1-tuple
  std::vector<int64_t> vals;
  size_t b = 0;
  while (true) {
    size_t e = inner.find(',', b);
    int64_t x;
    if (!parse_int(inner.substr(b, e == std::string::npos ? std::string::npos : e - b), &x))
      return false;
    vals.push_back(x);
    if (e == std::string::npos) break;
    b = e + 1;
  }
  *count = vals.size();
  if (vals.size() == 2) { v[0] = vals[0]; v[1] = vals[1]; }
  return true;
}

bool parse_bool(const std::string& raw, bool* out) {
  const std::string s = trim(raw);
  if (s == "True" || s == "true" || s == "1") { *out = true; return true; }
  if (s == "False" || s == "false" || s == "0") { *out = false; return true; }
  return false;
}

bool parse_float(const std::string& raw, double* out) {
  const std::string s = trim(raw);
  size_t i = 0, digits = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    size_t ed = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++ed;
    if (ed == 0) return false;
  }
  if (i != s.size()) return false;
  const double v = std::strtod(s.c_str(), nullptr);
  if (!std::isfinite(v)) return false;
  *out = v;
  return true;
}

bool bad_attr(const char* op, const std::string& k, const std::string& v, const std::string& why) {
  FB_ERROR << op << ": attribute " << k << "='" << v << "' is invalid: " << why;
  return false;
}

bool int_attr(const char* op, const std::string& k, const std::string& v, int64_t lo, int64_t hi,
              const char* unit, int64_t* out) {
  int64_t x;
  if (!parse_int(v, &x) || x < lo || x > hi) {
    std::ostringstream why;
    why << "must be an integer in [" << lo << ", " << hi << "]" << unit;
    return bad_attr(op, k, v, why.str());
  }
  *out = x;
  return true;
}

bool pair_attr(const char* op, const std::string& k, const std::string& v, int64_t lo, int* a,
               int* b) {
  int64_t x[2];
  size_t n = 0;
  const char* form = " (give '(h, w)' or one integer for both)";
  if (!parse_pair(v, x, &n))
    return bad_attr(op, k, v, std::string("expected two integers") + form);
  if (n != 2) {
    std::ostringstream why;
    why << "expected 2 entries, got " << n << form;
    return bad_attr(op, k, v, why.str());
  }
  if (x[0] < lo || x[1] < lo || x[0] > kIntMax || x[1] > kIntMax) {
    std::ostringstream why;
    why << "every entry must be an integer >= " << lo;
    if (x[0] > kIntMax || x[1] > kIntMax) why << " and <= " << kIntMax;
    return bad_attr(op, k, v, why.str());
  }
  *a = int(x[0]);
  *b = int(x[1]);
  return true;
}

const char* kKnownAttrs =
    "num_filter, num_factor, kernel, stride, pad, dilate, no_bias, p, workspace, num_group, eps, "
    "dropfactor_mode, grad_mode, memory_limit_mb";

// Parses and validates every attribute; on failure writes one error naming the operator, the
// attribute, the value given and the valid range.
bool parse_params(const std::unordered_map<std::string, std::string>& attrs, const char* op,
                  Params* P) {
  P->op = op;
  bool has_filter = false, has_kernel = false;
  for (const auto& kv : attrs) {
    const std::string& k = kv.first;
    const std::string& v = kv.second;
    if (k.rfind("__", 0) == 0) continue;  // MXNet-internal (__ext_dtype__, __profiler_scope__...)
    int64_t iv = 0;
    if (k == "num_filter") {
      if (!int_attr(op, k, v, 1, kMaxFilter, "", &iv)) return false;
      P->N = int(iv);
      has_filter = true;
    } else if (k == "num_factor") {
      if (!int_attr(op, k, v, 1, kMaxFactor, "", &iv)) return false;
      P->F = int(iv);
    } else if (k == "kernel") {
      if (!pair_attr(op, k, v, 1, &P->kh, &P->kw)) return false;
      has_kernel = true;
    } else if (k == "stride") {
      if (!pair_attr(op, k, v, 1, &P->sh, &P->sw)) return false;
    } else if (k == "pad") {
      if (!pair_attr(op, k, v, 0, &P->ph, &P->pw)) return false;
    } else if (k == "dilate") {
      if (!pair_attr(op, k, v, 1, &P->dh, &P->dw)) return false;
    } else if (k == "no_bias") {
      if (!parse_bool(v, &P->no_bias))
        return bad_attr(op, k, v, "must be one of True, False, true, false, 1, 0");
    } else if (k == "p") {
      double d;
      if (!parse_float(v, &d) || !(d >= 0.0 && d < 1.0))
        return bad_attr(op, k, v, "must be a number in [0, 1) (the DropFactor drop rate)");
      P->p = float(d);
      if (P->p >= 1.f) P->p = std::nextafter(1.f, 0.f);  // 0.99999999 rounds to 1 in float
    } else if (k == "workspace") {
      if (!int_attr(op, k, v, 0, kMaxWorkspaceMB, " (MB)", &iv)) return false;
      P->workspace_mb = int(iv);
    } else if (k == "memory_limit_mb") {
      if (!int_attr(op, k, v, 0, kMaxMemoryLimitMB, " (MB; 0 = no limit)", &iv)) return false;
      P->memory_limit_mb = iv;
    } else if (k == "num_group") {
      if (!parse_int(v, &iv) || iv != 1)
        return bad_attr(op, k, v, "must be 1 (grouped FB layers are not implemented)");
    } else if (k == "eps") {  // declared but unused in the original (docs/reference/fbn.md §1.1)
      double d;
      if (!parse_float(v, &d) || d < 0)
        return bad_attr(op, k, v, "must be a finite number >= 0 (unused, as in the original)");
    } else if (k == "dropfactor_mode") {
      const std::string t = trim(v);
      if (t == "inverted") P->scale_mode = kInverted;
      else if (t == "reference") P->scale_mode = kReference;
      else if (t == "paper") P->scale_mode = kPaper;
      else return bad_attr(op, k, v, "must be one of 'inverted', 'reference', 'paper'");
    } else if (k == "grad_mode") {
      const std::string t = trim(v);
      if (t == "exact") P->grad_mode = fbop::kGradExact;
      else if (t == "reference") P->grad_mode = fbop::kGradReference;
      else return bad_attr(op, k, v, "must be one of 'exact', 'reference'");
    } else {
      FB_ERROR << op << ": unknown attribute " << k << "='" << v << "' (known: " << kKnownAttrs << ")";
      return false;
    }
  }
  if (!has_filter) {
    FB_ERROR << op << ": attribute num_filter is required (an integer in [1, " << kMaxFilter << "])";
    return false;
  }
  if (!has_kernel) {
    FB_ERROR << op << ": attribute kernel is required, e.g. kernel=(1,1)";
    return false;
  }
  return true;
}

// The memory limit of this call in MB (0 = none): the attribute, else the environment
// variable, else 4096. False (with an error) when the environment variable is malformed.
bool memory_limit_mb(const Params& P, int64_t* mb) {
  if (P.memory_limit_mb >= 0) {
    *mb = P.memory_limit_mb;
    return true;
  }
  const char* env = std::getenv(kMemoryLimitEnv);
  if (!env || !*env) {
    *mb = kDefaultMemoryLimitMB;
    return true;
  }
  int64_t v;
  if (!parse_int(env, &v) || v < 0 || v > kMaxMemoryLimitMB) {
    FB_ERROR << P.op << ": environment variable " << kMemoryLimitEnv << "='" << env
             << "' is invalid: must be an integer in [0, " << kMaxMemoryLimitMB
             << "] (MB; 0 = no limit)";
    return false;
  }
  *mb = v;
  return true;
}

// Checks the geometry of a fully known data shape and fills g. Writes an error naming the
// operator, the input and its shape when the call cannot be computed.
template <class V>
bool make_geom(const Params& P, const V& ds, fbop::Geom* g) {
  const std::string shp = shape_str(ds);
  if (ds.size() != 4) {
    FB_ERROR << P.op << ": input 'data' must be 4-D (batch, channel, height, width), got "
             << ds.size() << "-D shape " << shp;
    return false;
  }
  for (auto d : ds)
    if (int64_t(d) < 1 || int64_t(d) > kIntMax) {
      FB_ERROR << P.op << ": input 'data' has shape " << shp
               << ": every dimension must be in [1, " << kIntMax << "] (zero-size inputs are not supported)";
      return false;
    }
  const int64_t H = int64_t(ds[2]), W = int64_t(ds[3]);
  const int64_t PH = H + 2 * int64_t(P.ph), PW = W + 2 * int64_t(P.pw);
  if (PH > kIntMax || PW > kIntMax) {
    FB_ERROR << P.op << ": pad=(" << P.ph << ", " << P.pw << ") makes input 'data' of shape " << shp
             << " " << PH << "x" << PW << " once padded, above " << kIntMax;
    return false;
  }
  const int64_t EH = int64_t(P.dh) * (P.kh - 1) + 1, EW = int64_t(P.dw) * (P.kw - 1) + 1;
  if (EH > PH || EW > PW) {
    FB_ERROR << P.op << ": kernel=(" << P.kh << ", " << P.kw << ") with dilate=(" << P.dh << ", "
             << P.dw << ") spans " << EH << "x" << EW << " and does not fit input 'data' of shape "
             << shp << " padded by pad=(" << P.ph << ", " << P.pw << ") to " << PH << "x" << PW;
    return false;
  }
  g->B = int(ds[0]); g->C = int(ds[1]); g->H = int(H); g->W = int(W);
  g->N = P.N; g->F = P.F;
  g->kh = P.kh; g->kw = P.kw; g->sh = P.sh; g->sw = P.sw;
  g->ph = P.ph; g->pw = P.pw; g->dh = P.dh; g->dw = P.dw;
  g->finish();
  const double out_elems = double(g->B) * g->N * double(g->OH) * g->OW;
  if (out_elems > double(kMaxTensorElems)) {
    FB_ERROR << P.op << ": the output for input 'data' of shape " << shp << " would be ("
             << g->B << ", " << g->N << ", " << g->OH << ", " << g->OW << "), more than "
             << kMaxTensorElems << " elements (the int32 tensor size limit of MXNet 1.9.1)";
    return false;
  }
  return true;
}

// The scratch budget of FMConvolution1's chunk plan: `workspace`, capped by the memory limit.
size_t chunk_budget(const Params& P, int64_t limit_mb) {
  int64_t mb = P.workspace_mb;
  if (limit_mb > 0) mb = std::min(mb, limit_mb);
  return size_t(mb) << 20;
}

// Refuses calls whose CPU scratch would exceed the memory limit: FMConvolution3's batched
// buffers of the whole batch, or FMConvolution1's chunk plan within chunk_budget() (above it
// only when one image and one output do not fit). Applied in shape inference on every device,
// so a call is accepted or refused the same way everywhere. *budget: the chunk budget to use.
bool check_memory(const Params& P, const fbop::Geom& g, size_t* budget = nullptr) {
  int64_t limit;
  if (!memory_limit_mb(P, &limit)) return false;
  const bool batched = P.op == "FMConvolution3";
  const size_t chunk = chunk_budget(P, limit);
  if (budget) *budget = chunk;
  const double bytes = fbop::cpu_scratch_bytes(g, batched, chunk);
  const double mb = bytes / double(1 << 20);
  const double hard = double(int64_t(1) << 50);  // 1 PB: the sizes must stay exact integers
  if ((limit == 0 || mb <= double(limit)) && bytes < hard) return true;
  std::ostringstream lim;
  if (limit == 0 || bytes >= hard) lim << "the hard limit of 1 PB";
  else lim << "the limit of " << limit << " MB";
  const std::string shp = shape_str(std::vector<int>{g.B, g.C, g.H, g.W});
  char est[64];
  std::snprintf(est, sizeof est, "%.0f MB", std::ceil(mb));
  FB_ERROR << P.op << ": input 'data' of shape " << shp << " with num_filter=" << g.N
           << ", num_factor=" << g.F << " and kernel=(" << g.kh << ", " << g.kw << ") needs about " << est
           << (batched ? " of batched buffers (the whole batch at once)"
                       : " of scratch for one image and one output")
           << ", above " << lim.str() << " (attribute memory_limit_mb, environment variable "
           << kMemoryLimitEnv << "; 0 = no limit). "
           << (batched ? "Use FMConvolution1, which works in chunks within `workspace`, or a smaller batch"
                       : "Use a smaller input or kernel");
  return false;
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

// Unknown dimensions of partially known shapes arrive as -1 (as unsigned). In MXNet's legacy
// shape mode a zero-size dimension is also turned into -1 before it reaches an operator, so
// only np-shape mode shows a real 0 here; the Python wrappers reject zero-size NDArrays before
// the call (mxrepro/ops.py).
constexpr unsigned kUnknownDim = 0xFFFFFFFFu;

template <const char* OP>
MXReturnValue inferType(const std::unordered_map<std::string, std::string>& attrs,
                        std::vector<int>* in_types, std::vector<int>* out_types) {
  FB_PARSE(OP);
  for (size_t i = 0; i < in_types->size(); ++i) {
    int t = (*in_types)[i];
    if (t != -1 && t != kFloat32) {
      FB_ERROR << OP << ": input '" << P.input_name(i) << "' has dtype " << dtype_name(t)
               << "; only float32 is supported (cast with astype('float32'))";
      return MX_FAIL;
    }
  }
  for (auto& t : *in_types) t = kFloat32;  // everything is float32 once anything is known
  (*out_types)[0] = kFloat32;
  return MX_SUCCESS;
}

template <const char* OP>
MXReturnValue inferShape(const std::unordered_map<std::string, std::string>& attrs,
                         std::vector<std::vector<unsigned int>>* in_shapes,
                         std::vector<std::vector<unsigned int>>* out_shapes) {
  FB_PARSE(OP);
  auto& in = *in_shapes;
  const auto ds = in[0];
  if (ds.empty()) return MX_SUCCESS;  // data shape not known yet (partial inference)
  if (ds.size() != 4) {
    FB_ERROR << OP << ": input 'data' must be 4-D (batch, channel, height, width), got "
             << ds.size() << "-D shape " << shape_str(ds);
    return MX_FAIL;
  }
  bool data_known = true;
  for (unsigned d : ds) {
    if (d == kUnknownDim) {
      data_known = false;
    } else if (d == 0 || int64_t(d) > kIntMax) {
      FB_ERROR << OP << ": input 'data' has shape " << shape_str(ds) << ": every dimension must be in [1, "
               << kIntMax << "] (zero-size inputs are not supported)";
      return MX_FAIL;
    }
  }
  fbop::Geom g;
  if (data_known && !make_geom(P, ds, &g)) return MX_FAIL;  // before the weight: the culprit first
  // weight, bias and mask follow from the attributes and the channel count alone
  if (ds[1] != kUnknownDim) {
    const double welems = double(P.N) * P.F * double(ds[1]) * P.kh * double(P.kw);
    if (welems > double(kMaxTensorElems)) {
      FB_ERROR << OP << ": input 'weight' would have shape " << shape_str(std::vector<int64_t>{
                      P.N, P.F, int64_t(ds[1]), P.kh, P.kw})
               << " for input 'data' of shape " << shape_str(ds) << ", more than " << kMaxTensorElems
               << " elements (the int32 tensor size limit of MXNet 1.9.1)";
      return MX_FAIL;
    }
    std::vector<std::vector<unsigned int>> want = {
        {unsigned(P.N), unsigned(P.F), ds[1], unsigned(P.kh), unsigned(P.kw)}};
    if (!P.no_bias) want.push_back({unsigned(P.N)});
    want.push_back({unsigned(P.F)});
    for (size_t i = 0; i < want.size(); ++i) {
      auto& have = in[i + 1];
      bool match = have.empty() || have.size() == want[i].size();
      for (size_t d = 0; match && d < have.size(); ++d)
        match = have[d] == kUnknownDim || have[d] == want[i][d];
      if (!match) {
        FB_ERROR << OP << ": input '" << P.input_name(i + 1) << "' has shape " << shape_str(have)
                 << " but input 'data' of shape " << shape_str(ds) << " with num_filter=" << P.N
                 << ", num_factor=" << P.F << " and kernel=(" << P.kh << ", " << P.kw
                 << ") needs " << shape_str(want[i]);
        return MX_FAIL;
      }
      have = want[i];
    }
  }
  if (!data_known) return MX_SUCCESS;  // partial inference: the output waits for the data
  if (!check_memory(P, g)) return MX_FAIL;
  (*out_shapes)[0] = {ds[0], unsigned(P.N), unsigned(g.OH), unsigned(g.OW)};
  return MX_SUCCESS;
}

// Safety net at run time (shape inference has normally refused everything below already).
bool check_runtime(const Params& P, const std::vector<MXTensor>& in, fbop::Geom* g,
                   size_t* budget = nullptr) {
  if (int(in.size()) != P.num_inputs()) {
    FB_ERROR << P.op << ": expected " << P.num_inputs() << " inputs (data, weight, "
             << (P.no_bias ? "" : "bias, ") << "mask), got " << in.size();
    return false;
  }
  for (size_t i = 0; i < in.size(); ++i)
    if (in[i].dtype != kFloat32) {
      FB_ERROR << P.op << ": input '" << P.input_name(i) << "' has dtype " << dtype_name(in[i].dtype)
               << "; only float32 is supported";
      return false;
    }
  if (!make_geom(P, in[0].shape, g)) return false;
  const std::vector<int64_t> ws = {P.N, P.F, g->C, P.kh, P.kw};
  const std::vector<int64_t> bs = {P.N}, ms = {P.F};
  const std::vector<int64_t>* want[] = {&ws, &bs, &ms};
  for (int i = 1; i < P.num_inputs(); ++i) {
    const std::vector<int64_t>& w = *want[P.no_bias && i >= 2 ? 2 : i - 1];
    if (in[i].shape != w) {
      FB_ERROR << P.op << ": input '" << P.input_name(i) << "' has shape " << shape_str(in[i].shape)
               << " but input 'data' of shape " << shape_str(in[0].shape) << " needs " << shape_str(w);
      return false;
    }
  }
  return check_memory(P, *g, budget);
}

// Gradient outputs MXNet did not allocate (a kNullOp request) arrive without memory: skipped.
float* grad_ptr(MXTensor& t) { return t.data_ptr == nullptr || t.size() == 0 ? nullptr : t.data<float>(); }

// Last call's scratch peak, for tools/bench_fbop.py (read through ctypes).
size_t g_last_peak_bytes = 0;

class FBOpCPU : public CustomStatefulOp {
 public:
  FBOpCPU(const Params& P, bool cache_t) : P_(P) {
    st_.cache_t = cache_t;
    st_.budget_bytes = size_t(P.workspace_mb) << 20;  // per call: chunk_budget()
  }
  MXReturnValue Forward(std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                        const OpResource& res) override {
    try {
      auto& in = *inputs;
      fbop::Geom g;
      if (!check_runtime(P_, in, &g, &st_.budget_bytes)) return MX_FAIL;
      std::vector<float> scale;
      resolve_scale(P_, in[P_.mask_index()].data<float>(), &scale);
      st_.peak_bytes = 0;
      fbop::cpu_forward(g, in[0].data<float>(), in[1].data<float>(),
                        P_.no_bias ? nullptr : in[2].data<float>(), scale.data(),
                        (*outputs)[0].data<float>(), &st_);
      g_last_peak_bytes = st_.peak_bytes;
      return MX_SUCCESS;
    } catch (const std::exception& e) {
      return failed("forward", e);
    }
  }
  // inputs: [out_grad, data, weight, (bias), mask, output]; outputs: grads of data, weight, (bias), mask
  MXReturnValue Backward(std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                         const OpResource& res) override {
    try {
      auto& in = *inputs;
      auto& out = *outputs;
      std::vector<MXTensor> fwd_in(in.begin() + 1, in.begin() + 1 + P_.num_inputs());
      fbop::Geom g;
      if (!check_runtime(P_, fwd_in, &g, &st_.budget_bytes)) return MX_FAIL;
      std::vector<float> scale;
      resolve_scale(P_, fwd_in[P_.mask_index()].data<float>(), &scale);
      st_.peak_bytes = 0;
      fbop::cpu_backward(g, P_.grad_mode, in[0].data<float>(), fwd_in[0].data<float>(),
                         fwd_in[1].data<float>(), scale.data(), grad_ptr(out[0]), grad_ptr(out[1]),
                         P_.no_bias ? nullptr : grad_ptr(out[2]), &st_);
      if (float* gm = grad_ptr(out[P_.mask_index()]))  // the mask is a constant: zero gradient
        std::memset(gm, 0, sizeof(float) * P_.F);
      g_last_peak_bytes = st_.peak_bytes;
      return MX_SUCCESS;
    } catch (const std::exception& e) {
      return failed("backward", e);
    }
  }

 private:
  MXReturnValue failed(const char* what, const std::exception& e) {
    FB_ERROR << P_.op << ": " << what << " failed: " << e.what()
             << (dynamic_cast<const std::bad_alloc*>(&e) ? " (out of memory for the scratch buffers)" : "");
    return MX_FAIL;
  }
  Params P_;
  fbop::CpuState st_;
};

#ifdef FBOP_WITH_CUDA
class FBOpGPU : public CustomStatefulOp {
 public:
  explicit FBOpGPU(const Params& P) : P_(P) {}
  // Images per chunk within the workspace; lib_api's alloc_gpu takes an int byte count, so a
  // chunk is also kept below 2 GB. False when even one image does not fit that.
  bool chunk(const fbop::Geom& g, size_t chunk_budget, int* nb, size_t* wsb) const {
    const size_t cap = size_t(kIntMax) - sizeof(float) * P_.F - 256;
    const size_t budget = std::min(chunk_budget, cap);
    int n = g.B;
    while (n > 1 && fbop::gpu_workspace_bytes(g, n) > budget) n = (n + 1) / 2;
    *nb = n;
    *wsb = fbop::gpu_workspace_bytes(g, n);
    if (*wsb <= cap) return true;
    FB_ERROR << P_.op << ": input 'data' of shape " << shape_str(std::vector<int>{g.B, g.C, g.H, g.W})
             << " needs " << (*wsb >> 20) << " MB of GPU workspace for a single image, above the 2 GB "
             << "that lib_api can allocate at once";
    return false;
  }
  MXReturnValue Forward(std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                        const OpResource& res) override {
    auto& in = *inputs;
    fbop::Geom g;
    size_t budget;
    if (!check_runtime(P_, in, &g, &budget)) return MX_FAIL;
    int nb;
    size_t wsb;
    if (!chunk(g, budget, &nb, &wsb)) return MX_FAIL;
    void* ws = res.alloc_gpu(int(wsb + sizeof(float) * P_.F));
    float* scale = reinterpret_cast<float*>(static_cast<char*>(ws) + wsb);
    void* stream = res.get_cuda_stream();
    int rc = fbop::gpu_resolve_scale(in[P_.mask_index()].data<float>(), P_.F, P_.p, P_.scale_mode, scale, stream);
    if (!rc)
      rc = fbop::gpu_forward(g, in[0].data<float>(), in[1].data<float>(),
                             P_.no_bias ? nullptr : in[2].data<float>(), scale,
                             (*outputs)[0].data<float>(), ws, wsb, nb, stream);
    if (rc) {
      FB_ERROR << P_.op << ": CUDA error " << rc << " (" << cudaGetErrorString(cudaError_t(rc)) << ")";
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
    size_t budget;
    if (!check_runtime(P_, fwd_in, &g, &budget)) return MX_FAIL;
    int nb;
    size_t wsb;
    if (!chunk(g, budget, &nb, &wsb)) return MX_FAIL;
    void* ws = res.alloc_gpu(int(wsb + sizeof(float) * P_.F));
    float* scale = reinterpret_cast<float*>(static_cast<char*>(ws) + wsb);
    void* stream = res.get_cuda_stream();
    int rc = fbop::gpu_resolve_scale(fwd_in[P_.mask_index()].data<float>(), P_.F, P_.p, P_.scale_mode, scale, stream);
    if (!rc)
      rc = fbop::gpu_backward(g, P_.grad_mode, in[0].data<float>(), fwd_in[0].data<float>(),
                              fwd_in[1].data<float>(), scale, grad_ptr(out[0]), grad_ptr(out[1]),
                              P_.no_bias ? nullptr : grad_ptr(out[2]), ws, wsb, nb, stream);
    float* gm = grad_ptr(out[P_.mask_index()]);
    if (!rc && gm)
      rc = int(cudaMemsetAsync(gm, 0, sizeof(float) * P_.F, static_cast<cudaStream_t>(stream)));
    if (rc) {
      FB_ERROR << P_.op << ": CUDA error " << rc << " (" << cudaGetErrorString(cudaError_t(rc)) << ")";
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
  FB_ERROR << "libfbop: MXNet " << version << " is too old; this library needs MXNet >= 1.9.0";
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

// The attribute parser of the operators for the Python wrappers (mxrepro/ops.py), so that both
// read every attribute with one grammar. Returns 1 and the values the wrappers need
// (ints = {no_bias, num_factor, num_filter, kh, kw}, p), or 0 with the error message in err (the
// same text MXNet would show).
extern "C" int fbop_parse_attrs(const char* op, int n, const char** keys, const char** vals,
                                int* ints, float* p, char* err, int err_len) {
  std::unordered_map<std::string, std::string> attrs;
  for (int i = 0; i < n; ++i) attrs[keys[i]] = vals[i];
  Params P;
  const std::string name = op ? op : "";
  const char* opname = name == kFM1 ? kFM1 : name == kFM3 ? kFM3 : nullptr;
  if (opname && parse_params(attrs, opname, &P)) {
    ints[0] = P.no_bias;
    ints[1] = P.F;
    ints[2] = P.N;
    ints[3] = P.kh;
    ints[4] = P.kw;
    *p = P.p;
    return 1;
  }
  std::string msg = opname ? last_error_text() : "unknown operator '" + name + "'";
  clear_messages();  // this error is reported by Python, not through MXNet
  if (err && err_len > 0) {
    std::strncpy(err, msg.c_str(), size_t(err_len) - 1);
    err[err_len - 1] = '\0';
  }
  return 0;
}
