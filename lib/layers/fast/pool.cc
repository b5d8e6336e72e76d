// Hand-written max pooling. oneDNN 2.6's pooling costs milliseconds on the
// seed's small (100,3,32,32) case where a plain loop takes tens of
// microseconds, so pooling does not go through oneDNN.
//
// Two paths, both parallel over the N*C planes when a call is big enough:
//  - "pool:tiled": stride == pool_height == pool_width, so windows never
//    overlap and every input element belongs to at most one window. The 2x2
//    case (the seed's, and the common one in networks) has its own loops in
//    GCC vector extensions; other sizes use the row kernels below.
//  - "pool:general": overlapping windows, gaps, non-square windows. Row
//    kernels: the compiler vectorizes across the windows of an output row;
//    backward records each window's argmax offset alongside its max, then
//    adds dout into dx window by window.
//
// Results are bitwise those of lib/layers/naive/pool.cc. The naive code
// keeps the first element of a window that is strictly greater than all
// before it, with NaN above every number; that is "the leftmost maximum" of
// a total preorder, which is associative, so the 2x2 kernel may combine the
// pairs (a0, a1) and (a2, a3) first and then the two winners. Ties between
// -0.0 and +0.0 and between NaN payloads therefore resolve exactly like the
// naive loop. Backward adds into zero-filled dx in the naive window order
// (row-major over each plane), so overlapping windows sum identically.
#include "lib/layers/pool.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "lib/threading.h"

namespace layerserve::fast {
namespace {

// "v replaces best": v > best, or v is the window's first NaN. Once best is
// NaN nothing replaces it; while it is a number, "v > best or v is NaN" is
// exactly "not v <= best" (every comparison with NaN is false). That form
// is two compares and an and (cmpnle, cmpord) instead of five operations.
// Bitwise & keeps it branch-free.
template <typename T>
inline bool Beats(T v, T best) {
  return !(v <= best) & (best == best);
}

// Kernels take Dims by value: their vector stores go through memcpy, which
// may alias anything, so through a reference the compiler would reload the
// loop bounds on every iteration.
struct Dims {
  int64_t planes, h, w, ho, wo;
  int64_t ph, pw, stride;
};

Dims DimsOf(const Tensor& x, const Shape& out, const PoolParam& p) {
  return Dims{x.dim(0) * x.dim(1), x.dim(2),     x.dim(3), out[2], out[3],
              p.pool_height,       p.pool_width, p.stride};
}

// Window reads (N*C*Ho*Wo*ph*pw) below which another thread costs more than
// it saves: about 80 us of one thread's work here, the same bar as the conv's
// kMinFlopsPerThread. Waking an OpenMP team takes microseconds, and on a
// loaded machine a parallel region can wait a whole scheduler tick for its
// second thread, which small problems cannot amortize. (The seed's
// (100,3,32,32) 2x2 pooling stays on one thread.)
constexpr int64_t kMinReadsPerThread = int64_t{1} << 18;

// Runs fn(first_plane, end_plane) over all planes, splitting them among
// threads only in chunks of at least kMinReadsPerThread window reads.
template <typename Fn>
void ForPlanes(const Dims d, Fn&& fn) {
  const int64_t reads_per_plane =
      std::max<int64_t>(1, d.ho * d.wo * d.ph * d.pw);
  const int64_t grain =
      (kMinReadsPerThread + reads_per_plane - 1) / reads_per_plane;
  ParallelFor(d.planes, grain, fn);
}

// ---- 2x2, stride 2 --------------------------------------------------------
// One window at a time, for tails and compilers without vector extensions.

template <typename T>
inline T Pick(T best, T v) {
  return Beats(v, best) ? v : best;
}

template <typename T>
inline T Window2x2Max(const T* r0, const T* r1, int64_t j) {
  return Pick(Pick(r0[2 * j], r0[2 * j + 1]), Pick(r1[2 * j], r1[2 * j + 1]));
}

template <typename T>
inline void Window2x2Grad(const T* r0, const T* r1, T g, int64_t j, T* q0,
                          T* q1) {
  const T a0 = r0[2 * j], a1 = r0[2 * j + 1];
  const T a2 = r1[2 * j], a3 = r1[2 * j + 1];
  const bool right_top = Beats(a1, a0);
  const bool right_bottom = Beats(a3, a2);
  const bool in_bottom = Beats(right_bottom ? a3 : a2, right_top ? a1 : a0);
  // The naive code does dx += dout on a zero dx: 0 + dout, which turns
  // -0.0 into +0.0 and quiets a signaling NaN. Do the same.
  const T zero = 0;
  const T v = zero + g;
  q0[2 * j] = (!in_bottom && !right_top) ? v : zero;
  q0[2 * j + 1] = (!in_bottom && right_top) ? v : zero;
  q1[2 * j] = (in_bottom && !right_bottom) ? v : zero;
  q1[2 * j + 1] = (in_bottom && right_bottom) ? v : zero;
}

#if defined(__GNUC__) && !defined(__clang__)
// g++ does not reliably auto-vectorize these loops (strided loads combined
// with nested selects defeat its if-conversion, and the scalar fallback it
// then runs branches on every comparison), so they are written with GCC's
// portable vector extensions: 16-byte vectors, which every x86-64 (SSE2)
// and AArch64 (NEON) target has. Even/odd columns come from deinterleaving
// shuffles, and the gradient rows are re-interleaved the same way.
#define LAYERSERVE_POOL_VECTORS 1

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float V __attribute__((vector_size(16)));
  typedef int32_t M __attribute__((vector_size(16)));
  static constexpr int kLanes = 4;
  static constexpr M kEven = {0, 2, 4, 6}, kOdd = {1, 3, 5, 7};
  static constexpr M kLow = {0, 4, 1, 5}, kHigh = {2, 6, 3, 7};
};
template <>
struct Vec<double> {
  typedef double V __attribute__((vector_size(16)));
  typedef int64_t M __attribute__((vector_size(16)));
  static constexpr int kLanes = 2;
  static constexpr M kEven = {0, 2}, kOdd = {1, 3};
  static constexpr M kLow = {0, 2}, kHigh = {1, 3};
};

template <typename V>
inline V Load(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V>
inline void Store(void* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// Beats, lane by lane: all ones where v replaces best.
template <typename V>
inline auto BeatsV(V v, V best) {
  return ~(v <= best) & (best == best);
}
#endif  // GCC vector extensions

template <typename T>
void Forward2x2(const Dims d, const T* x, T* out, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const T* plane = x + p * d.h * d.w;
    T* o_plane = out + p * d.ho * d.wo;
    for (int64_t i = 0; i < d.ho; ++i) {
      const T* r0 = plane + 2 * i * d.w;
      const T* r1 = r0 + d.w;
      T* o = o_plane + i * d.wo;
      int64_t j = 0;
#ifdef LAYERSERVE_POOL_VECTORS
      using X = Vec<T>;
      using V = typename X::V;
      constexpr int L = X::kLanes;
      for (; j + L <= d.wo; j += L) {
        const V t0 = Load<V>(r0 + 2 * j), t1 = Load<V>(r0 + 2 * j + L);
        const V b0 = Load<V>(r1 + 2 * j), b1 = Load<V>(r1 + 2 * j + L);
        const V a0 = __builtin_shuffle(t0, t1, X::kEven);
        const V a1 = __builtin_shuffle(t0, t1, X::kOdd);
        const V a2 = __builtin_shuffle(b0, b1, X::kEven);
        const V a3 = __builtin_shuffle(b0, b1, X::kOdd);
        const V top = BeatsV(a1, a0) ? a1 : a0;
        const V bottom = BeatsV(a3, a2) ? a3 : a2;
        Store(o + j, BeatsV(bottom, top) ? bottom : top);
      }
#endif
      for (; j < d.wo; ++j) o[j] = Window2x2Max(r0, r1, j);
    }
  }
}

template <typename T>
void Backward2x2(const Dims d, const T* x, const T* dout, T* dx, int64_t p0,
                 int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const T* plane = x + p * d.h * d.w;
    const T* g_plane = dout + p * d.ho * d.wo;
    T* dx_plane = dx + p * d.h * d.w;
    for (int64_t i = 0; i < d.ho; ++i) {
      const T* r0 = plane + 2 * i * d.w;
      const T* r1 = r0 + d.w;
      const T* g = g_plane + i * d.wo;
      T* q0 = dx_plane + 2 * i * d.w;
      T* q1 = q0 + d.w;
      int64_t j = 0;
#ifdef LAYERSERVE_POOL_VECTORS
      using X = Vec<T>;
      using V = typename X::V;
      constexpr int L = X::kLanes;
      const V zero = {};
      for (; j + L <= d.wo; j += L) {
        const V t0 = Load<V>(r0 + 2 * j), t1 = Load<V>(r0 + 2 * j + L);
        const V b0 = Load<V>(r1 + 2 * j), b1 = Load<V>(r1 + 2 * j + L);
        const V a0 = __builtin_shuffle(t0, t1, X::kEven);
        const V a1 = __builtin_shuffle(t0, t1, X::kOdd);
        const V a2 = __builtin_shuffle(b0, b1, X::kEven);
        const V a3 = __builtin_shuffle(b0, b1, X::kOdd);
        const auto right_top = BeatsV(a1, a0);
        const auto right_bottom = BeatsV(a3, a2);
        const auto in_bottom =
            BeatsV(right_bottom ? a3 : a2, right_top ? a1 : a0);
        const V v = zero + Load<V>(g + j);  // 0 + dout, as the naive +=
        const V g00 = (~in_bottom & ~right_top) ? v : zero;
        const V g01 = (~in_bottom & right_top) ? v : zero;
        const V g10 = (in_bottom & ~right_bottom) ? v : zero;
        const V g11 = (in_bottom & right_bottom) ? v : zero;
        Store(q0 + 2 * j, __builtin_shuffle(g00, g01, X::kLow));
        Store(q0 + 2 * j + L, __builtin_shuffle(g00, g01, X::kHigh));
        Store(q1 + 2 * j, __builtin_shuffle(g10, g11, X::kLow));
        Store(q1 + 2 * j + L, __builtin_shuffle(g10, g11, X::kHigh));
      }
#endif
      for (; j < d.wo; ++j) Window2x2Grad(r0, r1, g[j], j, q0, q1);
    }
  }
}

// ---- Row kernels: any window, any stride ----------------------------------
// One output row at a time: the running maxima of the row's windows live in
// `best` (Wo values, in L1) and every window offset (ph, pw) is one pass over
// them, in the naive row-major window order. With a compile-time stride the
// passes are unit-stride (kStride 1) or a regular deinterleave (kStride 2);
// kStride 0 reads the stride at run time. (Measured here, such passes beat
// hand-written vectors that keep a group of windows in registers.)
//
// Forward's passes are left to the auto-vectorizer, which handles them.
// Backward also records where each maximum is, the offset of the window's
// first maximum from its top-left element, in integers of T's lane width
// (int32 for float, int64 for double) so that one mask selects both; g++ 12
// does not vectorize the int64 selects reliably, so those passes are
// written with vector extensions.
template <typename T>
using OffsetOf = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

// Whether every window offset fits OffsetOf<T>. Only float32 windows
// spanning more than 2^31 elements could fail; Backward hands those to the
// naive code.
template <typename T>
bool OffsetsFit(const Dims d) {
  return (d.ph - 1) * d.w + (d.pw - 1) <=
         std::numeric_limits<OffsetOf<T>>::max();
}

template <typename T, int kStride>
void RowMax(const Dims d, const T* window_row0, T* __restrict best) {
  const int64_t s = kStride > 0 ? kStride : d.stride;
  for (int64_t j = 0; j < d.wo; ++j) best[j] = window_row0[j * s];
  for (int64_t ph = 0; ph < d.ph; ++ph) {
    for (int64_t pw = 0; pw < d.pw; ++pw) {
      const T* __restrict r = window_row0 + ph * d.w + pw;
      for (int64_t j = 0; j < d.wo; ++j) {
        const T v = r[j * s];
        best[j] = Beats(v, best[j]) ? v : best[j];
      }
    }
  }
}

#ifdef LAYERSERVE_POOL_VECTORS
// Lanes l = 0..L-1 hold r[l * stride].
template <typename T, int kStride>
inline typename Vec<T>::V LoadStrided(const T* r, int64_t stride) {
  using X = Vec<T>;
  using V = typename X::V;
  if constexpr (kStride == 1) {
    return Load<V>(r);
  } else if constexpr (kStride == 2) {
    return __builtin_shuffle(Load<V>(r), Load<V>(r + X::kLanes), X::kEven);
  } else {
    V v;
    for (int l = 0; l < X::kLanes; ++l) v[l] = r[l * stride];
    return v;
  }
}
#endif

template <typename T, int kStride>
void RowArgMax(const Dims d, const T* window_row0, T* __restrict best,
               OffsetOf<T>* __restrict arg) {
  using Offset = OffsetOf<T>;
  const int64_t s = kStride > 0 ? kStride : d.stride;
  for (int64_t j = 0; j < d.wo; ++j) {
    best[j] = window_row0[j * s];
    arg[j] = 0;
  }
  for (int64_t ph = 0; ph < d.ph; ++ph) {
    for (int64_t pw = 0; pw < d.pw; ++pw) {
      const Offset offset = static_cast<Offset>(ph * d.w + pw);
      const T* r = window_row0 + ph * d.w + pw;
      int64_t j = 0;
#ifdef LAYERSERVE_POOL_VECTORS
      using X = Vec<T>;
      using V = typename X::V;
      using M = typename X::M;
      constexpr int L = X::kLanes;
      // The stride-2 deinterleave reads one element past the last lane's.
      const int64_t last = kStride == 2 ? 1 : 0;
      for (; j + L <= d.wo && (j + L - 1) * s + pw + last < d.w; j += L) {
        const V v = LoadStrided<T, kStride>(r + j * s, s);
        const V b = Load<V>(best + j);
        const M beats = BeatsV(v, b);
        Store(best + j, beats ? v : b);
        const M a = Load<M>(arg + j);
        Store(arg + j, beats ? (M{} + offset) : a);
      }
#endif
      for (; j < d.wo; ++j) {
        const T v = r[j * s];
        const bool beats = Beats(v, best[j]);
        best[j] = beats ? v : best[j];
        arg[j] = beats ? offset : arg[j];
      }
    }
  }
}

template <typename T, int kStride>
void ForwardRows(const Dims d, const T* x, T* out, int64_t p0, int64_t p1) {
  const int64_t s = kStride > 0 ? kStride : d.stride;
  for (int64_t p = p0; p < p1; ++p) {
    const T* plane = x + p * d.h * d.w;
    for (int64_t i = 0; i < d.ho; ++i) {
      RowMax<T, kStride>(d, plane + i * s * d.w, out + (p * d.ho + i) * d.wo);
    }
  }
}

template <typename T, int kStride>
void BackwardRows(const Dims d, const T* x, const T* dout, T* dx, int64_t p0,
                  int64_t p1) {
  const int64_t s = kStride > 0 ? kStride : d.stride;
  std::vector<T> best(static_cast<size_t>(d.wo));
  std::vector<OffsetOf<T>> arg(static_cast<size_t>(d.wo));
  for (int64_t p = p0; p < p1; ++p) {
    const T* plane = x + p * d.h * d.w;
    T* dx_plane = dx + p * d.h * d.w;
    for (int64_t i = 0; i < d.ho; ++i) {
      RowArgMax<T, kStride>(d, plane + i * s * d.w, best.data(), arg.data());
      const T* g = dout + (p * d.ho + i) * d.wo;
      T* dx_row = dx_plane + i * s * d.w;
      // Windows in the naive order, so overlapping sums match bitwise.
      for (int64_t j = 0; j < d.wo; ++j) {
        dx_row[j * s + arg[j]] += g[j];
      }
    }
  }
}

template <typename T>
std::string Forward(const Tensor& xt, const PoolParam& p, Tensor* outt) {
  const Dims d = DimsOf(xt, outt->shape(), p);
  const T* x = xt.data<T>();
  T* out = outt->data<T>();
  const bool tiled = d.stride == d.ph && d.stride == d.pw;
  if (tiled && d.stride == 2) {
    ForPlanes(d, [&](int64_t a, int64_t b) { Forward2x2<T>(d, x, out, a, b); });
  } else if (d.stride == 1) {
    ForPlanes(
        d, [&](int64_t a, int64_t b) { ForwardRows<T, 1>(d, x, out, a, b); });
  } else if (d.stride == 2) {
    ForPlanes(
        d, [&](int64_t a, int64_t b) { ForwardRows<T, 2>(d, x, out, a, b); });
  } else {
    ForPlanes(
        d, [&](int64_t a, int64_t b) { ForwardRows<T, 0>(d, x, out, a, b); });
  }
  return tiled ? "pool:tiled" : "pool:general";
}

template <typename T>
absl::StatusOr<std::string> Backward(const Tensor& xt, const PoolParam& p,
                                     const Tensor& doutt, Tensor* dxt) {
  const Dims d = DimsOf(xt, doutt.shape(), p);
  const T* x = xt.data<T>();
  const T* dout = doutt.data<T>();
  T* dx = dxt->data<T>();
  const bool tiled = d.stride == d.ph && d.stride == d.pw;
  if (!(tiled && d.stride == 2) && !OffsetsFit<T>(d)) {
    return naive::MaxPoolBackward(xt, p, doutt, dxt);
  }
  if (tiled && d.stride == 2) {
    ForPlanes(
        d, [&](int64_t a, int64_t b) { Backward2x2<T>(d, x, dout, dx, a, b); });
  } else if (d.stride == 1) {
    ForPlanes(d, [&](int64_t a, int64_t b) {
      BackwardRows<T, 1>(d, x, dout, dx, a, b);
    });
  } else if (d.stride == 2) {
    ForPlanes(d, [&](int64_t a, int64_t b) {
      BackwardRows<T, 2>(d, x, dout, dx, a, b);
    });
  } else {
    ForPlanes(d, [&](int64_t a, int64_t b) {
      BackwardRows<T, 0>(d, x, dout, dx, a, b);
    });
  }
  return std::string(tiled ? "pool:tiled" : "pool:general");
}

}  // namespace

absl::StatusOr<std::string> MaxPoolForward(const Tensor& x, const PoolParam& p,
                                           Tensor* out) {
  if (x.dtype() == DType::kFloat32) return Forward<float>(x, p, out);
  return Forward<double>(x, p, out);
}

absl::StatusOr<std::string> MaxPoolBackward(const Tensor& x, const PoolParam& p,
                                            const Tensor& dout, Tensor* dx) {
  if (x.dtype() == DType::kFloat32) return Backward<float>(x, p, dout, dx);
  return Backward<double>(x, p, dout, dx);
}

}  // namespace layerserve::fast
