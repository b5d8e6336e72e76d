// Helpers shared by the service tests: building wire tensors and requests
// from lib tensors, and the layer cases every RPC is exercised on.
#ifndef LAYERSERVE_TESTS_SERVICE_TEST_UTIL_H_
#define LAYERSERVE_TESTS_SERVICE_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "layerserve/v1/layer_service.pb.h"
#include "lib/tensor.h"
#include "lib/threading.h"
#include "proto/convert.h"

namespace layerserve::testing {

// Built with ThreadSanitizer: libgomp (OpenMP) and Debian's Abseil are not
// instrumented, so servers under test run one intra-op thread (no OpenMP
// teams) and TSan watches the concurrency between calls, which is ours.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kThreadSanitizer = true;
#else
inline constexpr bool kThreadSanitizer = false;
#endif
#else
inline constexpr bool kThreadSanitizer = false;
#endif

// Call once per test binary that runs servers in-process (a namespace-scope
// initializer): under TSan, one intra-op thread for all of them.
inline bool OneIntraOpThreadUnderTsan() {
  if (kThreadSanitizer) SetMaxThreads(1);
  return true;
}

// Built with AddressSanitizer (whose quarantine keeps freed memory
// resident on purpose: no RSS bounds then).
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kAddressSanitizer = true;
#else
inline constexpr bool kAddressSanitizer = false;
#endif
#else
inline constexpr bool kAddressSanitizer = false;
#endif

// The value of a StatusOr the test cannot go on without.
template <typename T>
T ValueOrDie(absl::StatusOr<T> s) {
  if (!s.ok()) {
    ADD_FAILURE() << s.status();
    std::abort();
  }
  return std::move(s).value();
}

inline v1::Tensor ProtoOf(const Tensor& t) {
  v1::Tensor p;
  TensorToProto(t, &p);
  return p;
}

inline Tensor TensorOf(const v1::Tensor& p) {
  return ValueOrDie(TensorFromProto(p, "test"));
}

inline Tensor Linspace(DType dtype, Shape shape, double start, double stop) {
  return ValueOrDie(Tensor::Linspace(dtype, std::move(shape), start, stop));
}

inline Tensor Randn(DType dtype, Shape shape, uint64_t seed) {
  return ValueOrDie(Tensor::RandomNormal(dtype, std::move(shape), seed));
}

inline v1::LayerSpec ConvSpec(const std::string& name, int stride, int pad) {
  v1::LayerSpec s;
  s.set_name(name);
  s.mutable_conv_param()->set_stride(stride);
  s.mutable_conv_param()->set_pad(pad);
  return s;
}

inline v1::LayerSpec PoolSpec(int height, int width, int stride) {
  v1::LayerSpec s;
  s.set_name("max_pool");
  s.mutable_pool_param()->set_pool_height(height);
  s.mutable_pool_param()->set_pool_width(width);
  s.mutable_pool_param()->set_stride(stride);
  return s;
}

// A layer with shapes that exercise it: what the "every layer" tests run.
struct LayerCase {
  std::string name;
  v1::LayerSpec spec;
  std::vector<std::pair<std::string, Shape>> inputs;
};

inline std::vector<LayerCase> AllLayerCases() {
  // Small: the gradient checks perturb every element of every input.
  const Shape x = {2, 2, 6, 6}, w = {3, 2, 3, 3}, b = {3};
  v1::LayerSpec conv_relu_pool = ConvSpec("conv_relu_pool", 1, 1);
  *conv_relu_pool.mutable_pool_param() = PoolSpec(2, 2, 2).pool_param();
  v1::LayerSpec relu;
  relu.set_name("relu");
  return {
      {"conv", ConvSpec("conv", 1, 1), {{"x", x}, {"w", w}, {"b", b}}},
      {"max_pool", PoolSpec(2, 2, 2), {{"x", x}}},
      {"relu", relu, {{"x", {2, 3, 5, 7}}}},
      {"conv_relu",
       ConvSpec("conv_relu", 1, 1),
       {{"x", x}, {"w", w}, {"b", b}}},
      {"conv_relu_pool", conv_relu_pool, {{"x", x}, {"w", w}, {"b", b}}},
  };
}

// Standard-normal inputs for a case, one seed per input.
inline TensorMap RandomInputs(const LayerCase& c, DType dtype,
                              uint64_t seed = 1) {
  TensorMap m;
  for (const auto& [name, shape] : c.inputs) {
    m.emplace(name, Randn(dtype, shape, seed++));
  }
  return m;
}

inline void PutInputs(const TensorMap& inputs, ProtoTensorMap* protos) {
  TensorMapToProto(inputs, protos);
}

inline std::string DTypeParamName(DType d) { return std::string(DTypeName(d)); }

}  // namespace layerserve::testing

#endif  // LAYERSERVE_TESTS_SERVICE_TEST_UTIL_H_
