// Unit tests of gpusafe/memory_manager.hpp on the FakeRuntime.
#include "gpusafe/memory_manager.hpp"

#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../support/child_process.hpp"
#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/model_cache.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;
using gs::testing::FakeOp;
using gs::testing::FakeRuntime;
using Manager = gs::BasicMemoryManager<FakeRuntime>;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

/// Records every reclaim; gives back up to `available` bytes (at most the goal at trim level).
class Recorder : public gs::Reclaimable {
 public:
  Recorder(std::string name, gs::ReclaimCost cost, std::size_t available,
           std::vector<std::string>* order = nullptr)
      : name_(std::move(name)), cost_(cost), available_(available), order_(order) {}

  std::size_t reclaim(const gs::ReclaimRequest& request) noexcept override {
    std::lock_guard<std::mutex> lock(mutex_);
    ++calls_[static_cast<int>(request.level)];
    last_goal_ = request.bytes_goal;
    if (order_) order_->push_back(name_);
    if (request.level == gs::ReclaimLevel::light) return 0;
    const std::size_t n = std::min(available_, request.bytes_goal);
    available_ -= n;
    return n;
  }
  gs::ReclaimCost reclaim_cost() const noexcept override { return cost_; }
  const char* reclaimable_name() const noexcept override { return name_.c_str(); }
  gs::ResourceUsage usage() const noexcept override {
    std::lock_guard<std::mutex> lock(mutex_);
    gs::ResourceUsage u;
    u.bytes_reserved = available_ + 1000;
    u.bytes_in_use = 1000;
    u.items = 3;
    return u;
  }
  int calls(gs::ReclaimLevel level) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return calls_[static_cast<int>(level)];
  }
  std::size_t last_goal() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_goal_;
  }

 private:
  mutable std::mutex mutex_;
  std::string name_;
  gs::ReclaimCost cost_;
  std::size_t available_;
  std::vector<std::string>* order_;
  int calls_[3] = {0, 0, 0};
  std::size_t last_goal_ = 0;
};

/// Holds real FakeRuntime device allocations; gives them back on trim.
class Holder : public gs::Reclaimable {
 public:
  Holder(int buffers, std::size_t bytes) : bytes_(bytes) {
    for (int i = 0; i < buffers; ++i) {
      void* p = nullptr;
      if (FakeRuntime::allocate(gs::MemoryKind::device, 0, bytes, &p).ok()) held_.push_back(p);
    }
  }
  ~Holder() override { free_all(std::numeric_limits<std::size_t>::max()); }
  std::size_t reclaim(const gs::ReclaimRequest& request) noexcept override {
    if (request.level == gs::ReclaimLevel::light) return 0;
    return free_all(request.bytes_goal);
  }
  const char* reclaimable_name() const noexcept override { return "holder"; }
  std::size_t held() const { return held_.size(); }

 private:
  std::size_t free_all(std::size_t goal) noexcept {
    std::size_t n = 0;
    while (!held_.empty() && n < goal) {
      (void)FakeRuntime::deallocate(gs::MemoryKind::device, 0, held_.back());
      held_.pop_back();
      n += bytes_;
    }
    return n;
  }
  std::size_t bytes_;
  std::vector<void*> held_;
};

/// A resource that lists outstanding leases.
class Tracked : public gs::Reclaimable, public gs::LeakReporter {
 public:
  std::size_t reclaim(const gs::ReclaimRequest&) noexcept override { return 0; }
  const char* reclaimable_name() const noexcept override { return "frames"; }
  std::vector<gs::LeakRecord> leak_records() const override { return records; }
  std::vector<gs::LeakRecord> records;
};

/// Something with reclaimable(), as pools and caches have.
struct Owner {
  std::shared_ptr<Recorder> core =
      std::make_shared<Recorder>("owner", gs::ReclaimCost::idle_memory, 0);
  std::shared_ptr<gs::Reclaimable> reclaimable() const { return core; }
};

template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds limit = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// ---- a small JSON validator (RFC 8259 grammar, no semantics) ----------------------------------
class Json {
 public:
  explicit Json(const std::string& s) : s_(s) {}
  bool valid() {
    ws();
    if (!value()) return false;
    ws();
    return i_ == s_.size();
  }

 private:
  bool value() {
    if (i_ >= s_.size()) return false;
    switch (s_[i_]) {
      case '{':
        return object();
      case '[':
        return array();
      case '"':
        return string();
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }
  bool object() {
    ++i_;
    ws();
    if (peek('}')) return ++i_, true;
    for (;;) {
      ws();
      if (!string()) return false;
      ws();
      if (!peek(':')) return false;
      ++i_;
      ws();
      if (!value()) return false;
      ws();
      if (peek('}')) return ++i_, true;
      if (!peek(',')) return false;
      ++i_;
    }
  }
  bool array() {
    ++i_;
    ws();
    if (peek(']')) return ++i_, true;
    for (;;) {
      ws();
      if (!value()) return false;
      ws();
      if (peek(']')) return ++i_, true;
      if (!peek(',')) return false;
      ++i_;
    }
  }
  bool string() {
    if (!peek('"')) return false;
    ++i_;
    while (i_ < s_.size()) {
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') return ++i_, true;
      if (c < 0x20) return false;
      if (c == '\\') {
        ++i_;
        if (i_ >= s_.size()) return false;
        const char e = s_[i_];
        if (e == 'u') {
          for (int k = 0; k < 4; ++k)
            if (++i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_])))
              return false;
        } else if (std::strchr("\"\\/bfnrt", e) == nullptr) {
          return false;
        }
      }
      ++i_;
    }
    return false;
  }
  bool number() {
    const std::size_t start = i_;
    if (peek('-')) ++i_;
    if (!digits()) return false;
    if (peek('.')) {
      ++i_;
      if (!digits()) return false;
    }
    if (peek('e') || peek('E')) {
      ++i_;
      if (peek('+') || peek('-')) ++i_;
      if (!digits()) return false;
    }
    return i_ > start;
  }
  bool digits() {
    const std::size_t start = i_;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
    return i_ > start;
  }
  bool literal(const char* word) {
    const std::size_t n = std::strlen(word);
    if (s_.compare(i_, n, word) != 0) return false;
    i_ += n;
    return true;
  }
  bool peek(char c) const { return i_ < s_.size() && s_[i_] == c; }
  void ws() {
    while (i_ < s_.size() && std::strchr(" \t\r\n", s_[i_]) && s_[i_] != '\0') ++i_;
  }
  const std::string& s_;
  std::size_t i_ = 0;
};

class MemoryManagerTest : public ::testing::Test {
 protected:
  void SetUp() override { FakeRuntime::reset(1, 100 * kMiB); }
  void TearDown() override {
    FakeRuntime::clear_memory_info(0);
    gs::set_log_sink({});
  }
};

// ---- bad input ---------------------------------------------------------------------------------

TEST_F(MemoryManagerTest, RejectsBadOptionsWithAFix) {
  auto expect_invalid = [](gs::MemoryManagerOptions o, const char* needle) {
    try {
      Manager m(o);
      ADD_FAILURE() << "no exception for " << needle;
    } catch (const gs::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  gs::MemoryManagerOptions o;
  o.release_threshold = 1.5;
  expect_invalid(o, "outside 0..1");
  o.release_threshold = -0.01;
  expect_invalid(o, "outside 0..1");
  o.release_threshold = std::nan("");
  expect_invalid(o, "outside 0..1");
  o = {};
  o.cleanup_interval = -5ms;
  expect_invalid(o, "negative");
  o = {};
  o.device = -1;
  expect_invalid(o, "device -1");
  o = {};
  o.history_length = 0;
  expect_invalid(o, "history_length is 0");
  // The limits themselves are valid.
  o = {};
  o.release_threshold = 1.0;
  EXPECT_NO_THROW(Manager{o});
}

TEST_F(MemoryManagerTest, RejectsNullAttachAndTimerWithoutInterval) {
  Manager m;
  EXPECT_THROW(m.attach(std::shared_ptr<gs::Reclaimable>()), gs::InvalidArgument);
  EXPECT_THROW(m.start(), gs::InvalidArgument);
  EXPECT_THROW(m.start(0ms), gs::InvalidArgument);
  EXPECT_FALSE(m.timer_running());
}

TEST_F(MemoryManagerTest, RejectsTimerIntervalsAbove24Hours) {
  // A huge period would overflow the timer's timed wait.
  gs::MemoryManagerOptions o;
  o.cleanup_interval = std::chrono::milliseconds::max();
  try {
    Manager m(o);
    ADD_FAILURE() << "a cleanup_interval of milliseconds::max() was accepted";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("24 h"), std::string::npos) << e.what();
  }
  o.cleanup_interval = std::chrono::hours(24) + 1ms;
  EXPECT_THROW(Manager{o}, gs::InvalidArgument);
  o.cleanup_interval = std::chrono::hours(24);
  EXPECT_NO_THROW(Manager{o});

  Manager m;
  try {
    m.start(std::chrono::milliseconds::max());
    ADD_FAILURE() << "start(milliseconds::max()) was accepted";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("24 h"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(m.timer_running());
  m.start(std::chrono::hours(24));  // the limit itself is valid; stop() wakes it at once
  EXPECT_TRUE(m.timer_running());
  m.stop();
  EXPECT_FALSE(m.timer_running());
}

// ---- frames ------------------------------------------------------------------------------------

TEST_F(MemoryManagerTest, CleansUpEveryNFrames) {
  gs::MemoryManagerOptions o;
  o.cleanup_every_frames = 10;
  Manager m(o);
  auto r = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, 0);
  m.attach(r);
  std::vector<std::uint64_t> cleaned_at;
  for (std::uint64_t f = 1; f <= 35; ++f)
    if (m.on_frame()) cleaned_at.push_back(f);
  EXPECT_EQ(cleaned_at, (std::vector<std::uint64_t>{10, 20, 30}));
  EXPECT_EQ(m.frames(), 35u);
  EXPECT_EQ(m.stats().frame_cleanups, 3u);
  EXPECT_EQ(r->calls(gs::ReclaimLevel::light), 3);
  EXPECT_EQ(r->calls(gs::ReclaimLevel::heavy), 0);
  // A light cleanup gives back everything cached and idle: no byte goal.
  EXPECT_EQ(r->last_goal(), std::numeric_limits<std::size_t>::max());
  // Each cleanup records a snapshot.
  EXPECT_EQ(m.history().size(), 3u);
  EXPECT_EQ(m.history().back().frame, 30u);
}

TEST_F(MemoryManagerTest, FrameCleanupOffAtZero) {
  Manager m;
  auto r = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, 0);
  m.attach(r);
  for (int f = 0; f < 1000; ++f) EXPECT_FALSE(m.on_frame());
  EXPECT_EQ(r->calls(gs::ReclaimLevel::light), 0);
  EXPECT_EQ(m.stats().frame_cleanups, 0u);
}

TEST_F(MemoryManagerTest, FramesFromManyThreadsCleanUpOncePerSlot) {
  gs::MemoryManagerOptions o;
  o.cleanup_every_frames = 100;
  Manager m(o);
  std::vector<std::thread> threads;
  std::atomic<int> cleanups{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 2500; ++i)
        if (m.on_frame()) cleanups.fetch_add(1);
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(m.frames(), 10000u);
  // Every slot is claimed by one caller at most; a claimed slot may be skipped only when another
  // cleanup is running.
  const auto st = m.stats();
  EXPECT_EQ(static_cast<std::uint64_t>(cleanups.load()), st.frame_cleanups + st.skipped_cleanups);
  EXPECT_LE(cleanups.load(), 100);
  EXPECT_GE(cleanups.load(), 1);
}

// ---- threshold ---------------------------------------------------------------------------------

TEST_F(MemoryManagerTest, ReleasesInOrderOfCostUntilUnderThreshold) {
  FakeRuntime::set_memory_info(0, 10 * kMiB, 100 * kMiB);  // 90% used
  gs::MemoryManagerOptions o;
  o.release_threshold = 0.5;  // target 50 MiB: 40 MiB to free
  Manager m(o);
  std::vector<std::string> order;
  // Attached in the reverse order of cost on purpose.
  auto torch =
      std::make_shared<Recorder>("torch", gs::ReclaimCost::framework_cache, kMiB * 100, &order);
  auto models =
      std::make_shared<Recorder>("models", gs::ReclaimCost::evictable_models, 20 * kMiB, &order);
  auto pool = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, 30 * kMiB, &order);
  m.attach(torch);
  m.attach(models);
  m.attach(pool);

  const gs::ReleaseResult r = m.release_if_over_threshold();
  EXPECT_TRUE(r.checked);
  EXPECT_TRUE(r.was_over);
  EXPECT_TRUE(r.target_reached);
  EXPECT_EQ(r.used_before, 90 * kMiB);
  EXPECT_EQ(r.target_bytes, 50 * kMiB);
  EXPECT_EQ(r.used_after, 50 * kMiB);
  EXPECT_EQ(r.bytes_freed, 40 * kMiB);
  EXPECT_EQ(order, (std::vector<std::string>{"pool", "models"}));  // torch never asked
  ASSERT_EQ(r.released.size(), 2u);
  EXPECT_EQ(r.released[0].resource, "pool");
  EXPECT_EQ(r.released[0].bytes, 30 * kMiB);
  EXPECT_EQ(r.released[0].cost, gs::ReclaimCost::idle_memory);
  EXPECT_EQ(r.released[1].resource, "models");
  EXPECT_EQ(r.released[1].bytes, 10 * kMiB);
  EXPECT_EQ(models->last_goal(), 10 * kMiB);  // only what was still missing
  EXPECT_NE(r.released[0].reason.find("90.0% > threshold 50.0%"), std::string::npos)
      << r.released[0].reason;
  EXPECT_EQ(torch->calls(gs::ReclaimLevel::heavy), 0);
  EXPECT_EQ(m.stats().threshold_releases, 1u);
}

TEST_F(MemoryManagerTest, ReportsTargetNotReachedAfterAskingEveryone) {
  FakeRuntime::set_memory_info(0, 5 * kMiB, 100 * kMiB);
  std::vector<std::string> warnings;
  gs::MemoryManagerOptions o;
  o.release_threshold = 0.2;
  o.log_sink = [&](gs::LogLevel level, std::string_view m) {
    if (level == gs::LogLevel::warning) warnings.emplace_back(m);
  };
  Manager m(o);
  std::vector<std::string> order;
  auto a = std::make_shared<Recorder>("torch", gs::ReclaimCost::framework_cache, kMiB, &order);
  auto b = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, kMiB, &order);
  auto c = std::make_shared<Recorder>("models", gs::ReclaimCost::evictable_models, kMiB, &order);
  m.attach(a);
  m.attach(b);
  m.attach(c);
  const auto r = m.release_if_over_threshold();
  EXPECT_TRUE(r.was_over);
  EXPECT_FALSE(r.target_reached);
  EXPECT_EQ(order, (std::vector<std::string>{"pool", "models", "torch"}));
  EXPECT_EQ(r.bytes_freed, 3 * kMiB);
  EXPECT_EQ(r.used_after, 92 * kMiB);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("still over the threshold"), std::string::npos) << warnings[0];
  m.release_if_over_threshold();
  EXPECT_EQ(warnings.size(), 1u);  // warned once
}

TEST_F(MemoryManagerTest, UnderThresholdAsksNobody) {
  FakeRuntime::set_memory_info(0, 60 * kMiB, 100 * kMiB);  // 40% used
  gs::MemoryManagerOptions o;
  o.release_threshold = 0.5;
  Manager m(o);
  auto a = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, kMiB);
  m.attach(a);
  const auto r = m.release_if_over_threshold();
  EXPECT_TRUE(r.checked);
  EXPECT_FALSE(r.was_over);
  EXPECT_TRUE(r.target_reached);
  EXPECT_EQ(a->calls(gs::ReclaimLevel::heavy), 0);
  EXPECT_EQ(m.stats().threshold_releases, 0u);
}

TEST_F(MemoryManagerTest, ThresholdOffChecksNothing) {
  FakeRuntime::set_memory_info(0, 0, 100 * kMiB);  // full
  Manager m;
  auto a = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, kMiB);
  m.attach(a);
  const auto before = FakeRuntime::calls(FakeOp::memory_info);
  const auto r = m.release_if_over_threshold();
  EXPECT_FALSE(r.checked);
  EXPECT_EQ(a->calls(gs::ReclaimLevel::heavy), 0);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::memory_info), before);
}

TEST_F(MemoryManagerTest, FrameCleanupReleasesRealUsageOverThreshold) {
  gs::MemoryManagerOptions o;
  o.cleanup_every_frames = 5;
  o.release_threshold = 0.5;
  Manager m(o);
  auto h = std::make_shared<Holder>(7, 10 * kMiB);  // 70 of 100 MiB
  ASSERT_EQ(h->held(), 7u);
  m.attach(h);
  for (int f = 0; f < 4; ++f) m.on_frame();
  EXPECT_EQ(FakeRuntime::bytes_in_use(0), 70 * kMiB);  // nothing before the 5th frame
  m.on_frame();
  EXPECT_LE(FakeRuntime::bytes_in_use(0), 50 * kMiB);
  EXPECT_EQ(FakeRuntime::bytes_in_use(0), 50 * kMiB);  // no more than needed
  EXPECT_EQ(m.stats().bytes_released, 20 * kMiB);
}

TEST_F(MemoryManagerTest, GlobalFrameworkCacheIsAskedLastAndShownInSnapshots) {
  FakeRuntime::set_memory_info(0, 0, 100 * kMiB);
  gs::MemoryManagerOptions o;
  o.release_threshold = 0.9;
  Manager m(o);
  std::vector<std::string> order;
  Recorder framework("libtorch", gs::ReclaimCost::framework_cache, 50 * kMiB, &order);
  gs::ReclaimRegistration reg(framework);
  auto pool = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, kMiB, &order);
  m.attach(pool);
  const auto r = m.release_if_over_threshold();
  EXPECT_TRUE(r.target_reached);
  EXPECT_EQ(order, (std::vector<std::string>{"pool", "libtorch"}));
  EXPECT_EQ(r.bytes_freed, 10 * kMiB);

  const auto s = m.snapshot();
  ASSERT_EQ(s.resources.size(), 2u);
  EXPECT_EQ(s.resources[0].name, "pool");
  EXPECT_TRUE(s.resources[0].attached);
  EXPECT_EQ(s.resources[1].name, "libtorch");
  EXPECT_FALSE(s.resources[1].attached);
  EXPECT_EQ(s.resources[1].cost, gs::ReclaimCost::framework_cache);
}

TEST_F(MemoryManagerTest, MemoryInfoFailureIsReportedNotThrown) {
  std::vector<std::string> messages;
  gs::MemoryManagerOptions o;
  o.release_threshold = 0.5;
  o.log_sink = [&](gs::LogLevel, std::string_view m) { messages.emplace_back(m); };
  Manager m(o);
  FakeRuntime::fail_call(FakeOp::memory_info, gs::codes::unknown, 0, 2);
  const auto r = m.release_if_over_threshold();
  EXPECT_FALSE(r.checked);
  EXPECT_FALSE(r.target_reached);
  EXPECT_FALSE(r.note.empty());
  const auto s = m.snapshot();
  EXPECT_FALSE(s.memory_known);
  ASSERT_EQ(messages.size(), 1u);  // logged once
  EXPECT_NE(messages[0].find("cudaErrorUnknown"), std::string::npos) << messages[0];
  EXPECT_TRUE(m.snapshot().memory_known);  // recovers
}

// ---- timer -------------------------------------------------------------------------------------

TEST_F(MemoryManagerTest, TimerRunsCleanupsAndStopsAndRestarts) {
  gs::MemoryManagerOptions o;
  o.cleanup_interval = 2ms;
  Manager m(o);
  auto r = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, 0);
  m.attach(r);
  m.start();
  EXPECT_TRUE(m.timer_running());
  m.start();  // already running: no second thread
  ASSERT_TRUE(wait_until([&] { return m.stats().timer_cleanups >= 3; }));
  m.stop();
  EXPECT_FALSE(m.timer_running());
  const auto stopped_at = m.stats().timer_cleanups;
  EXPECT_EQ(r->calls(gs::ReclaimLevel::light), static_cast<int>(stopped_at));
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(m.stats().timer_cleanups, stopped_at);  // really stopped
  m.stop();                                         // twice is fine

  m.start();
  ASSERT_TRUE(wait_until([&] { return m.stats().timer_cleanups >= stopped_at + 2; }));
  m.stop();
  EXPECT_FALSE(m.timer_running());
}

/// Stops the manager from inside the first timer cleanup that reaches it.
class StopsTheTimer : public Recorder {
 public:
  explicit StopsTheTimer(Manager& m)
      : Recorder("stopper", gs::ReclaimCost::idle_memory, 0), m_(m) {}
  std::size_t reclaim(const gs::ReclaimRequest& request) noexcept override {
    if (!stopped_.exchange(true)) m_.stop();
    return Recorder::reclaim(request);
  }

 private:
  Manager& m_;
  std::atomic<bool> stopped_{false};
};

TEST_F(MemoryManagerTest, TimerStoppedFromItsOwnCleanupReportsStoppedAndStartsAgain) {
  gs::MemoryManagerOptions o;
  o.cleanup_interval = 2ms;
  Manager m(o);
  auto r = std::make_shared<StopsTheTimer>(m);
  m.attach(r);
  m.start();
  ASSERT_TRUE(wait_until([&] { return r->calls(gs::ReclaimLevel::light) >= 1; }));
  EXPECT_FALSE(m.timer_running()) << "stop() from the timer's own cleanup left it reported running";
  std::this_thread::sleep_for(30ms);
  const auto stopped_at = m.stats().timer_cleanups;
  EXPECT_EQ(stopped_at, 1u);
  m.start();
  EXPECT_TRUE(m.timer_running());
  EXPECT_TRUE(wait_until([&] { return m.stats().timer_cleanups >= stopped_at + 2; }))
      << "start() after a stop from the timer's own cleanup did not run the timer again";
  m.stop();
  EXPECT_FALSE(m.timer_running());
}

TEST_F(MemoryManagerTest, StopWakesTheTimerAtOnce) {
  gs::MemoryManagerOptions o;
  o.cleanup_interval = std::chrono::hours(1);
  Manager m(o);
  m.start();
  const auto t0 = std::chrono::steady_clock::now();
  m.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(m.stats().timer_cleanups, 0u);
}

TEST_F(MemoryManagerTest, DestructorJoinsARunningTimer) {
  auto r = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, 0);
  {
    gs::MemoryManagerOptions o;
    o.cleanup_interval = 1ms;
    Manager m(o);
    m.attach(r);
    m.start();
    ASSERT_TRUE(wait_until([&] { return m.stats().timer_cleanups >= 1; }));
  }
  const int after = r->calls(gs::ReclaimLevel::light);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(r->calls(gs::ReclaimLevel::light), after);
}

TEST_F(MemoryManagerTest, GlobalShutdownStopsTheTimerAndLogsLeaksOnce) {
  std::vector<std::string> messages;
  gs::MemoryManagerOptions o;
  o.cleanup_interval = 1ms;
  o.name = "video";
  o.log_sink = [&](gs::LogLevel level, std::string_view m) {
    if (level >= gs::LogLevel::warning) messages.emplace_back(m);
  };
  Manager m(o);
  auto t = std::make_shared<Tracked>();
  t->records.push_back({"frames", "main.cpp", 42, "decoder", 4096, 1500ms});
  m.attach(t);
  m.start();
  gs::shutdown();
  EXPECT_FALSE(m.timer_running());
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_NE(messages[0].find("main.cpp:42"), std::string::npos) << messages[0];
  EXPECT_NE(messages[0].find("[decoder]"), std::string::npos) << messages[0];
  m.shutdown();
  gs::shutdown();
  EXPECT_EQ(messages.size(), 1u);
}

TEST_F(MemoryManagerTest, ShutdownReclaimsAttachedAtShutdownLevel) {
  Manager m;
  auto r = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, 5 * kMiB);
  m.attach(r);
  EXPECT_EQ(m.shutdown(), 5 * kMiB);
  EXPECT_EQ(r->calls(gs::ReclaimLevel::shutdown), 1);
}

// ---- attach / detach ---------------------------------------------------------------------------

TEST_F(MemoryManagerTest, ResourceDyingFirstDetachesItself) {
  gs::MemoryManagerOptions o;
  o.cleanup_every_frames = 1;
  Manager m(o);
  auto r = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, 0);
  std::weak_ptr<Recorder> w = r;
  m.attach(r);
  EXPECT_EQ(m.attached_count(), 1u);
  r.reset();
  EXPECT_TRUE(w.expired());  // the manager does not keep it alive
  EXPECT_EQ(m.attached_count(), 0u);
  EXPECT_TRUE(m.on_frame());
  EXPECT_TRUE(m.snapshot().resources.empty());
  EXPECT_TRUE(m.leak_report().empty());
}

TEST_F(MemoryManagerTest, ManagerDyingFirstLeavesResourcesAlone) {
  auto r = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, 0);
  const auto regs = gs::registered_reclaimable_count();
  {
    gs::MemoryManagerOptions o;
    o.cleanup_interval = 1ms;
    Manager m(o);
    EXPECT_EQ(gs::registered_reclaimable_count(), regs + 1);  // the manager's controller
    m.attach(r);
    m.start();
  }
  EXPECT_EQ(gs::registered_reclaimable_count(), regs);
  EXPECT_EQ(r.use_count(), 1);
  gs::shutdown();  // reaches no dangling controller
  EXPECT_EQ(r->calls(gs::ReclaimLevel::shutdown), 0);
}

TEST_F(MemoryManagerTest, AttachIsIdempotentAndDetachWorks) {
  Manager m;
  auto a = std::make_shared<Recorder>("a", gs::ReclaimCost::idle_memory, 0);
  auto b = std::make_shared<Recorder>("b", gs::ReclaimCost::idle_memory, 0);
  m.attach(a);
  m.attach(a);
  m.attach(b);
  EXPECT_EQ(m.attached_count(), 2u);
  EXPECT_TRUE(m.detach(a));
  EXPECT_FALSE(m.detach(a));
  EXPECT_EQ(m.attached_count(), 1u);
  m.cleanup();
  EXPECT_EQ(a->calls(gs::ReclaimLevel::light), 0);
  EXPECT_EQ(b->calls(gs::ReclaimLevel::light), 1);
}

TEST_F(MemoryManagerTest, AttachesAnythingWithReclaimable) {
  Manager m;
  {
    Owner owner;
    m.attach(owner);
    EXPECT_EQ(m.attached_count(), 1u);
    m.cleanup();
    EXPECT_EQ(owner.core->calls(gs::ReclaimLevel::light), 1);
    EXPECT_TRUE(m.detach(owner));
    m.attach(owner);
  }
  EXPECT_EQ(m.attached_count(), 0u);  // the owner died with its core
}

// ---- monitoring --------------------------------------------------------------------------------

TEST_F(MemoryManagerTest, HistoryIsBounded) {
  gs::MemoryManagerOptions o;
  o.history_length = 3;
  Manager m(o);
  for (int i = 0; i < 5; ++i) {
    m.on_frame();
    m.snapshot();
  }
  const auto h = m.history();
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0].frame, 3u);
  EXPECT_EQ(h[2].frame, 5u);
  EXPECT_LE(h[0].time_s, h[2].time_s);
  EXPECT_EQ(m.stats().history_size, 3u);
  m.clear_history();
  EXPECT_TRUE(m.history().empty());
}

TEST_F(MemoryManagerTest, SnapshotReadsDeviceAndResources) {
  FakeRuntime::set_memory_info(0, 25 * kMiB, 100 * kMiB);
  Manager m;
  auto a = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, 2000);
  m.attach(a);
  m.on_frame();
  const auto s = m.snapshot();
  EXPECT_TRUE(s.memory_known);
  EXPECT_TRUE(s.device_is_gpu);
  EXPECT_EQ(s.device_total_bytes, 100 * kMiB);
  EXPECT_EQ(s.device_used_bytes, 75 * kMiB);
  EXPECT_EQ(s.frame, 1u);
  ASSERT_EQ(s.resources.size(), 1u);
  EXPECT_EQ(s.resources[0].usage.bytes_reserved, 3000u);
  EXPECT_EQ(s.resources[0].usage.bytes_in_use, 1000u);
}

TEST_F(MemoryManagerTest, SnapshotFallsBackToHostMemoryWithoutGpu) {
  FakeRuntime::set_mode(gs::testing::FakeMode::no_device);
  Manager m;
  const auto s = m.snapshot();
  EXPECT_FALSE(s.device_is_gpu);
  EXPECT_TRUE(s.memory_known);
  EXPECT_GT(s.device_total_bytes, 0u);  // /proc/meminfo
  EXPECT_EQ(FakeRuntime::calls(FakeOp::memory_info), 0u);
  FakeRuntime::set_mode(gs::testing::FakeMode::normal);
}

TEST_F(MemoryManagerTest, JsonIsValidWithHostileNames) {
  gs::MemoryManagerOptions o;
  o.name = "cam \"front\"\\\n\t\x01";
  Manager m(o);
  auto a = std::make_shared<Recorder>("pool \"x\"\x1f", gs::ReclaimCost::idle_memory, 0);
  m.attach(a);
  const std::string j = m.report_json();
  EXPECT_TRUE(Json(j).valid()) << j;
  EXPECT_NE(j.find(R"("name":"cam \"front\"\\\n\t\u0001")"), std::string::npos) << j;
  EXPECT_NE(j.find(R"("name":"pool \"x\"\u001f")"), std::string::npos) << j;
  EXPECT_NE(j.find(R"("cost":"idle_memory")"), std::string::npos) << j;
  // The validator itself rejects broken JSON.
  EXPECT_FALSE(Json(R"({"a":"b\q"})").valid());
  EXPECT_FALSE(Json("{\"a\":\"b\n\"}").valid());
  EXPECT_FALSE(Json(R"({"a":1,})").valid());
  EXPECT_FALSE(Json(R"({"a":[1,2})").valid());
}

TEST_F(MemoryManagerTest, ReportIsAlignedText) {
  FakeRuntime::set_memory_info(0, 50 * kMiB, 100 * kMiB);
  gs::MemoryManagerOptions o;
  o.name = "video";
  o.release_threshold = 0.8;
  Manager m(o);
  auto a = std::make_shared<Recorder>("frames", gs::ReclaimCost::idle_memory, 3 * kMiB);
  auto b = std::make_shared<Recorder>("face_models", gs::ReclaimCost::evictable_models, 0);
  m.attach(a);
  m.attach(b);
  const std::string text = m.report();
  EXPECT_NE(text.find("memory manager 'video'"), std::string::npos) << text;
  EXPECT_NE(text.find("used 50.0 MiB of 100.0 MiB (50.0%)"), std::string::npos) << text;
  EXPECT_NE(text.find("threshold 80.0%"), std::string::npos) << text;
  // Rows of the resource table start their "cost" column at the same offset.
  const auto line_of = [&](const std::string& name) {
    const auto p = text.find("\n" + name + " ");
    EXPECT_NE(p, std::string::npos) << text;
    const auto end = text.find('\n', p + 1);
    return text.substr(p + 1, end - p - 1);
  };
  const std::string r1 = line_of("frames"), r2 = line_of("face_models"), hdr = line_of("resource");
  EXPECT_EQ(r1.find("idle_memory"), r2.find("evictable_models"));
  EXPECT_EQ(hdr.find("cost"), r1.find("idle_memory"));
  EXPECT_EQ(r1.size(), r2.size());
}

TEST_F(MemoryManagerTest, HistoryCsvHasAColumnPairPerResource) {
  FakeRuntime::set_memory_info(0, 40 * kMiB, 100 * kMiB);
  Manager m;
  auto a = std::make_shared<Recorder>("frames", gs::ReclaimCost::idle_memory, 0);
  m.attach(a);
  m.snapshot();
  auto b = std::make_shared<Recorder>("models,v2", gs::ReclaimCost::evictable_models, 500);
  m.attach(b);
  m.on_frame();
  m.snapshot();
  const std::string csv = m.history_csv();
  std::vector<std::string> lines;
  for (std::size_t p = 0, q; (q = csv.find('\n', p)) != std::string::npos; p = q + 1)
    lines.push_back(csv.substr(p, q - p));
  ASSERT_EQ(lines.size(), 3u) << csv;
  EXPECT_EQ(lines[0],
            "time_s,frame,device_used_bytes,device_total_bytes,frames_reserved_bytes,"
            "frames_in_use_bytes,\"models,v2_reserved_bytes\",\"models,v2_in_use_bytes\"");
  EXPECT_NE(lines[1].find(",0,62914560,104857600,1000,1000,,"), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find(",1,62914560,104857600,1000,1000,1500,1000"), std::string::npos)
      << lines[2];
}

TEST_F(MemoryManagerTest, LeakReportListsTrackedLeasesOldestFirst) {
  Manager m;
  auto t = std::make_shared<Tracked>();
  t->records.push_back({"frames", "a.cpp", 1, "", 100, 10ms});
  t->records.push_back({"frames", "b.cpp", 2, "decode", 200, 2s});
  m.attach(t);
  auto untracked = std::make_shared<Recorder>("scratch", gs::ReclaimCost::idle_memory, 0);
  m.attach(untracked);
  const auto rep = m.leak_report();
  ASSERT_EQ(rep.records.size(), 2u);
  EXPECT_EQ(rep.records[0].file, "b.cpp");
  EXPECT_EQ(rep.total_bytes(), 300u);
  EXPECT_EQ(rep.untracked, (std::vector<std::string>{"scratch"}));
  const std::string text = rep.to_string();
  EXPECT_NE(text.find("2 outstanding lease(s)"), std::string::npos) << text;
  EXPECT_NE(text.find("b.cpp:2 [decode], 2.0 s ago"), std::string::npos) << text;
  t->records.clear();
  EXPECT_TRUE(m.leak_report().empty());
}

TEST_F(MemoryManagerTest, NoLeakMessageWhenNothingIsOut) {
  std::vector<std::string> messages;
  gs::MemoryManagerOptions o;
  o.log_sink = [&](gs::LogLevel, std::string_view m) { messages.emplace_back(m); };
  Manager m(o);
  m.attach(std::make_shared<Tracked>());
  m.shutdown();
  EXPECT_TRUE(messages.empty());
}

// ---- fork --------------------------------------------------------------------------------------

TEST_F(MemoryManagerTest, ForkedChildForgetsTheTimer) {
  gs::MemoryManagerOptions o;
  o.cleanup_interval = 1ms;
  Manager m(o);
  auto r = std::make_shared<Recorder>("pool", gs::ReclaimCost::idle_memory, 0);
  m.attach(r);
  m.start();
  ASSERT_TRUE(wait_until([&] { return m.stats().timer_cleanups >= 1; }));
  const int rc = gpusafe_test::run_in_child([&] {
    // Child: the timer thread does not exist here; stop() must not wait for it.
    m.stop();
    int child_rc = m.timer_running() ? 2 : 0;
    m.cleanup();  // works (no runtime call in a child)
    if (m.stats().manual_cleanups != 1) child_rc = 3;
    return child_rc;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_TRUE(m.timer_running());  // the parent's timer is untouched
  m.stop();
}

#if defined(__SANITIZE_THREAD__)
constexpr bool kThreadSanitizer = true;
#else
constexpr bool kThreadSanitizer = false;
#endif
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
/// The sanitizers' runtimes (GCC 12) are not fork-safe while other threads allocate or start:
/// a sanitized build forks only while every other thread sleeps (see fork_busy_manager_and).
constexpr bool kSanitizedBuild = kThreadSanitizer || kAddressSanitizer;

/// Creates and joins threads whose stacks are of a size nobody else uses, as a child doing
/// threaded work would: the C library's cache of thread stacks overflows and unmaps the stacks,
/// descriptors included, of the parent's threads (which do not exist in the child).
void churn_thread_stacks() {
  if (kThreadSanitizer) return;  // it refuses new threads in a child of a threaded process
  for (int i = 0; i < 4; ++i) {
    pthread_attr_t attr;
    ::pthread_attr_init(&attr);
    ::pthread_attr_setstacksize(&attr, std::size_t{24} << 20);
    pthread_t t;
    if (::pthread_create(
            &t, &attr, [](void*) -> void* { return nullptr; }, nullptr) == 0)
      ::pthread_join(t, nullptr);
    ::pthread_attr_destroy(&attr);
  }
}

/// A resource that keeps no lock: a forked child may reclaim from it whatever the parent's
/// threads were doing. (A resource with a lock of its own must rebuild it in the child, rule 5:
/// the Recorder above does not, and a child forked while a parent thread was inside its
/// reclaim() would wait on that lock forever.)
class LockFreeResource : public gs::Reclaimable {
 public:
  std::size_t reclaim(const gs::ReclaimRequest&) noexcept override {
    calls_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  gs::ReclaimCost reclaim_cost() const noexcept override { return gs::ReclaimCost::idle_memory; }
  const char* reclaimable_name() const noexcept override { return "lock-free"; }
  gs::ResourceUsage usage() const noexcept override { return {}; }

 private:
  std::atomic<std::uint64_t> calls_{0};
};

/// A manager with a running timer, forked while the timer and three more threads work; the
/// child does threaded work of its own, then ends as `end_child` says. The parent's timer thread
/// does not exist in the child: its handle must be forgotten without a call (detaching it there
/// crashed the child). A sanitized build forks while those threads sleep: its timer waits an
/// hour, and the workers pause around each fork.
template <class EndChild>
void fork_busy_manager_and(EndChild end_child) {
  gs::MemoryManagerOptions o;
  o.cleanup_interval = kSanitizedBuild ? std::chrono::milliseconds(1h) : 1ms;
  auto m = std::make_unique<Manager>(o);
  m->attach(std::make_shared<LockFreeResource>());
  m->start();
  if (!kSanitizedBuild) {
    ASSERT_TRUE(wait_until([&] { return m->stats().timer_cleanups >= 1; }));
  }
  std::atomic<bool> stop{false}, pause{false};
  std::vector<std::thread> busy;
  for (int t = 0; t < 3; ++t)
    busy.emplace_back([&] {
      while (!stop.load()) {
        if (pause.load()) {
          std::this_thread::sleep_for(1ms);
          continue;
        }
        m->on_frame();
        (void)m->cleanup();
      }
    });
  for (int i = 0; i < 10; ++i) {
    if (kSanitizedBuild) {
      pause = true;
      const bool asleep = gpusafe_test::wait_until_other_threads_sleep();
      EXPECT_TRUE(asleep) << "fork " << i << ": the other threads did not settle";
      if (!asleep) break;
    }
    const int rc = gpusafe_test::run_in_child([&] {
      churn_thread_stacks();
      return end_child(m);
    });
    pause = false;
    EXPECT_EQ(rc, 0) << "fork " << i << " (128 + n: killed by signal n; -2: hung)";
  }
  stop = true;
  for (auto& t : busy) t.join();
  EXPECT_TRUE(m->timer_running());  // the parent's timer is untouched
}

TEST_F(MemoryManagerTest, ForkedChildMayStopTheParentsTimer) {
  fork_busy_manager_and([](std::unique_ptr<Manager>& m) {
    m->stop();
    m->stop();
    return m->timer_running() ? 2 : 0;
  });
}

TEST_F(MemoryManagerTest, ForkedChildMayDestroyTheManager) {
  fork_busy_manager_and([](std::unique_ptr<Manager>& m) {
    m.reset();
    return 0;
  });
}

/// Destroys its manager when std::exit runs the destructors of static objects, as for a static
/// manager, then ends the process there: the handlers left (LeakSanitizer's check, among them)
/// would report what the parent's vanished threads had allocated.
struct DestroyedAtExit {
  std::unique_ptr<Manager> m;
  ~DestroyedAtExit() {
    m.reset();
    std::_Exit(0);
  }
};

TEST_F(MemoryManagerTest, ForkedChildMayExitWithTheManagerDestroyedAtExit) {
  fork_busy_manager_and([](std::unique_ptr<Manager>& m) {
    static DestroyedAtExit at_exit;
    at_exit.m = std::move(m);
    std::exit(3);  // 0 from the destructor above, 128 + n if the manager's destructor crashes
    return 1;
  });
}

TEST_F(MemoryManagerTest, ForkedChildMayRestartTheTimer) {
  if (kThreadSanitizer) GTEST_SKIP() << "ThreadSanitizer refuses new threads in a forked child";
  fork_busy_manager_and([](std::unique_ptr<Manager>& m) {
    const auto before = m->stats().timer_cleanups;
    m->start(1ms);  // a timer thread of the child's own
    if (!wait_until([&] { return m->stats().timer_cleanups >= before + 2; })) return 2;
    m->stop();
    return m->timer_running() ? 3 : 0;
  });
}

// ---- re-entrance -------------------------------------------------------------------------------

/// Runs `inside` from its reclaim(), once per level.
class CallsBack : public gs::Reclaimable {
 public:
  std::function<void(gs::ReclaimLevel)> inside;
  std::size_t reclaim(const gs::ReclaimRequest& request) noexcept override {
    if (inside) inside(request.level);
    return 0;
  }
  const char* reclaimable_name() const noexcept override { return "calls_back"; }
};

/// Runs `fn` (returning int) on its own thread and waits at most `limit` for it: its result, or
/// -2 when it hung (the thread is then left behind, stuck, so `fn` must own what it uses).
template <class Fn>
int result_within(std::chrono::milliseconds limit, Fn fn) {
  auto result = std::make_shared<std::promise<int>>();
  std::future<int> ready = result->get_future();
  std::thread t([result, fn]() mutable { result->set_value(fn()); });
  if (ready.wait_for(limit) != std::future_status::ready) {
    t.detach();
    return -2;
  }
  t.join();
  return ready.get();
}

TEST_F(MemoryManagerTest, ReleaseOrCleanupFromInsideItsOwnCleanupIsSkippedNotAwaited) {
  // Waiting on its own cleanup lock would hang forever; a hung manager is leaked on purpose.
  const int rc = result_within(10s, [] {
    auto* m = new Manager();
    auto r = std::make_shared<CallsBack>();
    gs::ReleaseResult nested;
    std::size_t nested_cleanup = 1;
    r->inside = [&](gs::ReclaimLevel) {
      nested = m->release_if_over_threshold();
      nested_cleanup = m->cleanup();
    };
    m->attach(r);
    (void)m->cleanup();
    int result = 0;
    if (nested.note.find("inside this manager's own cleanup") == std::string::npos) result = 2;
    if (nested_cleanup != 0 || m->stats().skipped_cleanups != 1) result = 3;
    // Outside of a cleanup both work as usual.
    r->inside = nullptr;
    if (m->release_if_over_threshold().note.find("inside") != std::string::npos) result = 4;
    if (m->cleanup() != 0 || m->stats().manual_cleanups != 2) result = 5;
    delete m;
    return result;
  });
  EXPECT_EQ(rc, 0) << "-2: hung";
}

TEST_F(MemoryManagerTest, StopFromATimerCleanupWhileAnotherThreadStopsDoesNotDeadlock) {
  // The timer's cleanup calls stop() while another thread, in stop(), waits to join the timer.
  const int rc = result_within(10s, [] {
    gs::MemoryManagerOptions o;
    o.cleanup_interval = 1ms;
    auto* m = new Manager(o);
    auto r = std::make_shared<CallsBack>();
    auto entered = std::make_shared<std::atomic<bool>>(false);
    r->inside = [m, entered](gs::ReclaimLevel level) {
      if (level != gs::ReclaimLevel::light || entered->exchange(true)) return;
      std::this_thread::sleep_for(100ms);  // the other thread is in stop() by now
      m->stop();
    };
    m->attach(r);
    m->start();
    if (!wait_until([&] { return entered->load(); })) return 2;
    m->stop();
    const int result = m->timer_running() ? 3 : 0;
    delete m;
    return result;
  });
  EXPECT_EQ(rc, 0) << "-2: hung";
}

// ---- with the real pool and cache --------------------------------------------------------------

/// A model whose weights are FakeRuntime device memory, freed on a gated release path.
struct FakeModel {
  void* weights = nullptr;
  ~FakeModel() {
    gs::detail::RuntimeCallGate gate;
    if (gate && weights) (void)FakeRuntime::deallocate(gs::MemoryKind::device, 0, weights);
  }
};

gs::Loaded<FakeModel> load_fake_model(std::size_t bytes) {
  auto m = std::make_shared<FakeModel>();
  gs::throw_on_failure(FakeRuntime::allocate(gs::MemoryKind::device, 0, bytes, &m->weights),
                       "load_fake_model");
  return {m, bytes};
}

using FakePool = gs::BasicBufferPool<FakeRuntime>;
using FakeCache = gs::BasicModelCache<FakeRuntime, std::string, FakeModel, std::hash<std::string>>;

gs::BufferPoolOptions pool_options(std::size_t bytes, std::size_t count) {
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::device;
  o.classes = {{bytes, count}};
  o.name = "frames";
  return o;
}

TEST_F(MemoryManagerTest, ReleasesIdlePoolMemoryBeforeEvictingModels) {
  FakePool pool(pool_options(10 * kMiB, 2));  // 20 MiB slab
  gs::ModelCacheOptions co;
  co.name = "faces";
  FakeCache cache(co);
  for (int i = 0; i < 5; ++i)
    cache.add("face" + std::to_string(i), [] { return load_fake_model(10 * kMiB); });
  for (int i = 0; i < 5; ++i) cache.get("face" + std::to_string(i));  // 50 MiB resident
  ASSERT_EQ(FakeRuntime::bytes_in_use(0), 70 * kMiB);

  {
    // Light periodic cleanups (no threshold) force nothing out.
    Manager light;
    light.attach(cache);
    light.attach(pool);
    light.cleanup();
    EXPECT_EQ(cache.stats().evictions_total(), 0u);
    EXPECT_EQ(FakeRuntime::bytes_in_use(0), 70 * kMiB);
  }

  gs::MemoryManagerOptions o;
  o.release_threshold = 0.35;  // 35 MiB: the pool's 20 and two models must go
  Manager m(o);
  m.attach(cache);  // attach order does not matter: cost does
  m.attach(pool);
  const auto r = m.release_if_over_threshold();
  EXPECT_TRUE(r.target_reached);
  ASSERT_GE(r.released.size(), 2u);
  EXPECT_EQ(r.released[0].resource, "frames");
  EXPECT_EQ(r.released[0].bytes, 20 * kMiB);
  EXPECT_EQ(r.released[1].resource, "faces");
  EXPECT_LE(FakeRuntime::bytes_in_use(0), 35 * kMiB);
  EXPECT_EQ(FakeRuntime::bytes_in_use(0), r.used_after);
  EXPECT_GE(cache.stats().evictions_total(), 2u);
  EXPECT_EQ(pool.stats().totals.bytes_reserved, 0u);
  // The trimmed pool still works (the slab comes back on the next acquire).
  EXPECT_TRUE(pool.acquire(kMiB));
}

TEST_F(MemoryManagerTest, PoolAndCacheDyingFirstAreDetached) {
  Manager m;
  gs::BufferLease survivor;
  {
    FakePool pool(pool_options(kMiB, 4));
    FakeCache cache;
    cache.add("a", [] { return load_fake_model(kMiB); });
    cache.get("a");
    m.attach(pool);
    m.attach(cache);
    survivor = pool.acquire(kMiB);
    const auto s = m.snapshot();
    ASSERT_EQ(s.resources.size(), 2u);
    EXPECT_EQ(s.resources[0].usage.items, 1u);  // one lease out
    EXPECT_EQ(s.resources[1].usage.bytes_in_use, kMiB);
  }
  // The lease keeps the pool's core alive; it may still be listed, but nothing breaks.
  EXPECT_LE(m.attached_count(), 1u);
  EXPECT_EQ(m.cleanup(), 0u);
  m.snapshot();
  survivor.release();
  EXPECT_EQ(m.attached_count(), 0u);
  EXPECT_EQ(m.shutdown(), 0u);
}

TEST_F(MemoryManagerTest, LeakReportListsPoolLeasesWithWhereTheyWereTaken) {
  gs::BufferPoolOptions o = pool_options(kMiB, 4);
  o.track_leases = true;
  FakePool tracked(o);
  gs::BufferPoolOptions u = pool_options(kMiB, 4);
  u.name = "untracked-frames";
  FakePool untracked(u);
  Manager m;
  m.attach(tracked);
  m.attach(untracked);
  EXPECT_TRUE(m.leak_report().empty());

  auto decode = tracked.acquire(1000, GPUSAFE_LEASE_TAG("decode"));
  const int decode_line = __LINE__ - 1;
  auto anonymous = untracked.acquire(1000);
  const auto report = m.leak_report();
  ASSERT_EQ(report.records.size(), 2u);
  const auto& named =
      report.records[0].resource == "frames" ? report.records[0] : report.records[1];
  const auto& counted = &named == &report.records[0] ? report.records[1] : report.records[0];
  EXPECT_EQ(named.tag, "decode");
  EXPECT_EQ(named.line, decode_line);
  EXPECT_NE(named.file.find("memory_manager_test.cpp"), std::string::npos);
  EXPECT_EQ(named.bytes, 1000u);
  EXPECT_EQ(counted.resource, "untracked-frames");
  EXPECT_NE(counted.tag.find("enable track_leases"), std::string::npos);
  EXPECT_EQ(counted.leases, 1u);
  EXPECT_EQ(counted.bytes, kMiB) << "the class size: the true figure for an untracked lease";
  EXPECT_FALSE(counted.age_known);

  decode.release();
  anonymous.release();
  EXPECT_TRUE(m.leak_report().empty());
}

TEST_F(MemoryManagerTest, ShutdownReportsEachLeakOnceWithTrueFigures) {
  // A lease held on purpose by a global, from an untracked pool: one warning in all (not one from
  // the manager and another from the pool), with its size and without an invented age.
  std::vector<std::string> lines;
  auto previous = gs::set_log_sink([&](gs::LogLevel level, std::string_view m) {
    if (level >= gs::LogLevel::warning) lines.emplace_back(m);
  });
  {
    gs::BufferPoolOptions u = pool_options(3 * kMiB, 2);
    u.name = "held";
    FakePool pool(u);
    Manager m;
    m.attach(pool);
    auto kept = pool.acquire(3 * kMiB);
    m.shutdown();
    gs::shutdown();
    m.shutdown();
  }
  gs::set_log_sink(previous);
  std::size_t mentions = 0;
  for (const auto& l : lines) {
    if (l.find("held") == std::string::npos) continue;
    ++mentions;
    EXPECT_NE(l.find("3.0 MiB"), std::string::npos) << l;
    EXPECT_EQ(l.find(" ago"), std::string::npos) << "no age was recorded: " << l;
    EXPECT_EQ(l.find("0 B"), std::string::npos) << l;
  }
  EXPECT_EQ(mentions, 1u);
}

}  // namespace
