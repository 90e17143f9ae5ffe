// tests/support/child_process.hpp: runs a test body in a forked child process, for the unit
// tests and the hazard scenarios that check what a fork() child sees.
#ifndef GPUSAFE_TESTS_SUPPORT_CHILD_PROCESS_HPP
#define GPUSAFE_TESTS_SUPPORT_CHILD_PROCESS_HPP

#include <dirent.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace gpusafe_test {

/// What run_in_child returns when the child outlived its time limit and was killed.
constexpr int kChildHung = -2;
/// The exit code of a child whose body threw.
constexpr int kChildThrew = 99;

/// Runs `fn` (returning int) in a forked child that ends with std::_Exit(fn()), so it runs no
/// destructors and no atexit handlers of the parent's state unless `fn` does so itself.
/// Returns the child's exit code, 128 + signal when it was killed, kChildHung when it did not
/// end within `limit` (it is then killed), or -1 when fork() failed.
template <class Fn>
int run_in_child(Fn&& fn, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int rc = kChildThrew;
#if defined(__cpp_exceptions)
    try {
      rc = fn();
    } catch (...) {
      std::fprintf(stderr, "child process: an exception escaped the test body\n");
    }
#else
    rc = fn();
#endif
    std::fflush(nullptr);
    std::_Exit(rc);
  }
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) != pid) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return kChildHung;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

/// Whether every thread of this process but the caller is asleep (state S in
/// /proc/self/task/<tid>/stat): blocked in the kernel, so inside no allocator of a sanitizer.
inline bool other_threads_asleep() {
  const long self = ::syscall(SYS_gettid);
  DIR* tasks = ::opendir("/proc/self/task");
  if (tasks == nullptr) return false;
  bool asleep = true;
  while (const dirent* task = ::readdir(tasks)) {
    if (task->d_name[0] == '.' || std::atol(task->d_name) == self) continue;
    const std::string path = std::string("/proc/self/task/") + task->d_name + "/stat";
    std::FILE* stat = std::fopen(path.c_str(), "r");
    if (stat == nullptr) continue;  // the thread has just ended
    char line[512] = {};
    const bool read = std::fgets(line, sizeof line, stat) != nullptr;
    std::fclose(stat);
    // "<tid> (<name>) <state> ...": the name may hold spaces and parentheses.
    const char* name_end = read ? std::strrchr(line, ')') : nullptr;
    if (name_end != nullptr && name_end[1] == ' ' && name_end[2] != 'S') asleep = false;
  }
  ::closedir(tasks);
  return asleep;
}

/// Waits until every other thread is asleep (other_threads_asleep), up to `limit`. The
/// sanitizers' runtimes (GCC 12) are not fork-safe: a thread inside their allocator or thread
/// registry at fork() leaves its lock held in the child, which then hangs on it.
inline bool wait_until_other_threads_sleep(
    std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!other_threads_asleep()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace gpusafe_test

#endif  // GPUSAFE_TESTS_SUPPORT_CHILD_PROCESS_HPP
