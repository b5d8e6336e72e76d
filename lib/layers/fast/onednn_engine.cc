#include "lib/layers/fast/onednn_engine.h"

#include "absl/strings/str_cat.h"

namespace layerserve::fast::onednn {

const dnnl::engine& CpuEngine() {
  // Function-local static: created once, thread-safely, on first use, and
  // never destroyed (primitives cached elsewhere may outlive static
  // destruction order).
  static const dnnl::engine* const engine =
      new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

absl::Status ErrorToStatus(absl::string_view what, const dnnl::error& e) {
  return absl::InternalError(absl::StrCat(
      what, ": oneDNN error ", static_cast<int>(e.status), ": ", e.what()));
}

}  // namespace layerserve::fast::onednn
