// gpusafe_hazards: runs every registered teardown-hazard scenario in a child process.
//
//   gpusafe_hazards                                  GoogleTest: one test per (scenario, exit
//   style) gpusafe_hazards --list                           the scenario names gpusafe_hazards
//   --scenario NAME/VARIANT --exit return|exit|quick_exit
//                                                    runs one scenario in this process
//
// The watchdog of each child is GPUSAFE_HAZARD_TIMEOUT_S seconds (default 30).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "hazard.hpp"

extern char** environ;

namespace {

namespace hz = gpusafe_hazards;

struct ExitStyle {
  unsigned bit;
  const char* name;
};
constexpr ExitStyle kExitStyles[] = {
    {hz::kExitReturn, "return"}, {hz::kExitStd, "exit"}, {hz::kExitQuick, "quick_exit"}};

const hz::Scenario* find_scenario(const std::string& name) {
  for (const auto& s : hz::scenarios())
    if (s.name == name) return &s;
  return nullptr;
}

/// The child side: runs the body, then ends the process in the chosen way.
int run_one(const std::string& name, const std::string& exit_name) {
  const hz::Scenario* scenario = find_scenario(name);
  if (!scenario) {
    std::fprintf(stderr, "gpusafe_hazards: no scenario named '%s' (see --list)\n", name.c_str());
    return 2;
  }
  unsigned style = 0;
  for (const auto& e : kExitStyles)
    if (exit_name == e.name) style = e.bit;
  if (style == 0 || (scenario->exits & style) == 0) {
    std::fprintf(stderr, "gpusafe_hazards: exit style '%s' is not one of those of '%s'\n",
                 exit_name.c_str(), name.c_str());
    return 2;
  }
  hz::current().scenario = scenario;
  hz::current().exit_style = style;
  gpusafe::testing::FakeRuntime::reset();
  if (scenario->fake) {
    gpusafe::testing::FakeRuntime::trap_after_teardown(true);
    // As on a real GPU, host code must not touch device memory.
    gpusafe::testing::FakeRuntime::protect_device_memory(true);
  }
  int rc = 0;
  try {
    rc = scenario->body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "HAZARD CHECK FAILED: the scenario threw: %s\n", e.what());
    rc = hz::kCheckFailedCode;
  }
  std::fflush(nullptr);
  if (style == hz::kExitStd) std::exit(rc);
  if (style == hz::kExitQuick) std::quick_exit(rc);
  return rc;
}

int timeout_seconds() {
  const char* env = std::getenv("GPUSAFE_HAZARD_TIMEOUT_S");
  const int value = env ? std::atoi(env) : 0;
  return value > 0 ? value : 30;
}

struct ChildResult {
  bool started = false;
  bool timed_out = false;
  int status = 0;
  std::string err;
};

/// Spawns this program for one scenario, collecting its stderr, under the watchdog.
ChildResult spawn_child(const std::string& scenario, const char* exit_name) {
  ChildResult result;
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return result;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  std::string self = "/proc/self/exe";
  std::vector<std::string> args = {"gpusafe_hazards", "--scenario", scenario, "--exit", exit_name};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Its own process group, so the watchdog also kills what it forked (an orphaned grandchild
  // would otherwise keep the pipes, and the test runner, waiting).
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attributes, 0);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, self.c_str(), &actions, &attributes, argv.data(), environ);
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    result.err = std::string("posix_spawn failed: ") + std::strerror(rc);
    return result;
  }
  result.started = true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds());
  char buffer[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      result.timed_out = true;
      ::kill(-pid, SIGKILL);
      break;
    }
    pollfd pfd{pipe_fds[0], POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);
    if (n > 0) {
      result.err.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;  // end of stream: the child (and any grandchild holding the pipe) closed it
    }
  }
  ::close(pipe_fds[0]);
  // A child that closed stderr early may still be running: the same deadline applies.
  for (;;) {
    const pid_t w = ::waitpid(pid, &result.status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) break;
    if (std::chrono::steady_clock::now() >= deadline && !result.timed_out) {
      result.timed_out = true;
      ::kill(-pid, SIGKILL);
    }
    ::usleep(2000);
  }
  ::kill(-pid, SIGKILL);  // anything of the group still alive (the child itself has been reaped)
  return result;
}

class HazardTest : public ::testing::Test {
 public:
  HazardTest(std::string scenario, const char* exit_name)
      : scenario_(std::move(scenario)), exit_name_(exit_name) {}

  void TestBody() override {
    const ChildResult r = spawn_child(scenario_, exit_name_);
    ASSERT_TRUE(r.started) << r.err;
    const std::string context = "\n--- stderr of '" + scenario_ + "' (exit style " + exit_name_ +
                                ") ---\n" + r.err + "--- end of stderr ---";
    EXPECT_FALSE(r.timed_out) << "killed by the watchdog after " << timeout_seconds()
                              << " s (set GPUSAFE_HAZARD_TIMEOUT_S)" << context;
    if (r.timed_out) return;
    EXPECT_FALSE(WIFSIGNALED(r.status)) << "killed by signal " << WTERMSIG(r.status) << " ("
                                        << strsignal(WTERMSIG(r.status)) << ")" << context;
    if (WIFEXITED(r.status)) {
      EXPECT_EQ(WEXITSTATUS(r.status), 0) << "non-zero exit code" << context;
    }
    for (const char* bad :
         {"terminate called", "FakeRuntime trap", "HAZARD CHECK FAILED", "ERROR: AddressSanitizer",
          "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer"}) {
      EXPECT_EQ(r.err.find(bad), std::string::npos)
          << "stderr contains \"" << bad << "\"" << context;
    }
  }

 private:
  std::string scenario_;
  const char* exit_name_;
};

void register_tests() {
  for (const auto& s : hz::scenarios()) {
    for (const auto& e : kExitStyles) {
      if ((s.exits & e.bit) == 0) continue;
      const std::string test_name =
          (s.fake ? std::string("fake_") : std::string("default_")) + e.name;
      const std::string scenario = s.name;
      const char* exit_name = e.name;
      ::testing::RegisterTest(s.base.c_str(), test_name.c_str(), nullptr, nullptr, __FILE__,
                              __LINE__, [scenario, exit_name]() -> ::testing::Test* {
                                return new HazardTest(scenario, exit_name);
                              });
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string scenario;
  std::string exit_name = "return";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--scenario" && i + 1 < argc) {
      scenario = argv[++i];
    } else if (arg == "--exit" && i + 1 < argc) {
      exit_name = argv[++i];
    } else if (arg == "--list") {
      for (const auto& s : hz::scenarios()) std::printf("%s\n", s.name.c_str());
      return 0;
    }
  }
  if (!scenario.empty()) return run_one(scenario, exit_name);

  ::testing::InitGoogleTest(&argc, argv);
  register_tests();
  return RUN_ALL_TESTS();
}
