// Fast affine layer: out = x w + b is one GEMM, backward is two.
//  - float32 on oneDNN 2.6, on the plain row-major tensors as they are (no
//    reorders: our w (D, M) is inner product's "io" weights and the
//    transposed operands of backward are strided matmul views): forward an
//    inner_product (its gemm:jit kernel), backward two matmuls. Measured
//    here (2 threads, min of 4 rounds; forward / backward ms):
//                          (128,3072)->1024   (512,4096)->4096
//      inner_product (io)    2.83 / 6.47        56.3 / 119.0
//      matmul (brg)          2.88 / 5.62        60.2 / 117.3
//      OpenBLAS sgemm        3.29 / 6.65        60.9 / 120.2
//    (sgemm with its SkylakeX kernels; inner_product with blocked weights
//    was slower still, 3.71 / 8.05 and 64.6 / 139.6, reorder included).
//    Primitives are cached per problem in a bounded LRU, like the conv's.
//  - float64: OpenBLAS dgemm (oneDNN has no f64). The bias is written into
//    out first and the GEMM accumulates onto it (beta = 1).
// db (column sums of dout) is a plain loop summing in double.
//
// Thread-safety: may be called concurrently. Cached primitives run in
// user-scratchpad mode with a stream and scratchpad per call.
#include "lib/layers/affine.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/layers/fast/lru_cache.h"
#include "lib/layers/fast/onednn_engine.h"
#include "lib/layers/fast/openblas_kernels.h"
#include "lib/status_macros.h"
#include "lib/threading.h"

namespace layerserve::fast {
namespace {

// oneDNN and OpenBLAS (OpenMP builds) size their thread teams from the
// calling thread's omp_get_max_threads(); set it to this call's share for
// the duration of the call (the setting belongs to the calling thread, so
// it is restored).
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int n) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(n);
  }
  ~ScopedOmpThreads() { omp_set_num_threads(saved_); }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  const int saved_;
};

// Below this many flops per thread another thread costs more than it
// saves (the conv's threshold, lib/layers/fast/conv.cc).
constexpr double kMinFlopsPerThread = 4e6;

int GemmThreads(int64_t n, int64_t d, int64_t m) {
  const double flops = 2.0 * static_cast<double>(n) * static_cast<double>(d) *
                       static_cast<double>(m);
  return std::max(1, static_cast<int>(std::min<double>(
                         flops / kMinFlopsPerThread, ThreadsForThisCall())));
}

struct Dims {
  int64_t n, d, m;
};
Dims DimsOf(const Tensor& x, const Tensor& w) {
  return {x.dim(0), w.dim(0), w.dim(1)};
}

// db[m] = sum_n dout[n, m], summed in double in row order.
template <typename T>
void ColumnSums(const T* dout, const Dims& g, T* db) {
  ParallelFor(g.m, std::max<int64_t>(16, kElementwiseGrain / g.n),
              [&](int64_t m0, int64_t m1) {
                std::vector<double> acc(static_cast<size_t>(m1 - m0), 0.0);
                for (int64_t n = 0; n < g.n; ++n) {
                  const T* row = dout + n * g.m;
                  for (int64_t m = m0; m < m1; ++m) {
                    acc[m - m0] += static_cast<double>(row[m]);
                  }
                }
                for (int64_t m = m0; m < m1; ++m) {
                  db[m] = static_cast<T>(acc[m - m0]);
                }
              });
}

// ---- float32: oneDNN matmul
// --------------------------------------------------

namespace onednn_f32 {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using onednn::CpuEngine;

struct Key {
  int64_t n, d, m;
  int threads;  // oneDNN sizes its work split at creation
  bool operator<(const Key& o) const {
    return std::tie(n, d, m, threads) < std::tie(o.n, o.d, o.m, o.threads);
  }
};

dnnl::primitive_attr UserScratchpad() {
  // The default (library-owned) scratchpad ties a primitive to the thread
  // that created it, which a shared cache cannot promise.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

struct Matmul {
  dnnl::matmul prim;
  memory::desc src, weights, dst, scratch;
  std::string impl;
};

Matmul MakeMatmul(const memory::desc& src, const memory::desc& weights,
                  const memory::desc& dst) {
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights, dst),
                                        UserScratchpad(), CpuEngine());
  return Matmul{dnnl::matmul(pd),
                src,
                weights,
                dst,
                pd.scratchpad_desc(),
                absl::StrCat("onednn:", pd.impl_info_str())};
}

struct ForwardPlan {
  dnnl::inner_product_forward prim;
  memory::desc src, weights, bias, dst, scratch;
  std::string impl;
};

struct BackwardPlan {
  Matmul data;     // dx (N, D) = dout (N, M) w^T (M, D)
  Matmul weights;  // dw (D, M) = x^T (D, N) dout (N, M)
  std::string impl;
};

std::shared_ptr<const ForwardPlan> MakeForwardPlan(const Key& k) {
  auto plan = std::make_shared<ForwardPlan>();
  plan->src = memory::desc({k.n, k.d}, dt::f32, tag::nc);
  // Inner product weights are (outputs, inputs); our w (D, M) row-major is
  // exactly that in the "io" layout.
  plan->weights = memory::desc({k.m, k.d}, dt::f32, tag::io);
  plan->bias = memory::desc({k.m}, dt::f32, tag::x);
  plan->dst = memory::desc({k.n, k.m}, dt::f32, tag::nc);
  const dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference,
                                            plan->src, plan->weights,
                                            plan->bias, plan->dst);
  const dnnl::inner_product_forward::primitive_desc pd(d, UserScratchpad(),
                                                       CpuEngine());
  plan->prim = dnnl::inner_product_forward(pd);
  plan->scratch = pd.scratchpad_desc();
  plan->impl = absl::StrCat("onednn:", pd.impl_info_str());
  return plan;
}

std::shared_ptr<const BackwardPlan> MakeBackwardPlan(const Key& k) {
  auto plan = std::make_shared<BackwardPlan>();
  const memory::desc dout({k.n, k.m}, dt::f32, tag::ab);
  // w (D, M) row-major read as w^T (M, D): tag::ba is exactly that view.
  plan->data = MakeMatmul(dout, memory::desc({k.m, k.d}, dt::f32, tag::ba),
                          memory::desc({k.n, k.d}, dt::f32, tag::ab));
  plan->weights = MakeMatmul(memory::desc({k.d, k.n}, dt::f32, tag::ba), dout,
                             memory::desc({k.d, k.m}, dt::f32, tag::ab));
  plan->impl = plan->data.impl;
  if (plan->weights.impl != plan->impl) {
    absl::StrAppend(&plan->impl, "+", plan->weights.impl);
  }
  return plan;
}

// Plans kept per direction, least recently used dropped beyond this.
constexpr size_t kPlanCacheCapacity = 64;

LruCache<Key, ForwardPlan>& ForwardCache() {
  static auto* const cache = new LruCache<Key, ForwardPlan>(kPlanCacheCapacity);
  return *cache;
}
LruCache<Key, BackwardPlan>& BackwardCache() {
  static auto* const cache =
      new LruCache<Key, BackwardPlan>(kPlanCacheCapacity);
  return *cache;
}

// Runs `body`, turning oneDNN's (and the allocator's) exceptions into a
// Status: nothing thrown may cross lib/.
template <typename T, typename Body>
absl::StatusOr<T> Guarded(absl::string_view what, Body&& body) {
  try {
    return body();
  } catch (const dnnl::error& e) {
    return onednn::ErrorToStatus(what, e);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": out of memory for oneDNN buffers"));
  }
}

template <typename Plan>
absl::StatusOr<std::shared_ptr<const Plan>> GetPlan(
    LruCache<Key, Plan>& cache, const Key& key,
    std::shared_ptr<const Plan> (*make)(const Key&), absl::string_view what) {
  return cache.GetOrCreate(key, [&] {
    return Guarded<std::shared_ptr<const Plan>>(
        absl::StrCat(what, ": creating the oneDNN primitives"),
        [&] { return make(key); });
  });
}

memory Wrap(const memory::desc& md, const void* p) {
  // oneDNN only reads inputs; its memory API has no const handle.
  return memory(md, CpuEngine(), const_cast<void*>(p));
}

// Runs `prim` with `args` plus a scratchpad of `scratch` bytes (if any),
// owned by this call.
void Run(const dnnl::primitive& prim, const memory::desc& scratch,
         dnnl::stream& s, std::unordered_map<int, memory> args) {
  std::optional<memory> pad;
  if (scratch.get_size() != 0) {
    pad.emplace(scratch, CpuEngine());
    args.emplace(DNNL_ARG_SCRATCHPAD, *pad);
  }
  prim.execute(s, args);
}

void Execute(const Matmul& mm, dnnl::stream& s, const void* src,
             const void* weights, void* dst) {
  Run(mm.prim, mm.scratch, s,
      {{DNNL_ARG_SRC, Wrap(mm.src, src)},
       {DNNL_ARG_WEIGHTS, Wrap(mm.weights, weights)},
       {DNNL_ARG_DST, Wrap(mm.dst, dst)}});
}

Key KeyOf(const Dims& g) { return Key{g.n, g.d, g.m, omp_get_max_threads()}; }

absl::StatusOr<std::string> Forward(const Tensor& x, const Tensor& w,
                                    const Tensor& b, Tensor* out) {
  constexpr absl::string_view kWhat = "affine forward (float32)";
  LS_ASSIGN_OR_RETURN(
      std::shared_ptr<const ForwardPlan> plan,
      GetPlan(ForwardCache(), KeyOf(DimsOf(x, w)), &MakeForwardPlan, kWhat));
  return Guarded<std::string>(kWhat, [&]() -> std::string {
    dnnl::stream s(CpuEngine());
    const ForwardPlan& p = *plan;
    Run(p.prim, p.scratch, s,
        {{DNNL_ARG_SRC, Wrap(p.src, x.raw_data())},
         {DNNL_ARG_WEIGHTS, Wrap(p.weights, w.raw_data())},
         {DNNL_ARG_BIAS, Wrap(p.bias, b.raw_data())},
         {DNNL_ARG_DST, Wrap(p.dst, out->raw_data())}});
    s.wait();
    return p.impl;
  });
}

absl::StatusOr<std::string> Backward(const Tensor& x, const Tensor& w,
                                     const Tensor& dout, Tensor* dx,
                                     Tensor* dw) {
  constexpr absl::string_view kWhat = "affine backward (float32)";
  LS_ASSIGN_OR_RETURN(
      std::shared_ptr<const BackwardPlan> plan,
      GetPlan(BackwardCache(), KeyOf(DimsOf(x, w)), &MakeBackwardPlan, kWhat));
  return Guarded<std::string>(kWhat, [&]() -> std::string {
    dnnl::stream s(CpuEngine());
    Execute(plan->data, s, dout.raw_data(), w.raw_data(), dx->raw_data());
    Execute(plan->weights, s, x.raw_data(), dout.raw_data(), dw->raw_data());
    s.wait();
    return plan->impl;
  });
}

}  // namespace onednn_f32

// ---- float64: OpenBLAS
// -------------------------------------------------------

// OpenBLAS (LP64) takes int dimensions.
absl::Status CheckBlasDims(absl::string_view what, const Dims& g) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (g.n > kMax || g.d > kMax || g.m > kMax) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": N = ", g.n, ", D = ", g.d, " and M = ", g.m,
        " (x.shape[0], w.shape[0], w.shape[1]) must each be at most ", kMax,
        " for BLAS"));
  }
  return absl::OkStatus();
}

constexpr absl::string_view kBlasName = "openblas";

absl::StatusOr<std::string> ForwardF64(const Tensor& xt, const Tensor& wt,
                                       const Tensor& bt, Tensor* outt) {
  const Dims g = DimsOf(xt, wt);
  LS_RETURN_IF_ERROR(CheckBlasDims("affine forward (float64)", g));
  EnsureOpenBlasKernels();
  const double* b = bt.data<double>();
  double* out = outt->data<double>();
  ParallelFor(g.n, std::max<int64_t>(1, kElementwiseGrain / g.m),
              [&](int64_t n0, int64_t n1) {
                for (int64_t n = n0; n < n1; ++n) {
                  std::copy(b, b + g.m, out + n * g.m);
                }
              });
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.n, g.m, g.d, 1.0,
              xt.data<double>(), g.d, wt.data<double>(), g.m, 1.0, out, g.m);
  return std::string(kBlasName);
}

absl::StatusOr<std::string> BackwardF64(const Tensor& xt, const Tensor& wt,
                                        const Tensor& doutt, Tensor* dx,
                                        Tensor* dw) {
  const Dims g = DimsOf(xt, wt);
  LS_RETURN_IF_ERROR(CheckBlasDims("affine backward (float64)", g));
  EnsureOpenBlasKernels();
  const double* dout = doutt.data<double>();
  // dx (N, D) = dout (N, M) w^T; dw (D, M) = x^T dout.
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.n, g.d, g.m, 1.0, dout,
              g.m, wt.data<double>(), g.m, 0.0, dx->data<double>(), g.d);
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.d, g.m, g.n, 1.0,
              xt.data<double>(), g.d, dout, g.m, 0.0, dw->data<double>(), g.m);
  return std::string(kBlasName);
}

}  // namespace

absl::StatusOr<std::string> AffineForward(const Tensor& x, const Tensor& w,
                                          const Tensor& b, Tensor* out) {
  const Dims g = DimsOf(x, w);
  ScopedOmpThreads threads(GemmThreads(g.n, g.d, g.m));
  if (x.dtype() == DType::kFloat32) {
    return onednn_f32::Forward(x, w, b, out);
  }
  return ForwardF64(x, w, b, out);
}

absl::StatusOr<std::string> AffineBackward(const Tensor& x, const Tensor& w,
                                           const Tensor& dout, Tensor* dx,
                                           Tensor* dw, Tensor* db) {
  const Dims g = DimsOf(x, w);
  ScopedOmpThreads threads(GemmThreads(g.n, g.d, g.m));
  if (x.dtype() == DType::kFloat32) {
    ColumnSums(dout.data<float>(), g, db->data<float>());
    return onednn_f32::Backward(x, w, dout, dx, dw);
  }
  ColumnSums(dout.data<double>(), g, db->data<double>());
  return BackwardF64(x, w, dout, dx, dw);
}

}  // namespace layerserve::fast
