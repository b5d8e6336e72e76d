// Test helpers that run real binaries: a command with its stdout, stderr
// and exit code captured (bounded in time), and the layerserve server on an
// ephemeral port.
//
// Thread-safety: each object is for one thread.
#ifndef LAYERSERVE_TESTS_CLIENT_SUBPROCESS_H_
#define LAYERSERVE_TESTS_CLIENT_SUBPROCESS_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

extern char** environ;

namespace layerserve::testing {

struct RunResult {
  int exit_code = -1;  // 128 + signal when killed
  std::string out;
  std::string err;
  bool timed_out = false;
};

inline std::string Describe(const RunResult& r) {
  return absl::StrCat("exit ", r.exit_code, r.timed_out ? " (timed out)" : "",
                      "\n--- stdout ---\n", r.out, "--- stderr ---\n", r.err);
}

// Runs argv[0] (a path) with `input` on stdin; kills it after `timeout`.
inline RunResult RunProcess(const std::vector<std::string>& argv,
                            absl::Duration timeout = absl::Seconds(120),
                            const std::string& input = "") {
  RunResult result;
  int in[2], out[2], err[2];
  if (pipe(in) != 0 || pipe(out) != 0 || pipe(err) != 0) {
    ADD_FAILURE() << "pipe failed";
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) {
    posix_spawn_file_actions_addclose(&actions, fd);
  }
  std::vector<std::string> args = argv;
  std::vector<char*> cargs;
  for (std::string& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  pid_t pid = -1;
  const int rc =
      posix_spawn(&pid, cargs[0], &actions, nullptr, cargs.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << argv[0] << ": " << rc;
    close(in[1]);
    close(out[0]);
    close(err[0]);
    return result;
  }
  // Inputs here are small (JSON for a checker), below the pipe buffer.
  if (!input.empty()) {
    ssize_t n = write(in[1], input.data(), input.size());
    (void)n;
  }
  close(in[1]);

  const absl::Time deadline = absl::Now() + timeout;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  while (open_fds > 0) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) {
      result.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    if (poll(fds, 2, static_cast<int>(std::min<int64_t>(left, 1000))) < 0) {
      continue;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP)) == 0) {
        continue;
      }
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (pollfd& p : fds) {
    if (p.fd >= 0) close(p.fd);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code =
      WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

// The layerserve binary on 127.0.0.1:0, stderr (its call log) in a file.
class ServerProcess {
 public:
  // Starts the server with `flags` besides --address and waits for its
  // "listening on HOST:PORT" line.
  static std::unique_ptr<ServerProcess> Start(
      const std::string& binary, const std::vector<std::string>& flags = {}) {
    static int started = 0;
    auto p = std::unique_ptr<ServerProcess>(new ServerProcess);
    p->log_path_ = absl::StrCat(::testing::TempDir(), "layerserve_client_",
                                getpid(), "_", started++, ".log");
    int out[2];
    if (pipe(out) != 0) return nullptr;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    posix_spawn_file_actions_addclose(&actions, out[1]);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO,
                                     p->log_path_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> args = {binary, "--address=127.0.0.1:0"};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> cargs;
    for (std::string& a : args) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    const int rc = posix_spawn(&p->pid_, binary.c_str(), &actions, nullptr,
                               cargs.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    p->stdout_fd_ = out[0];
    if (rc != 0) {
      ADD_FAILURE() << "posix_spawn " << binary << ": " << rc;
      p->pid_ = -1;
      return p;
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    std::string text;
    while (absl::Now() < deadline) {
      pollfd fd = {p->stdout_fd_, POLLIN, 0};
      if (poll(&fd, 1, 200) <= 0) continue;
      char buf[256];
      const ssize_t n = read(p->stdout_fd_, buf, sizeof(buf));
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
      const size_t at = text.find("listening on ");
      const size_t eol = at == std::string::npos ? at : text.find('\n', at);
      if (eol != std::string::npos) {
        p->address_ = text.substr(at + 13, eol - at - 13);
        break;
      }
    }
    if (p->address_.empty()) {
      ADD_FAILURE() << "layerserve printed no 'listening on' line: " << text;
    }
    return p;
  }

  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_fd_ >= 0) close(stdout_fd_);
    if (!log_path_.empty()) unlink(log_path_.c_str());
  }

  // SIGTERM, then the exit code (128 + signal if it died of one).
  int Stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  const std::string& address() const { return address_; }
  const std::string& log_path() const { return log_path_; }

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string address_;
  std::string log_path_;
};

}  // namespace layerserve::testing

#endif  // LAYERSERVE_TESTS_CLIENT_SUBPROCESS_H_
