// The layerctl subcommands. Each takes the words after its name, writes its
// results to stdout (one JSON object with --json) and failures as one line
// on stderr, and returns an ExitCode (client/cli_common.h).
//
// Thread-safety: meant to be called from main(), one at a time.
#ifndef LAYERSERVE_CLIENT_CLI_H_
#define LAYERSERVE_CLIENT_CLI_H_

#include <string>
#include <vector>

namespace layerserve::client {

using Args = std::vector<std::string>;

int RunHealth(const Args& args);
int RunList(const Args& args);
int RunForward(const Args& args);
int RunBackward(const Args& args);
int RunGradCheck(const Args& args);
int RunCompare(const Args& args);
// Replays the seed notebook's cells against the server (client/notebook.cc).
int RunNotebook(const Args& args);
// The load generator (client/bench.cc).
int RunBench(const Args& args);

}  // namespace layerserve::client

#endif  // LAYERSERVE_CLIENT_CLI_H_
