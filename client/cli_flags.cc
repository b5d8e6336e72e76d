#include "client/cli_flags.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace layerserve::client {

absl::StatusOr<absl::Duration> ParseDurationFlag(absl::string_view text) {
  absl::Duration d;
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds) && std::isfinite(seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &d)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a duration (e.g. 30s, 500ms, 2m)"));
  }
  if (d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' must be a positive, finite duration"));
  }
  return d;
}

FlagSet::FlagSet(std::string command, std::string summary,
                 std::string positional, std::string example)
    : command_(std::move(command)),
      summary_(std::move(summary)),
      positional_synopsis_(std::move(positional)),
      example_(std::move(example)) {}

void FlagSet::Add(absl::string_view name, Kind kind, void* value,
                  absl::string_view help, std::string default_text) {
  assert(Find(name) == nullptr);
  flags_.push_back(Flag{std::string(name), kind, value, std::string(help),
                        std::move(default_text), "", group_});
}

void FlagSet::SetValueName(absl::string_view name, absl::string_view text) {
  Flag* flag = Find(name);
  assert(flag != nullptr);
  if (flag != nullptr) flag->value_name = std::string(text);
}

void FlagSet::StartGroup(absl::string_view title) {
  group_ = std::string(title);
}

void FlagSet::AddSection(absl::string_view title, absl::string_view text) {
  sections_.emplace_back(std::string(title), std::string(text));
}

void FlagSet::String(absl::string_view name, std::string* value,
                     absl::string_view help) {
  Add(name, Kind::kString, value, help,
      value->empty() ? "" : absl::StrCat("\"", *value, "\""));
}
void FlagSet::Int(absl::string_view name, int64_t* value,
                  absl::string_view help) {
  Add(name, Kind::kInt, value, help, absl::StrCat(*value));
}
void FlagSet::Uint(absl::string_view name, uint64_t* value,
                   absl::string_view help) {
  Add(name, Kind::kUint, value, help, absl::StrCat(*value));
}
void FlagSet::Double(absl::string_view name, double* value,
                     absl::string_view help) {
  Add(name, Kind::kDouble, value, help, absl::StrFormat("%g", *value));
}
void FlagSet::Bool(absl::string_view name, bool* value,
                   absl::string_view help) {
  Add(name, Kind::kBool, value, help, *value ? "true" : "false");
}
void FlagSet::Duration(absl::string_view name, absl::Duration* value,
                       absl::string_view help) {
  Add(name, Kind::kDuration, value, help, absl::FormatDuration(*value));
}

void FlagSet::SetDefaultText(absl::string_view name, absl::string_view text) {
  Flag* flag = Find(name);
  assert(flag != nullptr);
  if (flag != nullptr) flag->default_text = std::string(text);
}

FlagSet::Flag* FlagSet::Find(absl::string_view name) {
  for (Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

bool FlagSet::IsSet(absl::string_view name) const {
  for (const Flag& f : flags_) {
    if (f.name == name) return f.set;
  }
  return false;
}

absl::Status FlagSet::SetValue(Flag& flag, absl::string_view text) {
  auto bad = [&](absl::string_view expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag.name, ": expected ", expected, ", got '", text, "'"));
  };
  switch (flag.kind) {
    case Kind::kString:
      *static_cast<std::string*>(flag.value) = std::string(text);
      break;
    case Kind::kInt:
      if (!absl::SimpleAtoi(text, static_cast<int64_t*>(flag.value))) {
        return bad("an integer");
      }
      break;
    case Kind::kUint:
      if (!absl::SimpleAtoi(text, static_cast<uint64_t*>(flag.value))) {
        return bad("a non-negative integer");
      }
      break;
    case Kind::kDouble: {
      double v = 0;
      if (!absl::SimpleAtod(text, &v) || !std::isfinite(v)) {
        return bad("a finite number");
      }
      *static_cast<double*>(flag.value) = v;
      break;
    }
    case Kind::kBool:
      if (!absl::SimpleAtob(text, static_cast<bool*>(flag.value))) {
        return bad("true or false");
      }
      break;
    case Kind::kDuration: {
      absl::StatusOr<absl::Duration> d = ParseDurationFlag(text);
      if (!d.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", flag.name, ": ", d.status().message()));
      }
      *static_cast<absl::Duration*>(flag.value) = *d;
      break;
    }
  }
  flag.set = true;
  return absl::OkStatus();
}

absl::StatusOr<FlagSet::Outcome> FlagSet::Parse(
    const std::vector<std::string>& args) {
  positional_.clear();
  for (const std::string& arg : args) {
    if (arg == "--help" || arg == "-h" || arg == "-help" ||
        arg == "--helpfull") {
      return Outcome::kHelp;
    }
    if (arg == "--") break;
  }
  const std::string see_help = absl::StrCat(" (see '", command_, " --help')");
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (arg == "--") {
      positional_.insert(positional_.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      positional_.emplace_back(arg);
      continue;
    }
    arg.remove_prefix(absl::StartsWith(arg, "--") ? 2 : 1);
    const size_t eq = arg.find('=');
    const absl::string_view name = arg.substr(0, eq);
    Flag* flag = Find(name);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, see_help));
    }
    if (eq != absl::string_view::npos) {
      absl::Status st = SetValue(*flag, arg.substr(eq + 1));
      if (!st.ok()) return st;
    } else if (flag->kind == Kind::kBool) {
      *static_cast<bool*>(flag->value) = true;
      flag->set = true;
    } else if (i + 1 < args.size()) {
      absl::Status st = SetValue(*flag, args[++i]);
      if (!st.ok()) return st;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " needs a value", see_help));
    }
  }
  if (positional_synopsis_.empty() && !positional_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument '", positional_[0], "'", see_help));
  }
  return Outcome::kRun;
}

namespace {

constexpr size_t kHelpIndent = 26;
constexpr size_t kHelpWidth = 80;

// Word-wraps a flag's help to kHelpWidth, continuing at kHelpIndent.
std::string Wrap(absl::string_view text) {
  std::string out;
  size_t col = kHelpIndent;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (col > kHelpIndent && col + 1 + word.size() > kHelpWidth) {
      absl::StrAppend(&out, "\n", std::string(kHelpIndent, ' '));
      col = kHelpIndent;
    } else if (col > kHelpIndent) {
      out += ' ';
      ++col;
    }
    absl::StrAppend(&out, word);
    col += word.size();
  }
  return out;
}

}  // namespace

std::string FlagSet::Help() const {
  std::string out = absl::StrCat(
      "usage: ", command_, " [flags]", positional_synopsis_.empty() ? "" : " ",
      positional_synopsis_, "\n\n", summary_, "\n\nflags:\n");
  // The command's own flags first, then each group in order of appearance.
  std::vector<std::string> groups = {""};
  for (const Flag& f : flags_) {
    if (std::find(groups.begin(), groups.end(), f.group) == groups.end()) {
      groups.push_back(f.group);
    }
  }
  for (const std::string& group : groups) {
    if (!group.empty()) absl::StrAppend(&out, "\n", group, ":\n");
    for (const Flag& f : flags_) {
      if (f.group == group) AppendFlagHelp(f, out);
    }
    if (group.empty()) {
      absl::StrAppend(&out, "  --help                  this text\n");
    }
  }
  if (!example_.empty()) absl::StrAppend(&out, "\nexample:\n", example_, "\n");
  for (const auto& [title, text] : sections_) {
    absl::StrAppend(&out, "\n", title, ":\n", text, "\n");
  }
  return out;
}

void FlagSet::AppendFlagHelp(const Flag& f, std::string& out) {
  std::string lhs = absl::StrCat("  --", f.name);
  if (!f.value_name.empty()) {
    absl::StrAppend(&lhs, "=", f.value_name);
  } else {
    switch (f.kind) {
      case Kind::kString:
        absl::StrAppend(&lhs, "=STRING");
        break;
      case Kind::kInt:
      case Kind::kUint:
        absl::StrAppend(&lhs, "=N");
        break;
      case Kind::kDouble:
        absl::StrAppend(&lhs, "=X");
        break;
      case Kind::kDuration:
        absl::StrAppend(&lhs, "=DURATION");
        break;
      case Kind::kBool:
        break;
    }
  }
  std::string text = f.help;
  if (!f.default_text.empty()) {
    absl::StrAppend(&text, " (default ", f.default_text, ")");
  }
  absl::StrAppend(&out, absl::StrFormat("%-*s", kHelpIndent, lhs));
  if (lhs.size() >= kHelpIndent) {
    absl::StrAppend(&out, "\n", std::string(kHelpIndent, ' '));
  }
  absl::StrAppend(&out, Wrap(text), "\n");
}

}  // namespace layerserve::client
