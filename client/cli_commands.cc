// health, list, forward, backward, gradcheck, compare.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/cli.h"
#include "client/cli_common.h"
#include "client/cli_output.h"
#include "client/generators.h"
#include "client/npy.h"
#include "lib/registry.h"
#include "proto/convert.h"

namespace layerserve::client {
namespace {

constexpr char kInputsHelp[] =
    "Inputs are NAME=SPEC with SPEC one of randn:D1,D2,... (seeded by\n"
    "--seed), linspace:START,STOP:D1,..., zeros:D1,..., labels:N:C (N int64\n"
    "class labels uniform in [0, C), seeded by --seed; for a loss's y) or a\n"
    ".npy file (float32, float64, or int64 for labels). Batchnorm layers take\n"
    "--mode (required), --eps, --momentum; dropout --mode, --p, "
    "--dropout_seed.";

// Everything a layer command needs once its flags are parsed.
struct Prepared {
  LayerSpec spec;
  Impl impl = Impl::kFast;
  TensorMap tensors;
};

absl::StatusOr<Prepared> Prepare(const FlagSet& flags, const LayerFlags& lf,
                                 const std::vector<std::string>& extra) {
  Prepared p;
  absl::StatusOr<LayerSpec> spec = LayerSpecFromFlags(flags, lf);
  if (!spec.ok()) return spec.status();
  p.spec = *std::move(spec);
  absl::StatusOr<Impl> impl = ImplFromFlags(lf);
  if (!impl.ok()) return impl.status();
  p.impl = *impl;
  absl::StatusOr<TensorMap> tensors = TensorsFromArgs(flags, lf, p.spec, extra);
  if (!tensors.ok()) return tensors.status();
  p.tensors = *std::move(tensors);
  return p;
}

std::string NpyPath(const std::string& dir, absl::string_view name) {
  return (std::filesystem::path(dir) / absl::StrCat(name, ".npy")).string();
}

// Prints (or adds to `json`) the summary of each tensor of a response map and
// writes it to `out_dir` when set. Returns a usage-class error for a file
// that cannot be written.
absl::Status EmitTensors(
    const google::protobuf::Map<std::string, v1::Tensor>& tensors,
    absl::string_view field, const std::string& out_dir, bool json_mode,
    JsonWriter& json) {
  std::vector<std::string> names;
  for (const auto& [name, unused] : tensors) names.push_back(name);
  std::sort(names.begin(), names.end());
  json.BeginObject();
  for (const std::string& name : names) {
    absl::StatusOr<Tensor> t =
        FromWire(tensors.at(name), MapEntryField(field, name));
    if (!t.ok()) return t.status();
    std::string path;
    if (!out_dir.empty()) {
      path = NpyPath(out_dir, name);
      absl::Status st = WriteNpy(path, *t);
      if (!st.ok()) return st;
    }
    if (json_mode) {
      json.Key(name).BeginObject();
      SummaryJson(*t, json);
      if (!path.empty()) json.Key("file").String(path);
      json.EndObject();
    } else {
      std::cout << SummaryLine(name, *t)
                << (path.empty() ? "" : absl::StrCat(" -> ", path)) << "\n";
    }
  }
  json.EndObject();
  return absl::OkStatus();
}

void PrintJson(const JsonWriter& json) { std::cout << json.str() << "\n"; }

// "checked 20 of 150 elements: (0, 1, 3, 2), (1, 0, 0, 4), ... (15 more)",
// or "checked all 16 elements" when sampled mode checked an input whole.
std::string CheckedLine(const std::vector<int64_t>& checked, int64_t elements,
                        const std::vector<int64_t>& shape) {
  if (checked.empty()) {
    return absl::StrCat("checked all ", elements, " elements");
  }
  constexpr size_t kShown = 5;
  std::vector<std::string> shown;
  for (size_t i = 0; i < checked.size() && i < kShown; ++i) {
    // C-order flat index -> multi-index over `shape` (flat when unknown).
    std::vector<int64_t> index(shape.size(), 0);
    int64_t rest = checked[i];
    for (size_t d = shape.size(); d-- > 0;) {
      if (shape[d] <= 0) continue;
      index[d] = rest % shape[d];
      rest /= shape[d];
    }
    shown.push_back(shape.empty() ? absl::StrCat(checked[i])
                                  : ShapeString(index));
  }
  std::string line = absl::StrCat("checked ", checked.size(), " of ", elements,
                                  " elements: ", absl::StrJoin(shown, ", "));
  if (checked.size() > kShown) {
    absl::StrAppend(&line, ", ... (", checked.size() - kShown, " more)");
  }
  return line;
}

}  // namespace

int RunHealth(const Args& args) {
  ConnectionFlags conn;
  std::string service;
  FlagSet flags("layerctl health",
                "Asks the server's grpc.health.v1 service whether it is "
                "serving.\nExit 0 when SERVING, 1 when not, 3 when the "
                "server cannot be reached.",
                "",
                "  layerctl health --server 127.0.0.1:50051\n"
                "  prints SERVING; used as the Docker HEALTHCHECK");
  AddConnectionFlags(flags, conn, absl::Seconds(5));
  flags.String("service", &service,
               "service name to check (empty: the whole server)");
  if (std::optional<int> rc = ParseFlags(flags, args, "health")) return *rc;
  absl::StatusOr<std::unique_ptr<LayerClient>> client = ConnectFromFlags(conn);
  if (!client.ok()) return ReportError("health", client.status(), false);
  absl::StatusOr<std::string> status = (*client)->Health(service);
  if (!status.ok()) return ReportError("health", status.status(), true, &conn);
  if (conn.json) {
    JsonWriter json;
    json.BeginObject().Key("server").String(conn.server);
    json.Key("status").String(*status).EndObject();
    PrintJson(json);
  } else {
    std::cout << *status << "\n";
  }
  return *status == "SERVING" ? kExitOk : kExitCheckFailed;
}

int RunList(const Args& args) {
  ConnectionFlags conn;
  FlagSet flags("layerctl list",
                "Prints the server's layer catalog (ListLayers) as a table.",
                "", "  layerctl list --server 127.0.0.1:50051");
  AddConnectionFlags(flags, conn, absl::Seconds(10));
  if (std::optional<int> rc = ParseFlags(flags, args, "list")) return *rc;
  absl::StatusOr<std::unique_ptr<LayerClient>> client = ConnectFromFlags(conn);
  if (!client.ok()) return ReportError("list", client.status(), false);
  absl::StatusOr<v1::ListLayersResponse> resp = (*client)->ListLayers();
  if (!resp.ok()) return ReportError("list", resp.status(), true, &conn);

  auto impls = [](const v1::LayerInfo& l) {
    std::vector<std::string> v;
    for (int i : l.implementations()) {
      v.push_back(absl::AsciiStrToLower(v1::Implementation_Name(i)));
    }
    return v;
  };
  auto dtypes = [](const v1::LayerInfo& l) {
    std::vector<std::string> v;
    for (int d : l.dtypes()) {
      v.push_back(absl::AsciiStrToLower(v1::DType_Name(d)));
    }
    return v;
  };
  if (conn.json) {
    JsonWriter json;
    json.BeginObject().Key("layers").BeginArray();
    for (const v1::LayerInfo& l : resp->layers()) {
      json.BeginObject().Key("name").String(l.name());
      json.Key("summary").String(l.summary());
      json.Key("inputs").BeginArray();
      for (const std::string& s : l.inputs()) json.String(s);
      json.EndArray().Key("params").BeginArray();
      for (const std::string& s : l.params()) json.String(s);
      json.EndArray().Key("label_inputs").BeginArray();
      for (const std::string& s : l.label_inputs()) json.String(s);
      json.EndArray().Key("output").String(l.output());
      json.Key("extra_outputs").BeginArray();
      for (const std::string& s : l.extra_outputs()) json.String(s);
      json.EndArray().Key("grads").BeginArray();
      for (const std::string& s : l.grads()) json.String(s);
      json.EndArray().Key("grad_inputs").BeginArray();
      for (const std::string& s : l.grad_inputs()) json.String(s);
      json.EndArray().Key("implementations").BeginArray();
      for (const std::string& s : impls(l)) json.String(s);
      json.EndArray().Key("dtypes").BeginArray();
      for (const std::string& s : dtypes(l)) json.String(s);
      json.EndArray().Key("has_fast").Bool(l.has_fast()).EndObject();
    }
    json.EndArray().EndObject();
    PrintJson(json);
    return kExitOk;
  }
  // Labels are marked with their dtype (every other input has one of
  // DTYPES); extra outputs follow the differentiated one in parentheses.
  auto inputs = [](const v1::LayerInfo& l) {
    std::vector<std::string> v;
    for (const std::string& in : l.inputs()) {
      const bool label =
          std::find(l.label_inputs().begin(), l.label_inputs().end(), in) !=
          l.label_inputs().end();
      v.push_back(label ? absl::StrCat(in, ":int64") : in);
    }
    return absl::StrJoin(v, ",");
  };
  auto output = [](const v1::LayerInfo& l) {
    if (l.extra_outputs().empty()) return l.output();
    return absl::StrCat(l.output(), "(+", absl::StrJoin(l.extra_outputs(), ","),
                        ")");
  };
  // grads, or "d" + each grad input from a server that names only those.
  auto grads = [](const v1::LayerInfo& l) {
    if (!l.grads().empty() || l.grad_inputs().empty()) {
      return absl::StrJoin(l.grads(), ",");
    }
    std::vector<std::string> v;
    for (const std::string& in : l.grad_inputs()) v.push_back("d" + in);
    return absl::StrJoin(v, ",");
  };
  std::vector<std::vector<std::string>> rows = {{"LAYER", "INPUTS", "PARAMS",
                                                 "OUTPUT", "GRADS", "IMPLS",
                                                 "FAST", "DTYPES", "SUMMARY"}};
  for (const v1::LayerInfo& l : resp->layers()) {
    rows.push_back({l.name(), inputs(l),
                    l.params().empty() ? "-" : absl::StrJoin(l.params(), ","),
                    output(l), grads(l), absl::StrJoin(impls(l), ","),
                    l.has_fast() ? "yes" : "no", absl::StrJoin(dtypes(l), ","),
                    l.summary()});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i + 1 == row.size()) {
        absl::StrAppend(&line, row[i]);
      } else {
        absl::StrAppend(&line, absl::StrFormat("%-*s  ", width[i], row[i]));
      }
    }
    std::cout << line << "\n";
  }
  return kExitOk;
}

int RunForward(const Args& args) {
  ConnectionFlags conn;
  LayerFlags lf;
  std::string out_dir;
  FlagSet flags(
      "layerctl forward",
      absl::StrCat("Runs a layer's forward pass on the server and prints a "
                   "summary of each\noutput; --out writes them as .npy.\n",
                   kInputsHelp),
      "NAME=SPEC...",
      absl::StrCat(
          "  layerctl forward --layer conv --stride 2 --pad 1 --impl naive \\\n"
          "      x=linspace:-0.1,0.5:2,3,4,4 w=linspace:-0.2,0.3:3,3,4,4 \\\n"
          "      b=linspace:-0.1,0.2:3 --out /tmp/conv\n"
          "  runs the seed notebook's conv forward cell; writes "
          "/tmp/conv/out.npy\n",
          BatchnormAndLossExamples("forward")));
  AddConnectionFlags(flags, conn, absl::Seconds(60));
  AddLayerFlags(flags, lf, /*with_impl=*/true);
  flags.String("out", &out_dir, "directory for the outputs as NAME.npy");
  if (std::optional<int> rc = ParseFlags(flags, args, "forward")) return *rc;
  absl::StatusOr<Prepared> p = Prepare(flags, lf, {});
  if (!p.ok()) return ReportError("forward", p.status(), false);
  if (!out_dir.empty()) {
    if (absl::Status st = EnsureDir(out_dir); !st.ok()) {
      return ReportError("forward", st, false);
    }
  }
  v1::ForwardRequest req;
  LayerSpecToWire(flags, p->spec, req.mutable_layer());
  req.set_implementation(ImplToProto(p->impl));
  InputsToProto(p->tensors, {}, req.mutable_inputs());

  absl::StatusOr<std::unique_ptr<LayerClient>> client = ConnectFromFlags(conn);
  if (!client.ok()) return ReportError("forward", client.status(), false);
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::ForwardResponse> resp = (*client)->Forward(req);
  const absl::Duration rtt = absl::Now() - start;
  if (!resp.ok()) return ReportError("forward", resp.status(), true, &conn);

  JsonWriter json;
  json.BeginObject().Key("command").String("forward");
  json.Key("layer").String(p->spec.name);
  json.Key("implementation_name").String(resp->implementation_name());
  json.Key("compute_ns").Int(resp->compute_ns());
  json.Key("round_trip_ns").Int(absl::ToInt64Nanoseconds(rtt));
  if (!conn.json) {
    std::cout << "forward " << p->spec.name << ": implementation "
              << resp->implementation_name() << ", server compute "
              << HumanDuration(absl::Nanoseconds(resp->compute_ns()))
              << ", round trip " << HumanDuration(rtt) << "\n";
  }
  json.Key("outputs");
  absl::Status st =
      EmitTensors(resp->outputs(), "outputs", out_dir, conn.json, json);
  if (!st.ok()) return ReportError("forward", st, false);
  json.EndObject();
  if (conn.json) PrintJson(json);
  return kExitOk;
}

int RunBackward(const Args& args) {
  ConnectionFlags conn;
  LayerFlags lf;
  std::string out_dir;
  FlagSet flags(
      "layerctl backward",
      absl::StrCat("Runs a layer's backward pass on the server (the forward "
                   "pass is recomputed\nthere) and prints a summary of each "
                   "gradient; --out writes them as .npy.\ndout defaults to "
                   "randn of the output's shape (1.0 for a loss).\n",
                   kInputsHelp),
      "NAME=SPEC... [dout=SPEC]",
      absl::StrCat(
          "  layerctl backward --layer conv --stride 1 --pad 1 --seed 3 \\\n"
          "      x=randn:4,3,5,5 w=randn:2,3,3,3 b=randn:2 dout=randn:4,2,5,5 "
          "\\\n"
          "      --out /tmp/grads\n"
          "  writes /tmp/grads/dx.npy, dw.npy and db.npy\n",
          BatchnormAndLossExamples("backward")));
  AddConnectionFlags(flags, conn, absl::Seconds(60));
  AddLayerFlags(flags, lf, /*with_impl=*/true);
  flags.String("out", &out_dir, "directory for the gradients as NAME.npy");
  if (std::optional<int> rc = ParseFlags(flags, args, "backward")) return *rc;
  absl::StatusOr<Prepared> p = Prepare(flags, lf, {"dout"});
  if (!p.ok()) return ReportError("backward", p.status(), false);
  if (absl::Status st = AddDefaultDout(p->spec, p->tensors, lf.seed);
      !st.ok()) {
    return ReportError("backward", st, false);
  }
  if (!out_dir.empty()) {
    if (absl::Status st = EnsureDir(out_dir); !st.ok()) {
      return ReportError("backward", st, false);
    }
  }
  v1::BackwardRequest req;
  LayerSpecToWire(flags, p->spec, req.mutable_layer());
  req.set_implementation(ImplToProto(p->impl));
  InputsToProto(p->tensors, {"dout"}, req.mutable_inputs());
  TensorToProto(p->tensors.at("dout"), req.mutable_dout());

  absl::StatusOr<std::unique_ptr<LayerClient>> client = ConnectFromFlags(conn);
  if (!client.ok()) return ReportError("backward", client.status(), false);
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::BackwardResponse> resp = (*client)->Backward(req);
  const absl::Duration rtt = absl::Now() - start;
  if (!resp.ok()) return ReportError("backward", resp.status(), true, &conn);

  JsonWriter json;
  json.BeginObject().Key("command").String("backward");
  json.Key("layer").String(p->spec.name);
  json.Key("implementation_name").String(resp->implementation_name());
  json.Key("compute_ns").Int(resp->compute_ns());
  json.Key("round_trip_ns").Int(absl::ToInt64Nanoseconds(rtt));
  if (!conn.json) {
    std::cout << "backward " << p->spec.name << ": implementation "
              << resp->implementation_name() << ", server compute "
              << HumanDuration(absl::Nanoseconds(resp->compute_ns()))
              << ", round trip " << HumanDuration(rtt) << "\n";
  }
  json.Key("grads");
  absl::Status st =
      EmitTensors(resp->grads(), "grads", out_dir, conn.json, json);
  if (!st.ok()) return ReportError("backward", st, false);
  json.EndObject();
  if (conn.json) PrintJson(json);
  return kExitOk;
}

int RunGradCheck(const Args& args) {
  ConnectionFlags conn;
  LayerFlags lf;
  std::string out_dir;
  double h = 0;
  double max_rel_error = 0;
  int64_t num_checks = 0;
  FlagSet flags(
      "layerctl gradcheck",
      absl::StrCat(
          "Checks a layer's analytic gradients against centered differences "
          "on the server\n(the seed's eval_numerical_gradient_array) and "
          "prints each input's rel_error.\ndout defaults to randn of the "
          "output's shape, drawn by the server from --seed.\nWith "
          "--max_rel_error, exits 1 when any error is above it. A full check "
          "costs two\nforward passes per input element; --num_checks K "
          "checks K random elements\nof each input instead (cs231n's "
          "grad_check_sparse) and prints which.\n",
          kInputsHelp),
      "NAME=SPEC... [dout=SPEC]",
      absl::StrCat("  layerctl gradcheck --layer conv --stride 1 --pad 1 "
                   "--impl naive \\\n"
                   "      x=randn:4,3,5,5 w=randn:2,3,3,3 b=randn:2 "
                   "dout=randn:4,2,5,5 \\\n"
                   "      --max_rel_error 1e-7\n"
                   "  the seed notebook's conv backward cell\n"
                   "  layerctl gradcheck --layer conv --pad 1 --num_checks 20 "
                   "\\\n"
                   "      x=randn:32,3,32,32 w=randn:16,3,3,3 b=randn:16\n"
                   "  sampled: 20 elements of each of x, w and b (all of b's "
                   "16)\n",
                   BatchnormAndLossExamples("gradcheck")));
  AddConnectionFlags(flags, conn, absl::Seconds(120));
  AddLayerFlags(flags, lf, /*with_impl=*/true);
  flags.Double("h", &h, "finite-difference step; 0 means the server's 1e-5");
  flags.Double("max_rel_error", &max_rel_error,
               "fail (exit 1) when a rel_error exceeds this; 0: no check");
  flags.Int("num_checks", &num_checks,
            "sampled mode: check this many random elements (distinct, from "
            "--seed) of each input; an input with fewer is checked whole. 0: "
            "every element");
  flags.String("out", &out_dir,
               "directory for NAME_numeric.npy and NAME_analytic.npy (sampled "
               "mode: numeric is NaN where not checked)");
  if (std::optional<int> rc = ParseFlags(flags, args, "gradcheck")) return *rc;
  if (num_checks < 0 || num_checks > std::numeric_limits<int32_t>::max()) {
    return ReportError(
        "gradcheck",
        absl::InvalidArgumentError(absl::StrCat(
            "--num_checks: expected 0 (all elements) .. ",
            std::numeric_limits<int32_t>::max(), ", got ", num_checks)),
        false);
  }
  absl::StatusOr<Prepared> p = Prepare(flags, lf, {"dout"});
  if (!p.ok()) return ReportError("gradcheck", p.status(), false);
  if (!out_dir.empty()) {
    if (absl::Status st = EnsureDir(out_dir); !st.ok()) {
      return ReportError("gradcheck", st, false);
    }
  }
  v1::GradCheckRequest req;
  LayerSpecToWire(flags, p->spec, req.mutable_layer());
  req.set_implementation(ImplToProto(p->impl));
  InputsToProto(p->tensors, {"dout"}, req.mutable_inputs());
  if (auto it = p->tensors.find("dout"); it != p->tensors.end()) {
    TensorToProto(it->second, req.mutable_dout());
  }
  req.set_seed(lf.seed);
  req.set_h(h);
  req.set_return_gradients(!out_dir.empty());
  req.set_num_checks(static_cast<int32_t>(num_checks));

  absl::StatusOr<std::unique_ptr<LayerClient>> client = ConnectFromFlags(conn);
  if (!client.ok()) return ReportError("gradcheck", client.status(), false);
  absl::StatusOr<v1::GradCheckResponse> resp = (*client)->GradCheck(req);
  if (!resp.ok()) return ReportError("gradcheck", resp.status(), true, &conn);

  bool pass = true;
  JsonWriter json;
  json.BeginObject().Key("command").String("gradcheck");
  json.Key("layer").String(p->spec.name);
  json.Key("implementation_name").String(resp->implementation_name());
  json.Key("results").BeginArray();
  if (!conn.json) {
    std::cout << "gradcheck " << p->spec.name << ": implementation "
              << resp->implementation_name() << "\n";
  }
  for (const v1::GradCheckResult& r : resp->results()) {
    const bool ok = max_rel_error <= 0 || r.rel_error() <= max_rel_error;
    pass = pass && ok;
    const std::string grad = absl::StrCat("d", r.input());
    const std::vector<int64_t> worst(r.worst_index().begin(),
                                     r.worst_index().end());
    json.BeginObject().Key("input").String(r.input());
    json.Key("rel_error").Number(r.rel_error());
    json.Key("max_abs_error").Number(r.max_abs_error());
    json.Key("worst_index").IntArray(worst);
    // The input's shape, to show the checked elements as multi-indices;
    // unknown only if the server reports an input the client did not send.
    const auto input = p->tensors.find(r.input());
    const std::vector<int64_t> shape = input == p->tensors.end()
                                           ? std::vector<int64_t>{}
                                           : input->second.shape();
    const int64_t elements = input == p->tensors.end()
                                 ? r.checked_indices_size()
                                 : input->second.size();
    const std::vector<int64_t> checked(r.checked_indices().begin(),
                                       r.checked_indices().end());
    if (num_checks > 0) {
      // Empty checked_indices: every element was checked.
      json.Key("num_checked")
          .Int(checked.empty() ? elements
                               : static_cast<int64_t>(checked.size()));
      json.Key("num_elements").Int(elements);
      json.Key("checked_indices").IntArray(checked);
    }
    if (max_rel_error > 0) json.Key("pass").Bool(ok);
    if (!out_dir.empty()) {
      for (const auto& [suffix, proto] :
           {std::pair<const char*, const v1::Tensor*>{"numeric", &r.numeric()},
            {"analytic", &r.analytic()}}) {
        absl::StatusOr<Tensor> t =
            FromWire(*proto, absl::StrCat("results.", suffix));
        if (!t.ok()) return ReportError("gradcheck", t.status(), true, &conn);
        const std::string path =
            NpyPath(out_dir, absl::StrCat(grad, "_", suffix));
        if (absl::Status st = WriteNpy(path, *t); !st.ok()) {
          return ReportError("gradcheck", st, false);
        }
        json.Key(absl::StrCat(suffix, "_file")).String(path);
      }
    }
    json.EndObject();
    if (!conn.json) {
      std::cout << grad << " error:  " << PyRepr(r.rel_error())
                << "  (worst at " << ShapeString(worst) << ", max abs error "
                << absl::StrFormat("%.3g", r.max_abs_error()) << ")";
      if (max_rel_error > 0) {
        std::cout << (ok ? "  PASS" : "  FAIL")
                  << " (<= " << PyRepr(max_rel_error) << ")";
      }
      std::cout << "\n";
      if (num_checks > 0) {
        std::cout << "  " << CheckedLine(checked, elements, shape) << "\n";
      }
    }
  }
  json.EndArray();
  if (max_rel_error > 0) json.Key("pass").Bool(pass);
  json.EndObject();
  if (conn.json) PrintJson(json);
  return pass ? kExitOk : kExitCheckFailed;
}

int RunCompare(const Args& args) {
  ConnectionFlags conn;
  LayerFlags lf;
  int64_t repeats = 1;
  double max_rel_error = 0;
  FlagSet flags(
      "layerctl compare",
      absl::StrCat(
          "Runs a layer naive and fast on the same inputs on the server: "
          "forward and\nbackward seconds, speedups, and the rel_error between "
          "the two (the seed's\n\"naive vs fast\" cells). dout defaults to "
          "randn from --seed. With\n--max_rel_error, exits 1 when a "
          "difference is above it.\n",
          kInputsHelp),
      "NAME=SPEC... [dout=SPEC]",
      absl::StrCat(
          "  layerctl compare --layer conv --stride 2 --pad 1 --repeats 3 \\\n"
          "      x=randn:100,3,31,31 w=randn:25,3,3,3 b=randn:25\n"
          "  the seed notebook's conv naive-vs-fast cell\n",
          BatchnormAndLossExamples("compare")));
  AddConnectionFlags(flags, conn, absl::Seconds(300));
  AddLayerFlags(flags, lf, /*with_impl=*/false);
  flags.Int("repeats", &repeats, "timed runs of each pass (best reported)");
  flags.Double("max_rel_error", &max_rel_error,
               "fail (exit 1) when a difference exceeds this; 0: no check");
  if (std::optional<int> rc = ParseFlags(flags, args, "compare")) return *rc;
  if (repeats < 1 || repeats > 1000) {
    return ReportError("compare",
                       absl::InvalidArgumentError(absl::StrCat(
                           "--repeats: expected 1..1000, got ", repeats)),
                       false);
  }
  absl::StatusOr<Prepared> p = Prepare(flags, lf, {"dout"});
  if (!p.ok()) return ReportError("compare", p.status(), false);
  v1::CompareRequest req;
  LayerSpecToWire(flags, p->spec, req.mutable_layer());
  InputsToProto(p->tensors, {"dout"}, req.mutable_inputs());
  if (auto it = p->tensors.find("dout"); it != p->tensors.end()) {
    TensorToProto(it->second, req.mutable_dout());
  }
  req.set_seed(lf.seed);
  req.set_repeats(static_cast<int32_t>(repeats));

  absl::StatusOr<std::unique_ptr<LayerClient>> client = ConnectFromFlags(conn);
  if (!client.ok()) return ReportError("compare", client.status(), false);
  absl::StatusOr<v1::CompareResponse> resp = (*client)->Compare(req);
  if (!resp.ok()) return ReportError("compare", resp.status(), true, &conn);

  std::vector<std::string> grads;
  for (const auto& [name, unused] : resp->grad_rel_errors()) {
    grads.push_back(name);
  }
  std::sort(grads.begin(), grads.end());
  bool pass = max_rel_error <= 0 || resp->output_rel_error() <= max_rel_error;
  for (const std::string& g : grads) {
    pass = pass && (max_rel_error <= 0 ||
                    resp->grad_rel_errors().at(g) <= max_rel_error);
  }
  if (conn.json) {
    JsonWriter json;
    json.BeginObject().Key("command").String("compare");
    json.Key("layer").String(p->spec.name);
    json.Key("naive_implementation_name")
        .String(resp->naive_implementation_name());
    json.Key("fast_implementation_name")
        .String(resp->fast_implementation_name());
    json.Key("repeats").Int(resp->repeats());
    json.Key("naive_forward_seconds").Number(resp->naive_forward_seconds());
    json.Key("fast_forward_seconds").Number(resp->fast_forward_seconds());
    json.Key("forward_speedup").Number(resp->forward_speedup());
    json.Key("naive_backward_seconds").Number(resp->naive_backward_seconds());
    json.Key("fast_backward_seconds").Number(resp->fast_backward_seconds());
    json.Key("backward_speedup").Number(resp->backward_speedup());
    json.Key("output_rel_error").Number(resp->output_rel_error());
    json.Key("grad_rel_errors").BeginObject();
    for (const std::string& g : grads) {
      json.Key(g).Number(resp->grad_rel_errors().at(g));
    }
    json.EndObject();
    json.Key("output_scaled_error").Number(resp->output_scaled_error());
    json.Key("grad_scaled_errors").BeginObject();
    for (const std::string& g : grads) {
      json.Key(g).Number(resp->grad_scaled_errors().at(g));
    }
    json.EndObject();
    if (max_rel_error > 0) json.Key("pass").Bool(pass);
    json.EndObject();
    PrintJson(json);
  } else {
    std::cout << absl::StrFormat(
        "compare %s: naive (%s) vs fast (%s), best of %d\n"
        "forward:  naive %fs  fast %fs  speedup %fx  difference %s\n"
        "backward: naive %fs  fast %fs  speedup %fx\n",
        p->spec.name, resp->naive_implementation_name(),
        resp->fast_implementation_name(), resp->repeats(),
        resp->naive_forward_seconds(), resp->fast_forward_seconds(),
        resp->forward_speedup(), PyRepr(resp->output_rel_error()),
        resp->naive_backward_seconds(), resp->fast_backward_seconds(),
        resp->backward_speedup());
    for (const std::string& g : grads) {
      std::cout << g
                << " difference:  " << PyRepr(resp->grad_rel_errors().at(g))
                << "\n";
    }
    // The seed's rel_error above judges each element on its own scale; this
    // line is what says whether the two agree to rounding.
    std::cout << "scaled difference max|naive - fast| / max|naive|: out "
              << absl::StrFormat("%.3g", resp->output_scaled_error());
    for (const std::string& g : grads) {
      std::cout << " " << g << " "
                << absl::StrFormat("%.3g", resp->grad_scaled_errors().at(g));
    }
    std::cout << "\n";
    if (max_rel_error > 0) {
      std::cout << (pass ? "PASS" : "FAIL")
                << " (differences <= " << PyRepr(max_rel_error) << ")\n";
    }
  }
  return pass ? kExitOk : kExitCheckFailed;
}

}  // namespace layerserve::client
