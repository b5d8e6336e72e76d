#include "lib/layers/fast/conv_onednn.h"

#include <omp.h>

#include <memory>
#include <new>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/layers/fast/lru_cache.h"
#include "lib/layers/fast/onednn_engine.h"
#include "lib/status_macros.h"

namespace layerserve::fast::onednn {
namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

// The full problem a plan was built for.
struct ConvKey {
  int64_t n, c, h, w;   // x
  int64_t f, kh, kw;    // w
  int64_t stride, pad;  //
  bool relu;            // forward only
  int threads;          // omp_get_max_threads() at creation

  bool operator<(const ConvKey& o) const {
    return std::tie(n, c, h, w, f, kh, kw, stride, pad, relu, threads) <
           std::tie(o.n, o.c, o.h, o.w, o.f, o.kh, o.kw, o.stride, o.pad,
                    o.relu, o.threads);
  }
};

ConvKey KeyOf(const Tensor& x, const Tensor& w, const ConvParam& p, bool relu) {
  return ConvKey{x.dim(0),
                 x.dim(1),
                 x.dim(2),
                 x.dim(3),
                 w.dim(0),
                 w.dim(2),
                 w.dim(3),
                 p.stride,
                 p.pad,
                 relu,
                 omp_get_max_threads()};
}

// The oneDNN view of a problem: user (plain) descriptors and the geometry.
struct Geometry {
  // Bias has one possible layout and is always passed as is.
  memory::desc x_user, w_user, b_user, y_user;  // nchw / oihw / x / nchw
  memory::desc x_any, w_any, y_any;             // format_tag::any
  memory::dims strides, pad_l, pad_r;
};

Geometry GeometryOf(const ConvKey& k) {
  const int64_t ho = (k.h + 2 * k.pad - k.kh) / k.stride + 1;
  const int64_t wo = (k.w + 2 * k.pad - k.kw) / k.stride + 1;
  const memory::dims x = {k.n, k.c, k.h, k.w};
  const memory::dims w = {k.f, k.c, k.kh, k.kw};
  const memory::dims b = {k.f};
  const memory::dims y = {k.n, k.f, ho, wo};
  Geometry g;
  g.x_user = memory::desc(x, dt::f32, tag::nchw);
  g.w_user = memory::desc(w, dt::f32, tag::oihw);
  g.b_user = memory::desc(b, dt::f32, tag::x);
  g.y_user = memory::desc(y, dt::f32, tag::nchw);
  g.x_any = memory::desc(x, dt::f32, tag::any);
  g.w_any = memory::desc(w, dt::f32, tag::any);
  g.y_any = memory::desc(y, dt::f32, tag::any);
  g.strides = {k.stride, k.stride};
  g.pad_l = {k.pad, k.pad};
  g.pad_r = {RightPad(k.h, k.kh, k.stride, k.pad),
             RightPad(k.w, k.kw, k.stride, k.pad)};
  return g;
}

// Every primitive we build gets a user-managed scratchpad: in oneDNN's
// default ("library") mode the scratchpad is shared and a primitive may only
// run on the thread that created it, which a shared cache cannot promise.
dnnl::primitive_attr BaseAttr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// A move between a user buffer (plain layout) and a primitive's layout;
// empty when the primitive takes the plain layout as is.
struct Conversion {
  memory::desc inner;  // the primitive's layout
  std::optional<dnnl::reorder> reorder;
  memory::desc scratch;
};

Conversion MakeConversion(const memory::desc& from, const memory::desc& to,
                          const memory::desc& inner) {
  Conversion c;
  c.inner = inner;
  if (from == to) return c;
  const dnnl::engine& eng = CpuEngine();
  dnnl::reorder::primitive_desc pd(eng, from, eng, to, BaseAttr());
  c.reorder.emplace(pd);
  c.scratch = pd.scratchpad_desc();
  return c;
}
// Into the primitive: user layout -> inner.
Conversion Into(const memory::desc& user, const memory::desc& inner) {
  return MakeConversion(user, inner, inner);
}
// Out of the primitive: inner -> user layout.
Conversion OutOf(const memory::desc& inner, const memory::desc& user) {
  return MakeConversion(inner, user, inner);
}

// Adds a scratchpad for one execution to `args`, owned by `holder`; none
// when the primitive needs none. Buffers may die when the caller returns:
// oneDNN's CPU engine with the OpenMP runtime executes synchronously.
void AddScratch(const memory::desc& md, std::unordered_map<int, memory>* args,
                std::optional<memory>* holder) {
  if (md.get_size() == 0) return;
  holder->emplace(md, CpuEngine());
  args->emplace(DNNL_ARG_SCRATCHPAD, **holder);
}

void RunReorder(const Conversion& c, dnnl::stream& s, const memory& from,
                const memory& to) {
  std::unordered_map<int, memory> args = {{DNNL_ARG_FROM, from},
                                          {DNNL_ARG_TO, to}};
  std::optional<memory> scratch;
  AddScratch(c.scratch, &args, &scratch);
  c.reorder->execute(s, args);
}

// An input in the primitive's layout: the user's memory itself, or a reordered
// copy.
memory In(const Conversion& c, dnnl::stream& s, const memory& user) {
  if (!c.reorder) return user;
  memory m(c.inner, CpuEngine());
  RunReorder(c, s, user, m);
  return m;
}

// Where the primitive writes an output: the user's memory, or a buffer that
// Out() reorders into it afterwards.
memory OutBuffer(const Conversion& c, const memory& user) {
  if (!c.reorder) return user;
  return memory(c.inner, CpuEngine());
}
void Out(const Conversion& c, dnnl::stream& s, const memory& buffer,
         const memory& user) {
  if (c.reorder) RunReorder(c, s, buffer, user);
}

memory UserMemory(const memory::desc& md, const Tensor& t) {
  // oneDNN only reads inputs; its memory API has no const handle.
  return memory(md, CpuEngine(), const_cast<void*>(t.raw_data()));
}
memory UserMemory(const memory::desc& md, Tensor* t) {
  return memory(md, CpuEngine(), t->raw_data());
}

std::string ImplName(const dnnl::primitive_desc_base& pd) {
  return absl::StrCat("onednn:", pd.impl_info_str());
}

// ---- forward ---------------------------------------------------------------

struct ForwardPlan {
  Geometry g;
  dnnl::convolution_forward conv;
  memory::desc scratch;
  Conversion x, w, y;
  std::string impl_name;
};

dnnl::convolution_forward::primitive_desc ForwardPd(const Geometry& g,
                                                    dnnl::prop_kind kind,
                                                    bool relu) {
  dnnl::convolution_forward::desc d(kind, dnnl::algorithm::convolution_direct,
                                    g.x_any, g.w_any, g.b_user, g.y_any,
                                    g.strides, g.pad_l, g.pad_r);
  dnnl::primitive_attr attr = BaseAttr();
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(ops);
  }
  return dnnl::convolution_forward::primitive_desc(d, attr, CpuEngine());
}

std::shared_ptr<const ForwardPlan> MakeForwardPlan(const ConvKey& k) {
  auto plan = std::make_shared<ForwardPlan>();
  plan->g = GeometryOf(k);
  const Geometry& g = plan->g;
  const auto pd = ForwardPd(g, dnnl::prop_kind::forward_inference, k.relu);
  plan->conv = dnnl::convolution_forward(pd);
  plan->scratch = pd.scratchpad_desc();
  plan->x = Into(g.x_user, pd.src_desc());
  plan->w = Into(g.w_user, pd.weights_desc());
  plan->y = OutOf(pd.dst_desc(), g.y_user);
  plan->impl_name = ImplName(pd);
  return plan;
}

// ---- backward --------------------------------------------------------------

struct BackwardPlan {
  Geometry g;
  dnnl::convolution_backward_data data;
  memory::desc data_scratch;
  Conversion data_dy, data_w, data_dx;
  dnnl::convolution_backward_weights weights;
  memory::desc weights_scratch;
  Conversion weights_x, weights_dy, weights_dw;
  std::string impl_name;
};

std::shared_ptr<const BackwardPlan> MakeBackwardPlan(const ConvKey& k) {
  auto plan = std::make_shared<BackwardPlan>();
  plan->g = GeometryOf(k);
  const Geometry& g = plan->g;
  // The backward primitives are chosen to match a forward-training one.
  const auto hint = ForwardPd(g, dnnl::prop_kind::forward_training, false);
  const dnnl::algorithm algo = dnnl::algorithm::convolution_direct;

  dnnl::convolution_backward_data::desc dd(algo, g.x_any, g.w_any, g.y_any,
                                           g.strides, g.pad_l, g.pad_r);
  dnnl::convolution_backward_data::primitive_desc dpd(dd, BaseAttr(),
                                                      CpuEngine(), hint);
  plan->data = dnnl::convolution_backward_data(dpd);
  plan->data_scratch = dpd.scratchpad_desc();
  plan->data_dy = Into(g.y_user, dpd.diff_dst_desc());
  plan->data_w = Into(g.w_user, dpd.weights_desc());
  plan->data_dx = OutOf(dpd.diff_src_desc(), g.x_user);

  dnnl::convolution_backward_weights::desc wd(
      algo, g.x_any, g.w_any, g.b_user, g.y_any, g.strides, g.pad_l, g.pad_r);
  dnnl::convolution_backward_weights::primitive_desc wpd(wd, BaseAttr(),
                                                         CpuEngine(), hint);
  plan->weights = dnnl::convolution_backward_weights(wpd);
  plan->weights_scratch = wpd.scratchpad_desc();
  plan->weights_x = Into(g.x_user, wpd.src_desc());
  plan->weights_dy = Into(g.y_user, wpd.diff_dst_desc());
  plan->weights_dw = OutOf(wpd.diff_weights_desc(), g.w_user);

  plan->impl_name = ImplName(dpd);
  const std::string wname = ImplName(wpd);
  if (wname != plan->impl_name) absl::StrAppend(&plan->impl_name, "+", wname);
  return plan;
}

// ---- the caches ------------------------------------------------------------

LruCache<ConvKey, ForwardPlan>& ForwardCache() {
  static auto* const cache =
      new LruCache<ConvKey, ForwardPlan>(kConvPlanCacheCapacity);
  return *cache;
}
LruCache<ConvKey, BackwardPlan>& BackwardCache() {
  static auto* const cache =
      new LruCache<ConvKey, BackwardPlan>(kConvPlanCacheCapacity);
  return *cache;
}

// Runs `body`, turning oneDNN's (and the allocator's) exceptions into a
// Status: nothing thrown may cross lib/.
template <typename T, typename Body>
absl::StatusOr<T> Guarded(absl::string_view what, Body&& body) {
  try {
    return body();
  } catch (const dnnl::error& e) {
    return ErrorToStatus(what, e);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": out of memory for oneDNN buffers"));
  }
}

template <typename Plan>
absl::StatusOr<std::shared_ptr<const Plan>> GetPlan(
    LruCache<ConvKey, Plan>& cache, const ConvKey& key,
    std::shared_ptr<const Plan> (*make)(const ConvKey&),
    absl::string_view what) {
  return cache.GetOrCreate(key, [&] {
    return Guarded<std::shared_ptr<const Plan>>(
        absl::StrCat(what, ": creating the oneDNN primitives"),
        [&] { return make(key); });
  });
}

}  // namespace

int64_t RightPad(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  const int64_t out = (in + 2 * pad - kernel) / stride + 1;
  return (out - 1) * stride + kernel - in - pad;
}

absl::StatusOr<std::string> ConvForwardF32(const Tensor& x, const Tensor& w,
                                           const Tensor& b, const ConvParam& p,
                                           bool fuse_relu, Tensor* out) {
  constexpr absl::string_view kWhat = "conv forward (float32)";
  LS_ASSIGN_OR_RETURN(std::shared_ptr<const ForwardPlan> plan,
                      GetPlan(ForwardCache(), KeyOf(x, w, p, fuse_relu),
                              &MakeForwardPlan, kWhat));
  return Guarded<std::string>(kWhat, [&]() -> std::string {
    const ForwardPlan& pl = *plan;
    const Geometry& g = pl.g;
    dnnl::stream s(CpuEngine());
    const memory x_user = UserMemory(g.x_user, x);
    const memory w_user = UserMemory(g.w_user, w);
    const memory b_user = UserMemory(g.b_user, b);
    const memory y_user = UserMemory(g.y_user, out);
    const memory x_in = In(pl.x, s, x_user);
    const memory w_in = In(pl.w, s, w_user);
    const memory y_buf = OutBuffer(pl.y, y_user);
    std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, x_in},
                                            {DNNL_ARG_WEIGHTS, w_in},
                                            {DNNL_ARG_BIAS, b_user},
                                            {DNNL_ARG_DST, y_buf}};
    std::optional<memory> scratch;
    AddScratch(pl.scratch, &args, &scratch);
    pl.conv.execute(s, args);
    Out(pl.y, s, y_buf, y_user);
    s.wait();
    return pl.impl_name;
  });
}

absl::StatusOr<std::string> ConvBackwardF32(const Tensor& x, const Tensor& w,
                                            const ConvParam& p,
                                            const Tensor& dout, Tensor* dx,
                                            Tensor* dw, Tensor* db) {
  constexpr absl::string_view kWhat = "conv backward (float32)";
  LS_ASSIGN_OR_RETURN(std::shared_ptr<const BackwardPlan> plan,
                      GetPlan(BackwardCache(), KeyOf(x, w, p, false),
                              &MakeBackwardPlan, kWhat));
  return Guarded<std::string>(kWhat, [&]() -> std::string {
    const BackwardPlan& pl = *plan;
    const Geometry& g = pl.g;
    dnnl::stream s(CpuEngine());
    const memory x_user = UserMemory(g.x_user, x);
    const memory w_user = UserMemory(g.w_user, w);
    const memory dy_user = UserMemory(g.y_user, dout);
    const memory dx_user = UserMemory(g.x_user, dx);
    const memory dw_user = UserMemory(g.w_user, dw);
    const memory db_user = UserMemory(g.b_user, db);

    // Backward data: dx = conv_transpose(dout, w).
    const memory data_dy_in = In(pl.data_dy, s, dy_user);
    {
      const memory& dy_in = data_dy_in;
      const memory w_in = In(pl.data_w, s, w_user);
      const memory dx_buf = OutBuffer(pl.data_dx, dx_user);
      std::unordered_map<int, memory> args = {{DNNL_ARG_DIFF_DST, dy_in},
                                              {DNNL_ARG_WEIGHTS, w_in},
                                              {DNNL_ARG_DIFF_SRC, dx_buf}};
      std::optional<memory> scratch;
      AddScratch(pl.data_scratch, &args, &scratch);
      pl.data.execute(s, args);
      Out(pl.data_dx, s, dx_buf, dx_user);
    }
    // Backward weights: dw = x (*) dout, db = sum of dout. The two
    // primitives usually want dout in the same layout; reorder it once then.
    {
      const memory x_in = In(pl.weights_x, s, x_user);
      const memory dy_in = pl.weights_dy.inner == pl.data_dy.inner
                               ? data_dy_in
                               : In(pl.weights_dy, s, dy_user);
      const memory dw_buf = OutBuffer(pl.weights_dw, dw_user);
      std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, x_in},
                                              {DNNL_ARG_DIFF_DST, dy_in},
                                              {DNNL_ARG_DIFF_WEIGHTS, dw_buf},
                                              {DNNL_ARG_DIFF_BIAS, db_user}};
      std::optional<memory> scratch;
      AddScratch(pl.weights_scratch, &args, &scratch);
      pl.weights.execute(s, args);
      Out(pl.weights_dw, s, dw_buf, dw_user);
    }
    s.wait();
    return pl.impl_name;
  });
}

ConvPlanCacheStats GetConvPlanCacheStats() {
  ConvPlanCacheStats st;
  st.forward_entries = ForwardCache().size();
  st.backward_entries = BackwardCache().size();
  const auto f = ForwardCache().stats();
  const auto b = BackwardCache().stats();
  st.hits = f.hits + b.hits;
  st.misses = f.misses + b.misses;
  st.evictions = f.evictions + b.evictions;
  return st;
}

}  // namespace layerserve::fast::onednn
