// FlagSet: the command-line flags of one layerctl subcommand.
//
// Abseil's flags are process-global, so every subcommand's --help would list
// every other subcommand's flags too; a FlagSet per subcommand keeps each
// --help to the flags that command reads, with an example. Syntax follows
// Abseil's: --name=value or --name value, --flag / --flag=false for
// booleans, "--" ends the flags; anything not starting with '-' is a
// positional argument (e.g. `x=randn:4,3,5,5`).
//
// Thread-safety: not thread-safe; build, parse and read it on one thread.
#ifndef LAYERSERVE_CLIENT_CLI_FLAGS_H_
#define LAYERSERVE_CLIENT_CLI_FLAGS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace layerserve::client {

class FlagSet {
 public:
  // `command` as typed ("layerctl forward"), a one-line summary, the
  // positional-argument synopsis ("[NAME=SPEC...]", may be empty) and an
  // example command line with what it does (may span lines).
  FlagSet(std::string command, std::string summary, std::string positional,
          std::string example);
  FlagSet(const FlagSet&) = delete;
  FlagSet& operator=(const FlagSet&) = delete;

  // Registers a flag bound to `*value`, whose current value is the default
  // shown by --help. Names are unique within the set.
  void String(absl::string_view name, std::string* value,
              absl::string_view help);
  void Int(absl::string_view name, int64_t* value, absl::string_view help);
  void Uint(absl::string_view name, uint64_t* value, absl::string_view help);
  void Double(absl::string_view name, double* value, absl::string_view help);
  void Bool(absl::string_view name, bool* value, absl::string_view help);
  // A duration: "60s", "500ms", "2m", or a plain number of seconds. > 0.
  void Duration(absl::string_view name, absl::Duration* value,
                absl::string_view help);
  // What --help shows as the default of `name` (already registered), for
  // flags whose default is not the bound variable's value, e.g. "none" or
  // "the server's". Empty shows none.
  void SetDefaultText(absl::string_view name, absl::string_view text);
  // What --help shows after "--name=" instead of the kind's STRING, N, ...,
  // e.g. "FILE".
  void SetValueName(absl::string_view name, absl::string_view text);

  enum class Outcome { kRun, kHelp };
  // Parses `args` (the words after the subcommand). kHelp when --help or -h
  // was given (nothing else is checked then). INVALID_ARGUMENT with a
  // one-line message naming the flag for an unknown flag, a missing or
  // unparsable value, or positional arguments when the set takes none.
  absl::StatusOr<Outcome> Parse(const std::vector<std::string>& args);

  // Whether the command line set `name` (as opposed to its default).
  bool IsSet(absl::string_view name) const;
  const std::vector<std::string>& positional() const { return positional_; }

  // Flags registered after this call are listed in --help under `title`,
  // after the command's own flags ("" goes back to those): shared groups
  // such as the connection flags stay together in every command's help.
  void StartGroup(absl::string_view title);
  // A titled block --help shows after the example, e.g. more examples that
  // belong to a flag group.
  void AddSection(absl::string_view title, absl::string_view text);

  // Usage text: synopsis, summary, the command's flags with defaults, the
  // flag groups, example, sections.
  std::string Help() const;
  const std::string& command() const { return command_; }

 private:
  enum class Kind { kString, kInt, kUint, kDouble, kBool, kDuration };
  struct Flag {
    std::string name;
    Kind kind;
    void* value;
    std::string help;
    std::string default_text;
    std::string value_name;  // "": from the kind
    std::string group;       // "": the command's own
    bool set = false;
  };
  void Add(absl::string_view name, Kind kind, void* value,
           absl::string_view help, std::string default_text);
  Flag* Find(absl::string_view name);
  // One flag's lines of Help().
  static void AppendFlagHelp(const Flag& flag, std::string& out);
  absl::Status SetValue(Flag& flag, absl::string_view text);

  std::string command_;
  std::string summary_;
  std::string positional_synopsis_;
  std::string example_;
  std::vector<Flag> flags_;
  std::string group_;
  std::vector<std::pair<std::string, std::string>> sections_;
  std::vector<std::string> positional_;
};

// Parses a duration as Duration() flags do.
absl::StatusOr<absl::Duration> ParseDurationFlag(absl::string_view text);

}  // namespace layerserve::client

#endif  // LAYERSERVE_CLIENT_CLI_FLAGS_H_
