// Unit tests of gpusafe/log.hpp: levels and the threshold, the replaceable sink, a throwing
// sink, lazy messages, and LogOnce.
#include "gpusafe/log.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace gs = gpusafe;
using gs::LogLevel;

namespace {

// Captures messages for the duration of a test and restores the previous sink and level.
class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    old_level_ = gs::log_level();
    old_sink_ = gs::set_log_sink([this](LogLevel level, std::string_view message) {
      seen_.emplace_back(level, std::string(message));
    });
  }
  void TearDown() override {
    gs::set_log_sink(std::move(old_sink_));
    gs::set_log_level(old_level_);
  }
  std::vector<std::pair<LogLevel, std::string>> seen_;

 private:
  LogLevel old_level_ = LogLevel::warning;
  gs::LogSink old_sink_;
};

}  // namespace

TEST(LogDefaults, ThresholdIsWarning) {
  EXPECT_EQ(gs::log_level(), LogLevel::warning);
  EXPECT_FALSE(gs::log_enabled(LogLevel::trace));
  EXPECT_FALSE(gs::log_enabled(LogLevel::debug));
  EXPECT_FALSE(gs::log_enabled(LogLevel::info));
  EXPECT_TRUE(gs::log_enabled(LogLevel::warning));
  EXPECT_TRUE(gs::log_enabled(LogLevel::error));
  EXPECT_FALSE(gs::log_enabled(LogLevel::off)) << "off is a threshold, never a message level";
}

TEST(LogDefaults, DefaultSinkWritesWarningsToStderr) {
  ::testing::internal::CaptureStderr();
  gs::log(LogLevel::warning, "visible warning");
  gs::log(LogLevel::info, "hidden info");
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("[gpusafe] warning: visible warning"), std::string::npos) << err;
  EXPECT_EQ(err.find("hidden info"), std::string::npos) << err;
}

TEST_F(LogTest, SinkReceivesMessagesAtOrAboveTheThreshold) {
  gs::log(LogLevel::info, "dropped");
  gs::log(LogLevel::warning, "w");
  gs::log(LogLevel::error, "e");
  ASSERT_EQ(seen_.size(), 2u);
  EXPECT_EQ(seen_[0], std::make_pair(LogLevel::warning, std::string("w")));
  EXPECT_EQ(seen_[1], std::make_pair(LogLevel::error, std::string("e")));
}

TEST_F(LogTest, LevelsFilter) {
  const LogLevel levels[] = {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warning,
                             LogLevel::error};
  for (LogLevel threshold : levels) {
    seen_.clear();
    gs::set_log_level(threshold);
    EXPECT_EQ(gs::log_level(), threshold);
    for (LogLevel l : levels) gs::log(l, gs::to_string(l));
    std::vector<std::string> expected;
    for (LogLevel l : levels)
      if (static_cast<int>(l) >= static_cast<int>(threshold)) expected.push_back(gs::to_string(l));
    std::vector<std::string> got;
    for (const auto& m : seen_) got.push_back(m.second);
    EXPECT_EQ(got, expected) << "threshold " << gs::to_string(threshold);
  }
  seen_.clear();
  gs::set_log_level(LogLevel::off);
  gs::log(LogLevel::error, "silenced");
  gs::log(LogLevel::off, "never a level");
  EXPECT_TRUE(seen_.empty());
}

TEST_F(LogTest, SetLogSinkReturnsThePreviousOne) {
  std::atomic<int> second{0};
  gs::LogSink mine = gs::set_log_sink([&](LogLevel, std::string_view) { ++second; });
  ASSERT_TRUE(static_cast<bool>(mine));
  gs::log(LogLevel::error, "to second");
  EXPECT_EQ(second.load(), 1);
  EXPECT_TRUE(seen_.empty());
  gs::set_log_sink(std::move(mine));
  gs::log(LogLevel::error, "back");
  EXPECT_EQ(second.load(), 1);
  ASSERT_EQ(seen_.size(), 1u);
  EXPECT_EQ(seen_[0].second, "back");
}

TEST_F(LogTest, EmptySinkRestoresStderr) {
  gs::LogSink mine = gs::set_log_sink({});
  ::testing::internal::CaptureStderr();
  gs::log(LogLevel::error, "on stderr again");
  const std::string err = ::testing::internal::GetCapturedStderr();
  gs::set_log_sink(std::move(mine));
  EXPECT_NE(err.find("[gpusafe] error: on stderr again"), std::string::npos) << err;
  EXPECT_TRUE(seen_.empty());
}

TEST_F(LogTest, ThrowingSinkIsSwallowed) {
  gs::LogSink mine = gs::set_log_sink(
      [](LogLevel, std::string_view) -> void { throw std::runtime_error("sink failure"); });
  EXPECT_NO_THROW(gs::log(LogLevel::error, "boom"));
  EXPECT_NO_THROW(gs::log(LogLevel::error, "boom again"));  // the lock was released
  gs::set_log_sink(std::move(mine));
  gs::log(LogLevel::error, "after");
  ASSERT_EQ(seen_.size(), 1u);
  EXPECT_EQ(seen_[0].second, "after");
}

TEST_F(LogTest, LazyMessagesAreBuiltOnlyWhenDelivered) {
  int built = 0;
  gs::log_lazy(LogLevel::debug, [&] {
    ++built;
    return std::string("expensive");
  });
  EXPECT_EQ(built, 0);
  gs::log_lazy(LogLevel::error, [&] {
    ++built;
    return std::string("expensive ") + std::to_string(42);
  });
  EXPECT_EQ(built, 1);
  ASSERT_EQ(seen_.size(), 1u);
  EXPECT_EQ(seen_[0].second, "expensive 42");
  EXPECT_NO_THROW(gs::log_lazy(LogLevel::error, []() -> std::string {
    throw std::runtime_error("message builder failed");
  }));
}

TEST_F(LogTest, LogOnceLogsOnce) {
  gs::LogOnce once;
  for (int i = 0; i < 5; ++i) once(LogLevel::error, "first failure");
  ASSERT_EQ(seen_.size(), 1u);
  EXPECT_EQ(seen_[0].second, "first failure");
  EXPECT_FALSE(once.first());
  gs::LogOnce other;
  EXPECT_TRUE(other.first());
  EXPECT_FALSE(other.first());
}

TEST_F(LogTest, LogOnceAcrossThreads) {
  gs::LogOnce once;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) once(LogLevel::error, "racing");
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(seen_.size(), 1u);
}

TEST_F(LogTest, ConcurrentMessagesReachTheSinkOneAtATime) {
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> count{0};
  gs::LogSink mine = gs::set_log_sink([&](LogLevel, std::string_view) {
    if (inside.fetch_add(1) != 0) ++overlaps;
    ++count;
    inside.fetch_sub(1);
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([] {
      for (int i = 0; i < 2000; ++i) gs::log(LogLevel::warning, "m");
    });
  for (auto& t : threads) t.join();
  gs::set_log_sink(std::move(mine));
  EXPECT_EQ(count.load(), 8000);
  EXPECT_EQ(overlaps.load(), 0);
}

TEST(LogNames, EveryLevelHasAName) {
  EXPECT_STREQ(gs::to_string(LogLevel::trace), "trace");
  EXPECT_STREQ(gs::to_string(LogLevel::debug), "debug");
  EXPECT_STREQ(gs::to_string(LogLevel::info), "info");
  EXPECT_STREQ(gs::to_string(LogLevel::warning), "warning");
  EXPECT_STREQ(gs::to_string(LogLevel::error), "error");
  EXPECT_STREQ(gs::to_string(LogLevel::off), "off");
}
