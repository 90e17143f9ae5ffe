// Unit tests of ModelCache's options check and counters (detail/cache/options.hpp, stats.hpp).
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "gpusafe/detail/cache/options.hpp"
#include "gpusafe/detail/cache/stats.hpp"
#include "gpusafe/error.hpp"

namespace gs = gpusafe;
namespace gd = gpusafe::detail;

namespace {

gs::ModelCacheOptions with_watermarks(double high, double low) {
  gs::ModelCacheOptions o;
  o.name = "opts";
  o.high_watermark = high;
  o.low_watermark = low;
  return o;
}

TEST(CacheOptions, DefaultsAreValid) {
  EXPECT_NO_THROW(gd::validate_cache_options(gs::ModelCacheOptions{}));
  EXPECT_NO_THROW(gd::validate_cache_options(with_watermarks(0.9, 0.7)));
  EXPECT_NO_THROW(gd::validate_cache_options(with_watermarks(1.0, 1.0)));
}

TEST(CacheOptions, WatermarksOutOfRangeOrOrderAreRejected) {
  for (auto [high, low] : {std::pair{1.5, 0.5}, std::pair{0.5, -0.1}, std::pair{0.5, 0.7}}) {
    try {
      gd::validate_cache_options(with_watermarks(high, low));
      FAIL() << "accepted high=" << high << " low=" << low;
    } catch (const gs::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("ModelCache 'opts': watermarks"), std::string::npos);
    }
  }
}

TEST(CacheOptions, NegativeDeviceIsRejected) {
  gs::ModelCacheOptions o;
  o.device = -1;
  EXPECT_THROW(gd::validate_cache_options(o), gs::InvalidArgument);
}

TEST(CacheOptions, OnlySecondaryModelsUnderLoadUncachedMayGoUncached) {
  gs::ModelCacheOptions o;
  EXPECT_TRUE(gd::must_cache(gs::Residency::secondary, o));
  EXPECT_TRUE(gd::must_cache(gs::Residency::primary, o));
  o.oversize = gs::OversizePolicy::load_uncached;
  EXPECT_FALSE(gd::must_cache(gs::Residency::secondary, o));
  EXPECT_TRUE(gd::must_cache(gs::Residency::primary, o));
}

TEST(CacheStats, EveryReasonHasAName) {
  for (std::size_t i = 0; i < gs::kEvictReasonCount; ++i)
    EXPECT_STRNE(gs::to_string(static_cast<gs::EvictReason>(i)), "?");
  EXPECT_STREQ(gs::to_string(gs::EvictReason::budget), "budget");
}

TEST(CacheStats, TotalsAndChargedBytes) {
  gs::ModelCacheStats s;
  s.evictions[static_cast<std::size_t>(gs::EvictReason::budget)] = 3;
  s.evictions[static_cast<std::size_t>(gs::EvictReason::clear)] = 2;
  s.bytes_resident = 10;
  s.bytes_retired = 5;
  s.bytes_reserved = 1;
  EXPECT_EQ(s.evictions_for(gs::EvictReason::budget), 3u);
  EXPECT_EQ(s.evictions_total(), 5u);
  EXPECT_EQ(s.bytes_charged(), 16u);
}

TEST(CacheStats, CountersCopyOnlyTheirOwnFields) {
  gd::CacheCounters c;
  c.misses = 1;
  c.loads = 2;
  c.load_failures = 3;
  c.waits = 4;
  c.uncached_loads = 5;
  c.load_time = std::chrono::nanoseconds(6);
  gs::ModelCacheStats s;
  s.hits = 7;
  s.bytes_resident = 8;
  c.copy_to(s);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.loads, 2u);
  EXPECT_EQ(s.load_failures, 3u);
  EXPECT_EQ(s.waits, 4u);
  EXPECT_EQ(s.uncached_loads, 5u);
  EXPECT_EQ(s.load_time.count(), 6);
  EXPECT_EQ(s.hits, 7u);
  EXPECT_EQ(s.bytes_resident, 8u);
}

}  // namespace
