// gpusafe/detail/host_memory.hpp: aligned host allocation and host facts (CPU name, RAM) used by
// the CPU fallback.
#ifndef GPUSAFE_DETAIL_HOST_MEMORY_HPP
#define GPUSAFE_DETAIL_HOST_MEMORY_HPP

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "gpusafe/config.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// Alignment of every runtime allocation: what cudaMalloc guarantees, so code written for the
/// GPU path holds on the host path too.
constexpr std::size_t kRuntimeAlignment = 256;

inline void* host_allocate(std::size_t bytes) noexcept {
  const std::size_t rounded =
      (bytes + kRuntimeAlignment - 1) / kRuntimeAlignment * kRuntimeAlignment;
  if (rounded < bytes) return nullptr;  // overflowed
  return std::aligned_alloc(kRuntimeAlignment, rounded == 0 ? kRuntimeAlignment : rounded);
}

inline void host_free(void* p) noexcept { std::free(p); }

/// Reads "Key:   123 kB" from /proc/meminfo; 0 when absent.
inline std::size_t meminfo_bytes(const char* key) noexcept {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  std::size_t value = 0;
  const std::size_t key_len = std::strlen(key);
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, key, key_len) == 0 && line[key_len] == ':') {
      value = std::strtoull(line + key_len + 1, nullptr, 10) * 1024;
      break;
    }
  }
  std::fclose(f);
  return value;
}

inline std::string host_cpu_name() {
  std::FILE* f = std::fopen("/proc/cpuinfo", "r");
  std::string name;
  if (f) {
    char line[512];
    while (std::fgets(line, sizeof line, f)) {
      if (std::strncmp(line, "model name", 10) == 0) {
        const char* colon = std::strchr(line, ':');
        if (colon) {
          name = colon + 1;
          while (!name.empty() && (name.front() == ' ' || name.front() == '\t')) name.erase(0, 1);
          while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
        }
        break;
      }
    }
    std::fclose(f);
  }
  return name.empty() ? std::string("host CPU") : name;
}

inline int host_cpu_count() noexcept {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_HOST_MEMORY_HPP
