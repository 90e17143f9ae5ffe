// SPDX-License-Identifier: MIT
// gpusafe/testing/runtime_contract.hpp: typed GoogleTest cases that every Runtime must pass.
//
// gpusafe runs its own runtimes through them (HostRuntime, testing::FakeRuntime, CudaRuntime: the
// no-driver path on a machine without a GPU, the real one on a GPU). To check a Runtime of your
// own, include this header in a test linked with GoogleTest and write
//
//   INSTANTIATE_TYPED_TEST_SUITE_P(Mine, RuntimeContract, ::testing::Types<MyRuntime>);
//
// at namespace scope (the suite lives in gpusafe::testing; `using namespace gpusafe::testing;` or
// qualify it). What the contract asks is documented in docs/runtime.md.
//
// The last case checks the library's side of the seam over the Runtime (detail::RuntimeCalls):
// it forwards, arms gpusafe's exit flag, and records nothing for a usage error.
//
// Thread safety: the cases run on the test's thread. Teardown: each case releases what it made.
#ifndef GPUSAFE_TESTING_RUNTIME_CONTRACT_HPP
#define GPUSAFE_TESTING_RUNTIME_CONTRACT_HPP

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "gpusafe/runtime.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace testing {

/// The fixture: starts a FakeRuntime from a clean state; other runtimes need nothing.
template <class Runtime>
class RuntimeContract : public ::testing::Test {
 protected:
  void SetUp() override {
    if constexpr (std::is_same_v<Runtime, FakeRuntime>) FakeRuntime::reset(2);
  }
};

TYPED_TEST_SUITE_P(RuntimeContract);

TYPED_TEST_P(RuntimeContract, ModelsTheConceptWithNoexceptReleaseSide) {
  static_assert(is_runtime_v<TypeParam>, "see GPUSAFE_CHECK_RUNTIME's message");
  ASSERT_NE(TypeParam::name(), nullptr);
  EXPECT_GT(std::strlen(TypeParam::name()), 0u);
}

TYPED_TEST_P(RuntimeContract, InitializeIsRepeatableAndNeverFailsWhileAlive) {
  if constexpr (detail::HasInitialize<TypeParam>::value) {
    for (int i = 0; i < 3; ++i) {
      const Status s = TypeParam::initialize();
      EXPECT_NE(s.code, codes::cudart_unloading) << "the process is not exiting";
    }
  }
}

TYPED_TEST_P(RuntimeContract, DeviceCountAgreesWithGpuAvailable) {
  int count = -1;
  const Status s = TypeParam::device_count(count);
  if (TypeParam::gpu_available()) {
    EXPECT_TRUE(s.ok()) << s.describe();
    EXPECT_GT(count, 0);
  } else {
    EXPECT_EQ(count, 0) << "no usable GPU, yet devices were counted";
    if (!s.ok()) {
      EXPECT_EQ(s.error_class(), ErrorClass::no_gpu) << s.describe();
    }
  }
}

TYPED_TEST_P(RuntimeContract, HostMemoryAlwaysWorksAlignedAndWritable) {
  void* p = nullptr;
  const Status s = TypeParam::allocate(MemoryKind::host, 0, 1000, &p);
  ASSERT_TRUE(s.ok()) << s.describe();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 256, 0u) << "256-byte alignment";
  std::memset(p, 0xab, 1000);
  EXPECT_TRUE(TypeParam::deallocate(MemoryKind::host, 0, p).ok());
  EXPECT_TRUE(TypeParam::deallocate(MemoryKind::host, 0, nullptr).ok()) << "freeing null";
}

TYPED_TEST_P(RuntimeContract, DeviceAllocationSucceedsOrFailsCleanly) {
  void* p = reinterpret_cast<void*>(std::uintptr_t{1});
  const Status s = TypeParam::allocate(MemoryKind::device, 0, 4096, &p);
  if (TypeParam::gpu_available()) {
    EXPECT_TRUE(s.ok()) << s.describe();
  }
  if (s.ok()) {
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(TypeParam::deallocate(MemoryKind::device, 0, p).ok());
  } else {
    EXPECT_EQ(p, nullptr) << "a failed allocation leaves no pointer behind";
    EXPECT_NE(s.error_class(), ErrorClass::success);
  }
}

TYPED_TEST_P(RuntimeContract, MemoryInfoIsConsistentWhenItAnswers) {
  std::size_t free_bytes = 1, total_bytes = 0;
  const Status s = TypeParam::memory_info(0, free_bytes, total_bytes);
  if (TypeParam::gpu_available()) {
    EXPECT_TRUE(s.ok()) << s.describe();
  }
  if (s.ok()) {
    EXPECT_GT(total_bytes, 0u);
    EXPECT_LE(free_bytes, total_bytes);
  }
}

TYPED_TEST_P(RuntimeContract, CurrentDeviceRoundTripsAndBadIndicesAreUsageErrors) {
  if (TypeParam::gpu_available()) {
    int device = -1;
    ASSERT_TRUE(TypeParam::get_device(device).ok());
    EXPECT_TRUE(TypeParam::set_device(device).ok());
    int again = -1;
    ASSERT_TRUE(TypeParam::get_device(again).ok());
    EXPECT_EQ(again, device);
  }
  const Status bad = TypeParam::set_device(-1);
  EXPECT_FALSE(bad.ok()) << "set_device(-1) must fail";
  EXPECT_NE(bad.error_class(), ErrorClass::sticky) << "a bad index poisons nothing";
}

TYPED_TEST_P(RuntimeContract, EventsRecordQueryAndDestroy) {
  EventHandle event = nullptr;
  const Status made = TypeParam::event_create(event);
  if (!made.ok()) {
    EXPECT_FALSE(TypeParam::gpu_available()) << made.describe();
    EXPECT_EQ(made.error_class(), ErrorClass::no_gpu) << made.describe();
    return;
  }
  EXPECT_TRUE(TypeParam::event_record(event, nullptr).ok());
  EXPECT_TRUE(TypeParam::synchronize(0).ok());
  EXPECT_TRUE(TypeParam::event_query(event).ok()) << "after a synchronize, recorded work is done";
  EXPECT_TRUE(TypeParam::event_destroy(event).ok());
}

TYPED_TEST_P(RuntimeContract, TheLibrarysCallsForwardArmAndPoisonNothingOnUsageErrors) {
  using Calls = detail::RuntimeCalls<TypeParam>;
  int direct = -1, through = -1;
  const Status a = TypeParam::device_count(direct);
  const Status b = Calls::device_count(through);
  EXPECT_EQ(a.code, b.code) << a.describe() << " vs " << b.describe();
  EXPECT_EQ(direct, through);
  EXPECT_EQ(detail::exit_arm_state<TypeParam>.load(), 2)
      << "the library's first call arms gpusafe's exit flag";
  const bool poisoned_before = detail::is_poisoned(0);
  EXPECT_FALSE(Calls::set_device(-1).ok()) << "set_device(-1) must fail";
  EXPECT_EQ(detail::is_poisoned(0), poisoned_before) << "a bad index poisons nothing";
}

REGISTER_TYPED_TEST_SUITE_P(
    RuntimeContract, ModelsTheConceptWithNoexceptReleaseSide,
    InitializeIsRepeatableAndNeverFailsWhileAlive, DeviceCountAgreesWithGpuAvailable,
    HostMemoryAlwaysWorksAlignedAndWritable, DeviceAllocationSucceedsOrFailsCleanly,
    MemoryInfoIsConsistentWhenItAnswers, CurrentDeviceRoundTripsAndBadIndicesAreUsageErrors,
    EventsRecordQueryAndDestroy, TheLibrarysCallsForwardArmAndPoisonNothingOnUsageErrors);

}  // namespace testing
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_TESTING_RUNTIME_CONTRACT_HPP
