// Unit tests of how ModelCache records a failed load and copies it to waiters
// (detail/cache/load_failure.hpp).
#include <gtest/gtest.h>

#include <exception>
#include <stdexcept>
#include <string>
#include <typeinfo>

#include "gpusafe/detail/cache/load_failure.hpp"
#include "gpusafe/error.hpp"

namespace gs = gpusafe;
namespace gd = gpusafe::detail;

namespace {

template <class Throw>
gd::LoadFailure failure_of(Throw&& do_throw) {
  try {
    do_throw();
  } catch (...) {
    return gd::capture_load_failure(
        [](const char* what) noexcept { return std::string("described: ") + what; });
  }
  return {};
}

TEST(CacheLoadFailure, AGpusafeErrorStaysAsItIs) {
  auto f = failure_of([] { throw gs::BudgetExceeded("too big"); });
  ASSERT_TRUE(f);
  EXPECT_EQ(f.code, gs::ErrorCode::budget_exceeded);
  EXPECT_EQ(f.message, "too big");
  EXPECT_FALSE(f.nested);
  EXPECT_THROW(std::rethrow_exception(f.original), gs::BudgetExceeded);
}

TEST(CacheLoadFailure, OtherExceptionsBecomeLoadFailedWithTheOriginalNested) {
  auto f = failure_of([] { throw std::runtime_error("disk"); });
  ASSERT_TRUE(f);
  EXPECT_EQ(f.code, gs::ErrorCode::load_failed);
  EXPECT_EQ(f.message, "described: disk");
  ASSERT_TRUE(f.nested);
  EXPECT_THROW(std::rethrow_exception(f.nested), std::runtime_error);
  try {
    std::rethrow_exception(f.original);
  } catch (const gs::LoadFailed& e) {
    EXPECT_STREQ(e.what(), "described: disk");
    EXPECT_THROW(std::rethrow_if_nested(e), std::runtime_error);
  }
}

TEST(CacheLoadFailure, NonStdExceptionsAreNamed) {
  auto f = failure_of([] { throw 42; });
  EXPECT_EQ(f.message, "described: a non-std exception");
  EXPECT_THROW(std::rethrow_exception(f.nested), int);
}

TEST(CacheLoadFailure, WaitersGetTheirOwnCopyOfTheSameType) {
  auto f = failure_of([] { throw gs::UnknownKey("nope"); });
  try {
    gd::throw_failure_copy(f);
    FAIL() << "no throw";
  } catch (const gs::UnknownKey& e) {
    EXPECT_EQ(typeid(e), typeid(gs::UnknownKey));
    EXPECT_STREQ(e.what(), "nope");
  }
}

TEST(CacheLoadFailure, AnUnrecordedFailureKeepsARecordedOne) {
  gd::LoadFailure empty;
  gd::mark_unrecorded_failure(empty);
  EXPECT_TRUE(empty);
  EXPECT_EQ(empty.code, gs::ErrorCode::load_failed);
  EXPECT_NE(empty.message.find("could not be recorded"), std::string::npos);
  auto recorded = failure_of([] { throw gs::UnknownKey("nope"); });
  gd::mark_unrecorded_failure(recorded);
  EXPECT_EQ(recorded.message, "nope");
}

}  // namespace
