// Result<T>: a T, or the non-OK Status that explains why there is none.
#pragma once

#include <cstdlib>
#include <optional>
#include <utility>

#include <shelf/status.h>

namespace shelf {

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit on purpose
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit on purpose
    if (status_.ok()) status_ = Status::internal("Result built from an OK status without a value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  // Accessing the value of a failed Result is a bug: it aborts with the status.
  T& value() & {
    check();
    return *value_;
  }
  const T& value() const& {
    check();
    return *value_;
  }
  T&& value() && {
    check();
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  void check() const;
  Status status_;  // OK when value_ is set
  std::optional<T> value_;
};

namespace internal {
[[noreturn]] void die_on_bad_result_access(const Status& status);
}  // namespace internal

template <class T>
void Result<T>::check() const {
  if (!value_) internal::die_on_bad_result_access(status_);
}

}  // namespace shelf

#define SHELF_CONCAT_IMPL_(a, b) a##b
#define SHELF_CONCAT_(a, b) SHELF_CONCAT_IMPL_(a, b)
#define SHELF_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()
// `lhs = value of expr`, or return its status from the enclosing function.
#define SHELF_ASSIGN_OR_RETURN(lhs, expr) \
  SHELF_ASSIGN_OR_RETURN_IMPL_(SHELF_CONCAT_(shelf_result_, __LINE__), lhs, expr)
