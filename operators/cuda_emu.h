// Minimal emulation of the CUDA execution model and the runtime subset used by fbop_gpu.cu /
// fbop_harness.cu, to run the kernels on a CPU. Blocks run one after another; the threads of a
// block are coroutines switched at __syncthreads (so __shared__ can be a function-local static).
#pragma once
#include <ucontext.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <tuple>
#include <vector>
#include <chrono>

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float4 { float x, y, z, w; };
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

namespace emu {
// Threads of a block are coroutines (ucontext) on the calling OS thread: each runs until its next
// __syncthreads, then the next one runs; a round over all of them is one barrier phase. A thread
// that exits while others wait at a barrier (divergent __syncthreads) aborts the run.
struct Sched {
  std::vector<ucontext_t> ctx;
  std::vector<std::vector<char>> stacks;
  std::vector<int> state;  // 0 running/ready, 1 at barrier, 2 done
  ucontext_t main;
  unsigned cur = 0;
  std::function<void(unsigned)> body;
};
inline Sched* g_s = nullptr;
inline long g_launches = 0;
inline void entry() {
  Sched* s = g_s;
  s->body(s->cur);
  s->state[s->cur] = 2;
  swapcontext(&s->ctx[s->cur], &s->main);
}
template <class... P, class... A>
void launch(dim3 g, dim3 b, void (*k)(P...), A... a) {
  std::tuple<P...> args(static_cast<P>(a)...);
  const unsigned nt = b.x * b.y * b.z;
  Sched s;
  s.ctx.resize(nt);
  s.stacks.assign(nt, std::vector<char>(1 << 17));
  s.state.assign(nt, 0);
  s.body = [&](unsigned) { std::apply(k, args); };
  g_s = &s;
  ++g_launches;
  blockDim = b;
  gridDim = g;
  for (unsigned z = 0; z < g.z; ++z)
    for (unsigned y = 0; y < g.y; ++y)
      for (unsigned x = 0; x < g.x; ++x) {
        blockIdx = dim3(x, y, z);
        for (unsigned t = 0; t < nt; ++t) {
          getcontext(&s.ctx[t]);
          s.ctx[t].uc_stack.ss_sp = s.stacks[t].data();
          s.ctx[t].uc_stack.ss_size = s.stacks[t].size();
          s.ctx[t].uc_link = nullptr;
          makecontext(&s.ctx[t], entry, 0);
          s.state[t] = 0;
        }
        for (unsigned round = 0;; ++round) {
          unsigned done = 0, waiting = 0;
          for (unsigned i = 0; i < nt; ++i) {
            const unsigned t = (round + blockIdx.x) % 2 ? nt - 1 - i : i;  // alternate the order
            if (s.state[t] == 2) { ++done; continue; }
            s.cur = t;
            s.state[t] = 0;
            threadIdx = dim3(t % b.x, (t / b.x) % b.y, t / (b.x * b.y));
            swapcontext(&s.main, &s.ctx[t]);
            if (s.state[t] == 2) ++done; else ++waiting;
          }
          if (done == nt) break;
          if (done && waiting) {
            std::fprintf(stderr, "emu: divergent __syncthreads (%u threads done, %u waiting)\n", done, waiting);
            std::abort();
          }
        }
      }
  g_s = nullptr;
}
}  // namespace emu
inline void __syncthreads() {
  emu::Sched* s = emu::g_s;
  const unsigned t = s->cur;
  s->state[t] = 1;
  swapcontext(&s->ctx[t], &s->main);
}


enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
struct CUstream_st {};
typedef CUstream_st* cudaStream_t;
struct CUevent_st { std::chrono::steady_clock::time_point t; };
typedef CUevent_st* cudaEvent_t;
struct cudaDeviceProp { char name[256]; int major, minor, multiProcessorCount; size_t totalGlobalMem; };

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) { return e ? "emulated error" : "no error"; }
inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::malloc(n ? n : 1);
  if (*p) std::memset(*p, 0xff, n);  // garbage (NaN) so that unwritten outputs are caught
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
template <class T> cudaError_t cudaMalloc(T** p, size_t n) { return cudaMalloc((void**)p, n); }
inline cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t = nullptr) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemset(void* d, int v, size_t n) { std::memset(d, v, n); return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t = nullptr) { std::memset(d, v, n); return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamCreate(cudaStream_t* s) { *s = new CUstream_st; return cudaSuccess; }
inline cudaError_t cudaStreamDestroy(cudaStream_t s) { delete s; return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::snprintf(p->name, sizeof p->name, "host-thread CUDA emulation");
  p->major = 0; p->minor = 0; p->multiProcessorCount = 1; p->totalGlobalMem = 0;
  return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new CUevent_st; return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = nullptr) { e->t = std::chrono::steady_clock::now(); return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count(); return cudaSuccess;
}
