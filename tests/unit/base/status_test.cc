// Status, Result<T> and the SHELF_RETURN_IF_ERROR / SHELF_ASSIGN_OR_RETURN macros.
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/result.h>
#include <shelf/status.h>

namespace shelf {
namespace {

using Code = Status::Code;

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), Code::kOk);
  EXPECT_EQ(s.sys_errno(), 0);
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.to_string(), "OK");
  EXPECT_FALSE(s.is_not_found());
  EXPECT_FALSE(s.is_already_exists());
  EXPECT_FALSE(s.is_resource_exhausted());
}

TEST(StatusTest, EachFactoryGivesItsCodeAndMessage) {
  struct Case {
    Status status;
    Code code;
    const char* name;
  };
  const std::vector<Case> cases = {
      {Status::not_found("m1"), Code::kNotFound, "NotFound"},
      {Status::already_exists("m2"), Code::kAlreadyExists, "AlreadyExists"},
      {Status::invalid_argument("m3"), Code::kInvalidArgument, "InvalidArgument"},
      {Status::resource_exhausted("m4"), Code::kResourceExhausted, "ResourceExhausted"},
      {Status::corruption("m5"), Code::kCorruption, "Corruption"},
      {Status::unavailable("m6"), Code::kUnavailable, "Unavailable"},
      {Status::permission_denied("m7"), Code::kPermissionDenied, "PermissionDenied"},
      {Status::io_error("m8"), Code::kIoError, "IoError"},
      {Status::internal("m9"), Code::kInternal, "Internal"},
      {Status::timed_out("m10"), Code::kTimedOut, "TimedOut"},
  };
  int i = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string msg = "m" + std::to_string(i++);
    EXPECT_FALSE(c.status.ok());
    EXPECT_EQ(c.status.code(), c.code);
    EXPECT_EQ(c.status.message(), msg);
    EXPECT_EQ(c.status.to_string(), std::string(c.name) + ": " + msg);
    EXPECT_EQ(code_name(c.code), c.name);
    EXPECT_EQ(c.status.sys_errno(), 0);
  }
  EXPECT_EQ(code_name(Code::kOk), "OK");
}

TEST(StatusTest, PredicatesMatchOnlyTheirCode) {
  EXPECT_TRUE(Status::not_found("x").is_not_found());
  EXPECT_FALSE(Status::not_found("x").is_already_exists());
  EXPECT_TRUE(Status::already_exists("x").is_already_exists());
  EXPECT_FALSE(Status::already_exists("x").is_resource_exhausted());
  EXPECT_TRUE(Status::resource_exhausted("x").is_resource_exhausted());
  EXPECT_FALSE(Status::resource_exhausted("x").is_not_found());
}

TEST(StatusTest, CopiesAreEqualAndIndependentOfTheOriginal) {
  Status a = Status::corruption("checksum mismatch");
  Status b = a;
  a = Status();
  EXPECT_TRUE(a.ok());
  EXPECT_EQ(b.code(), Code::kCorruption);
  EXPECT_EQ(b.message(), "checksum mismatch");
  Status c = std::move(b);
  EXPECT_EQ(c.code(), Code::kCorruption);
  EXPECT_EQ(c.message(), "checksum mismatch");
}

TEST(StatusTest, IoErrorKeepsErrno) {
  Status s = Status::io_error("read", EIO);
  EXPECT_EQ(s.code(), Code::kIoError);
  EXPECT_EQ(s.sys_errno(), EIO);
}

TEST(StatusTest, FromErrnoMapsToTheClosestCode) {
  const std::vector<std::pair<int, Code>> cases = {
      {ENOENT, Code::kIoError},  // a missing file is not a missing dataset
      {EEXIST, Code::kAlreadyExists},
      {EACCES, Code::kPermissionDenied},
      {EPERM, Code::kPermissionDenied},
      {ENOSPC, Code::kResourceExhausted},
      {ENOMEM, Code::kResourceExhausted},
      {EMFILE, Code::kResourceExhausted},
      {ENFILE, Code::kResourceExhausted},
      {EDQUOT, Code::kResourceExhausted},
      {ECONNREFUSED, Code::kUnavailable},
      {ECONNRESET, Code::kUnavailable},
      {ECONNABORTED, Code::kUnavailable},
      {ENOTCONN, Code::kUnavailable},
      {ESHUTDOWN, Code::kUnavailable},
      {EPIPE, Code::kUnavailable},
      {ETIMEDOUT, Code::kUnavailable},
      {EINVAL, Code::kInvalidArgument},
      {EIO, Code::kIoError},
      {EBADF, Code::kIoError},
  };
  for (const auto& [err, code] : cases) {
    SCOPED_TRACE(std::strerror(err));
    Status s = Status::from_errno("open /dev/shm/x", err);
    EXPECT_EQ(s.code(), code);
    EXPECT_EQ(s.sys_errno(), err);
    // The message says what was done, then the errno text.
    EXPECT_EQ(s.message(), std::string("open /dev/shm/x: ") + std::strerror(err));
  }
}

TEST(StatusTest, FromCodeRebuildsKnownCodesAndTurnsOthersIntoInternal) {
  // The numbers cross the socket (docs/protocol.md): they never change.
  EXPECT_EQ(static_cast<uint8_t>(Code::kInternal), 9);
  EXPECT_EQ(static_cast<uint8_t>(Code::kTimedOut), 10);
  EXPECT_EQ(Status::kLastCode, Code::kTimedOut);
  for (uint8_t v = 1; v <= static_cast<uint8_t>(Status::kLastCode); ++v) {
    Status s = Status::from_code(v, "msg");
    EXPECT_EQ(static_cast<uint8_t>(s.code()), v);
    EXPECT_EQ(s.message(), "msg");
  }
  // 0 (OK) is not an error code to rebuild, and 11.. are unknown.
  EXPECT_EQ(Status::from_code(0, "m").code(), Code::kInternal);
  EXPECT_EQ(Status::from_code(11, "m").code(), Code::kInternal);
  EXPECT_EQ(Status::from_code(255, "m").code(), Code::kInternal);
  EXPECT_EQ(Status::from_code(255, "m").message(), "m");
}

TEST(ResultTest, HoldsAValue) {
  Result<int> r = 42;
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.status().ok());
  EXPECT_EQ(r.value(), 42);
  EXPECT_EQ(*r, 42);
  *r = 7;
  EXPECT_EQ(r.value(), 7);
}

TEST(ResultTest, HoldsAStatus) {
  Result<int> r = Status::not_found("no dataset 'x'");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_EQ(r.status().message(), "no dataset 'x'");
}

TEST(ResultTest, OkStatusWithoutValueBecomesInternal) {
  Result<int> r = Status();
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInternal);
}

TEST(ResultTest, ArrowAndMoveOnlyValues) {
  Result<std::string> s = std::string("hello");
  EXPECT_EQ(s->size(), 5u);
  Result<std::unique_ptr<int>> p = std::make_unique<int>(5);
  ASSERT_TRUE(p.ok());
  std::unique_ptr<int> owned = std::move(p).value();
  ASSERT_NE(owned, nullptr);
  EXPECT_EQ(*owned, 5);
}

TEST(ResultDeathTest, ValueOfAFailedResultAborts) {
  Result<int> r = Status::corruption("bad bytes");
  EXPECT_DEATH((void)r.value(), "value\\(\\) of a failed Result: Corruption: bad bytes");
}

// Helpers for the macros: each returns early on error, so `reached` says
// whether the code after the macro ran.
Status fail_if(bool fail) { return fail ? Status::unavailable("daemon gone") : Status(); }

Status run_return_if_error(bool fail, bool* reached) {
  *reached = false;
  SHELF_RETURN_IF_ERROR(fail_if(fail));
  *reached = true;
  return Status::already_exists("after");
}

Result<int> half(int v) {
  if (v % 2 != 0) return Status::invalid_argument(std::to_string(v) + " is odd");
  return v / 2;
}

Result<int> quarter(int v, bool* reached) {
  *reached = false;
  SHELF_ASSIGN_OR_RETURN(int h, half(v));
  SHELF_ASSIGN_OR_RETURN(int q, half(h));
  *reached = true;
  return q;
}

Status assign_to_existing(int v, int* out) {
  SHELF_ASSIGN_OR_RETURN(*out, half(v));
  return Status();
}

Result<std::unique_ptr<int>> make_ptr(bool fail) {
  if (fail) return Status::resource_exhausted("no memory");
  return std::make_unique<int>(9);
}

Result<int> deref_ptr(bool fail) {
  SHELF_ASSIGN_OR_RETURN(std::unique_ptr<int> p, make_ptr(fail));
  return *p;
}

TEST(StatusMacrosTest, ReturnIfErrorReturnsTheErrorAndSkipsTheRest) {
  bool reached = true;
  Status s = run_return_if_error(true, &reached);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(s.message(), "daemon gone");
  EXPECT_FALSE(reached);
}

TEST(StatusMacrosTest, ReturnIfErrorGoesOnWhenOk) {
  bool reached = false;
  Status s = run_return_if_error(false, &reached);
  EXPECT_TRUE(reached);
  EXPECT_EQ(s.code(), Code::kAlreadyExists);
}

TEST(StatusMacrosTest, AssignOrReturnAssignsOrReturns) {
  bool reached = false;
  Result<int> ok = quarter(20, &reached);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 5);
  EXPECT_TRUE(reached);

  Result<int> first = quarter(7, &reached);  // fails at the first macro
  EXPECT_FALSE(reached);
  EXPECT_EQ(first.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(first.status().message(), "7 is odd");

  Result<int> second = quarter(6, &reached);  // 6/2 = 3 fails at the second
  EXPECT_FALSE(reached);
  EXPECT_EQ(second.status().message(), "3 is odd");
}

TEST(StatusMacrosTest, AssignOrReturnToAnExistingLvalue) {
  int out = -1;
  EXPECT_TRUE(assign_to_existing(8, &out).ok());
  EXPECT_EQ(out, 4);
  out = -1;
  EXPECT_EQ(assign_to_existing(5, &out).code(), Code::kInvalidArgument);
  EXPECT_EQ(out, -1);  // left untouched on error
}

TEST(StatusMacrosTest, AssignOrReturnMovesMoveOnlyValues) {
  Result<int> ok = deref_ptr(false);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 9);
  EXPECT_EQ(deref_ptr(true).status().code(), Code::kResourceExhausted);
}

}  // namespace
}  // namespace shelf
