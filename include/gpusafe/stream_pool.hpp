// SPDX-License-Identifier: MIT
// gpusafe/stream_pool.hpp: a fixed set of CUDA streams on one device, handed out round-robin.
//
//   gpusafe::StreamPool streams({/*size=*/8});
//   cudaStream_t s = streams.get();          // the next stream, any thread
//
// Like RMM's cuda_stream_pool: the streams are made once, up front, and get() is one relaxed
// atomic increment, so threads that each take a stream spread their work over `size` streams
// without any lock. The pool owns its streams; get() hands out non-owning native handles that are
// valid while the pool lives.
//
// Without a usable GPU the pool is empty and get() hands out the null stream (a null native
// handle, the default stream of CUDA's API; host code simply ignores it), and fell_back() is true:
// code written for streams runs unchanged on the CPU path. Fallback::error makes the constructor
// throw NoGpu instead (naming the cause).
//
// Thread safety: get(), size(), device() and fell_back() may be called from any thread; the
// constructor and destructor belong to the owner. Teardown: every stream is a Stream handle
// (handles.hpp) and follows its rules: destroyed on its device while the runtime is alive, left
// to the OS at exit, in a forked child, on a poisoned device or after a reset. A pool that worker
// threads use until the process exits should itself live until exit (for example in a
// gpusafe::NoDestructor), so that no worker gets a stream that was destroyed under it.
#ifndef GPUSAFE_STREAM_POOL_HPP
#define GPUSAFE_STREAM_POOL_HPP

#include <atomic>
#include <cstddef>
#include <string>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/handles.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// How a StreamPool is made.
struct StreamPoolOptions {
  /// Streams in the pool, 1..1024.
  std::size_t size = 16;
  /// The device of every stream (kCurrentDevice: the caller's current device).
  int device = kCurrentDevice;
  /// Flags and priority of every stream (non-blocking by default).
  StreamParams params{};
  /// Without a usable GPU: host = an empty pool handing out the null stream; error = NoGpu.
  Fallback fallback = Fallback::host;
};

/// A round-robin pool of streams on Runtime (see the header comment).
template <class Runtime>
class BasicStreamPool {
 public:
  using StreamType = BasicStream<Runtime>;
  using native_type = typename StreamType::native_type;

  /// The largest pool.
  static constexpr std::size_t kMaxSize = 1024;

  /// Makes `options.size` streams on `options.device`. Throws InvalidArgument for a size out of
  /// range or bad stream parameters, NoGpu without a GPU when options.fallback is error, and
  /// what Stream's constructor throws; on a throw, the streams already made are released.
  explicit BasicStreamPool(StreamPoolOptions options = {}) : options_(options) {
    const std::string what = "StreamPool(size " + std::to_string(options.size) + ")";
    if (options.size == 0 || options.size > kMaxSize)
      GPUSAFE_THROW(InvalidArgument(what + ": the size must lie in 1.." + std::to_string(kMaxSize) +
                                    "; a few streams per device (4 to 32) are usually enough"));
    detail::arm_exit_flag<Runtime>();
    StreamTraits::check(options.params, what);
    if (!detail::RuntimeCalls<Runtime>::gpu_available() && !detail::runtime_is_gone<Runtime>()) {
      if (options.fallback == Fallback::error) detail::throw_no_gpu<Runtime>(what);
      device_ = options.device < 0 ? 0 : options.device;
      fell_back_ = true;
      log_lazy(LogLevel::info, [&] {
        return what + ": no usable GPU on the " + detail::RuntimeCalls<Runtime>::name() +
               " runtime; handing out the null stream";
      });
      return;
    }
    streams_.reserve(options.size);
    for (std::size_t i = 0; i < options.size; ++i)
      streams_.emplace_back(options.params, options.device);
    device_ = streams_.front().device();
  }

  BasicStreamPool(const BasicStreamPool&) = delete;
  BasicStreamPool& operator=(const BasicStreamPool&) = delete;
  /// Releases every stream under the handles' teardown rules. Never throws.
  ~BasicStreamPool() = default;

  /// The next stream, round-robin; the null stream when the pool fell back. Never throws.
  native_type get() noexcept {
    if (streams_.empty()) return native_type{};
    const std::size_t i = next_.fetch_add(1, std::memory_order_relaxed) % streams_.size();
    return streams_[i].get();
  }

  /// Stream `index % size()`; the null stream when the pool fell back. Never throws.
  native_type get(std::size_t index) const noexcept {
    return streams_.empty() ? native_type{} : streams_[index % streams_.size()].get();
  }

  /// Streams in the pool (0 when it fell back).
  std::size_t size() const noexcept { return streams_.size(); }
  /// The device of the streams.
  int device() const noexcept { return device_; }
  /// Whether there was no GPU and get() hands out the null stream.
  bool fell_back() const noexcept { return fell_back_; }
  const StreamPoolOptions& options() const noexcept { return options_; }

 private:
  StreamPoolOptions options_;
  std::vector<StreamType> streams_;
  std::atomic<std::size_t> next_{0};
  int device_ = 0;
  bool fell_back_ = false;
};

/// A stream pool on the default runtime (CUDA when usable; the null stream otherwise).
using StreamPool = BasicStreamPool<DefaultRuntime>;

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_STREAM_POOL_HPP
