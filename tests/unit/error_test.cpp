// Unit tests of gpusafe/error.hpp and of the runtime layer's status-to-exception helpers
// (throw_status, throw_on_failure, check_gpu_request).
#include "gpusafe/error.hpp"

#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "gpusafe/runtime.hpp"

namespace gs = gpusafe;
using gs::ErrorCode;

namespace {

template <class E>
void expect_binds(ErrorCode code) {
  static_assert(std::is_base_of<gs::Error, E>::value, "every error derives from gpusafe::Error");
  static_assert(std::is_base_of<std::runtime_error, E>::value, "and from std::runtime_error");
  const E e("what happened; how to fix it", 42);
  EXPECT_EQ(e.code(), code) << gs::to_string(code);
  EXPECT_EQ(e.runtime_code(), 42);
  EXPECT_STREQ(e.what(), "what happened; how to fix it");
  EXPECT_EQ(E("no runtime code").runtime_code(), 0);
  try {
    throw E("thrown");
  } catch (const gs::Error& caught) {
    EXPECT_EQ(caught.code(), code);
  }
}

// Runs throw_status and returns the caught error's code, runtime code and message.
struct Caught {
  ErrorCode code;
  int runtime_code;
  std::string message;
};
template <class Expected>
Caught catch_status(int status, const std::string& fix = {}) {
  try {
    gs::throw_status(gs::Status{status}, "do_thing(7)", fix);
  } catch (const Expected& e) {
    return {e.code(), e.runtime_code(), e.what()};
  } catch (const std::exception& e) {
    ADD_FAILURE() << "status " << status << " threw the wrong type: " << e.what();
  }
  return {ErrorCode::timeout, -1, {}};
}

}  // namespace

TEST(Error, EverySubclassBindsItsCode) {
  expect_binds<gs::InvalidArgument>(ErrorCode::invalid_argument);
  expect_binds<gs::OutOfMemory>(ErrorCode::out_of_memory);
  expect_binds<gs::PoolExhausted>(ErrorCode::pool_exhausted);
  expect_binds<gs::NoGpu>(ErrorCode::no_gpu);
  expect_binds<gs::ForkedChild>(ErrorCode::forked_child);
  expect_binds<gs::ShuttingDown>(ErrorCode::shutting_down);
  expect_binds<gs::DevicePoisoned>(ErrorCode::device_poisoned);
  expect_binds<gs::RuntimeFailure>(ErrorCode::runtime_error);
  expect_binds<gs::DuplicateKey>(ErrorCode::duplicate_key);
  expect_binds<gs::UnknownKey>(ErrorCode::unknown_key);
  expect_binds<gs::LoadFailed>(ErrorCode::load_failed);
  expect_binds<gs::BudgetExceeded>(ErrorCode::budget_exceeded);
  expect_binds<gs::Timeout>(ErrorCode::timeout);
}

TEST(Error, CodeNamesAreDistinct) {
  std::set<std::string> names;
  for (int i = 0; i <= static_cast<int>(ErrorCode::timeout); ++i) {
    const std::string name = gs::to_string(static_cast<ErrorCode>(i));
    EXPECT_NE(name, "unknown") << i;
    names.insert(name);
  }
  EXPECT_EQ(names.size(), static_cast<std::size_t>(ErrorCode::timeout) + 1);
  EXPECT_STREQ(gs::to_string(ErrorCode::pool_exhausted), "pool_exhausted");
}

TEST(ThrowStatus, EachClassGetsItsType) {
  {
    const Caught c = catch_status<gs::OutOfMemory>(2);
    EXPECT_EQ(c.code, ErrorCode::out_of_memory);
    EXPECT_EQ(c.runtime_code, 2);
    EXPECT_NE(c.message.find("do_thing(7)"), std::string::npos) << c.message;
    EXPECT_NE(c.message.find("cudaErrorMemoryAllocation (2)"), std::string::npos) << c.message;
    EXPECT_NE(c.message.find("free memory or ask for less"), std::string::npos) << c.message;
  }
  for (int code : {3, 34, 35, 100}) {
    const Caught c = catch_status<gs::NoGpu>(code);
    EXPECT_EQ(c.runtime_code, code);
    EXPECT_NE(c.message.find("CUDA_VISIBLE_DEVICES"), std::string::npos) << c.message;
  }
  for (int code : {700, 710, 714, 715, 716, 717, 718, 719}) {
    const Caught c = catch_status<gs::DevicePoisoned>(code);
    EXPECT_EQ(c.runtime_code, code);
    EXPECT_NE(c.message.find("notify_device_reset"), std::string::npos) << c.message;
  }
  for (int code : {4, 709}) {
    const Caught c = catch_status<gs::ShuttingDown>(code);
    EXPECT_EQ(c.runtime_code, code);
  }
  for (int code : {1, 101, 201, 400}) {
    const Caught c = catch_status<gs::InvalidArgument>(code, "pass a valid handle");
    EXPECT_EQ(c.runtime_code, code);
    EXPECT_NE(c.message.find("pass a valid handle"), std::string::npos) << c.message;
  }
  for (int code : {999, 600, 12345}) {
    const Caught c = catch_status<gs::RuntimeFailure>(code, "retry later");
    EXPECT_EQ(c.runtime_code, code);
    EXPECT_NE(c.message.find("retry later"), std::string::npos) << c.message;
  }
}

TEST(ThrowStatus, OutOfMemoryUsesTheCallersFix) {
  const Caught c = catch_status<gs::OutOfMemory>(2, "shrink the pool");
  EXPECT_NE(c.message.find("shrink the pool"), std::string::npos) << c.message;
  EXPECT_EQ(c.message.find("free memory or ask for less"), std::string::npos) << c.message;
}

TEST(ThrowOnFailure, SuccessDoesNotThrow) {
  EXPECT_NO_THROW(gs::throw_on_failure(gs::Status{}, "ok"));
  EXPECT_THROW(gs::throw_on_failure(gs::Status{100}, "count"), gs::NoGpu);
  EXPECT_THROW(gs::throw_on_failure(gs::Status{2}, "alloc"), gs::Error);
}

TEST(CheckGpuRequest, PassesInANormalProcess) {
  EXPECT_NO_THROW(gs::check_gpu_request(0, "normal"));
}
