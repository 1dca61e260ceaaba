// Status: the result of an operation that returns no value.
//
// Every fallible call in shelf returns a Status or a Result<T> (result.h);
// exceptions never cross a shelf API. A non-OK Status carries a code a
// program can branch on and a one-line message a person can act on
// ("dataset 'x' not found; `shelf list` shows what is published").
//
// OK statuses are cheap: they hold no allocation (leveldb's status.h idea).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace shelf {

class [[nodiscard]] Status {
 public:
  enum class Code : uint8_t {
    kOk = 0,
    kNotFound = 1,           // no dataset of that name, and nothing else
    kAlreadyExists = 2,      // publishing a name that exists without override
    kInvalidArgument = 3,    // the caller's input is wrong (bad CSV, bad name, bad size)
    kResourceExhausted = 4,  // over --memory-limit, /dev/shm full, too many connections
    kCorruption = 5,         // a checksum or a layout check failed
    kUnavailable = 6,        // no daemon, the daemon went away, or its segment cannot be opened
    kPermissionDenied = 7,
    kIoError = 8,    // a system call failed for a reason not covered above
    kInternal = 9,   // a bug in shelf: please report it
    kTimedOut = 10,  // a wait ended first: its timeout passed, or its caller interrupted it
  };
  // The highest code. Codes cross the socket as numbers (from_code), so a
  // code keeps its number for ever and a new one is added after this.
  static constexpr Code kLastCode = Code::kTimedOut;

  Status() = default;  // OK

  static Status not_found(std::string_view msg) { return Status(Code::kNotFound, msg); }
  static Status already_exists(std::string_view msg) { return Status(Code::kAlreadyExists, msg); }
  static Status invalid_argument(std::string_view msg) {
    return Status(Code::kInvalidArgument, msg);
  }
  static Status resource_exhausted(std::string_view msg) {
    return Status(Code::kResourceExhausted, msg);
  }
  static Status corruption(std::string_view msg) { return Status(Code::kCorruption, msg); }
  static Status unavailable(std::string_view msg) { return Status(Code::kUnavailable, msg); }
  static Status permission_denied(std::string_view msg) {
    return Status(Code::kPermissionDenied, msg);
  }
  static Status io_error(std::string_view msg, int sys_errno = 0) {
    return Status(Code::kIoError, msg, sys_errno);
  }
  static Status internal(std::string_view msg) { return Status(Code::kInternal, msg); }
  static Status timed_out(std::string_view msg) { return Status(Code::kTimedOut, msg); }
  // Maps an errno from a failed system call to the closest code; `what` says
  // what was being done ("open /dev/shm/x"). The errno text is appended and
  // sys_errno() keeps the errno. ENOENT gives kIoError: a missing file is
  // not a missing dataset, so NotFound means only "no dataset of that name"
  // (callers that expect a file may be absent test sys_errno() == ENOENT;
  // the client library makes a missing socket or segment at connect
  // kUnavailable). Connection errnos (ECONNREFUSED, ECONNRESET, EPIPE,
  // ENOTCONN, ETIMEDOUT...) give kUnavailable.
  static Status from_errno(std::string_view what, int sys_errno);
  // Rebuilds a status received from the daemon. Unknown codes (0 and those
  // past kLastCode) become kInternal.
  static Status from_code(uint8_t code, std::string_view msg);

  bool ok() const { return rep_ == nullptr; }
  Code code() const { return rep_ ? rep_->code : Code::kOk; }
  // The errno behind a status made by from_errno() or io_error(), else 0.
  int sys_errno() const { return rep_ ? rep_->sys_errno : 0; }
  // The message alone, without the code name; empty for OK.
  const std::string& message() const;
  // "NotFound: dataset 'x' not found", or "OK".
  std::string to_string() const;

  bool is_not_found() const { return code() == Code::kNotFound; }
  bool is_already_exists() const { return code() == Code::kAlreadyExists; }
  bool is_resource_exhausted() const { return code() == Code::kResourceExhausted; }

 private:
  Status(Code code, std::string_view msg, int sys_errno = 0);
  struct Rep {
    Code code;
    int sys_errno;
    std::string message;
  };
  // shared_ptr keeps Status copyable; a status is immutable once made.
  std::shared_ptr<const Rep> rep_;
};

// The name of a code: "NotFound", "ResourceExhausted", ...
std::string_view code_name(Status::Code code);

}  // namespace shelf

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define SHELF_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::shelf::Status shelf_status_ = (expr);        \
    if (!shelf_status_.ok()) return shelf_status_; \
  } while (false)
