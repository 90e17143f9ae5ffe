// One process, one library state (DESIGN rule 11): translation units and shared libraries that
// saw different configurations (another ABI namespace, hidden visibility) share the exit and
// fork flags, reset epochs, poison marks, the reclaim registry and the log.
#include <gtest/gtest.h>

#include <cstring>
#include <ostream>
#include <string>

#include "../../support/child_process.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"
#include "peer.hpp"

namespace gs = gpusafe;

namespace {

#define GPUSAFE_TEST_STR2(x) #x
#define GPUSAFE_TEST_STR(x) GPUSAFE_TEST_STR2(x)

struct Peer {
  const char* name;
  const char* (*abi)() noexcept;
  int (*log_level)() noexcept;
  void (*set_log_level)(int) noexcept;
  bool (*is_exiting)() noexcept;
  bool (*in_forked_child)() noexcept;
  std::uint32_t (*device_epoch)(int) noexcept;
  void (*notify_device_reset)(int);
  bool (*device_is_poisoned)(int) noexcept;
  void (*register_bytes)(std::size_t);
  void (*unregister)() noexcept;
  std::size_t (*registered_count)() noexcept;
  std::size_t (*reclaim_all)() noexcept;
};

#define GPUSAFE_TEST_PEER(prefix)                                                           \
  Peer {                                                                                    \
#prefix, prefix##_abi, prefix##_log_level, prefix##_set_log_level, prefix##_is_exiting, \
        prefix##_in_forked_child, prefix##_device_epoch, prefix##_notify_device_reset,      \
        prefix##_device_is_poisoned, prefix##_register, prefix##_unregister,                \
        prefix##_registered_count, prefix##_reclaim_all                                     \
  }

void PrintTo(const Peer& peer, std::ostream* os) { *os << peer.name; }

class ProcessStateSharing : public ::testing::TestWithParam<Peer> {};

const char* own_abi() { return GPUSAFE_TEST_STR(GPUSAFE_ABI_NAMESPACE); }

TEST(ProcessStateSharingSetup, PeersReallyUseAnotherConfiguration) {
  EXPECT_STRNE(gpusafe_peer_tu_abi(), own_abi());
  EXPECT_STRNE(gpusafe_peer_torch_lib_abi(), gpusafe_peer_core_lib_abi());
}

TEST_P(ProcessStateSharing, LogLevelIsShared) {
  const Peer& peer = GetParam();
  const gs::LogLevel before = gs::log_level();
  peer.set_log_level(static_cast<int>(gs::LogLevel::trace));
  EXPECT_EQ(gs::log_level(), gs::LogLevel::trace);
  gs::set_log_level(gs::LogLevel::error);
  EXPECT_EQ(peer.log_level(), static_cast<int>(gs::LogLevel::error));
  gs::set_log_level(before);
}

TEST_P(ProcessStateSharing, EpochsAndPoisonMarksAreShared) {
  const Peer& peer = GetParam();
  const int device = 7;
  const std::uint32_t epoch = gs::device_epoch(device);
  peer.notify_device_reset(device);
  EXPECT_EQ(gs::device_epoch(device), epoch + 1);
  EXPECT_EQ(peer.device_epoch(device), epoch + 1);
  gs::detail::mark_poisoned(device);
  EXPECT_TRUE(peer.device_is_poisoned(device));
  peer.notify_device_reset(device);
  EXPECT_FALSE(gs::device_is_poisoned(device));
}

TEST_P(ProcessStateSharing, ReclaimRegistryIsShared) {
  const Peer& peer = GetParam();
  const std::size_t before = gs::registered_reclaimable_count();
  peer.register_bytes(4321);
  EXPECT_EQ(gs::registered_reclaimable_count(), before + 1);
  EXPECT_EQ(peer.registered_count(), before + 1);
  EXPECT_GE(gs::reclaim_all(), 4321u) << "the peer's resource is reclaimed from here";
  peer.unregister();
  EXPECT_EQ(gs::registered_reclaimable_count(), before);
  EXPECT_EQ(peer.registered_count(), before);
}

TEST_P(ProcessStateSharing, ExitAndForkFlagsAreShared) {
  const Peer& peer = GetParam();
  EXPECT_FALSE(peer.is_exiting());
  EXPECT_FALSE(peer.in_forked_child());
  const int forked = gpusafe_test::run_in_child([&] { return peer.in_forked_child() ? 0 : 1; });
  EXPECT_EQ(forked, 0) << "a fork seen by this configuration is seen by " << peer.name;
  const int exiting = gpusafe_test::run_in_child([&] {
    gs::detail::mark_exiting();
    return peer.is_exiting() ? 0 : 1;
  });
  EXPECT_EQ(exiting, 0) << "the exit flag set here is seen by " << peer.name;
}

INSTANTIATE_TEST_SUITE_P(Peers, ProcessStateSharing,
                         ::testing::Values(GPUSAFE_TEST_PEER(gpusafe_peer_tu),
                                           GPUSAFE_TEST_PEER(gpusafe_peer_core_lib),
                                           GPUSAFE_TEST_PEER(gpusafe_peer_torch_lib)),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
