// Early-return helpers for absl::Status / absl::StatusOr.
//
// Abseil 20220623 (Debian 12) ships no RETURN_IF_ERROR / ASSIGN_OR_RETURN, so
// we define the two we need once, here. Thread-safe: they are plain macros.
#ifndef LAYERSERVE_LIB_STATUS_MACROS_H_
#define LAYERSERVE_LIB_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LS_STATUS_CONCAT_INNER_(a, b) a##b
#define LS_STATUS_CONCAT_(a, b) LS_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the caller if not OK.
#define LS_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::absl::Status ls_status_ = (expr);      \
    if (!ls_status_.ok()) return ls_status_; \
  } while (false)

// `lhs` = value of `rexpr` (an absl::StatusOr<T>), or returns its error.
#define LS_ASSIGN_OR_RETURN(lhs, rexpr)                                     \
  LS_ASSIGN_OR_RETURN_IMPL_(LS_STATUS_CONCAT_(ls_statusor_, __LINE__), lhs, \
                            rexpr)

#define LS_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                              \
  if (!statusor.ok()) return statusor.status();         \
  lhs = std::move(statusor).value()

#endif  // LAYERSERVE_LIB_STATUS_MACROS_H_
