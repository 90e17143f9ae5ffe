// tests/unit/process_state/peer.hpp: a peer of the test program that includes gpusafe in another
// configuration (another ABI namespace), as a translation unit or a shared library built with
// -fvisibility=hidden would. Each peer exposes the same C functions under its own prefix.
#ifndef GPUSAFE_TESTS_PROCESS_STATE_PEER_HPP
#define GPUSAFE_TESTS_PROCESS_STATE_PEER_HPP

#include <cstddef>
#include <cstdint>

#define GPUSAFE_PEER_API extern "C" __attribute__((visibility("default")))

#define GPUSAFE_PEER_DECLARE(prefix)                                                     \
  /* The ABI namespace this peer was compiled in. */                                     \
  GPUSAFE_PEER_API const char* prefix##_abi() noexcept;                                  \
  GPUSAFE_PEER_API int prefix##_log_level() noexcept;                                    \
  GPUSAFE_PEER_API void prefix##_set_log_level(int level) noexcept;                      \
  GPUSAFE_PEER_API bool prefix##_is_exiting() noexcept;                                  \
  GPUSAFE_PEER_API bool prefix##_in_forked_child() noexcept;                             \
  GPUSAFE_PEER_API std::uint32_t prefix##_device_epoch(int device) noexcept;             \
  GPUSAFE_PEER_API void prefix##_notify_device_reset(int device);                        \
  GPUSAFE_PEER_API bool prefix##_device_is_poisoned(int device) noexcept;                \
  /* Registers a resource (until prefix##_unregister) whose reclaim releases `bytes`. */ \
  GPUSAFE_PEER_API void prefix##_register(std::size_t bytes);                            \
  GPUSAFE_PEER_API void prefix##_unregister() noexcept;                                  \
  GPUSAFE_PEER_API std::size_t prefix##_registered_count() noexcept;                     \
  GPUSAFE_PEER_API std::size_t prefix##_reclaim_all() noexcept;

GPUSAFE_PEER_DECLARE(gpusafe_peer_tu)
GPUSAFE_PEER_DECLARE(gpusafe_peer_core_lib)
GPUSAFE_PEER_DECLARE(gpusafe_peer_torch_lib)

#if defined(GPUSAFE_PEER_PREFIX)
#include <memory>

#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"

#define GPUSAFE_PEER_STR2(x) #x
#define GPUSAFE_PEER_STR(x) GPUSAFE_PEER_STR2(x)
#define GPUSAFE_PEER_CAT2(a, b) a##b
#define GPUSAFE_PEER_CAT(a, b) GPUSAFE_PEER_CAT2(a, b)
#define GPUSAFE_PEER_FN(name) GPUSAFE_PEER_CAT(GPUSAFE_PEER_PREFIX, name)

namespace {
struct PeerResource final : gpusafe::Reclaimable {
  explicit PeerResource(std::size_t b) : bytes(b) {}
  std::size_t reclaim(const gpusafe::ReclaimRequest&) noexcept override { return bytes; }
  std::size_t bytes;
};
std::unique_ptr<PeerResource> peer_resource;
std::unique_ptr<gpusafe::ReclaimRegistration> peer_registration;
}  // namespace

const char* GPUSAFE_PEER_FN(_abi)() noexcept { return GPUSAFE_PEER_STR(GPUSAFE_ABI_NAMESPACE); }
int GPUSAFE_PEER_FN(_log_level)() noexcept { return static_cast<int>(gpusafe::log_level()); }
void GPUSAFE_PEER_FN(_set_log_level)(int level) noexcept {
  gpusafe::set_log_level(static_cast<gpusafe::LogLevel>(level));
}
bool GPUSAFE_PEER_FN(_is_exiting)() noexcept { return gpusafe::detail::is_exiting(); }
bool GPUSAFE_PEER_FN(_in_forked_child)() noexcept { return gpusafe::in_forked_child(); }
std::uint32_t GPUSAFE_PEER_FN(_device_epoch)(int device) noexcept {
  return gpusafe::device_epoch(device);
}
void GPUSAFE_PEER_FN(_notify_device_reset)(int device) { gpusafe::notify_device_reset(device); }
bool GPUSAFE_PEER_FN(_device_is_poisoned)(int device) noexcept {
  return gpusafe::device_is_poisoned(device);
}
void GPUSAFE_PEER_FN(_register)(std::size_t bytes) {
  peer_resource = std::make_unique<PeerResource>(bytes);
  peer_registration = std::make_unique<gpusafe::ReclaimRegistration>(*peer_resource);
}
void GPUSAFE_PEER_FN(_unregister)() noexcept {
  peer_registration.reset();
  peer_resource.reset();
}
std::size_t GPUSAFE_PEER_FN(_registered_count)() noexcept {
  return gpusafe::registered_reclaimable_count();
}
std::size_t GPUSAFE_PEER_FN(_reclaim_all)() noexcept { return gpusafe::reclaim_all(); }
#endif  // GPUSAFE_PEER_PREFIX

#endif  // GPUSAFE_TESTS_PROCESS_STATE_PEER_HPP
