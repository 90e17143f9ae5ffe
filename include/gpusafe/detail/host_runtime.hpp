// SPDX-License-Identifier: MIT
// gpusafe/detail/host_runtime.hpp: HostRuntime (the CPU fallback, and the reference for the
// Runtime concept's members) and the concept check (is_runtime_v, GPUSAFE_CHECK_RUNTIME). Include
// gpusafe/runtime.hpp rather than this header.
//
// Thread safety: every HostRuntime function may be called from any thread. Teardown: HostRuntime
// only uses the host allocator, which stays valid through exit and in a forked child.
#ifndef GPUSAFE_DETAIL_HOST_RUNTIME_HPP
#define GPUSAFE_DETAIL_HOST_RUNTIME_HPP

#include <cstddef>
#include <type_traits>
#include <utility>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/host_memory.hpp"
#include "gpusafe/detail/runtime_status.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// The CPU fallback: every kind of memory is aligned host memory; no devices, no streams.
/// This struct is also the reference for the Runtime concept's members.
struct HostRuntime {
  static constexpr const char* name() noexcept { return "host"; }
  /// Optional member: makes sure the runtime is initialised, so that its own teardown (if it
  /// registers one) is registered before gpusafe's exit handler. Must be safe to call at any
  /// time, even after that teardown, when it returns codes::cudart_unloading.
  static Status initialize() noexcept { return {}; }
  /// Whether device memory can be served right now.
  static bool gpu_available() noexcept { return false; }
  static Status device_count(int& count) noexcept {
    count = 0;
    return {};
  }
  static Status allocate(MemoryKind, int, std::size_t bytes, void** out) noexcept {
    *out = detail::host_allocate(bytes);
    return {*out ? codes::success : codes::memory_allocation};
  }
  static Status deallocate(MemoryKind, int, void* p) noexcept {
    detail::host_free(p);
    return {};
  }
  static Status memory_info(int, std::size_t& free_bytes, std::size_t& total_bytes) noexcept {
    detail::host_memory_figures(total_bytes, free_bytes);
    return {};
  }
  static Status synchronize(int) noexcept { return {}; }
  static Status get_device(int& device) noexcept {
    device = 0;
    return {};
  }
  static Status set_device(int device) noexcept {
    return {device == 0 ? codes::success : codes::invalid_device};
  }
  static Status device_properties(int, DeviceProperties&) noexcept { return {codes::no_device}; }
  static Status event_create(EventHandle& event) noexcept {
    event = nullptr;
    return {};
  }
  static Status event_destroy(EventHandle) noexcept { return {}; }
  static Status event_record(EventHandle, StreamHandle) noexcept { return {}; }
  /// success when the recorded work is done, not_ready while pending.
  static Status event_query(EventHandle) noexcept { return {}; }
};

namespace detail {

template <class R, class = void>
struct HasRuntimeMembers : std::false_type {};
template <class R>
struct HasRuntimeMembers<
    R, std::void_t<
           decltype(R::name()), decltype(R::gpu_available()),
           decltype(R::device_count(std::declval<int&>())),
           decltype(R::allocate(MemoryKind::host, 0, std::size_t{}, std::declval<void**>())),
           decltype(R::deallocate(MemoryKind::host, 0, std::declval<void*>())),
           decltype(R::memory_info(0, std::declval<std::size_t&>(), std::declval<std::size_t&>())),
           decltype(R::synchronize(0)), decltype(R::get_device(std::declval<int&>())),
           decltype(R::set_device(0)),
           decltype(R::device_properties(0, std::declval<DeviceProperties&>())),
           decltype(R::event_create(std::declval<EventHandle&>())),
           decltype(R::event_destroy(EventHandle{})),
           decltype(R::event_record(EventHandle{}, StreamHandle{})),
           decltype(R::event_query(EventHandle{}))>> : std::true_type {};

/// The members HasRuntimeMembers found return Status, and the release-side ones are noexcept.
template <class R>
constexpr bool runtime_members_fit() noexcept {
  constexpr bool returns_status =
      std::is_same_v<decltype(R::allocate(MemoryKind::host, 0, std::size_t{},
                                          std::declval<void**>())),
                     Status> &&
      std::is_same_v<decltype(R::deallocate(MemoryKind::host, 0, std::declval<void*>())), Status> &&
      std::is_same_v<decltype(R::event_query(EventHandle{})), Status>;
  constexpr bool release_side_noexcept =
      noexcept(R::deallocate(MemoryKind::host, 0, std::declval<void*>()))&& noexcept(R::event_destroy(EventHandle{}))&& noexcept(
          R::set_device(
              0))&& noexcept(R::
                                 get_device(
                                     std::declval<
                                         int&>()))&& noexcept(R::
                                                                  synchronize(
                                                                      0))&& noexcept(R::gpu_available());
  return returns_status && release_side_noexcept;
}

template <class R, bool = HasRuntimeMembers<R>::value>
struct RuntimeMembersFit : std::false_type {};
template <class R>
struct RuntimeMembersFit<R, true> : std::bool_constant<runtime_members_fit<R>()> {};

}  // namespace detail

/// Whether R models the Runtime concept (docs/runtime.md): the static members of HostRuntime,
/// returning Status, with every release-side member noexcept.
template <class R>
inline constexpr bool is_runtime_v = detail::RuntimeMembersFit<R>::value;

/// Use in every template that takes a Runtime, so that a wrong one fails at the user's line.
#define GPUSAFE_CHECK_RUNTIME(R)                                                                  \
  static_assert(::gpusafe::is_runtime_v<R>,                                                       \
                "gpusafe: the Runtime argument does not model the Runtime concept: it needs the " \
                "static members of gpusafe::HostRuntime (name, gpu_available, device_count, "     \
                "allocate, deallocate, memory_info, synchronize, get_device, set_device, "        \
                "device_properties, event_create/destroy/record/query), returning "               \
                "gpusafe::Status, the release-side ones noexcept; see docs/runtime.md")

namespace detail {

/// Whether Runtime has the optional initialize() member.
template <class Runtime, class = void>
struct HasInitialize : std::false_type {};
template <class Runtime>
struct HasInitialize<Runtime, std::void_t<decltype(Runtime::initialize())>> : std::true_type {};

}  // namespace detail

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_HOST_RUNTIME_HPP
