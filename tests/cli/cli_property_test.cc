// A property test of the shelf CLI's argument parsing (issue 16, item 13):
// a few hundred command lines generated from a grammar of shelf's commands,
// their options (known, misspelled, repeated, another command's), values
// (negative, huge, empty, non-numeric, odd bytes, starting with '-', very
// long) and positional arguments, each run as the real `shelf` against a
// real shelfd. Whatever the command line, the misuse suite's rules hold
// (misuse_checks.h): exit 0, 1 or 2 (never a signal, never the timeout);
// on 1 or 2, the house shape of stderr; nothing printed raw; no file
// outside the scratch directory changed.
//
// The seed is fixed, so a run is repeatable; it is printed with every
// failure. SHELF_CLI_PROPERTY_SEED=N runs another seed and
// SHELF_CLI_PROPERTY_RUNS=N another number of command lines.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/utf8.h"
#include "tests/cli/misuse_checks.h"
#include "tests/integration/integration_util.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

constexpr uint64_t kDefaultSeed = 16;  // issue 16
constexpr uint64_t kDefaultRuns = 500;
// Each command line's bound: every one of them returns in well under a
// second (`wait` is given --timeout 0.3, `status --watch` one refresh).
constexpr int kRunSeconds = 10;
// Past this many failing command lines the rest are not run: the first
// ones say enough, and each may have cost the whole timeout.
constexpr int kMaxReportedFailures = 10;

uint64_t from_env(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  return std::strtoull(text, nullptr, 10);
}

// One option of a command: its name, whether it takes a value, and values
// it accepts (the generator mixes in odd ones).
struct OptionSpec {
  std::string name;
  bool takes_value;
  std::vector<std::string> good;
};

// A positional argument: a dataset name, an input file, the directory
// `save` writes to (never one in `data`: saving there is no misuse), the
// one `load` reads.
enum class Slot { kName, kFile, kSaveDir, kLoadDir };

struct CommandSpec {
  std::string name;
  std::vector<OptionSpec> options;
  std::vector<Slot> positional;  // the last one repeats when `repeats`
  bool repeats = false;
};

// The places the generated paths point to. Inputs live in `data` (the
// test checks that nothing there changes); outputs may go to `scratch`,
// which is also the working directory, so relative paths land there.
struct Places {
  std::string socket, data, scratch, csv, snapshot;
};

class ArgvGenerator {
 public:
  ArgvGenerator(uint64_t seed, Places places) : rng_(seed), p_(std::move(places)) {
    commands_ = {
        {"publish",
         {{"--override", false, {}},
          {"--partition-rows", true, {"1", "2", "1000"}},
          {"--schema", true, {"name:string,balance:int32", "balance:int8", "a:int8,a:int16"}},
          {"--delimiter", true, {",", "tab", ";", "\""}},
          {"--no-header", false, {}},
          {"--names", true, {"a,b", "a,,b"}},
          {"--null", true, {"NA", "null"}},
          {"--threads", true, {"1", "2"}},
          {"--progress", false, {}},
          {"--quiet", false, {}},
          {"--from", true, {"accounts", "nosuch"}},
          {"--where", true, {"balance < 0", "name = 'Alice'", "balance <", "((((", "x > 1"}},
          {"--columns", true, {"name", "balance,name", ",", "nosuch"}},
          {"--limit", true, {"0", "1", "5"}}},
         {Slot::kName, Slot::kFile},
         true},
        {"list", {{"--json", false, {}}}, {}},
        {"head", {{"-n", true, {"0", "1", "5"}}}, {Slot::kName}},
        {"info", {{"--json", false, {}}}, {Slot::kName}},
        {"unpublish", {{"--cascade", false, {}}}, {Slot::kName}},
        {"publish-view",
         {{"--from", true, {"accounts", "nosuch"}},
          {"--where", true, {"balance < 0", "balance <", "x > 1"}},
          {"--columns", true, {"name", ",", "nosuch"}},
          {"--limit", true, {"0", "5", "-1"}},
          {"--override", false, {}}},
         {Slot::kName}},
        {"persist", {{"--override", false, {}}, {"--pin", false, {}}}, {Slot::kName, Slot::kName}},
        {"status",
         {{"--json", false, {}},
          {"--watch", true, {"0.01", "0.05"}},
          // A valid count above 1 would make `status --watch` sleep: only 1.
          {"--iterations", true, {"1"}}},
         {}},
        {"wait", {}, {Slot::kName}, true},
        {"metrics", {}, {}},
        {"save",
         {{"--progress", false, {}}, {"--quiet", false, {}}},
         {Slot::kSaveDir, Slot::kName},
         true},
        {"load",
         {{"--override", false, {}}, {"--progress", false, {}}, {"--quiet", false, {}}},
         {Slot::kLoadDir, Slot::kName},
         true},
    };
    global_ = {{"--socket", true, {p_.socket, p_.data + "/no.sock", p_.data, p_.csv}},
               {"--timeout", true, {"0.5", "5"}},
               {"--help", false, {}},
               {"-h", false, {}}};
  }

  std::vector<std::string> next() {
    std::vector<std::string> argv;
    const CommandSpec* command = chance(90) ? &commands_[below(commands_.size())] : nullptr;
    const bool is_wait = command != nullptr && command->name == "wait";
    for (uint64_t i = below(3); i > 0; --i) {
      // `wait` takes the global --timeout as how long to wait: only short
      // ones. And no --socket: without a daemon, `wait` says "still
      // waiting" before its failure, two lines by design.
      if (is_wait && chance(50)) {
        append_option(argv, {"--timeout", true, {"0.3"}}, /*bounded=*/true);
      } else if (!is_wait) {
        append_option(argv, global_[below(global_.size())], false);
      }
    }
    if (is_wait) argv.insert(argv.begin(), {"--timeout", "0.3"});
    if (command == nullptr) {
      argv.push_back(chance(50) ? misspelled(commands_[below(commands_.size())].name) : value());
      for (uint64_t i = below(3); i > 0; --i) argv.push_back(value());
      return argv;
    }
    argv.push_back(command->name);
    // `status --watch` refreshes until interrupted unless told a count.
    if (command->name == "status") argv.insert(argv.end(), {"--iterations", "1"});
    append_arguments(argv, *command);
    return argv;
  }

 private:
  uint64_t below(uint64_t n) { return rng_() % n; }
  bool chance(int percent) { return below(100) < static_cast<uint64_t>(percent); }
  const std::string& pick(const std::vector<std::string>& v) { return v[below(v.size())]; }

  // Values no option or argument should take silently.
  std::string odd_value() {
    static const std::vector<std::string> odd = {"-1",
                                                 "0",
                                                 "-0",
                                                 "99999999999999999999999",
                                                 "18446744073709551616",
                                                 "4294967296",
                                                 "",
                                                 "abc",
                                                 "1e3",
                                                 "1e-9",
                                                 "0x10",
                                                 " 1",
                                                 "1 ",
                                                 "nan",
                                                 "inf",
                                                 "-inf",
                                                 "\x01\x02",
                                                 "\x7f",
                                                 "\xff\xfe",
                                                 "\xc2\x85",
                                                 "\x1b[2J",
                                                 "caf\xc3\xa9",
                                                 "a\tb",
                                                 "a\nb",
                                                 "%s%n",
                                                 "-x",
                                                 "--help",
                                                 "-",
                                                 "--",
                                                 "-n",
                                                 std::string(4096, 'x')};
    if (chance(2)) return std::string(70000, 'y');
    return pick(odd);
  }
  std::string value() { return odd_value(); }

  std::string name() {
    static const std::vector<std::string> names = {"accounts", "n1", "n2", "n3", "nosuch"};
    return chance(60) ? pick(names) : odd_value();
  }
  std::string file() {
    const std::vector<std::string> files = {
        p_.csv, p_.data + "/missing.csv", p_.data, "/dev/null", "-", p_.snapshot};
    return chance(70) ? pick(files) : odd_value();
  }
  // A file in `data` is among them: `save` must refuse it, untouched.
  std::string save_dir() {
    const std::vector<std::string> dirs = {p_.scratch + "/out", p_.scratch, p_.data + "/missing",
                                           p_.csv};
    return chance(70) ? pick(dirs) : odd_value();
  }
  std::string load_dir() {
    const std::vector<std::string> dirs = {p_.snapshot, p_.scratch + "/out", p_.data + "/missing",
                                           p_.csv, p_.data};
    return chance(70) ? pick(dirs) : odd_value();
  }

  // `option` as a hand might mistype it.
  std::string misspelled(const std::string& option) {
    std::string s = option;
    switch (below(5)) {
      case 0:
        if (s.size() > 1) s.erase(below(s.size()), 1);
        return s;
      case 1:
        return s + "s";
      case 2:
        for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        return s;
      case 3:
        return s.rfind("--", 0) == 0 ? s.substr(1) : "-" + s;
      default:
        return s + "=" + odd_value();
    }
  }

  // `option`, mistyped sometimes, with a value when it takes one: mostly a
  // good one, else an odd one (never an odd one when `bounded`).
  void append_option(std::vector<std::string>& argv, const OptionSpec& option, bool bounded) {
    argv.push_back(!bounded && chance(10) ? misspelled(option.name) : option.name);
    if (!option.takes_value) return;
    if (chance(3)) return;  // the value left out
    argv.push_back(bounded || (chance(60) && !option.good.empty()) ? pick(option.good)
                                                                   : odd_value());
  }

  std::string positional(Slot slot) {
    switch (slot) {
      case Slot::kName:
        return name();
      case Slot::kFile:
        return file();
      case Slot::kSaveDir:
        return save_dir();
      case Slot::kLoadDir:
        return load_dir();
    }
    return name();
  }

  // Options and positional arguments of `command` in a random order, with
  // sometimes too few or too many arguments, another command's option, a
  // repeated one, or a "--" before the rest.
  void append_arguments(std::vector<std::string>& argv, const CommandSpec& command) {
    std::vector<std::string> positionals;
    size_t count = command.positional.size();
    if (command.repeats && chance(40)) count += below(3);
    if (chance(15) && count > 0) count -= 1 + below(count);
    if (chance(10)) count += 1;
    for (size_t i = 0; i < count; ++i) {
      const Slot slot = command.positional.empty()
                            ? Slot::kName
                            : command.positional[std::min(i, command.positional.size() - 1)];
      positionals.push_back(positional(slot));
    }
    size_t next_positional = 0;
    const uint64_t options = below(4);
    for (uint64_t i = 0; i < options + positionals.size(); ++i) {
      const bool an_option = next_positional == positionals.size() || chance(40);
      if (!an_option) {
        if (chance(5)) argv.push_back("--");
        argv.push_back(positionals[next_positional++]);
        continue;
      }
      const CommandSpec& owner =
          command.options.empty() || chance(10) ? commands_[below(commands_.size())] : command;
      if (owner.options.empty()) continue;
      const OptionSpec& option = owner.options[below(owner.options.size())];
      // `status --iterations` is bounded: already given as 1, a second
      // one can only be refused (given twice).
      append_option(argv, option, option.name == "--iterations");
      if (chance(5)) append_option(argv, option, option.name == "--iterations");  // repeated
    }
    while (next_positional < positionals.size()) argv.push_back(positionals[next_positional++]);
    if (chance(5)) argv.push_back(chance(50) ? "--help" : "-h");
  }

  std::mt19937_64 rng_;
  Places p_;
  std::vector<CommandSpec> commands_;
  std::vector<OptionSpec> global_;
};

// True when `args` ask for the progress line: --progress, or a prefix of
// it Boost takes for it (--prog).
bool asks_for_progress(const std::vector<std::string>& args) {
  const std::string option = "--progress";
  for (const std::string& a : args) {
    if (a == "--") return false;
    if (a.size() >= 3 && option.rfind(a, 0) == 0) return true;
  }
  return false;
}

// stderr without the progress line that --progress asked for: it is drawn
// as "\r<text>\x1b[K" and erased with "\r\x1b[K" before the message, so a
// terminal shows the message alone.
std::string without_progress_line(const std::string& err) {
  const size_t erased = err.rfind("\r\x1b[K", err.find('\n'));
  return erased == std::string::npos ? err : err.substr(erased + 4);
}

// `argv` as a shell would need it typed, with odd bytes escaped.
std::string shown(const std::vector<std::string>& argv) {
  std::string out = "shelf";
  for (const std::string& a : argv) {
    std::string arg =
        a.size() > 80 ? a.substr(0, 40) + "...(" + std::to_string(a.size()) + " bytes)" : a;
    out += " '" + escape_unprintable(arg) + "'";
  }
  return out;
}

TEST(CliPropertyTest, GeneratedCommandLinesKeepTheMisuseRules) {
  const uint64_t seed = from_env("SHELF_CLI_PROPERTY_SEED", kDefaultSeed);
  const uint64_t runs = from_env("SHELF_CLI_PROPERTY_RUNS", kDefaultRuns);
  auto daemon = TestDaemon::start({.max_datasets = 1024, .extra_args = {}});
  ASSERT_NE(daemon, nullptr);
  Places places;
  places.socket = daemon->socket();
  places.data = daemon->dir() + "/data";
  places.scratch = daemon->dir() + "/scratch";
  places.csv = places.data + "/accounts.csv";
  places.snapshot = places.data + "/snapshot";
  std::filesystem::create_directories(places.data);
  std::filesystem::create_directories(places.scratch + "/out");
  std::ofstream(places.csv) << "name,balance\nAlice,-1\nBob,2\nCarol,3\n";
  const std::vector<std::string> env = {"SHELF_SOCKET=" + daemon->socket()};
  ASSERT_EQ(run_command({SHELF_CLI_PATH, "publish", "accounts", places.csv}, env).exit_code, 0);
  std::filesystem::create_directories(places.snapshot);
  ASSERT_EQ(run_command({SHELF_CLI_PATH, "save", places.snapshot}, env).exit_code, 0);
  const FileSnapshot inputs = snapshot_files(places.data);

  ArgvGenerator generator(seed, places);
  int failures = 0;
  uint64_t exits[3] = {0, 0, 0};  // how many ended 0, 1 and 2
  for (uint64_t i = 0; i < runs && failures < kMaxReportedFailures; ++i) {
    const std::vector<std::string> args = generator.next();
    std::vector<std::string> argv = {SHELF_CLI_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    CommandResult r = run_bounded(argv, env, kRunSeconds, places.scratch);
    const std::string where =
        "command line " + std::to_string(i) + " of seed " + std::to_string(seed) +
        " (SHELF_CLI_PROPERTY_SEED=" + std::to_string(seed) + " repeats it): " + shown(args);
    const std::string err = asks_for_progress(args) ? without_progress_line(r.err) : r.err;
    if (r.exit_code >= 0 && r.exit_code <= 2) ++exits[r.exit_code];
    std::vector<std::string> broken;
    if (r.exit_code == 124 || r.exit_code == 128 + 9) {
      broken.push_back("did not finish within " + std::to_string(kRunSeconds) + " s");
    } else if (r.exit_code > 128) {
      broken.push_back("killed by signal " + std::to_string(r.exit_code - 128));
    } else if (r.exit_code < 0 || r.exit_code > 2) {
      broken.push_back("exit code " + std::to_string(r.exit_code) + ", not 0, 1 or 2");
    }
    if (r.exit_code == 1 || r.exit_code == 2) {
      if (std::string p = stderr_shape_problem(err); !p.empty()) broken.push_back(p);
      if (err.rfind("shelf: ", 0) != 0 || err.size() < 10) {
        broken.push_back("stderr does not start with \"shelf: \" and a reason");
      }
    }
    if (std::string p = raw_output_problem(err); !p.empty()) {
      broken.push_back("stderr printed raw: " + p);
    }
    if (std::string p = raw_output_problem(r.out); !p.empty()) {
      broken.push_back("stdout printed raw: " + p);
    }
    if (snapshot_files(places.data) != inputs) {
      broken.push_back("changed a file outside the scratch directory");
    }
    if (broken.empty()) continue;
    ++failures;
    std::string why;
    for (const std::string& b : broken) why += "\n  " + b;
    ADD_FAILURE() << where << why << "\nexit " << r.exit_code << "\nstderr:\n"
                  << escape_unprintable(r.err.substr(0, 2000)) << "\nstdout:\n"
                  << escape_unprintable(r.out.substr(0, 500));
  }
  std::printf("seed %llu: %llu command lines: %llu ok, %llu failed, %llu usage errors\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(runs),
              static_cast<unsigned long long>(exits[0]), static_cast<unsigned long long>(exits[1]),
              static_cast<unsigned long long>(exits[2]));
  // A grammar that only ever makes usage errors would test the parser's
  // first refusal and nothing past it.
  if (failures == 0 && runs >= 100) {
    EXPECT_GT(exits[0], runs / 20) << "too few command lines that work";
    EXPECT_GT(exits[1], runs / 20) << "too few command lines that fail past parsing";
  }
}

}  // namespace
}  // namespace shelf::test
