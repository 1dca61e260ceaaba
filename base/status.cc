#include <cerrno>
#include <cstdio>
#include <cstring>

#include <shelf/result.h>
#include <shelf/status.h>

namespace shelf {

Status::Status(Code code, std::string_view msg, int sys_errno)
    : rep_(std::make_shared<const Rep>(Rep{code, sys_errno, std::string(msg)})) {}

Status Status::from_errno(std::string_view what, int sys_errno) {
  std::string msg = std::string(what) + ": " + std::strerror(sys_errno);
  switch (sys_errno) {
    case EEXIST:
      return Status(Code::kAlreadyExists, msg, sys_errno);
    case EACCES:
    case EPERM:
      return Status(Code::kPermissionDenied, msg, sys_errno);
    case ENOSPC:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case EDQUOT:
      return Status(Code::kResourceExhausted, msg, sys_errno);
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case ENOTCONN:
    case ESHUTDOWN:
    case EPIPE:
    case ETIMEDOUT:
      return Status(Code::kUnavailable, msg, sys_errno);
    case EINVAL:
      return Status(Code::kInvalidArgument, msg, sys_errno);
    default:
      return Status(Code::kIoError, msg, sys_errno);
  }
}

Status Status::from_code(uint8_t code, std::string_view msg) {
  if (code == 0 || code > static_cast<uint8_t>(kLastCode)) {
    return Status(Code::kInternal, msg);
  }
  return Status(static_cast<Code>(code), msg);
}

const std::string& Status::message() const {
  static const std::string kEmpty;
  return rep_ ? rep_->message : kEmpty;
}

std::string Status::to_string() const {
  if (ok()) return "OK";
  return std::string(code_name(code())) + ": " + rep_->message;
}

std::string_view code_name(Status::Code code) {
  switch (code) {
    case Status::Code::kOk:
      return "OK";
    case Status::Code::kNotFound:
      return "NotFound";
    case Status::Code::kAlreadyExists:
      return "AlreadyExists";
    case Status::Code::kInvalidArgument:
      return "InvalidArgument";
    case Status::Code::kResourceExhausted:
      return "ResourceExhausted";
    case Status::Code::kCorruption:
      return "Corruption";
    case Status::Code::kUnavailable:
      return "Unavailable";
    case Status::Code::kPermissionDenied:
      return "PermissionDenied";
    case Status::Code::kIoError:
      return "IoError";
    case Status::Code::kInternal:
      return "Internal";
    case Status::Code::kTimedOut:
      return "TimedOut";
  }
  return "Unknown";
}

namespace internal {
void die_on_bad_result_access(const Status& status) {
  std::fprintf(stderr, "shelf: value() of a failed Result: %s\n", status.to_string().c_str());
  std::abort();
}
}  // namespace internal

}  // namespace shelf
