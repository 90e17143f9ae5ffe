// SPDX-License-Identifier: MIT
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

/// The host's total and available memory from /proc/meminfo, in one pass; 0 for a figure it
/// does not list.
inline void host_memory_figures(std::size_t& total_bytes, std::size_t& available_bytes) noexcept {
  total_bytes = available_bytes = 0;
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return;
  const auto read_kb = [](const char* line, const char* key, std::size_t& out) {
    const std::size_t key_len = std::strlen(key);
    if (std::strncmp(line, key, key_len) != 0 || line[key_len] != ':') return false;
    out = std::strtoull(line + key_len + 1, nullptr, 10) * 1024;
    return true;
  };
  char line[256];
  int found = 0;
  while (found < 2 && std::fgets(line, sizeof line, f)) {
    if (read_kb(line, "MemTotal", total_bytes) || read_kb(line, "MemAvailable", available_bytes))
      ++found;
  }
  std::fclose(f);
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
