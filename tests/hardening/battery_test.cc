// The bad-input battery: malformed requests of every RPC, every field wrong
// in every way that matters, sent to the REAL server process over TCP. Each
// must get its precise status code (and a message naming the problem), and
// the server must answer the next valid request correctly. At the end the
// same process is still up and has logged every call.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/hardening/hardening_util.h"

namespace layerserve::testing {
namespace {

using Code = absl::StatusCode;
using ::testing::HasSubstr;

// Small limits, so that the limit cases need little data.
constexpr int64_t kMaxTensorElements = 100000;
constexpr int64_t kMaxRequestElements = 300000;
constexpr int64_t kMaxGradCheckMacs = 100000000;
constexpr int kMaxMessageBytes = 4 << 20;

class Battery {
 public:
  static Battery& Get() {
    static Battery* battery = new Battery;
    return *battery;
  }
  client::LayerClient& client() { return *client_; }
  ServerProcess& server() { return *server_; }
  int port() const { return port_; }

 private:
  Battery() {
    server_ = StartServer(
        {absl::StrCat("--max_tensor_elements=", kMaxTensorElements),
         absl::StrCat("--max_request_elements=", kMaxRequestElements),
         absl::StrCat("--max_gradcheck_macs=", kMaxGradCheckMacs),
         absl::StrCat("--max_message_bytes=", kMaxMessageBytes)},
        &port_);
    client::ClientOptions o = OptionsFor(port_);
    o.max_message_bytes = 64 << 20;  // to send what the server refuses
    client_ = ValueOrDie(client::LayerClient::Connect(o));
  }
  std::unique_ptr<ServerProcess> server_;
  int port_ = 0;
  std::unique_ptr<client::LayerClient> client_;
};

struct BadCase {
  std::string label;
  std::function<absl::Status(client::LayerClient&)> call;
  Code code;
  std::vector<std::string> substrings;
};

// --- request builders: the seed's conv, valid, then broken by `mutate` ----

v1::Tensor& In(google::protobuf::Map<std::string, v1::Tensor>* m,
               const std::string& name) {
  return (*m)[name];
}

void SetShape(v1::Tensor& t, std::vector<int64_t> shape) {
  t.clear_shape();
  for (int64_t d : shape) t.add_shape(d);
}

v1::Tensor SeedDout(DType dtype = DType::kFloat64) {
  return ProtoOf(Randn(dtype, {2, 3, 2, 2}, 5));
}

template <typename Request>
Request FromSeed() {
  const v1::ForwardRequest f = SeedConvForwardRequest();
  Request r;
  *r.mutable_layer() = f.layer();
  *r.mutable_inputs() = f.inputs();
  return r;
}

std::function<absl::Status(client::LayerClient&)> Fwd(
    std::function<void(v1::ForwardRequest&)> mutate) {
  return [mutate](client::LayerClient& c) {
    v1::ForwardRequest r = SeedConvForwardRequest();
    mutate(r);
    return c.Forward(r).status();
  };
}

std::function<absl::Status(client::LayerClient&)> Bwd(
    std::function<void(v1::BackwardRequest&)> mutate) {
  return [mutate](client::LayerClient& c) {
    auto r = FromSeed<v1::BackwardRequest>();
    *r.mutable_dout() = SeedDout();
    mutate(r);
    return c.Backward(r).status();
  };
}

std::function<absl::Status(client::LayerClient&)> Gc(
    std::function<void(v1::GradCheckRequest&)> mutate) {
  return [mutate](client::LayerClient& c) {
    auto r = FromSeed<v1::GradCheckRequest>();
    mutate(r);
    return c.GradCheck(r).status();
  };
}

std::function<absl::Status(client::LayerClient&)> Cmp(
    std::function<void(v1::CompareRequest&)> mutate) {
  return [mutate](client::LayerClient& c) {
    auto r = FromSeed<v1::CompareRequest>();
    mutate(r);
    return c.Compare(r).status();
  };
}

std::function<absl::Status(client::LayerClient&)> Raw(std::string method,
                                                      std::string bytes) {
  return [method, bytes](client::LayerClient& c) {
    return RawUnaryCall(c.channel(), method, bytes);
  };
}

// A relu request on x of `shape` (zero-filled data of the right length).
void Relu(google::protobuf::Map<std::string, v1::Tensor>* inputs,
          v1::LayerSpec* layer, std::vector<int64_t> shape) {
  layer->Clear();
  layer->set_name("relu");
  inputs->clear();
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  v1::Tensor& x = In(inputs, "x");
  x.set_dtype(v1::FLOAT64);
  SetShape(x, shape);
  x.mutable_data()->assign(static_cast<size_t>(n) * 8, '\0');
}

// Small conv inputs: x (1,1,4,4), w (1,1,k,k), b (1,).
void SmallConv(google::protobuf::Map<std::string, v1::Tensor>* inputs,
               v1::LayerSpec* layer, int k, int stride, int pad) {
  *layer = ConvSpec("conv", stride, pad);
  inputs->clear();
  In(inputs, "x") = ProtoOf(Randn(DType::kFloat64, {1, 1, 4, 4}, 1));
  In(inputs, "w") = ProtoOf(Randn(DType::kFloat64, {1, 1, k, k}, 2));
  In(inputs, "b") = ProtoOf(Randn(DType::kFloat64, {1}, 3));
}

std::string Method(const std::string& name) {
  return absl::StrCat("/layerserve.v1.LayerService/", name);
}

std::vector<BadCase> Cases() {
  const Code kInvalid = Code::kInvalidArgument;
  const Code kExhausted = Code::kResourceExhausted;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const int64_t big = int64_t{1} << 32;
  const int32_t int32_max = std::numeric_limits<int32_t>::max();
  const int32_t int32_min = std::numeric_limits<int32_t>::min();
  std::vector<BadCase> cases = {
      // --- LayerSpec -------------------------------------------------------
      {"LayerUnknown",
       Fwd([](auto& r) { r.mutable_layer()->set_name("conv2d"); }),
       kInvalid,
       {"layer.name: unknown layer 'conv2d'", "known layers: conv"}},
      {"LayerNameEmpty",
       Fwd([](auto& r) { r.mutable_layer()->set_name(""); }),
       kInvalid,
       {"layer.name: unknown layer ''"}},
      {"LayerAbsent",
       Fwd([](auto& r) { r.clear_layer(); }),
       kInvalid,
       {"layer.name: unknown layer ''"}},
      {"LayerNameWrongCase",
       Fwd([](auto& r) { r.mutable_layer()->set_name("CONV"); }),
       kInvalid,
       {"unknown layer 'CONV'"}},
      {"LayerNameWithNul",
       Fwd([](auto& r) {
         r.mutable_layer()->set_name(std::string("conv\0x", 6));
       }),
       kInvalid,
       {"unknown layer"}},
      {"ConvParamAbsent",
       Fwd([](auto& r) { r.mutable_layer()->clear_conv_param(); }),
       kInvalid,
       {"layer.conv_param: layer 'conv' requires it, but it is not set"}},
      {"PoolParamAbsent",
       Fwd([](auto& r) { r.mutable_layer()->set_name("conv_relu_pool"); }),
       kInvalid,
       {"layer.pool_param: layer 'conv_relu_pool' requires it"}},
      {"ConvStrideZero",
       Fwd([](auto& r) {
         r.mutable_layer()->mutable_conv_param()->set_stride(0);
       }),
       kInvalid,
       {"conv: conv_param.stride must be >= 1, got 0"}},
      {"ConvStrideNegative",
       Fwd([](auto& r) {
         r.mutable_layer()->mutable_conv_param()->set_stride(int32_min);
       }),
       kInvalid,
       {"conv_param.stride must be >= 1, got -2147483648"}},
      {"ConvPadNegative",
       Fwd([](auto& r) {
         r.mutable_layer()->mutable_conv_param()->set_pad(-1);
       }),
       kInvalid,
       {"conv: conv_param.pad must be >= 0, got -1"}},
      {"ConvPadHugeOutput",
       Fwd([](auto& r) {
         SmallConv(r.mutable_inputs(), r.mutable_layer(), 3, 1, 1000000000);
       }),
       kExhausted,
       {"conv: output out would have 4000000008000000004 elements",
        "(--max_tensor_elements)"}},
      {"ConvPadInt32Max",
       Fwd([int32_max](auto& r) {
         SmallConv(r.mutable_inputs(), r.mutable_layer(), 3, 1, int32_max);
       }),
       kInvalid,
       {"conv: output: element count of shape (1, 1, 4294967296, "
        "4294967296) overflows int64"}},
      {"ConvKernelLargerThanPaddedInput",
       Fwd([](auto& r) {
         SmallConv(r.mutable_inputs(), r.mutable_layer(), 7, 1, 1);
       }),
       kInvalid,
       {"conv: kernel height 7 (w.shape[2]) exceeds the padded input "
        "height 6"}},
      {"PoolHeightZero",
       Fwd([](auto& r) {
         *r.mutable_layer() = PoolSpec(0, 2, 2);
         r.mutable_inputs()->erase("w");
         r.mutable_inputs()->erase("b");
       }),
       kInvalid,
       {"max_pool: pool_param.pool_height must be >= 1, got 0"}},
      {"PoolWidthNegative",
       Fwd([](auto& r) {
         *r.mutable_layer() = PoolSpec(2, -3, 2);
         r.mutable_inputs()->erase("w");
         r.mutable_inputs()->erase("b");
       }),
       kInvalid,
       {"pool_param.pool_width must be >= 1, got -3"}},
      {"PoolStrideZero",
       Fwd([](auto& r) {
         *r.mutable_layer() = PoolSpec(2, 2, 0);
         r.mutable_inputs()->erase("w");
         r.mutable_inputs()->erase("b");
       }),
       kInvalid,
       {"pool_param.stride must be >= 1, got 0"}},
      {"PoolWindowLargerThanInput",
       Fwd([](auto& r) {
         *r.mutable_layer() = PoolSpec(5, 5, 1);
         r.mutable_inputs()->erase("w");
         r.mutable_inputs()->erase("b");
       }),
       kInvalid,
       {"max_pool"}},
      {"ImplementationUnknown",
       Fwd([](auto& r) {
         r.set_implementation(static_cast<v1::Implementation>(9));
       }),
       kInvalid,
       {"implementation: must be NAIVE, FAST or IMPLEMENTATION_UNSPECIFIED, "
        "got 9"}},
      {"ImplementationNegative",
       Fwd([](auto& r) {
         r.set_implementation(static_cast<v1::Implementation>(-1));
       }),
       kInvalid,
       {"implementation: must be NAIVE, FAST or IMPLEMENTATION_UNSPECIFIED, "
        "got -1"}},

      // --- the inputs map --------------------------------------------------
      {"InputsMapAbsent",
       Fwd([](auto& r) { r.clear_inputs(); }),
       kInvalid,
       {"conv: missing input 'x' (expected inputs: x, w, b)"}},
      {"InputMissing",
       Fwd([](auto& r) { r.mutable_inputs()->erase("w"); }),
       kInvalid,
       {"conv: missing input 'w'"}},
      {"InputUnexpected",
       Fwd([](auto& r) {
         In(r.mutable_inputs(), "bias") = r.inputs().at("b");
       }),
       kInvalid,
       {"conv: unexpected input 'bias'"}},
      {"InputKeyEmpty",
       Fwd([](auto& r) { In(r.mutable_inputs(), "") = r.inputs().at("b"); }),
       kInvalid,
       {"conv: unexpected input ''"}},
      {"InputKeyWrongCase",
       Fwd([](auto& r) {
         In(r.mutable_inputs(), "X") = r.inputs().at("x");
         r.mutable_inputs()->erase("x");
       }),
       kInvalid,
       {"conv: missing input 'x'"}},

      // --- Tensor: dtype ---------------------------------------------------
      {"DtypeUnspecified",
       Fwd([](auto& r) {
         In(r.mutable_inputs(), "x").set_dtype(v1::DTYPE_UNSPECIFIED);
       }),
       kInvalid,
       {"inputs[\"x\"].dtype: must be FLOAT32, FLOAT64 or INT64, got "
        "DTYPE_UNSPECIFIED"}},
      {"DtypeUnknown",
       Fwd([](auto& r) {
         In(r.mutable_inputs(), "w").set_dtype(static_cast<v1::DType>(77));
       }),
       kInvalid,
       {"inputs[\"w\"].dtype: must be FLOAT32, FLOAT64 or INT64, got 77"}},
      {"DtypeNegative",
       Fwd([](auto& r) {
         In(r.mutable_inputs(), "b").set_dtype(static_cast<v1::DType>(-5));
       }),
       kInvalid,
       {"inputs[\"b\"].dtype: must be FLOAT32, FLOAT64 or INT64, got -5"}},
      {"DtypesMixed",
       Fwd([](auto& r) {
         In(r.mutable_inputs(), "b") =
             ProtoOf(Linspace(DType::kFloat32, {3}, -0.1, 0.2));
       }),
       kInvalid,
       {"conv: input b is float32 but x is float64"}},

      // --- Tensor: shape ---------------------------------------------------
      {"RankZero",
       Fwd([](auto& r) {
         In(r.mutable_inputs(), "b").clear_shape();
         In(r.mutable_inputs(), "b").clear_data();
       }),
       kInvalid,
       {"inputs[\"b\"].shape: rank must be 1..4, got 0"}},
      {"RankFive",
       Fwd([](auto& r) {
         SetShape(In(r.mutable_inputs(), "x"), {1, 2, 3, 4, 4});
       }),
       kInvalid,
       {"inputs[\"x\"].shape: rank must be 1..4, got 5"}},
      {"RankWrongForLayer",
       Fwd([](auto& r) {
         SetShape(In(r.mutable_inputs(), "x"), {6, 4, 4});
       }),
       kInvalid,
       {"conv: input x must have rank 4 (N, C, H, W), got rank 3"}},
      {"BiasRankTwo",
       Fwd([](auto& r) {
         SetShape(In(r.mutable_inputs(), "b"), {1, 3});
       }),
       kInvalid,
       {"conv: input b"}},
      {"DimZero",
       Fwd([](auto& r) { In(r.mutable_inputs(), "w").set_shape(1, 0); }),
       kInvalid,
       {"inputs[\"w\"].shape: dim 1 must be >= 1, got 0"}},
      {"DimNegative",
       Fwd([](auto& r) { In(r.mutable_inputs(), "x").set_shape(0, -2); }),
       kInvalid,
       {"inputs[\"x\"].shape: dim 0 must be >= 1, got -2"}},
      {"DimInt64Min",
       Fwd([](auto& r) {
         In(r.mutable_inputs(), "x")
             .set_shape(2, std::numeric_limits<int64_t>::min());
       }),
       kInvalid,
       {"inputs[\"x\"].shape: dim 2 must be >= 1, got -9223372036854775808"}},
      {"ElementCountOverflowsInt64",
       Fwd([big](auto& r) {
         SetShape(In(r.mutable_inputs(), "x"), {big, big, big, 1});
       }),
       kInvalid,
       {"inputs[\"x\"].shape: element count of shape (4294967296, "
        "4294967296, 4294967296, 1) overflows int64"}},
      {"ByteCountOverflowsInt64",
       Fwd([](auto& r) {
         SetShape(In(r.mutable_inputs(), "x"), {int64_t{1} << 61, 1, 1, 2});
       }),
       kInvalid,
       {"inputs[\"x\"].data: the byte count", "overflows int64"}},
      {"HugeDimsNoData",
       Fwd([](auto& r) {
         SetShape(In(r.mutable_inputs(), "x"), {1000000, 1000000, 3, 4});
       }),
       kInvalid,
       {"inputs[\"x\"].data: expected 96000000000000 bytes"}},

      // --- Tensor: data ----------------------------------------------------
      {"DataTooShort",
       Fwd([](auto& r) {
         In(r.mutable_inputs(), "x").mutable_data()->resize(760);
       }),
       kInvalid,
       {"inputs[\"x\"].data: expected 768 bytes (shape (2, 3, 4, 4) x 8 "
        "bytes for FLOAT64), got 760"}},
      {"DataTooLong",
       Fwd([](auto& r) {
         In(r.mutable_inputs(), "b").mutable_data()->append("1234");
       }),
       kInvalid,
       {"inputs[\"b\"].data: expected 24 bytes (shape (3,) x 8 bytes for "
        "FLOAT64), got 28"}},
      {"DataEmpty",
       Fwd([](auto& r) { In(r.mutable_inputs(), "w").clear_data(); }),
       kInvalid,
       {"inputs[\"w\"].data: expected 1152 bytes", "got 0"}},
      {"DataSizedForTheOtherDtype",
       Fwd([](auto& r) { In(r.mutable_inputs(), "x").set_dtype(v1::FLOAT32); }),
       kInvalid,
       {"inputs[\"x\"].data: expected 384 bytes (shape (2, 3, 4, 4) x 4 "
        "bytes for FLOAT32), got 768"}},

      // --- shapes against each other ---------------------------------------
      {"ChannelsDisagree",
       Fwd([](auto& r) {
         In(r.mutable_inputs(), "w") =
             ProtoOf(Linspace(DType::kFloat64, {3, 2, 4, 4}, -0.2, 0.3));
       }),
       kInvalid,
       {"conv: input x has 3 channels (x.shape[1]) but w expects 2 "
        "(w.shape[1])"}},
      {"BiasLengthDisagrees",
       Fwd([](auto& r) {
         In(r.mutable_inputs(), "b") =
             ProtoOf(Linspace(DType::kFloat64, {4}, -0.1, 0.2));
       }),
       kInvalid,
       {"conv: input b"}},

      // --- cost limits -----------------------------------------------------
      {"TensorTooManyElements",
       Fwd([](auto& r) {
         Relu(r.mutable_inputs(), r.mutable_layer(), {2, 50001});
       }),
       kExhausted,
       {"relu: input x would have 100002 elements (shape (2, 50001)), more "
        "than the limit of 100000 elements (--max_tensor_elements)"}},
      {"IntermediateTooManyElements",
       Fwd([](auto& r) {
         SmallConv(r.mutable_inputs(), r.mutable_layer(), 1, 1, 200);
         r.mutable_layer()->set_name("conv_relu_pool");
         *r.mutable_layer()->mutable_pool_param() =
             PoolSpec(2, 2, 400).pool_param();
       }),
       kExhausted,
       {"conv_relu_pool: the intermediate conv output would have 163216 "
        "elements"}},
      {"CallTooManyElements",
       Bwd([](auto& r) {
         Relu(r.mutable_inputs(), r.mutable_layer(), {80000});
         *r.mutable_dout() = r.inputs().at("x");
       }),
       kExhausted,
       {"relu: this Backward call would hold 320000 tensor elements at once",
        "more than the limit of 300000 elements per call "
        "(--max_request_elements)"}},
      {"GradCheckTooCostly",
       Gc([](auto& r) {
         *r.mutable_layer() = ConvSpec("conv", 1, 1);
         In(r.mutable_inputs(), "x") =
             ProtoOf(Randn(DType::kFloat64, {2, 4, 16, 16}, 1));
         In(r.mutable_inputs(), "w") =
             ProtoOf(Randn(DType::kFloat64, {8, 4, 3, 3}, 2));
         In(r.mutable_inputs(), "b") = ProtoOf(Randn(DType::kFloat64, {8}, 3));
       }),
       kExhausted,
       {"conv: this gradient check would run 4688 forward passes (2 for "
        "each of the 2344 checked elements of x, w, b, all of them) of about "
        "157992 multiply-adds each, 740666496 in all",
        "more than the limit of 100000000 (--max_gradcheck_macs); raise "
        "--max_gradcheck_macs or check a random sample of the elements "
        "(num_checks, sampled mode)"}},
      {"GradCheckSampledStillTooCostly",
       Gc([](auto& r) {
         *r.mutable_layer() = ConvSpec("conv", 1, 1);
         In(r.mutable_inputs(), "x") =
             ProtoOf(Randn(DType::kFloat64, {2, 4, 16, 16}, 1));
         In(r.mutable_inputs(), "w") =
             ProtoOf(Randn(DType::kFloat64, {8, 4, 3, 3}, 2));
         In(r.mutable_inputs(), "b") = ProtoOf(Randn(DType::kFloat64, {8}, 3));
         r.set_num_checks(400);
       }),
       kExhausted,
       {"would run 1392 forward passes (2 for each of the 696 checked "
        "elements of x, w, b, at most 400 per input)",
        "(--max_gradcheck_macs)"}},
      {"RequestLargerThanMessageLimit",
       Fwd([](auto& r) {
         Relu(r.mutable_inputs(), r.mutable_layer(), {600000});
       }),
       kExhausted,
       {"larger than max"}},

      // --- BackwardRequest.dout --------------------------------------------
      {"BackwardDoutAbsent",
       Bwd([](auto& r) { r.clear_dout(); }),
       kInvalid,
       {"conv: dout is missing (expected shape (2, 3, 2, 2))"}},
      {"BackwardDoutShape",
       Bwd([](auto& r) {
         *r.mutable_dout() = ProtoOf(Randn(DType::kFloat64, {2, 3, 2, 3}, 1));
       }),
       kInvalid,
       {"conv: dout has shape (2, 3, 2, 3) but the output has shape (2, 3, "
        "2, 2)"}},
      {"BackwardDoutDtype",
       Bwd([](auto& r) { *r.mutable_dout() = SeedDout(DType::kFloat32); }),
       kInvalid,
       {"conv: dout is float32 but the inputs are float64"}},
      {"BackwardDoutDtypeUnspecified",
       Bwd([](auto& r) { r.mutable_dout()->set_dtype(v1::DTYPE_UNSPECIFIED); }),
       kInvalid,
       {"dout.dtype: must be FLOAT32, FLOAT64 or INT64, got "
        "DTYPE_UNSPECIFIED"}},
      {"BackwardDoutDataLength",
       Bwd([](auto& r) { r.mutable_dout()->mutable_data()->resize(8); }),
       kInvalid,
       {"dout.data: expected 192 bytes (shape (2, 3, 2, 2) x 8 bytes for "
        "FLOAT64), got 8"}},
      {"BackwardDoutRankFive",
       Bwd([](auto& r) {
         SetShape(*r.mutable_dout(), {1, 2, 3, 2, 2});
       }),
       kInvalid,
       {"dout.shape: rank must be 1..4, got 5"}},
      {"BackwardDoutTooManyElements",
       Bwd([](auto& r) {
         Relu(r.mutable_inputs(), r.mutable_layer(), {10});
         *r.mutable_dout() = ProtoOf(Randn(DType::kFloat64, {100001}, 2));
       }),
       kExhausted,
       {"dout would have 100001 elements", "(--max_tensor_elements)"}},
      {"BackwardImplementationUnknown",
       Bwd([](auto& r) {
         r.set_implementation(static_cast<v1::Implementation>(3));
       }),
       kInvalid,
       {"implementation: must be NAIVE, FAST or IMPLEMENTATION_UNSPECIFIED, "
        "got 3"}},

      // --- GradCheckRequest ------------------------------------------------
      {"GradCheckStepNaN",
       Gc([nan](auto& r) { r.set_h(nan); }),
       kInvalid,
       {"h: the step must be finite and > 0, got nan"}},
      {"GradCheckStepInfinite",
       Gc([inf](auto& r) { r.set_h(inf); }),
       kInvalid,
       {"h: the step must be finite and > 0, got inf"}},
      {"GradCheckStepNegative",
       Gc([](auto& r) { r.set_h(-1e-5); }),
       kInvalid,
       {"h: the step must be finite and > 0, got -1e-05"}},
      {"GradCheckNumChecksNegative",
       Gc([](auto& r) { r.set_num_checks(-3); }),
       kInvalid,
       {"num_checks: must be >= 0 (0 checks every element), got -3"}},
      {"GradCheckNaNInput",
       Gc([nan](auto& r) {
         Tensor x = TensorOf(r.inputs().at("x"));
         x.SetFlat(5, nan);
         In(r.mutable_inputs(), "x") = ProtoOf(x);
       }),
       kInvalid,
       {"input x has a non-finite value nan at index [0, 0, 1, 1]"}},
      {"GradCheckInfInput",
       Gc([inf](auto& r) {
         Tensor b = TensorOf(r.inputs().at("b"));
         b.SetFlat(2, inf);
         In(r.mutable_inputs(), "b") = ProtoOf(b);
       }),
       kInvalid,
       {"input b has a non-finite value inf at index [2]"}},
      {"GradCheckNaNDout",
       Gc([nan](auto& r) {
         Tensor dout = Randn(DType::kFloat64, {2, 3, 2, 2}, 1);
         dout.SetFlat(3, nan);
         *r.mutable_dout() = ProtoOf(dout);
       }),
       kInvalid,
       {"dout has a non-finite value nan"}},
      {"GradCheckDoutShape",
       Gc([](auto& r) {
         *r.mutable_dout() = ProtoOf(Randn(DType::kFloat64, {2, 3, 2}, 1));
       }),
       kInvalid,
       {"dout has shape (2, 3, 2) but the output has shape (2, 3, 2, 2)"}},
      {"GradCheckUnknownLayer",
       Gc([](auto& r) { r.mutable_layer()->set_name("softmax_loss_typo"); }),
       kInvalid,
       {"layer.name: unknown layer 'softmax_loss_typo'"}},

      // --- CompareRequest --------------------------------------------------
      {"CompareRepeatsNegative",
       Cmp([](auto& r) { r.set_repeats(-1); }),
       kInvalid,
       {"repeats: must be 0..100 (0 means 1), got -1"}},
      {"CompareRepeatsTooMany",
       Cmp([](auto& r) { r.set_repeats(101); }),
       kInvalid,
       {"repeats: must be 0..100 (0 means 1), got 101"}},
      {"CompareRepeatsInt32Max",
       Cmp([int32_max](auto& r) { r.set_repeats(int32_max); }),
       kInvalid,
       {"got 2147483647"}},
      {"CompareRepeatsInt32Min",
       Cmp([int32_min](auto& r) { r.set_repeats(int32_min); }),
       kInvalid,
       {"got -2147483648"}},
      {"CompareNaNInput",
       Cmp([nan](auto& r) {
         Tensor w = TensorOf(r.inputs().at("w"));
         w.SetFlat(0, nan);
         In(r.mutable_inputs(), "w") = ProtoOf(w);
       }),
       kInvalid,
       {"input w has a non-finite value nan at index [0, 0, 0, 0]"}},
      {"CompareDoutDtype",
       Cmp([](auto& r) { *r.mutable_dout() = SeedDout(DType::kFloat32); }),
       kInvalid,
       {"conv: dout is float32 of shape (2, 3, 2, 2) but the output is "
        "float64 of shape (2, 3, 2, 2)"}},
      {"CompareDoutDataLength",
       Cmp([](auto& r) {
         *r.mutable_dout() = SeedDout();
         r.mutable_dout()->mutable_data()->append("x");
       }),
       kInvalid,
       {"dout.data: expected 192 bytes", "got 193"}},
      {"CompareMissingInputs",
       Cmp([](auto& r) { r.clear_inputs(); }),
       kInvalid,
       {"conv: missing input 'x'"}},

      // --- bytes no stub would send ----------------------------------------
      {"UndecodableBytes",
       Raw(Method("Forward"), "\xff\xff\xff\xff\xff"),
       Code::kInternal,
       {}},
      {"TruncatedMessage",
       Raw(Method("Backward"),
           [] {
             std::string s = SeedConvForwardRequest().SerializeAsString();
             return s.substr(0, s.size() / 2);
           }()),
       Code::kInternal,
       {}},
      {"WrongWireTypeForTheLayerField",
       // Field 1 (layer, a message) sent as a varint: protobuf keeps it as
       // an unknown field, so the request has no layer.
       Raw(Method("GradCheck"), std::string("\x08\x01", 2)),
       kInvalid,
       {"layer.name: unknown layer ''"}},
      {"LayerNameNotUtf8",
       // layer { name: "\xc3\x28" }: proto3 strings must be UTF-8, so the
       // request does not parse.
       Raw(Method("Forward"), std::string("\x0a\x04\x0a\x02\xc3\x28", 6)),
       Code::kInternal,
       {}},
      {"LengthPrefixPastTheEnd",
       // layer: a length of 2^32 - 1 bytes, then nothing.
       Raw(Method("Compare"), std::string("\x0a\xff\xff\xff\xff\x0f", 6)),
       Code::kInternal,
       {}},
      {"UnknownMethod", Raw(Method("Train"), ""), Code::kUnimplemented, {}},
      {"UnknownService",
       Raw("/layerserve.v2.LayerService/Forward", ""),
       Code::kUnimplemented,
       {}},
  };
  return cases;
}

class BatteryTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BatteryTest, PreciseStatusThenTheNextValidRequestIsAnsweredCorrectly) {
  Battery& battery = Battery::Get();
  ASSERT_GT(battery.port(), 0);
  const BadCase& c = GetParam();
  const absl::Status status = c.call(battery.client());
  EXPECT_EQ(status.code(), c.code) << status;
  for (const std::string& s : c.substrings) {
    EXPECT_THAT(std::string(status.message()), HasSubstr(s));
  }
  ExpectSeedConvWorks(battery.client());
}

INSTANTIATE_TEST_SUITE_P(Cases, BatteryTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.label; });

TEST(BatterySizeTest, AtLeastFortyCases) { EXPECT_GE(Cases().size(), 40u); }

// After every case: the same process served all of them, is still up, and
// logged one line per call that reached a handler.
class AfterTheBattery : public ::testing::Environment {
 public:
  void TearDown() override {
    Battery& battery = Battery::Get();
    ASSERT_GT(battery.port(), 0);
    EXPECT_EQ(battery.client().Health().value_or("error"), "SERVING");
    ExpectSeedConvWorks(battery.client());
    const std::string log = battery.server().Stderr();
    EXPECT_THAT(log, HasSubstr("status=OK"));
    if (::testing::GTEST_FLAG(filter) == "*") {
      EXPECT_THAT(log, HasSubstr("status=INVALID_ARGUMENT"));
      EXPECT_THAT(log, HasSubstr("status=RESOURCE_EXHAUSTED"));
    }
    std::printf(
        "battery: %zu malformed requests, each followed by a valid "
        "one, against one server process\n",
        Cases().size());
  }
};
::testing::Environment* const after_the_battery =
    ::testing::AddGlobalTestEnvironment(new AfterTheBattery);

}  // namespace
}  // namespace layerserve::testing
