// Unit tests of gpusafe/signals.hpp: a program stopped by SIGTERM or SIGINT leaves its loop, runs
// its cleanup and exits 0; handlers are restored; uncatchable signals are refused.
#include "gpusafe/signals.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "gpusafe/guards.hpp"

namespace gs = gpusafe;

namespace {

void write_all(int fd, const char* text) {
  const std::size_t n = std::strlen(text);
  if (::write(fd, text, n) != static_cast<ssize_t>(n)) std::_Exit(97);
}

/// Reads from `fd` until EOF (or until `deadline` passes).
std::string read_until_eof(int fd) {
  std::string out;
  char buffer[256];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) {
      out.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      return out;
    }
  }
}

/// Forks a child that trains "steps" until stopped by a signal, then leaves its loop, lets its
/// SafeCudaCleanup run, and ends with exit(0) (as a return from main would). Sends `signal_number`
/// once the child reports it is running; returns the child's output and its wait status.
std::pair<std::string, int> run_stopped_child(int signal_number) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return {"pipe failed", -1};
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fds[0]);
    const int out = pipe_fds[1];
    {
      gs::StopOnSignals stop;
      gs::SafeCudaCleanup at_end;
      at_end.defer([out] { write_all(out, "cleanup;"); });
      write_all(out, "running;");
      long steps = 0;
      const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!stop.requested()) {
        gs::SafeCudaCleanup step;
        step.defer([&steps] { ++steps; });
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (std::chrono::steady_clock::now() > limit) std::_Exit(98);  // never stopped
      }
      write_all(out, ("stopped by " + std::to_string(stop.signal()) + ";").c_str());
    }
    std::exit(0);
  }
  ::close(pipe_fds[1]);
  // Wait for "running;" before signalling, so the handler is installed.
  std::string seen;
  char c;
  while (seen.find("running;") == std::string::npos && ::read(pipe_fds[0], &c, 1) == 1) seen += c;
  ::kill(pid, signal_number);
  seen += read_until_eof(pipe_fds[0]);
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return {seen, status};
}

TEST(Signals, SigtermStopsTheLoopAndCleanupRunsAndExitIsZero) {
  const auto [output, status] = run_stopped_child(SIGTERM);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal "
                                 << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(output, "running;stopped by " + std::to_string(SIGTERM) + ";cleanup;");
}

TEST(Signals, SigintStopsTheLoopToo) {
  const auto [output, status] = run_stopped_child(SIGINT);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(output, "running;stopped by " + std::to_string(SIGINT) + ";cleanup;");
}

TEST(Signals, RequestIsRecordedAndPreviousHandlerRestored) {
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  struct sigaction before {};
  ASSERT_EQ(::sigaction(SIGTERM, &ignore, &before), 0);
  gs::clear_stop_request();
  {
    gs::StopOnSignals stop;
    EXPECT_FALSE(stop.requested());
    ASSERT_EQ(::raise(SIGTERM), 0);  // recorded, not fatal
    EXPECT_TRUE(gs::stop_requested());
    EXPECT_EQ(gs::stop_signal(), SIGTERM);
  }
  struct sigaction now {};
  ASSERT_EQ(::sigaction(SIGTERM, nullptr, &now), 0);
  EXPECT_EQ(now.sa_handler, SIG_IGN);
  EXPECT_TRUE(gs::stop_requested());  // the request stays until cleared
  gs::clear_stop_request();
  EXPECT_FALSE(gs::stop_requested());
  ASSERT_EQ(::sigaction(SIGTERM, &before, nullptr), 0);
}

TEST(Signals, UncatchableSignalIsATypedErrorAndInstallsNothing) {
  struct sigaction before {};
  ASSERT_EQ(::sigaction(SIGINT, nullptr, &before), 0);
  try {
    gs::StopOnSignals stop({SIGINT, SIGKILL});
    FAIL() << "SIGKILL was accepted";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("signal " + std::to_string(SIGKILL)), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot be caught"), std::string::npos) << e.what();
  }
  struct sigaction now {};
  ASSERT_EQ(::sigaction(SIGINT, nullptr, &now), 0);
  EXPECT_EQ(now.sa_handler, before.sa_handler);  // SIGINT's handler was put back
}

}  // namespace
