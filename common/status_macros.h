#pragma once

// Early-return helpers for absl::Status / absl::StatusOr at module boundaries.

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define IBLIP_STATUS_CONCAT_INNER(a, b) a##b
#define IBLIP_STATUS_CONCAT(a, b) IBLIP_STATUS_CONCAT_INNER(a, b)

// RETURN_IF_ERROR(expr): returns the status of `expr` if it is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    const ::absl::Status iblip_status_ = (expr);   \
    if (!iblip_status_.ok()) return iblip_status_; \
  } while (false)

// ASSIGN_OR_RETURN(lhs, expr): `lhs = *expr` when OK, else returns the status.
// `lhs` may be a declaration (`auto x`) or an existing variable.
#define ASSIGN_OR_RETURN(lhs, expr)                                           \
  IBLIP_ASSIGN_OR_RETURN_IMPL(IBLIP_STATUS_CONCAT(iblip_statusor_, __LINE__), \
                              lhs, expr)
#define IBLIP_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(*tmp)
