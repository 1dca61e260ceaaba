// The misuse suite's checks of one run of shelf or shelfd, shared by the
// table-driven MisuseTest and the generated CliPropertyTest: what a failing
// command may print, that it printed nothing raw, and that it changed no
// file it was not asked to.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/test_daemon.h"

namespace shelf::test {

// Each file under `dir` (recursively) with its size and modification time.
using FileSnapshot = std::map<std::string, std::pair<uintmax_t, int64_t>>;
FileSnapshot snapshot_files(const std::string& dir);

// Runs `argv` under timeout(1) for at most `seconds` with `env` added, so a
// hang shows as exit 124 (or 137 when it had to be killed); the working
// directory is `cwd` when not empty (env -C), so relative paths land there.
CommandResult run_bounded(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                          int seconds, const std::string& cwd = "");

// The house rule for the stderr of a failed command (exit 1 or 2): one line
// of error, then at most the hint "Try '...'." on a line of its own. Returns
// what breaks the rule, or "" when it holds.
std::string stderr_shape_problem(const std::string& err);

// Nothing from the command line or data reaches the terminal raw: every
// line of `text` is as escape_unprintable() would print it (no control
// characters, C1 or invalid UTF-8). Returns the first offending line,
// escaped, or "" when none.
std::string raw_output_problem(const std::string& text);

}  // namespace shelf::test
