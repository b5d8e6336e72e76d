// The seed notebook's fixed inputs and expected outputs, and the tolerances
// every test of the naive layers uses, in one place.
#ifndef LAYERSERVE_TESTS_LIB_SEED_DATA_H_
#define LAYERSERVE_TESTS_LIB_SEED_DATA_H_

#include <vector>

namespace layerserve::testing {

// In [14]: x (2,3,4,4) = linspace(-0.1, 0.5), w (3,3,4,4) =
// linspace(-0.2, 0.3), b (3,) = linspace(-0.1, 0.2), stride 2, pad 1.
inline const std::vector<double>& SeedConvCorrectOut() {
  static const std::vector<double> v = {
      -0.08759809, -0.10987781, -0.18387192, -0.2109216,   //
      0.21027089,  0.21661097,  0.22847626,  0.23004637,   //
      0.50813986,  0.54309974,  0.64082444,  0.67101435,   //
      -0.98053589, -1.03143541, -1.19128892, -1.24695841,  //
      0.69108355,  0.66880383,  0.59480972,  0.56776003,   //
      2.36270298,  2.36904306,  2.38090835,  2.38247847};
  return v;
}

// In [16]: x (2,3,4,4) = linspace(-0.3, 0.4), 2x2 pool, stride 2. The
// notebook's literal misses two brackets in sample 0; the 24 numbers are
// right (the seed README checked them against the 2x2 max).
inline const std::vector<double>& SeedPoolCorrectOut() {
  static const std::vector<double> v = {
      -0.26315789, -0.24842105, -0.20421053, -0.18947368,  //
      -0.14526316, -0.13052632, -0.08631579, -0.07157895,  //
      -0.02736842, -0.01263158, 0.03157895,  0.04631579,   //
      0.09052632,  0.10526316,  0.14947368,  0.16421053,   //
      0.20842105,  0.22315789,  0.26736842,  0.28210526,   //
      0.32631579,  0.34105263,  0.38526316,  0.4};
  return v;
}

// float64: the seed's own orders of magnitude. Its correct_out arrays have
// 8 decimals, so a correct layer gives rel_error ~2e-8 (conv) and ~4e-8
// (pool) against them; its gradient checks printed ~1e-9 (conv), ~1e-12
// (pool), ~1e-8 (conv_relu_pool dx) and ~8e-8 (conv_relu dx).
inline constexpr double kF64VectorTol = 5e-8;
inline constexpr double kF64ConvGradTol = 1e-7;
inline constexpr double kF64PoolGradTol = 1e-10;
inline constexpr double kF64CompositeGradTol = 1e-6;

// float32 carries 24 bits (~6e-8 relative). Against the 8-decimal seed
// vectors the rounding of the values dominates: 1e-6 leaves a 10x margin
// over what we measure.
inline constexpr double kF32VectorTol = 1e-6;
// float32 analytic gradients against float64 numeric ones on the same
// inputs: float32 rounding (~6e-8) plus the float64 check's own error on
// near-zero elements (up to ~2e-7 for conv_relu_pool); 1e-5 leaves margin.
inline constexpr double kF32VsF64GradTol = 1e-5;
// A gradient check run in float32 itself, on conv: a 1e-5 step is below
// float32's resolution near 1, and conv is linear in each input, so a large
// step adds no truncation error; what remains is the float32 rounding of the
// outputs, ~6e-8 |out| / h, which for the seed's shapes measures < 5e-4.
inline constexpr double kF32GradStep = 1e-2;
inline constexpr double kF32ConvGradTol = 5e-3;

}  // namespace layerserve::testing

#endif  // LAYERSERVE_TESTS_LIB_SEED_DATA_H_
