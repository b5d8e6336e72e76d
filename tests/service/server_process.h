// ServerProcess: the real `layerserve` binary as a child process, for the
// end-to-end and hardening tests. Its stdout is a pipe (for the "listening
// on" line), its stderr a file (the call log; a pipe nobody reads would fill
// up and block the server). Also reads the child's CPU time and resident
// memory from /proc.
//
// Thread-safety: one test thread drives a ServerProcess; Stderr(),
// CpuSeconds() and RssKb() may be called from any thread.
#ifndef LAYERSERVE_TESTS_SERVICE_SERVER_PROCESS_H_
#define LAYERSERVE_TESTS_SERVICE_SERVER_PROCESS_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

extern char** environ;

namespace layerserve::testing {

class ServerProcess {
 public:
  // Spawns `binary` with `flags`; nullptr (and a test failure) when the
  // pipe cannot be made.
  static std::unique_ptr<ServerProcess> Start(
      const std::string& binary, const std::vector<std::string>& flags) {
    static int counter = 0;
    auto p = std::unique_ptr<ServerProcess>(new ServerProcess);
    p->stderr_path_ = absl::StrCat(::testing::TempDir(), "layerserve_",
                                   getpid(), "_", counter++, ".log");
    int out[2];
    if (pipe(out) != 0) {
      ADD_FAILURE() << "pipe failed";
      return nullptr;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    posix_spawn_file_actions_addclose(&actions, out[1]);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO,
                                     p->stderr_path_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> args = {binary};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawn(&p->pid_, binary.c_str(), &actions, nullptr,
                               argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    p->stdout_fd_ = out[0];
    if (rc != 0) {
      ADD_FAILURE() << "posix_spawn " << binary << ": " << rc;
      p->pid_ = -1;
    }
    return p;
  }

  ~ServerProcess() {
    if (pid_ > 0 && !exit_status_.has_value()) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_fd_ >= 0) close(stdout_fd_);
    unlink(stderr_path_.c_str());
  }

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  pid_t pid() const { return pid_; }

  // The next stdout line, or "" on EOF or after `timeout`.
  std::string ReadLine(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    std::string line;
    while (absl::Now() < deadline) {
      pollfd pfd = {stdout_fd_, POLLIN, 0};
      const int ms = static_cast<int>(
          absl::ToInt64Milliseconds(deadline - absl::Now()) + 1);
      if (poll(&pfd, 1, ms) <= 0) continue;
      char c;
      if (read(stdout_fd_, &c, 1) != 1) break;
      if (c == '\n') return line;
      line.push_back(c);
    }
    return "";
  }

  // Everything the child writes on stdout until it closes it (or `timeout`).
  std::string ReadAll(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    std::string text;
    char buf[4096];
    while (absl::Now() < deadline) {
      pollfd pfd = {stdout_fd_, POLLIN, 0};
      const int ms = static_cast<int>(
          absl::ToInt64Milliseconds(deadline - absl::Now()) + 1);
      if (poll(&pfd, 1, ms) <= 0) continue;
      const ssize_t n = read(stdout_fd_, buf, sizeof(buf));
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    return text;
  }

  // Reads "listening on 127.0.0.1:PORT" and returns the port (0 and a test
  // failure otherwise).
  int WaitListening() {
    const std::string line = ReadLine(absl::Seconds(120));
    constexpr absl::string_view kPrefix = "listening on 127.0.0.1:";
    int port = 0;
    if (!absl::StartsWith(line, kPrefix) ||
        !absl::SimpleAtoi(line.substr(kPrefix.size()), &port)) {
      ADD_FAILURE() << "stdout said '" << line << "'; stderr: " << Stderr();
      return 0;
    }
    return port;
  }

  void Signal(int sig) { kill(pid_, sig); }

  // The exit code, or nullopt if still running after `timeout` or killed
  // by a signal.
  std::optional<int> WaitExit(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!exit_status_.has_value() && absl::Now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_status_ = status;
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    if (!exit_status_.has_value() || !WIFEXITED(*exit_status_)) {
      return std::nullopt;
    }
    return WEXITSTATUS(*exit_status_);
  }

  std::string Stderr() const {
    std::ifstream in(stderr_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // User + system CPU seconds the server has used so far (/proc/PID/stat
  // fields 14 and 15); -1 when unreadable.
  double CpuSeconds() const {
    std::ifstream in(absl::StrCat("/proc/", pid_, "/stat"));
    std::string stat((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after the last ')'.
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos) return -1;
    std::vector<std::string> fields =
        absl::StrSplit(stat.substr(paren + 2), ' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    int64_t utime = 0, stime = 0;
    if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
        !absl::SimpleAtoi(fields[12], &stime)) {
      return -1;
    }
    return static_cast<double>(utime + stime) /
           static_cast<double>(sysconf(_SC_CLK_TCK));
  }

  // Resident set size in KiB (/proc/PID/status VmRSS); -1 when unreadable.
  int64_t RssKb() const {
    std::ifstream in(absl::StrCat("/proc/", pid_, "/status"));
    std::string line;
    while (std::getline(in, line)) {
      if (!absl::StartsWith(line, "VmRSS:")) continue;
      std::vector<std::string> parts =
          absl::StrSplit(line, ' ', absl::SkipEmpty());
      int64_t kb = 0;
      if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kb)) return kb;
    }
    return -1;
  }

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string stderr_path_;
  std::optional<int> exit_status_;
};

}  // namespace layerserve::testing

#endif  // LAYERSERVE_TESTS_SERVICE_SERVER_PROCESS_H_
