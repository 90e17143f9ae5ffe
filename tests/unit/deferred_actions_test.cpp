// Unit tests of gpusafe/detail/deferred_actions.hpp through SafeCudaCleanup: small deferred actions
// make no heap allocation, bigger or later ones do, order and re-entrancy are kept. This file
// replaces the global operator new to count allocations (only this test executable).
#include "gpusafe/detail/deferred_actions.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpusafe/guards.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

// The replaced operator delete frees what the replaced operator new got from malloc; GCC cannot
// see that they pair up.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace gs = gpusafe;
using gs::testing::FakeRuntime;

namespace {

using FakeCleanup = gs::BasicSafeCudaCleanup<FakeRuntime>;
using Stack = gs::detail::DeferredActionStack;

/// Heap allocations made while running `fn`.
template <class Fn>
long allocations_during(Fn&& fn) {
  const long before = g_allocations.load();
  fn();
  return g_allocations.load() - before;
}

TEST(DeferredActions, CallableSizesThatFitInline) {
  int a = 0;
  auto one_ref = [&a] { ++a; };
  std::array<char, 48> payload{};
  auto fourty_eight = [payload] { (void)payload; };
  std::array<char, 49> big{};
  auto fourty_nine = [big] { (void)big; };
  EXPECT_TRUE(Stack::fits_inline<decltype(one_ref)>());
  EXPECT_TRUE(Stack::fits_inline<decltype(fourty_eight)>());
  EXPECT_FALSE(Stack::fits_inline<decltype(fourty_nine)>());
}

TEST(DeferredActions, OneSmallDeferMakesNoHeapAllocation) {
  int runs = 0;
  const long n = allocations_during([&] {
    FakeCleanup cleanup;
    cleanup.defer([&runs] { ++runs; });
  });
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(n, 0);
}

TEST(DeferredActions, ThreeSmallDefersMakeNoHeapAllocation) {
  std::vector<int> order;
  order.reserve(8);
  int* counter = nullptr;
  const long n = allocations_during([&] {
    FakeCleanup cleanup;
    cleanup.defer([&order] { order.push_back(1); });
    cleanup.defer([&order, counter] {  // two captures
      (void)counter;
      order.push_back(2);
    });
    cleanup.defer([&order] { order.push_back(3); });
    EXPECT_EQ(cleanup.pending(), 3u);
  });
  EXPECT_EQ(n, 0);
  EXPECT_EQ(order, (std::vector<int>{3, 2, 1}));
}

TEST(DeferredActions, LargeOrLaterActionsGoToTheHeapInOrder) {
  std::vector<int> order;
  order.reserve(16);
  std::array<char, 64> big{};
  {
    FakeCleanup cleanup;
    cleanup.defer([&order, big] {
      (void)big;
      order.push_back(1);
    });  // too big: heap, still first deferred
    for (int i = 2; i <= 6; ++i) cleanup.defer([&order, i] { order.push_back(i); });
    EXPECT_EQ(cleanup.pending(), 6u);
  }
  EXPECT_EQ(order, (std::vector<int>{6, 5, 4, 3, 2, 1}));
}

TEST(DeferredActions, MoveOnlyCallablesAndDestructionWithoutRunning) {
  auto flag = std::make_shared<int>(0);
  std::weak_ptr<int> watch = flag;
  {
    FakeCleanup cleanup;
    cleanup.defer([p = std::make_unique<int>(7), f = std::move(flag)] { *f = *p; });
    cleanup.dismiss();  // destroyed, not run
    EXPECT_TRUE(watch.expired());
  }
  {
    Stack stack;
    auto keep = std::make_shared<int>(1);
    watch = keep;
    stack.push<std::function<void()>>([keep] {});
    stack.push<std::function<void()>>([keep] {});
    keep.reset();
    EXPECT_FALSE(watch.expired());
  }
  EXPECT_TRUE(watch.expired());
}

TEST(DeferredActions, ActionMayDeferAndDismissWhileRunning) {
  std::vector<int> order;
  {
    FakeCleanup cleanup;
    cleanup.defer([&order] { order.push_back(1); });
    cleanup.defer([&] {
      order.push_back(2);
      // Lands where the running action's inline slot is: must not overwrite it.
      cleanup.defer([&order] { order.push_back(20); });
      cleanup.defer([&order] { order.push_back(21); });
    });
  }
  EXPECT_EQ(order, (std::vector<int>{2, 21, 20, 1}));

  order.clear();
  {
    FakeCleanup cleanup;
    cleanup.defer([&order] { order.push_back(1); });
    cleanup.defer([&] {
      order.push_back(2);
      cleanup.dismiss();  // drops action 1, not the running one
    });
  }
  EXPECT_EQ(order, (std::vector<int>{2}));
}

TEST(DeferredActions, ThrowingConstructionLeavesTheStackUnchanged) {
  struct ThrowsOnCopy {
    ThrowsOnCopy() = default;
    ThrowsOnCopy(const ThrowsOnCopy&) { throw std::runtime_error("copy"); }
    ThrowsOnCopy(ThrowsOnCopy&&) = default;
    void operator()() const {}
  };
  Stack stack;
  stack.push<ThrowsOnCopy>(ThrowsOnCopy{});
  const ThrowsOnCopy lvalue;
  EXPECT_THROW(stack.push<ThrowsOnCopy>(lvalue), std::runtime_error);
  EXPECT_EQ(stack.size(), 1u);
  EXPECT_TRUE(stack.run_top());
  EXPECT_FALSE(stack.run_top());
}

}  // namespace
