// Unit tests of the error copying that ModelCache hands to the waiters of a failed load:
// detail::throw_error and detail::visit_error_type, generated from GPUSAFE_ERROR_CODES.
#include <gtest/gtest.h>

#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <typeinfo>

#include "gpusafe/error.hpp"

namespace gs = gpusafe;
using gs::ErrorCode;

namespace {

template <class E>
void expect_copy(ErrorCode code) {
  SCOPED_TRACE(gs::to_string(code));
  try {
    gs::detail::throw_error(code, "message", 7);
    FAIL() << "no throw";
  } catch (const E& e) {
    EXPECT_EQ(typeid(e), typeid(E));
    EXPECT_EQ(e.code(), code);
    EXPECT_STREQ(e.what(), "message");
    EXPECT_EQ(e.runtime_code(), 7);
  }
}

TEST(CacheErrorCopy, EveryCodeThrowsItsOwnType) {
#define GPUSAFE_TEST_COPY(Type, code, doc) expect_copy<gs::Type>(ErrorCode::code);
  GPUSAFE_ERROR_CODES(GPUSAFE_TEST_COPY)
#undef GPUSAFE_TEST_COPY
}

TEST(CacheErrorCopy, VisitNamesTheTypeOfEachCode) {
#define GPUSAFE_TEST_VISIT(Type, code, doc)                                \
  EXPECT_TRUE(gs::detail::visit_error_type(ErrorCode::code, [](auto tag) { \
    return std::is_same<typename decltype(tag)::type, gs::Type>::value;    \
  }));                                                                     \
  EXPECT_STREQ(gs::to_string(ErrorCode::code), #code);
  GPUSAFE_ERROR_CODES(GPUSAFE_TEST_VISIT)
#undef GPUSAFE_TEST_VISIT
}

TEST(CacheErrorCopy, NestedExceptionTravelsWithTheCopy) {
  std::exception_ptr nested;
  try {
    throw std::logic_error("inner");
  } catch (...) {
    nested = std::current_exception();
  }
  for (int round = 0; round < 2; ++round) {  // each copy is a new object with the same nesting
    try {
      gs::detail::throw_error(ErrorCode::load_failed, "outer", 0, nested);
      FAIL() << "no throw";
    } catch (const gs::LoadFailed& e) {
      EXPECT_STREQ(e.what(), "outer");
      try {
        std::rethrow_if_nested(e);
        FAIL() << "not nested";
      } catch (const std::logic_error& inner) {
        EXPECT_STREQ(inner.what(), "inner");
      }
    }
  }
}

TEST(CacheErrorCopy, AnOutOfRangeCodeThrowsAPlainError) {
  const auto odd = static_cast<ErrorCode>(1000);
  try {
    gs::detail::throw_error(odd, "odd", 3);
    FAIL() << "no throw";
  } catch (const gs::Error& e) {
    EXPECT_EQ(typeid(e), typeid(gs::Error));
    EXPECT_EQ(e.code(), odd);
    EXPECT_EQ(e.runtime_code(), 3);
  }
}

}  // namespace
