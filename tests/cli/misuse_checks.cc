#include "tests/cli/misuse_checks.h"

#include <filesystem>
#include <sys/stat.h>

#include "base/utf8.h"

namespace shelf::test {

FileSnapshot snapshot_files(const std::string& dir) {
  FileSnapshot files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    struct stat st;
    if (::lstat(e.path().c_str(), &st) != 0) continue;
    files[e.path().string()] = {static_cast<uintmax_t>(st.st_size),
                                st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec};
  }
  return files;
}

CommandResult run_bounded(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                          int seconds, const std::string& cwd) {
  std::vector<std::string> timed = {"/usr/bin/timeout", "-k", "5", std::to_string(seconds)};
  if (!cwd.empty()) timed.insert(timed.end(), {"/usr/bin/env", "-C", cwd});
  timed.insert(timed.end(), argv.begin(), argv.end());
  return run_command(timed, env);
}

std::string stderr_shape_problem(const std::string& err) {
  const size_t end = err.find('\n');
  if (end == std::string::npos) return "stderr is not one line ending in a newline";
  if (end == 0) return "the first line of stderr is empty";
  const std::string rest = err.substr(end + 1);
  if (rest.empty()) return "";
  if (rest.rfind("Try '", 0) == 0 && rest.find('\n') == rest.size() - 1) return "";
  return "stderr is more than one error line";
}

std::string raw_output_problem(const std::string& text) {
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + start, end - start);
    const std::string escaped = escape_unprintable(line);
    if (escaped != line) return escaped;
    start = end + 1;
  }
  return "";
}

}  // namespace shelf::test
