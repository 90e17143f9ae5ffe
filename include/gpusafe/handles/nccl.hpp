// SPDX-License-Identifier: MIT
// gpusafe/handles/nccl.hpp: an owning NCCL communicator whose release never blocks without a
// bound.
//
//   gpusafe::NcclComm comm(gpusafe::NcclParams{});          // a single-rank communicator
//   comm.check();                                            // throws on an asynchronous error
//
// ncclCommDestroy can hang at exit or after a peer died. NcclComm is made non-blocking
// (ncclConfig_t::blocking = 0) and released in steps: ncclCommFinalize, then polling
// ncclCommGetAsyncError every millisecond until it reports success, at most NcclParams::timeout
// (5 s by default), then ncclCommDestroy. Past the bound, after an asynchronous error or a sticky
// CUDA error on its device, the communicator is aborted (ncclCommAbort) instead, and the abort is
// logged once. No helper thread is involved.
//
// Teardown (DESIGN section 3): at exit and in a forked child, the communicator is left to the OS
// with no NCCL call at all, not even ncclCommAbort: abort talks to the CUDA runtime and NCCL's
// proxy threads, which may already be torn down at exit and do not exist in a child (rule 5 wins
// over "abort in a child"). If exit begins while a release is polling, it stops polling and
// leaves the communicator to the OS. After a reset of its device it is left to the OS too.
//
// NcclComm exists when NCCL is available: GPUSAFE_WITH_NCCL is 1 when the build defines it (the
// gpusafe::nccl target does), or, when it is not defined, when the CUDA headers and <nccl.h> are
// found (link libnccl yourself then). BasicNcclComm<Runtime> always compiles, so code can be
// tested on testing::FakeRuntime (whose finalisation can be made to hang) without NCCL.
//
// Thread safety: as any handle (handles.hpp); poll_async_error() and check() may be called from
// any thread while the owner is not releasing it.
#ifndef GPUSAFE_HANDLES_NCCL_HPP
#define GPUSAFE_HANDLES_NCCL_HPP

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "gpusafe/handles.hpp"

#ifndef GPUSAFE_WITH_NCCL
#if GPUSAFE_WITH_CUDA && defined(__has_include)
#if __has_include(<nccl.h>)
#define GPUSAFE_WITH_NCCL 1
#endif
#endif
#endif
#ifndef GPUSAFE_WITH_NCCL
#define GPUSAFE_WITH_NCCL 0
#endif

#if GPUSAFE_WITH_NCCL
#include <nccl.h>
#endif

GPUSAFE_NAMESPACE_BEGIN

namespace detail {

/// An ncclResult_t as a gpusafe Status: in progress = not_ready; bad arguments and usage =
/// invalid_value; the rest (CUDA, system, internal, remote errors) = unknown.
constexpr Status nccl_status(int rc) noexcept {
  switch (rc) {
    case 0:  // ncclSuccess
      return {codes::success};
    case 7:  // ncclInProgress
      return {codes::not_ready};
    case 4:  // ncclInvalidArgument
    case 5:  // ncclInvalidUsage
      return {codes::invalid_value};
    default:
      return {codes::unknown};
  }
}

}  // namespace detail

/// How an NcclComm is made.
struct NcclParams {
  int nranks = 1;  ///< ranks in the communicator
  int rank = 0;    ///< this process's rank, 0..nranks-1
  /// The ncclUniqueId (ncclGetUniqueId on rank 0, shared with the others). Required with more
  /// than one rank; with one rank a fresh id is made when null.
  const void* unique_id = nullptr;
  /// The bound on initialisation and on release (finalisation) before the communicator is
  /// aborted.
  std::chrono::milliseconds timeout{5000};
};

/// The NCCL communicators' traits.
struct NcclTraits {
  static constexpr HandleKind kind = HandleKind::nccl;
  static constexpr bool kAbortsWhenPoisoned = true;
  static constexpr const char* create_call = "ncclCommInitRankConfig";
  static constexpr const char* destroy_call = "ncclCommDestroy";
  using Params = NcclParams;
#if GPUSAFE_WITH_NCCL
  template <class R>
  using Native = std::conditional_t<detail::kIsCudaRuntime<R>, ncclComm_t, void*>;
#else
  template <class R>
  using Native = void*;
#endif

  static std::string describe(const Params& p) {
    return "rank " + std::to_string(p.rank) + " of " + std::to_string(p.nranks);
  }
  static void check(const Params& p, const std::string& what) {
    if (p.nranks < 1)
      GPUSAFE_THROW(InvalidArgument(what + ": nranks is " + std::to_string(p.nranks) +
                                    "; a communicator has 1 rank or more"));
    if (p.rank < 0 || p.rank >= p.nranks)
      GPUSAFE_THROW(InvalidArgument(what + ": rank " + std::to_string(p.rank) + " is outside 0.." +
                                    std::to_string(p.nranks - 1) + "; pass this process's rank"));
    if (p.nranks > 1 && !p.unique_id)
      GPUSAFE_THROW(
          InvalidArgument(what + ": several ranks need the same ncclUniqueId; make one with "
                                 "ncclGetUniqueId on rank 0, share it and pass it as unique_id"));
    if (p.timeout.count() <= 0)
      GPUSAFE_THROW(InvalidArgument(what + ": timeout is " + std::to_string(p.timeout.count()) +
                                    " ms; pass a positive bound (the default is 5000 ms)"));
  }
  static std::string fix_hint(Status s) {
    return s.code == codes::not_ready
               ? "the communicator was not ready within the timeout and was aborted; check that "
                 "every rank joins, or raise NcclParams::timeout"
               : std::string();
  }

  /// The communicator's asynchronous state: success, not_ready while an operation (init,
  /// finalize) is in progress, or the error.
  template <class R>
  static Status query(Native<R> h) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      return detail::RuntimeCalls<R>::handle_query(h);
#if GPUSAFE_WITH_NCCL
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t rc = ncclCommGetAsyncError(h, &state);
      return detail::nccl_status(static_cast<int>(rc != ncclSuccess ? rc : state));
#endif
    } else {
      (void)h;
      return {codes::no_device};
    }
  }

  template <class R>
  static Status abort(Native<R> h) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      return detail::RuntimeCalls<R>::handle_abort(h);
#if GPUSAFE_WITH_NCCL
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      return detail::nccl_status(static_cast<int>(ncclCommAbort(h)));
#endif
    } else {
      (void)h;
      return {codes::no_device};
    }
  }

  template <class R>
  static Status create(const Params& p, Native<R>& out) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      return detail::RuntimeCalls<R>::handle_create(static_cast<int>(kind), &out);
#if GPUSAFE_WITH_NCCL
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      ncclUniqueId id;
      if (p.unique_id) {
        std::memcpy(&id, p.unique_id, sizeof id);
      } else {
        const Status s = detail::nccl_status(static_cast<int>(ncclGetUniqueId(&id)));
        if (!s.ok()) return s;
      }
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;
      const Status s = detail::nccl_status(
          static_cast<int>(ncclCommInitRankConfig(&out, p.nranks, id, p.rank, &config)));
      if (!s.ok() && s.code != codes::not_ready) return s;
      const Status ready = wait_ready<R>(out, p.timeout);
      if (!ready.ok()) (void)abort<R>(out);
      return ready;
#endif
    } else {
      (void)p;
      out = {};
      return {codes::no_device};
    }
  }

  /// Finalize, poll within the bound, then destroy; abort on an error, past the bound, or when
  /// `must_abort` (a poisoned device). Gives up (abandoned) when exit begins while polling.
  template <class R>
  static DestroyResult destroy(Native<R> h, const Params& p, bool must_abort) noexcept {
    DestroyResult r;
    if (must_abort) return aborted<R>(h, {codes::illegal_address});
    Status s = finalize<R>(h);
    if (!s.ok() && s.code != codes::not_ready) return aborted<R>(h, s);
    s = wait_ready<R>(h, p.timeout);
    if (s.code == codes::cudart_unloading) {
      r.abandoned = true;
      return r;
    }
    if (!s.ok()) return aborted<R>(h, s);
    if constexpr (detail::kSimulatesHandles<R>) {
      r.status = detail::RuntimeCalls<R>::handle_destroy(h);
#if GPUSAFE_WITH_NCCL
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      r.status = detail::nccl_status(static_cast<int>(ncclCommDestroy(h)));
#endif
    } else {
      r.status = {codes::no_device};
    }
    return r;
  }

 private:
  template <class R>
  static Status finalize(Native<R> h) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      return detail::RuntimeCalls<R>::handle_finalize(h);
#if GPUSAFE_WITH_NCCL
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      return detail::nccl_status(static_cast<int>(ncclCommFinalize(h)));
#endif
    } else {
      (void)h;
      return {codes::no_device};
    }
  }

  /// Polls until the communicator is ready (success), fails, the bound passes (not_ready) or
  /// the process begins to exit (cudart_unloading: the caller must stop calling).
  template <class R>
  static Status wait_ready(Native<R> h, std::chrono::milliseconds bound) noexcept {
    const auto deadline = std::chrono::steady_clock::now() + bound;
    for (;;) {
      const Status s = query<R>(h);
      if (s.code != codes::not_ready) return s;
      if (std::chrono::steady_clock::now() >= deadline) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (detail::is_exiting()) return {codes::cudart_unloading};
    }
  }

  template <class R>
  static DestroyResult aborted(Native<R> h, Status cause) noexcept {
    DestroyResult r;
    r.status = abort<R>(h);
    r.aborted = true;
    r.cause = cause;
    return r;
  }
};

/// An NCCL communicator (see the header comment) on Runtime.
template <class Runtime>
class BasicNcclComm : public BasicGpuHandle<NcclTraits, Runtime> {
  using Base = BasicGpuHandle<NcclTraits, Runtime>;

 public:
  using Base::Base;

  /// Makes a communicator (see BasicGpuHandle's constructor); initialisation waits at most
  /// `params.timeout`, then aborts and throws RuntimeFailure.
  static BasicNcclComm create(const NcclParams& params = {}, int device = kCurrentDevice,
                              HandleSite site = {}) {
    return BasicNcclComm(params, device, site);
  }

  /// The communicator's asynchronous state without throwing: success, not_ready while an
  /// operation is in progress, or the error (shutting down: the process is exiting or forked).
  Status poll_async_error() const noexcept {
    if (!*this) return {codes::invalid_resource_handle};
    detail::BasicRuntimeCallGate<Runtime> gate;
    if (!gate) return {codes::cudart_unloading};
    return NcclTraits::query<Runtime>(this->get());
  }

  /// Throws the typed Error of an asynchronous error (RuntimeFailure, DevicePoisoned, ...);
  /// returns when the communicator is fine or busy.
  void check() const {
    const Status s = poll_async_error();
    if (s.ok() || s.code == codes::not_ready) return;
    throw_status(s,
                 "NcclComm(" + NcclTraits::describe(this->params()) + ", device " +
                     std::to_string(this->device()) + "): asynchronous NCCL error",
                 "abort the communicator (abort()) and create a new one on every rank");
  }

  /// Aborts the communicator now (ncclCommAbort), as after an error; the handle is empty after.
  /// At exit or in a forked child it is left to the OS instead. Never throws.
  ReleaseOutcome abort() noexcept {
    if (!*this) return ReleaseOutcome::none;
    detail::BasicRuntimeCallGate<Runtime> gate;
    if (!gate || detail::device_epoch(this->device()) != this->epoch()) {
      return this->reset();  // leaves it to the OS (exiting, forked child, reset device)
    }
    detail::DeviceSwitch<Runtime> on(this->device());
    const Status s = NcclTraits::abort<Runtime>(this->get());
    if (!s.ok()) detail::log_destroy_failure_once<NcclTraits>(this->device(), s, "ncclCommAbort");
    this->forget_after_abort(s.ok());
    return s.ok() ? ReleaseOutcome::aborted : ReleaseOutcome::failed;
  }
};

#if GPUSAFE_WITH_NCCL && GPUSAFE_WITH_CUDA
/// An NCCL communicator (ncclComm_t) on the CUDA runtime.
using NcclComm = BasicNcclComm<DefaultRuntime>;
#endif

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_HANDLES_NCCL_HPP
