// Unit tests of ModelCache's pressure rule (detail/cache/pressure.hpp).
#include <gtest/gtest.h>

#include "gpusafe/detail/cache/pressure.hpp"
#include "gpusafe/runtime.hpp"

namespace gs = gpusafe;
namespace gd = gpusafe::detail;

namespace {

TEST(CachePressure, NothingToFreeUpToTheHighWatermark) {
  EXPECT_EQ(gd::pressure_excess_of(80, 100, 0.8, 0.5), 0u);
  EXPECT_EQ(gd::pressure_excess_of(0, 100, 0.8, 0.5), 0u);
}

TEST(CachePressure, AboveTheHighWatermarkFreesToJustUnderTheLowOne) {
  EXPECT_EQ(gd::pressure_excess_of(81, 100, 0.8, 0.5), 32u);  // 81 - 50 + 1
  EXPECT_EQ(gd::pressure_excess_of(100, 100, 0.9, 0.9), 11u);
  EXPECT_EQ(gd::pressure_excess_of(100, 100, 0.5, 0.0), 101u);
}

TEST(CachePressure, OffWithoutAHighWatermark) {
  gs::ModelCacheOptions o;
  const gd::CacheMessages messages(o.name);
  gd::CachePressure<gs::HostRuntime> pressure(o, messages);
  EXPECT_FALSE(pressure.enabled());
  EXPECT_EQ(pressure.excess(), 0u);
}

}  // namespace
