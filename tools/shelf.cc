// shelf: the command-line tool. Publishes CSV files, lists, shows, removes
// datasets, shows the daemon's memory at a glance, and saves datasets to
// disk and loads them back (tools/snapshot.h).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <limits>
#include <optional>
#include <signal.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <boost/program_options.hpp>

#include <shelf/client.h>
#include <shelf/filter.h>
#include <shelf/limits.h>

#include "base/paths.h"
#include "base/units.h"
#include "base/utf8.h"
#include "tools/csv_table.h"
#include "tools/format.h"
#include "tools/holders.h"
#include "tools/metrics_fetch.h"
#include "tools/progress.h"
#include "tools/snapshot.h"
#include "tools/status_view.h"

namespace po = boost::program_options;
using namespace shelf;
using namespace shelf::tools;

namespace {

constexpr const char* kUsage = R"(Usage: shelf [--socket PATH] COMMAND [ARGS]

Commands:
  publish NAME FILE.csv...  publish CSV files as dataset NAME (one partition per file)
  list                      list the published datasets
  head NAME [-n N]          show the first rows of a dataset
  publish-view NAME --from BASE [--where EXPR] [--columns a,b] [--limit N]
                            publish a view: a definition each reader evaluates, no data
  persist VIEW NAME         publish the rows of a view as dataset NAME (materialise it)
  info NAME                 schema, partitions, sizes, checksums of a dataset
  unpublish NAME            remove a dataset (readers holding it keep it until they let go)
  pin NAME / unpin NAME     keep a dataset in memory: never spilled (shelfd --spill-dir)
  status                    memory and datasets at a glance
  wait NAME... [--timeout S]  return once every NAME is published (exit 1 at the timeout)
  events [--json]           print publishes, overrides, unpublishes as they happen
  metrics                   the daemon's figures in Prometheus's text format
  save DIR [NAME...]        write datasets (default: all) to files in DIR, with checksums
  load DIR [NAME...]        verify and publish datasets (default: all) saved in DIR

Run 'shelf COMMAND --help' for the options of a command.
The daemon is found at --socket, else $SHELF_SOCKET, else the per-user default.

Global options)";

// The ranges of the CLI's numbers. A screen refresh faster than 10 ms only
// burns the daemon's time; a day between refreshes is surely a typo.
constexpr uint64_t kMaxHeadRows = 1000000000;
constexpr double kMinWatchSeconds = 0.01;
constexpr double kMaxWatchSeconds = 86400;

// Exit codes: 0 ok, 1 the operation failed, 2 the command line is wrong.
constexpr int kFailed = 1;
constexpr int kUsageError = 2;

// Names and values from datasets (and from the user) as they may reach a
// terminal: no escape sequence from data is ever printed raw.
std::string shown(std::string_view text) { return escape_unprintable(text); }

int fail(const Status& status) {
  std::cerr << "shelf: " << shown(status.message()) << "\n";
  return kFailed;
}

int usage_error(const std::string& message, const std::string& command) {
  std::cerr << "shelf: " << shown(message) << "\nTry 'shelf "
            << (command.empty() ? "" : command + " ") << "--help'.\n";
  return kUsageError;
}

struct Command {
  std::string name;
  std::vector<std::string> args;
  std::string socket;
  std::chrono::milliseconds timeout{30000};  // for each answer of shelfd (--timeout)
  // --timeout as typed: `wait` reads it as how long to wait for the names.
  std::optional<std::string> timeout_text;
};

// The names a user sees for the options that hold a command's positional
// arguments: Boost's messages would name the internal option ("--name").
std::string user_facing(const std::string& option) {
  if (option == "--name") return "NAME";
  if (option == "--files") return "FILE.csv";
  if (option == "--dir") return "DIR";
  if (option == "--n") return "-n";
  return option;
}

// A Boost error as the user typed the command: option names as written, and
// a hint where a dataset name may have been taken for an option.
std::string usage_message(const po::error& e, const std::string& synopsis) {
  if (auto* missing = dynamic_cast<const po::required_option*>(&e)) {
    return "missing " + user_facing(missing->get_option_name()) + "; usage: shelf " + synopsis;
  }
  if (dynamic_cast<const po::too_many_positional_options_error*>(&e) != nullptr) {
    return "too many arguments; usage: shelf " + synopsis;
  }
  std::string text = e.what();
  if (auto* named = dynamic_cast<const po::error_with_option_name*>(&e)) {
    const std::string option = named->get_option_name();
    const std::string shown = user_facing(option);
    for (size_t at; option != shown && (at = text.find("'" + option + "'")) != std::string::npos;) {
      text.replace(at + 1, option.size(), shown);
    }
    if (dynamic_cast<const po::unknown_option*>(&e) != nullptr) {
      text += " (a dataset name that starts with '-' goes after '--', e.g. shelf " +
              synopsis.substr(0, synopsis.find(' ')) + " -- " + option + ")";
    }
  }
  return text;
}

// Parses a command's arguments; returns false (and sets *exit_code) on
// --help or an error.
bool parse_args(const Command& cmd, po::options_description& options,
                const po::positional_options_description& positional, po::variables_map* vm,
                int* exit_code, const std::string& synopsis) {
  options.add_options()("help,h", "show this help");
  try {
    po::store(po::command_line_parser(cmd.args).options(options).positional(positional).run(), *vm);
    if (vm->count("help")) {
      std::cout << "Usage: shelf " << synopsis << "\n\n" << options << "\n";
      *exit_code = 0;
      return false;
    }
    po::notify(*vm);
  } catch (const po::error& e) {
    *exit_code = usage_error(usage_message(e, synopsis), cmd.name);
    return false;
  }
  return true;
}

Result<Client> connect(const Command& cmd, const std::string& who) {
  ClientOptions options;
  options.socket = cmd.socket;
  options.client_name = "shelf " + who;
  options.request_timeout = cmd.timeout;
  return Client::connect(options);
}

// What list, status and publish say a view is.
std::string view_cell(const DatasetInfo& d) {
  return (d.view_of_graph ? std::string("Dask view") : "view of '" + shown(d.view_base) + "'") +
         " (" + format_bytes(d.memory_bytes) + ")";
}

std::string summary_line(const DatasetInfo& d) {
  if (d.view) return view_cell(d);
  return std::to_string(d.num_rows) + " rows in " + std::to_string(d.num_partitions) +
         " partition" + (d.num_partitions == 1 ? "" : "s") + ", " + std::to_string(d.num_columns) +
         " column" + (d.num_columns == 1 ? "" : "s") + ", " + format_bytes(d.memory_bytes);
}

std::string info_json(const DatasetInfo& d) {
  return "{\"name\":" + json_string(d.name) + ",\"rows\":" + std::to_string(d.num_rows) +
         ",\"columns\":" + std::to_string(d.num_columns) +
         ",\"partitions\":" + std::to_string(d.num_partitions) +
         ",\"data_bytes\":" + std::to_string(d.data_bytes) +
         ",\"memory_bytes\":" + std::to_string(d.memory_bytes) +
         ",\"created\":" + json_string(format_time(d.created_ns)) +
         ",\"publisher_uid\":" + std::to_string(d.publisher_uid) +
         ",\"publisher_pid\":" + std::to_string(d.publisher_pid) +
         ",\"leases\":" + std::to_string(d.leases) +
         ",\"spilled\":" + (d.spilled ? "true" : "false") +
         ",\"pinned\":" + (d.pinned ? "true" : "false") +
         ",\"view\":" + (d.view ? "true" : "false") +
         ",\"view_of_graph\":" + (d.view_of_graph ? "true" : "false") +
         ",\"view_base\":" + (d.view && !d.view_of_graph ? json_string(d.view_base) : "null") + "}";
}

// "-" for what a view does not know without being evaluated.
std::string count_cell(const DatasetInfo& d, uint64_t count) {
  return d.view ? "-" : std::to_string(count);
}

// What a dataset takes, for list and status: its memory, or, spilled, its
// bytes on disk; and whether it is pinned.
std::string memory_cell(const DatasetInfo& d) {
  if (d.view) return view_cell(d);
  return (d.spilled ? "spilled (" + format_bytes(d.data_bytes) + " on disk)"
                    : format_bytes(d.memory_bytes)) +
         (d.pinned ? ", pinned" : "");
}

// `name`'s entry in `stats`. NotFound when it is not published.
Result<DatasetInfo> find_info(const MemoryStats& stats, const std::string& name) {
  for (const DatasetInfo& d : stats.datasets) {
    if (d.name == name) return d;
  }
  return Status::not_found("dataset '" + name +
                           "' not found; `shelf list` shows the published datasets");
}

Result<DatasetInfo> find_info(Client& client, const std::string& name) {
  // status(), not list_datasets(): the lease counts come from the daemon.
  SHELF_ASSIGN_OR_RETURN(MemoryStats stats, client.status());
  return find_info(stats, name);
}

// shelf info's "held by" part: the processes holding `name`, this one aside.
std::string holders_text(const MemoryStats& stats, const std::string& name) {
  const Holders holders = holders_of(stats, name, static_cast<uint32_t>(::getpid()));
  std::string out;
  const char* label = "held by:     ";
  for (const ClientInfo* c : holders.current) {
    out += label + holder_line(*c, name, true) + "\n";
    label = "             ";
  }
  label = "earlier versions held by: ";
  for (const ClientInfo* c : holders.earlier) {
    out += label + holder_line(*c, name, false) + "\n";
    label = "                          ";
  }
  return out;
}

// ------------------------------------------------------------ commands --

// --delimiter: one character, or "\t" / "tab" for TSV.
bool parse_delimiter(const std::string& text, char* out) {
  if (text == "\\t" || text == "tab" || text == "\t") {
    *out = '\t';
    return true;
  }
  if (text.size() != 1 || text[0] == '"' || text[0] == '\r' || text[0] == '\n') return false;
  *out = text[0];
  return true;
}

std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> names;
  size_t start = 0;
  for (;;) {
    const size_t comma = text.find(',', start);
    names.push_back(text.substr(start, comma - start));
    if (comma == std::string::npos) return names;
    start = comma + 1;
  }
}

Progress::Mode progress_mode(bool forced, bool quiet) {
  return quiet ? Progress::Mode::kNever : forced ? Progress::Mode::kAlways : Progress::Mode::kAuto;
}

// ------------------------------------------------------------- publish --
// Two forms: CSV inputs (publish_csv), or a filtered copy of a published
// dataset (publish_from). cmd_publish parses the options of both once and
// picks the form by whether --from was given.

constexpr const char* kCsvSynopsis =
    "publish NAME FILE.csv... [--where EXPR] [--columns a,b] [--limit N] [--override] [--pin] "
    "[--partition-rows N] [--schema SPEC]";
constexpr const char* kFromSynopsis =
    "publish NAME --from BASE [--where EXPR] [--columns a,b] [--limit N] [--override] [--pin]";

// What `shelf publish` was given, for either form.
struct PublishArgs {
  std::string name;
  std::vector<std::string> files;
  bool override_existing = false;
  bool pin = false;
  // CSV inputs only.
  std::string schema_text, delimiter = ",", names_text, partition_rows_text, threads_text;
  std::vector<std::string> null_values;
  bool no_header = false, progress = false, quiet = false;
  // --from only.
  std::string base_name;
  // Either form: what to keep.
  std::string where, columns_text, limit_text;
};

// The options that belong to one form only: given with the other, they are
// a usage error that names them.
constexpr const char* kCsvOnlyOptions[] = {"partition-rows", "schema",   "delimiter",
                                           "no-header",      "names",    "null",
                                           "threads",        "progress", "quiet"};

// True when the user wrote `option` (a bool_switch is always in `vm`, as defaulted).
bool given(const po::variables_map& vm, const char* option) {
  return vm.count(option) > 0 && !vm[option].defaulted();
}

void add_publish_options(PublishArgs* a, po::options_description* options) {
  po::options_description common("Options"), csv("Options for CSV inputs"),
      from("A filtered copy of a published dataset"),
      filter("What to keep, of CSV inputs or of --from BASE (docs/filter.md)");
  // clang-format off
  common.add_options()
      ("name", po::value(&a->name), "dataset name")
      ("files", po::value(&a->files)->multitoken(),
       "CSV files (also .gz/.zst, by their first bytes); - for standard input")
      ("override", po::bool_switch(&a->override_existing), "replace a dataset of the same name")
      ("pin", po::bool_switch(&a->pin),
       "keep it in memory: never spilled to disk (shelfd --spill-dir); shelf unpin NAME undoes it");
  csv.add_options()
      ("partition-rows", po::value(&a->partition_rows_text),
       "cut each file into partitions of N rows (default: one partition per file)")
      ("schema", po::value(&a->schema_text),
       "force column types, e.g. id:int32,when:timestamp (default: inferred as bool, int64, "
       "uint64, float64 or string)")
      ("delimiter", po::value(&a->delimiter), "field delimiter: one character, or tab (default ,)")
      ("no-header", po::bool_switch(&a->no_header),
       "the first line is data: name columns with --names")
      ("names", po::value(&a->names_text), "column names for --no-header, e.g. id,name,balance")
      ("null", po::value(&a->null_values)->composing(),
       "an unquoted value that means null besides the empty field (repeatable)")
      ("threads", po::value(&a->threads_text), "parsing threads (default: one per core)")
      ("progress", po::bool_switch(&a->progress),
       "show progress even when stderr is not a terminal")
      ("quiet", po::bool_switch(&a->quiet), "no progress line");
  from.add_options()
      ("from", po::value(&a->base_name), "the published dataset to read");
  filter.add_options()
      ("where", po::value(&a->where), "keep the rows where EXPR is true, e.g. 'balance < 0'")
      ("columns", po::value(&a->columns_text), "keep these columns, in this order: a,b")
      ("limit", po::value(&a->limit_text), "keep at most N rows (the first ones)");
  // clang-format on
  options->add(common).add(csv).add(from).add(filter);
}

// "a,b" -> {"a", "b"}; an empty name is an error.
Result<std::vector<std::string>> split_columns(const std::string& text) {
  std::vector<std::string> names;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    std::string name = text.substr(start, comma == std::string::npos ? comma : comma - start);
    const size_t b = name.find_first_not_of(' '), e = name.find_last_not_of(' ');
    if (b == std::string::npos) {
      return Status::invalid_argument("--columns '" + text + "' has an empty column name");
    }
    names.push_back(name.substr(b, e - b + 1));
    if (comma == std::string::npos) return names;
    start = comma + 1;
  }
}

// --columns and --limit as given (empty, nullopt: not given). False with a
// usage error in `code`.
bool parse_keep(const Command& cmd, const PublishArgs& a, const po::variables_map& vm,
                std::vector<std::string>* columns, std::optional<uint64_t>* limit, int* code) {
  if (vm.count("columns")) {
    auto split = split_columns(a.columns_text);
    if (!split.ok()) {
      *code = usage_error(split.status().message(), cmd.name);
      return false;
    }
    *columns = std::move(split).value();
  }
  if (vm.count("limit")) {
    auto parsed = parse_count(a.limit_text, "--limit", 0, std::numeric_limits<uint64_t>::max());
    if (!parsed.ok()) {
      *code = usage_error(parsed.status().message(), cmd.name);
      return false;
    }
    *limit = *parsed;
  }
  return true;
}

// Loads the CSV inputs one file at a time into a table that is never
// published, and writes the rows `where` keeps into `out` (the columns
// `columns`, at most `limit` rows in all): besides the output, memory holds
// one file's table at a time.
Status write_csv_filtered(Client& client, const CsvPlan& plan, const std::string& where,
                          const std::vector<std::string>& columns, std::optional<uint64_t> limit,
                          TableBuilder& out, Progress* progress) {
  uint64_t kept = 0;
  for (size_t file = 0; file < plan.files.size(); ++file) {
    std::optional<uint64_t> left;
    if (limit) {
      if (kept >= *limit) break;
      left = *limit - kept;
    }
    SHELF_ASSIGN_OR_RETURN(Filter filter, Filter::parse(plan.schema, where, columns, left));
    SHELF_ASSIGN_OR_RETURN(TableBuilder staged, client.create_table(plan.schema));
    SHELF_RETURN_IF_ERROR(write_csv_file(plan, file, staged, progress));
    uint64_t rows = 0;
    SHELF_RETURN_IF_ERROR(write_filtered(staged, filter, out, &rows));
    kept += rows;
  }
  return Status();
}

int publish_csv(const Command& cmd, const PublishArgs& a, const po::variables_map& vm) {
  std::vector<std::string> columns;
  std::optional<uint64_t> limit;
  int code;
  if (!parse_keep(cmd, a, vm, &columns, &limit, &code)) return code;
  const bool filtering = vm.count("where") || vm.count("columns") || vm.count("limit");
  uint64_t partition_rows = 0;  // one partition per file
  if (vm.count("partition-rows")) {
    auto rows = parse_count(a.partition_rows_text, "--partition-rows", 1, kMaxRowsPerPartition);
    if (!rows.ok()) return usage_error(rows.status().message(), cmd.name);
    partition_rows = *rows;
  }
  unsigned threads = 0;  // one per core
  if (vm.count("threads")) {
    auto n = parse_count(a.threads_text, "--threads", 1, kMaxCsvThreads);
    if (!n.ok()) return usage_error(n.status().message(), cmd.name);
    threads = static_cast<unsigned>(*n);
  }
  CsvOptions csv;
  csv.partition_rows = partition_rows;
  csv.threads = threads;
  csv.header = !a.no_header;
  csv.null_values = a.null_values;
  if (!parse_delimiter(a.delimiter, &csv.delimiter)) {
    return usage_error("--delimiter must be one character other than a quote, CR or LF (or tab)",
                       cmd.name);
  }
  if (vm.count("names")) csv.names = split_names(a.names_text);
  if (a.no_header != (vm.count("names") > 0)) {
    return usage_error("--no-header and --names go together", cmd.name);
  }
  if (std::count(a.files.begin(), a.files.end(), "-") > 1) {
    return usage_error("standard input (-) can be read once only", cmd.name);
  }
  if (!a.schema_text.empty()) {
    auto forced = parse_schema_option(a.schema_text);
    if (!forced.ok()) return usage_error(forced.status().message(), cmd.name);
    csv.forced_types = std::move(forced).value();
  }
  Progress progress_line("publish", progress_mode(a.progress, a.quiet));
  csv.progress = &progress_line;
  auto failed = [&](const Status& s) {  // the progress line goes before the message
    progress_line.finish();
    return fail(s);
  };
  // Check everything before asking the daemon for memory: a bad file
  // publishes nothing and costs nothing.
  auto plan = plan_csv(a.files, csv);
  if (!plan.ok()) return failed(plan.status());
  Schema schema = plan->schema;
  if (filtering) {  // a bad expression is a wrong command line: exit 2, nothing asked of shelfd
    auto filter = Filter::parse(plan->schema, a.where, columns, limit);
    if (!filter.ok()) {
      progress_line.finish();
      return usage_error(filter.status().message(), cmd.name);
    }
    schema = filter->output_schema();
  }
  auto client = connect(cmd, "publish");
  if (!client.ok()) return failed(client.status());
  auto table = client->create_table(schema);
  if (!table.ok()) return failed(table.status());
  Status written = filtering ? write_csv_filtered(*client, *plan, a.where, columns, limit, *table,
                                                  &progress_line)
                             : write_csv(*plan, *table, &progress_line);
  if (!written.ok()) return failed(written);
  PublishOptions publish_options;
  publish_options.override_existing = a.override_existing;
  publish_options.pin = a.pin;
  if (Status s = client->publish_dataset(a.name, *table, publish_options); !s.ok()) {
    return failed(s);
  }
  progress_line.finish();
  for (const std::string& w : plan->warnings) std::cerr << "shelf: warning: " << w << "\n";
  auto info = find_info(*client, a.name);
  if (!info.ok()) return failed(info.status());
  std::cout << "published '" << shown(a.name) << "': " << summary_line(*info);
  if (filtering) std::cout << " (filtered from " << plan->total_rows << " CSV rows)";
  std::cout << "\n";
  return 0;
}

int publish_from(const Command& cmd, const PublishArgs& a, const po::variables_map& vm) {
  std::vector<std::string> columns;
  std::optional<uint64_t> limit;
  int code;
  if (!parse_keep(cmd, a, vm, &columns, &limit, &code)) return code;
  auto client = connect(cmd, "publish");
  if (!client.ok()) return fail(client.status());
  auto base = client->get_dataset(a.base_name);
  if (!base.ok()) return fail(base.status());
  // A bad expression or column list is a wrong command line: exit 2, nothing asked of shelfd.
  auto filter = Filter::parse(base->schema(), a.where, columns, limit);
  if (!filter.ok()) return usage_error(filter.status().message(), cmd.name);
  auto table = client->create_table(filter->output_schema());
  if (!table.ok()) return fail(table.status());
  if (Status s = write_filtered(*base, *filter, *table); !s.ok()) return fail(s);
  PublishOptions publish_options;
  publish_options.override_existing = a.override_existing;
  publish_options.pin = a.pin;
  if (Status s = client->publish_dataset(a.name, *table, publish_options); !s.ok()) return fail(s);
  auto info = find_info(*client, a.name);
  if (!info.ok()) return fail(info.status());
  std::cout << "published '" << shown(a.name) << "': " << summary_line(*info) << " (from '"
            << shown(a.base_name) << "', " << base->num_rows() << " rows)\n";
  return 0;
}

int cmd_publish(const Command& cmd) {
  PublishArgs a;
  po::options_description options;
  add_publish_options(&a, &options);
  po::positional_options_description positional;
  positional.add("name", 1).add("files", -1);
  po::variables_map vm;
  int code;
  const std::string synopsis = std::string(kCsvSynopsis) + "\n   or: shelf " + kFromSynopsis;
  if (!parse_args(cmd, options, positional, &vm, &code, synopsis)) return code;
  if (vm.count("from")) {
    if (!a.files.empty()) {
      return usage_error("publish --from takes no CSV files: '" + a.files.front() +
                             "' was given with --from " + a.base_name,
                         cmd.name);
    }
    for (const char* option : kCsvOnlyOptions) {
      if (given(vm, option)) {
        return usage_error(
            "--" + std::string(option) + " is for CSV files; it cannot go with --from", cmd.name);
      }
    }
    if (!vm.count("name")) {
      return usage_error(std::string("missing NAME; usage: shelf ") + kFromSynopsis, cmd.name);
    }
    return publish_from(cmd, a, vm);
  }
  if (a.files.empty()) {
    return usage_error(std::string("missing FILE.csv; usage: shelf ") + kCsvSynopsis, cmd.name);
  }
  return publish_csv(cmd, a, vm);
}

int cmd_list(const Command& cmd) {
  bool json = false;
  po::options_description options("Options");
  options.add_options()("json", po::bool_switch(&json), "print JSON");
  po::variables_map vm;
  int code;
  if (!parse_args(cmd, options, {}, &vm, &code, "list [--json]")) return code;
  auto client = connect(cmd, "list");
  if (!client.ok()) return fail(client.status());
  // status(), not list_datasets(): the lease counts come from the daemon.
  auto status = client->status();
  if (!status.ok()) return fail(status.status());
  const std::vector<DatasetInfo>* datasets = &status->datasets;
  if (json) {
    std::string out = "[";
    for (size_t i = 0; i < datasets->size(); ++i) {
      out += (i ? "," : "") + info_json((*datasets)[i]);
    }
    std::cout << out << "]\n";
    return 0;
  }
  if (datasets->empty()) {
    std::cout << "no datasets published\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const DatasetInfo& d : *datasets) {
    rows.push_back({shown(d.name), count_cell(d, d.num_rows),
                    d.view_of_graph                ? "-"
                    : d.view && d.num_columns == 0 ? "all"
                                                   : std::to_string(d.num_columns),
                    count_cell(d, d.num_partitions), memory_cell(d),
                    format_time(d.created_ns - d.created_ns % 1000000000),
                    std::to_string(d.leases)});
  }
  std::cout << render_table(
      {"NAME", "ROWS", "COLUMNS", "PARTITIONS", "MEMORY", "CREATED", "LEASES"}, rows,
      {false, true, true, true, true, false, true});
  return 0;
}

int cmd_head(const Command& cmd) {
  std::string name;
  std::string n_text;
  po::options_description options("Options");
  options.add_options()("name", po::value(&name)->required(), "dataset name")(
      "n,n", po::value(&n_text)->default_value("5"), "number of rows");
  po::positional_options_description positional;
  positional.add("name", 1);
  po::variables_map vm;
  int code;
  if (!parse_args(cmd, options, positional, &vm, &code, "head NAME [-n N]")) return code;
  auto rows_wanted = parse_count(n_text, "-n", 0, kMaxHeadRows);
  if (!rows_wanted.ok()) return usage_error(rows_wanted.status().message(), cmd.name);
  const uint64_t n = *rows_wanted;
  auto client = connect(cmd, "head");
  if (!client.ok()) return fail(client.status());
  // A view is evaluated only as far as the rows shown (and one more, to
  // know whether there are more).
  auto ds = client->get_dataset(name, GetOptions{n + 1});
  if (!ds.ok()) return fail(ds.status());
  if (ds->view_definition() && !ds->view_definition()->graph.empty()) {
    std::cout << "'" << shown(name) << "' is a view of a Dask graph (" << ds->data_bytes()
              << " bytes pickled), which only Python evaluates: "
                 "shelf.Client().get_dataset(name) gives the collection\n";
    return 0;
  }
  if (ds->is_bytes()) {
    std::cout << "'" << shown(name) << "' is a raw-bytes dataset of " << ds->num_partitions()
              << " partitions, " << ds->data_bytes() << " bytes\n";
    return 0;
  }
  const Schema& schema = ds->schema();
  std::vector<std::string> header = {""};
  std::vector<bool> right = {false};
  for (const Field& f : schema) {
    header.push_back(shown(f.name));
    right.push_back(f.type != Type::kString);
  }
  std::vector<std::vector<std::string>> rows;
  uint64_t index = 0;
  for (uint64_t p = 0; p < ds->num_partitions() && index < n; ++p) {
    std::vector<ColumnView> columns;
    for (size_t c = 0; c < schema.size(); ++c) columns.push_back(ds->column(p, c));
    for (uint64_t r = 0; r < ds->num_rows(p) && index < n; ++r, ++index) {
      std::vector<std::string> row = {std::to_string(index)};
      for (const ColumnView& col : columns) {
        std::string v = format_value(col, r);
        if (v.size() > 60) v = v.substr(0, 57) + "...";
        row.push_back(std::move(v));
      }
      rows.push_back(std::move(row));
    }
  }
  // pandas right-aligns everything; we left-align strings, which reads better
  // for names and keeps numbers lined up on their last digit.
  std::cout << render_table(header, rows, right);
  if (ds->view_definition()) {
    if (ds->num_rows() > index) std::cout << "... more rows (a view: not counted)\n";
  } else if (ds->num_rows() > index) {
    const uint64_t more = ds->num_rows() - index;
    std::cout << "... " << more << " more row" << (more == 1 ? "" : "s") << "\n";
  }
  return 0;
}

// shelf info's schema: a JSON array of {name, type}, and a COLUMN/TYPE table.
std::string schema_json(const Schema& schema) {
  std::string out = "[";
  for (size_t c = 0; c < schema.size(); ++c) {
    out += std::string(c ? "," : "") + "{\"name\":" + json_string(schema[c].name) +
           ",\"type\":" + json_string(type_name(schema[c].type)) + "}";
  }
  return out + "]";
}
std::string schema_table(const Schema& schema) {
  std::vector<std::vector<std::string>> columns;
  for (const Field& f : schema) columns.push_back({shown(f.name), std::string(type_name(f.type))});
  return render_table({"COLUMN", "TYPE"}, columns, {false, false});
}

std::string join_columns(const std::vector<std::string>& columns) {
  std::string out;
  for (const std::string& c : columns) out += (out.empty() ? "" : ",") + c;
  return out;
}

// shelf info of a view of a Dask graph: what it reads; only Python evaluates it.
int print_graph_view_info(const ViewDefinition& v, const DatasetInfo& info, bool json) {
  std::string bases, bases_json;
  for (const std::string& b : v.graph_bases) {
    bases += (bases.empty() ? "'" : ", '") + shown(b) + "'";
    bases_json += (bases_json.empty() ? "" : ",") + json_string(b);
  }
  if (json) {
    std::string out = info_json(info);
    out.pop_back();
    std::cout << out << ",\"definition\":{\"graph_bytes\":" << v.graph.size()
              << ",\"graph_bases\":[" << bases_json << "]}}\n";
    return 0;
  }
  std::cout << "name:        " << shown(info.name) << "\n"
            << "view of:     a Dask graph, " << v.graph.size()
            << " bytes pickled (evaluated by Python, from scratch, by each reader)\n"
            << "reads:       " << (bases.empty() ? "no shelf dataset" : bases) << "\n"
            << "memory:      " << format_bytes(info.memory_bytes) << " (its definition)\n"
            << "created:     " << format_time(info.created_ns) << " by uid " << info.publisher_uid
            << ", pid " << info.publisher_pid << "\n";
  return 0;
}

// shelf info of a view: its definition and what it gives, without
// evaluating it (`head` and `persist` do).
// `schema`: what it gives, when it can be read now (null: it cannot).
int print_view_info(const ViewDefinition& v, const Schema* schema, const DatasetInfo& info,
                    bool json) {
  if (!v.graph.empty()) return print_graph_view_info(v, info, json);
  if (json) {
    std::string out = info_json(info);
    out.pop_back();
    std::string columns;
    for (const std::string& c : v.columns) columns += (columns.empty() ? "" : ",") + json_string(c);
    out += ",\"definition\":{\"base\":" + json_string(v.base) +
           ",\"where\":" + json_string(v.where) + ",\"columns\":[" + columns +
           "],\"limit\":" + (v.limit ? std::to_string(*v.limit) : "null") +
           "},\"schema\":" + schema_json(schema ? *schema : Schema{});
    std::cout << out << "}\n";
    return 0;
  }
  std::cout << "name:        " << shown(info.name) << "\n"
            << "view of:     '" << shown(v.base) << "' (evaluated by each reader; no data)\n"
            << "where:       " << (v.where.empty() ? "(every row)" : shown(v.where)) << "\n"
            << "columns:     " << (v.columns.empty() ? "(all)" : shown(join_columns(v.columns)))
            << "\n"
            << "limit:       " << (v.limit ? std::to_string(*v.limit) : "(none)") << "\n"
            << "memory:      " << format_bytes(info.memory_bytes) << " (its definition)\n"
            << "created:     " << format_time(info.created_ns) << " by uid " << info.publisher_uid
            << ", pid " << info.publisher_pid << "\n";
  if (schema != nullptr) std::cout << "\n" << schema_table(*schema);
  return 0;
}

int cmd_info(const Command& cmd) {
  std::string name;
  bool json = false;
  po::options_description options("Options");
  options.add_options()("name", po::value(&name)->required(), "dataset name")(
      "json", po::bool_switch(&json), "print JSON");
  po::positional_options_description positional;
  positional.add("name", 1);
  po::variables_map vm;
  int code;
  if (!parse_args(cmd, options, positional, &vm, &code, "info NAME [--json]")) return code;
  auto client = connect(cmd, "info");
  if (!client.ok()) return fail(client.status());
  auto ds = client->get_dataset(name);
  if (!ds.ok()) {
    // A view that cannot be read now (its base gone, or replaced by one it
    // does not fit) still has a definition to show, for mending it.
    auto definition = client->view_definition(name);
    auto stats = client->status();
    if (!definition.ok() || !stats.ok()) return fail(ds.status());
    auto info = find_info(*stats, name);
    if (!info.ok()) return fail(ds.status());
    print_view_info(*definition, nullptr, *info, json);
    return fail(ds.status());
  }
  auto stats = client->status();
  if (!stats.ok()) return fail(stats.status());
  auto info = find_info(*stats, name);
  if (!info.ok()) return fail(info.status());
  const Schema& schema = ds->schema();
  auto hex = [](uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return std::string(buf);
  };
  if (ds->view_definition()) return print_view_info(*ds->view_definition(), &schema, *info, json);
  // This command's own lease is not one of the dataset's readers.
  if (info->leases > 0) info->leases -= 1;
  if (json) {
    std::string out = info_json(*info);
    out.pop_back();
    const Holders holders = holders_of(*stats, name, static_cast<uint32_t>(::getpid()));
    out += ",\"holders\":" + holders_json(holders.current, name, true) +
           ",\"earlier_version_holders\":" + holders_json(holders.earlier, name, false);
    out += ",\"schema\":" + schema_json(schema) + ",\"partition_list\":[";
    for (uint64_t p = 0; p < ds->num_partitions(); ++p) {
      out += std::string(p ? "," : "") + "{\"rows\":" + std::to_string(ds->num_rows(p)) +
             ",\"columns\":[";
      for (size_t c = 0; c < schema.size(); ++c) {
        const ColumnView col = ds->column(p, c);
        out += std::string(c ? "," : "") + "{\"nulls\":" + std::to_string(col.null_count()) +
               ",\"data_bytes\":" + std::to_string(col.data().size()) + ",\"xxh3\":\"" +
               hex(ds->checksum(p, c, 2)) + "\"}";
      }
      out += "]}";
    }
    std::cout << out << "]}\n";
    return 0;
  }
  std::cout << "name:        " << shown(info->name) << "\n"
            << "rows:        " << info->num_rows << " in " << info->num_partitions << " partition"
            << (info->num_partitions == 1 ? "" : "s") << "\n"
            << "memory:      " << format_bytes(info->memory_bytes) << " (buffers "
            << format_bytes(info->data_bytes) << ")\n"
            << "created:     " << format_time(info->created_ns) << " by uid " << info->publisher_uid
            << ", pid " << info->publisher_pid << "\n"
            << "leases:      " << info->leases << " (besides this command's)\n"
            << "pinned:      " << (info->pinned ? "yes: never spilled (shelf unpin NAME)" : "no")
            << "\n"
            << holders_text(*stats, name) << "\n";
  std::cout << schema_table(schema) << "\n";
  std::vector<std::vector<std::string>> parts;
  for (uint64_t p = 0; p < ds->num_partitions(); ++p) {
    for (size_t c = 0; c < schema.size(); ++c) {
      const ColumnView col = ds->column(p, c);
      parts.push_back({std::to_string(p), shown(schema[c].name), std::to_string(col.length()),
                       std::to_string(col.null_count()), format_bytes(col.data().size()),
                       hex(ds->checksum(p, c, 2))});
    }
  }
  std::cout << render_table({"PARTITION", "COLUMN", "ROWS", "NULLS", "DATA", "XXH3(DATA)"}, parts,
                            {true, false, true, true, true, false});
  return 0;
}

// The one NAME of `shelf COMMAND NAME`; false (and *exit_code) on --help or
// a usage error.
bool parse_name(const Command& cmd, std::string* name, int* exit_code) {
  po::options_description options("Options");
  options.add_options()("name", po::value(name)->required(), "dataset name");
  po::positional_options_description positional;
  positional.add("name", 1);
  po::variables_map vm;
  return parse_args(cmd, options, positional, &vm, exit_code, cmd.name + " NAME");
}

int cmd_unpublish(const Command& cmd) {
  std::string name;
  bool cascade = false;
  po::options_description options("Options");
  options.add_options()("name", po::value(&name)->required(), "dataset name")(
      "cascade", po::bool_switch(&cascade), "also remove the views that read it");
  po::positional_options_description positional;
  positional.add("name", 1);
  po::variables_map vm;
  int code;
  if (!parse_args(cmd, options, positional, &vm, &code, "unpublish NAME [--cascade]")) return code;
  auto client = connect(cmd, "unpublish");
  if (!client.ok()) return fail(client.status());
  // What a cascade removed: the views listed before it and not after.
  std::vector<std::string> before, views;
  if (cascade) {
    auto list = client->list_datasets();
    if (!list.ok()) return fail(list.status());
    for (const DatasetInfo& d : *list) {
      if (d.view) before.push_back(d.name);
    }
  }
  if (Status s = client->unpublish_dataset(name, UnpublishOptions{cascade}); !s.ok()) {
    return fail(s);
  }
  if (cascade) {
    auto after = client->datasets().keys();
    if (!after.ok()) return fail(after.status());
    std::sort(before.begin(), before.end());
    std::sort(after->begin(), after->end());
    std::set_difference(before.begin(), before.end(), after->begin(), after->end(),
                        std::back_inserter(views));
    std::erase(views, name);
  }
  std::cout << "unpublished '" << shown(name) << "'";
  if (!views.empty()) {
    std::cout << " and the views that read it:";
    for (size_t i = 0; i < views.size(); ++i)
      std::cout << (i ? ", '" : " '") << shown(views[i]) << "'";
  }
  std::cout << "\n";
  return 0;
}

// ---------------------------------------------------------------- views --

int cmd_publish_view(const Command& cmd) {
  PublishArgs a;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("name", po::value(&a.name), "view name")
      ("from", po::value(&a.base_name), "the dataset (or view) it reads")
      ("where", po::value(&a.where), "keep the rows where EXPR is true, e.g. 'balance < 0'")
      ("columns", po::value(&a.columns_text), "keep these columns, in this order: a,b")
      ("limit", po::value(&a.limit_text), "keep at most N rows (the first ones)")
      ("override", po::bool_switch(&a.override_existing), "replace a dataset of the same name");
  // clang-format on
  po::positional_options_description positional;
  positional.add("name", 1);
  po::variables_map vm;
  int code;
  const std::string synopsis =
      "publish-view NAME --from BASE [--where EXPR] [--columns a,b] [--limit N] [--override]";
  if (!parse_args(cmd, options, positional, &vm, &code, synopsis)) return code;
  // In the order the synopsis names them (Boost would name --from first).
  if (!vm.count("name")) return usage_error("missing NAME; usage: shelf " + synopsis, cmd.name);
  if (!vm.count("from")) return usage_error("missing --from; usage: shelf " + synopsis, cmd.name);
  ViewDefinition view{a.base_name, a.where, {}, std::nullopt};
  if (!parse_keep(cmd, a, vm, &view.columns, &view.limit, &code)) return code;
  auto client = connect(cmd, "publish-view");
  if (!client.ok()) return fail(client.status());
  // A bad expression or column list is a wrong command line: exit 2, as
  // for publish --from. The base is not evaluated: its schema is enough.
  auto base = client->get_dataset(a.base_name, GetOptions{0});
  if (!base.ok()) return fail(base.status());
  auto filter = Filter::parse(base->schema(), view.where, view.columns, view.limit);
  if (!filter.ok()) return usage_error(filter.status().message(), cmd.name);
  base->release();
  PublishOptions publish_options;
  publish_options.override_existing = a.override_existing;
  if (Status s = client->publish_view(a.name, view, publish_options); !s.ok()) return fail(s);
  std::cout << "published view '" << shown(a.name) << "' of '" << shown(a.base_name) << "'"
            << (view.where.empty() ? "" : " where " + shown(view.where))
            << ": no data, each reader evaluates it\n";
  return 0;
}

int cmd_persist(const Command& cmd) {
  std::string view_name, name;
  bool override_existing = false, pin = false;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("view", po::value(&view_name), "the view to materialise")
      ("name", po::value(&name), "the dataset to publish its rows as")
      ("override", po::bool_switch(&override_existing), "replace a dataset of the same name")
      ("pin", po::bool_switch(&pin), "keep it in memory: never spilled (shelfd --spill-dir)");
  // clang-format on
  po::positional_options_description positional;
  positional.add("view", 1).add("name", 1);
  po::variables_map vm;
  int code;
  const std::string synopsis = "persist VIEW NAME [--override] [--pin]";
  if (!parse_args(cmd, options, positional, &vm, &code, synopsis)) return code;
  // In the order the synopsis names them (Boost would name NAME first).
  if (!vm.count("view")) return usage_error("missing VIEW; usage: shelf " + synopsis, cmd.name);
  if (!vm.count("name")) return usage_error("missing NAME; usage: shelf " + synopsis, cmd.name);
  auto client = connect(cmd, "persist");
  if (!client.ok()) return fail(client.status());
  if (Status s = client->persist_view(view_name, name, PublishOptions{override_existing, pin});
      !s.ok()) {
    return fail(s);
  }
  auto info = find_info(*client, name);
  if (!info.ok()) return fail(info.status());
  std::cout << "persisted view '" << shown(view_name) << "' as '" << shown(name)
            << "': " << summary_line(*info) << "\n";
  return 0;
}

// shelf pin NAME, shelf unpin NAME.
int cmd_pin(const Command& cmd, bool pinned) {
  std::string name;
  int code;
  if (!parse_name(cmd, &name, &code)) return code;
  auto client = connect(cmd, cmd.name);
  if (!client.ok()) return fail(client.status());
  if (Status s = client->pin_dataset(name, pinned); !s.ok()) return fail(s);
  std::cout << (pinned ? "pinned '" : "unpinned '") << shown(name) << "'"
            << (pinned ? ": it stays in memory until unpinned or unpublished\n"
                       : ": shelfd may spill it again\n");
  return 0;
}

std::string status_json(const MemoryStats& m, ClientOrder order) {
  std::string out =
      "{\"socket\":" + json_string(m.socket_path) + ",\"segment\":" + json_string(m.segment_name) +
      ",\"shm_dir\":" + json_string(m.shm_dir) + ",\"page_bytes\":" + std::to_string(m.page_bytes) +
      ",\"huge_page_bytes\":" + std::to_string(m.huge_page_bytes) +
      ",\"daemon_pid\":" + std::to_string(m.daemon_pid) +
      ",\"started\":" + json_string(format_time(m.started_ns)) +
      ",\"memory_limit\":" + std::to_string(m.memory_limit) +
      ",\"used_bytes\":" + std::to_string(m.used_bytes) +
      ",\"free_bytes\":" + std::to_string(m.free_bytes()) +
      ",\"resident_bytes\":" + std::to_string(m.resident_bytes) +
      ",\"index_bytes\":" + std::to_string(m.index_bytes) +
      ",\"unsealed_bytes\":" + std::to_string(m.unsealed_bytes) +
      ",\"pending_free_bytes\":" + std::to_string(m.pending_free_bytes) +
      ",\"connections\":" + std::to_string(m.num_connections) +
      ",\"leases\":" + std::to_string(m.num_leases) +
      ",\"num_datasets\":" + std::to_string(m.datasets.size()) + ",\"datasets\":[";
  for (size_t i = 0; i < m.datasets.size(); ++i) out += (i ? "," : "") + info_json(m.datasets[i]);
  out += "],\"generation\":" + std::to_string(m.generation) + ",\"quarantined\":[";
  for (size_t i = 0; i < m.quarantined.size(); ++i) {
    const QuarantinedDataset& q = m.quarantined[i];
    out += std::string(i ? "," : "") + "{\"name\":" + json_string(q.name) +
           ",\"memory_bytes\":" + std::to_string(q.memory_bytes) +
           ",\"reason\":" + json_string(q.reason) + "}";
  }
  out += "],\"unpublished\":[";
  for (size_t i = 0; i < m.unpublished.size(); ++i) {
    const UnpublishedDatasetInfo& u = m.unpublished[i];
    out += std::string(i ? "," : "") + "{\"name\":" + json_string(u.name) +
           ",\"memory_bytes\":" + std::to_string(u.memory_bytes) +
           ",\"leases\":" + std::to_string(u.leases) +
           ",\"restart_hold\":" + (u.restart_hold ? "true" : "false") + "}";
  }
  return out + "],\"clients\":" + clients_json(m.clients, order) +
         ",\"users\":" + users_json(m.users) +
         ",\"verifying\":{\"datasets_left\":" + std::to_string(m.verifying.datasets_left) +
         ",\"bytes_left\":" + std::to_string(m.verifying.bytes_left) +
         ",\"bytes_done\":" + std::to_string(m.verifying.bytes_done) + "}" +
         ",\"spill\":{\"dir\":" + json_string(m.spilling.dir) +
         ",\"above_bytes\":" + std::to_string(m.spilling.above_bytes) +
         ",\"datasets\":" + std::to_string(m.spilling.datasets) +
         ",\"file_bytes\":" + std::to_string(m.spilling.file_bytes) + "}}";
}

// The segment's page size, and with huge pages what lies in them, for status.
std::string pages_line(const MemoryStats& m) {
  if (m.page_bytes <= 4096) {
    return "pages:    4 KiB (a tmpfs mounted huge=within_size, given as shelfd --shm-dir, "
           "has 2 MiB pages)";
  }
  const uint64_t data = m.used_bytes - m.index_bytes;
  char pct[16];
  std::snprintf(
      pct, sizeof pct, "%.0f%%",
      data ? 100.0 * static_cast<double>(m.huge_page_bytes) / static_cast<double>(data) : 100.0);
  return "pages:    " + format_bytes(m.page_bytes) + " (huge): " + format_bytes(m.huge_page_bytes) +
         " of the " + format_bytes(data) + " of data can be in huge pages (" + pct + ")";
}

// Where shelfd spills and what lies there, for status (shelfd --spill-dir).
std::string spill_line(const MemoryStats& m) {
  const MemoryStats::Spilling& s = m.spilling;
  std::string when = "when a request needs the memory";
  if (s.above_bytes < m.memory_limit) {
    char pct[16];
    std::snprintf(pct, sizeof pct, "%.0f%%",
                  100.0 * static_cast<double>(s.above_bytes) /
                      static_cast<double>(std::max<uint64_t>(m.memory_limit, 1)));
    when = "past " + format_bytes(s.above_bytes) + " (" + pct + " of the limit)";
  }
  return "spill:    " + std::to_string(s.datasets) + " datasets on disk, " +
         format_bytes(s.file_bytes) + " in " + shown(s.dir) + "; spills " + when;
}

// What is left of the checks of a restart, for status.
std::string verifying_line(const MemoryStats::Verification& v) {
  const uint64_t total = v.bytes_done + v.bytes_left;
  char pct[16];
  std::snprintf(
      pct, sizeof pct, "%.0f%%",
      total ? 100.0 * static_cast<double>(v.bytes_done) / static_cast<double>(total) : 100.0);
  return "checking: the checksums of " + std::to_string(v.datasets_left) +
         " datasets found at restart, " + format_bytes(v.bytes_done) + " of " +
         format_bytes(total) + " done (" + pct + "); a get of one waits for its own";
}

std::string status_text(const MemoryStats& m) {
  const double percent = m.memory_limit ? 100.0 * static_cast<double>(m.used_bytes) /
                                              static_cast<double>(m.memory_limit)
                                        : 0;
  char pct[16];
  std::snprintf(pct, sizeof pct, "%.1f%%", percent);
  std::string out = "shelfd pid " + std::to_string(m.daemon_pid) + " at " + m.socket_path +
                    ", segment " + m.shm_dir + "/" + m.segment_name + " (generation " +
                    std::to_string(m.generation) + "), up since " +
                    format_time(m.started_ns - m.started_ns % 1000000000) + "\n";
  out += "memory:   " + format_bytes(m.used_bytes) + " used of " + format_bytes(m.memory_limit) +
         " (" + pct + "), " + format_bytes(m.free_bytes()) + " free\n";
  out += "          resident in " + m.shm_dir + " " + format_bytes(m.resident_bytes) + "; index " +
         format_bytes(m.index_bytes) + ", being written " + format_bytes(m.unsealed_bytes) +
         ", freed but not yet back " + format_bytes(m.pending_free_bytes) + "\n";
  out += pages_line(m) + "\n";
  out += "datasets: " + std::to_string(m.datasets.size()) + ", leases held " +
         std::to_string(m.num_leases) + ", connections " + std::to_string(m.num_connections) + "\n";
  if (m.verifying.datasets_left > 0) out += verifying_line(m.verifying) + "\n";
  if (!m.spilling.dir.empty()) out += spill_line(m) + "\n";
  if (!m.datasets.empty()) {
    std::vector<std::vector<std::string>> rows;
    for (const DatasetInfo& d : m.datasets) {
      rows.push_back(
          {shown(d.name), memory_cell(d), count_cell(d, d.num_rows), std::to_string(d.leases)});
    }
    out +=
        "\n" + render_table({"NAME", "MEMORY", "ROWS", "LEASES"}, rows, {false, true, true, true});
  }
  if (!m.quarantined.empty()) {
    out += "\nquarantined: " + std::to_string(m.quarantined.size()) +
           " damaged datasets found at restart, not served (shelf unpublish NAME frees them)\n";
    std::vector<std::vector<std::string>> rows;
    for (const QuarantinedDataset& q : m.quarantined) {
      rows.push_back({shown(q.name), format_bytes(q.memory_bytes), shown(q.reason)});
    }
    out += render_table({"NAME", "MEMORY", "REASON"}, rows, {false, true, false});
  }
  // Per user when it says something: quotas, or more than one user.
  const bool quotas = std::any_of(m.users.begin(), m.users.end(),
                                  [](const UserUsageInfo& u) { return u.quota_bytes > 0; });
  if (quotas || m.users.size() > 1) out += "\nusers:\n" + users_table(m.users);
  if (const std::string holder = biggest_unpublished_holder(m); !holder.empty()) {
    out += "\n" + holder + "\n";
  }
  return out;
}

std::string throughput(uint64_t bytes, double seconds) {
  char buf[64];
  // A rate over a few milliseconds says nothing: show it for larger snapshots only.
  if (seconds < 0.05) {
    std::snprintf(buf, sizeof buf, "%.3f s", seconds);
  } else {
    // In the unit that shows the rate: a small snapshot is not "0.00 GB/s".
    const double rate = static_cast<double>(bytes) / seconds;
    std::snprintf(buf, sizeof buf, "%.2f s (%s/s)", seconds,
                  format_bytes(static_cast<uint64_t>(rate)).c_str());
  }
  return buf;
}

std::string entry_line(const SnapshotEntry& e) {
  return std::to_string(e.rows) + " rows in " + std::to_string(e.partitions) + " partition" +
         (e.partitions == 1 ? "" : "s") + ", " + format_bytes(e.bytes);
}

int cmd_save(const Command& cmd) {
  std::string dir;
  std::vector<std::string> names;
  po::options_description options("Options");
  bool progress = false, quiet = false;
  options.add_options()("dir", po::value(&dir)->required(), "an existing directory")(
      "names", po::value(&names)->multitoken(), "datasets to save (default: all)")(
      "progress", po::bool_switch(&progress), "show progress even when stderr is not a terminal")(
      "quiet", po::bool_switch(&quiet), "no progress line");
  po::positional_options_description positional;
  positional.add("dir", 1).add("names", -1);
  po::variables_map vm;
  int code;
  if (!parse_args(cmd, options, positional, &vm, &code, "save DIR [NAME...]")) return code;
  auto client = connect(cmd, "save");
  if (!client.ok()) return fail(client.status());
  Progress progress_line("save", progress_mode(progress, quiet));
  auto report = save_snapshot(*client, dir, names, &progress_line);
  progress_line.finish();
  if (!report.ok()) return fail(report.status());
  for (const std::string& name : report->views) {
    std::cout << "skipped view '" << shown(name) << "': views hold no data and are not saved\n";
  }
  for (const std::string& name : report->skipped) {
    std::cout << "skipped '" << shown(name) << "': unpublished while saving\n";
  }
  for (const SnapshotEntry& e : report->datasets) {
    std::cout << "saved '" << shown(e.name) << "' to " << shown(e.path) << ": " << entry_line(e)
              << "\n";
  }
  if (report->datasets.empty()) {
    std::cout << "no datasets published; nothing saved\n";
    return 0;
  }
  std::cout << "saved " << report->datasets.size() << " dataset"
            << (report->datasets.size() == 1 ? "" : "s") << ", " << format_bytes(report->bytes)
            << " in " << throughput(report->bytes, report->seconds) << "\n";
  return 0;
}

int cmd_load(const Command& cmd) {
  std::string dir;
  std::vector<std::string> names;
  bool override_existing = false, progress = false, quiet = false;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("dir", po::value(&dir)->required(), "a directory written by shelf save")
      ("names", po::value(&names)->multitoken(), "datasets to load (default: all in DIR)")
      ("override", po::bool_switch(&override_existing), "replace datasets of the same names")
      ("progress", po::bool_switch(&progress), "show progress even when stderr is not a terminal")
      ("quiet", po::bool_switch(&quiet), "no progress line");
  // clang-format on
  po::positional_options_description positional;
  positional.add("dir", 1).add("names", -1);
  po::variables_map vm;
  int code;
  if (!parse_args(cmd, options, positional, &vm, &code, "load DIR [NAME...] [--override]")) {
    return code;
  }
  auto client = connect(cmd, "load");
  if (!client.ok()) return fail(client.status());
  Progress progress_line("load", progress_mode(progress, quiet));
  auto report = load_snapshot(*client, dir, names, override_existing, &progress_line);
  progress_line.finish();
  if (!report.ok() && override_existing &&
      report.status().code() == Status::Code::kResourceExhausted) {
    return fail(Status::resource_exhausted(
        report.status().message() +
        "; --override writes the new copy before it drops the old one, so it needs room for "
        "both at once: unpublish the old datasets first (shelf unpublish NAME), or give shelfd "
        "a larger --memory-limit (stop it and start it again with one: the restart keeps every "
        "dataset)"));
  }
  if (!report.ok()) return fail(report.status());
  for (const SnapshotEntry& e : report->datasets) {
    std::cout << "loaded '" << shown(e.name) << "' from " << shown(e.path) << ": " << entry_line(e)
              << "\n";
  }
  std::cout << "loaded " << report->datasets.size() << " dataset"
            << (report->datasets.size() == 1 ? "" : "s") << ", " << format_bytes(report->bytes)
            << " in " << throughput(report->bytes, report->seconds) << "\n";
  return 0;
}

volatile sig_atomic_t g_stop = 0;

int cmd_status(const Command& cmd) {
  bool json = false, clients = false;
  std::string watch_text, iterations_text, sort_text;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("json", po::bool_switch(&json), "print JSON (it always lists the clients)")
      ("clients", po::bool_switch(&clients),
       "a row per process using shelfd: what it holds and writes")
      ("sort", po::value(&sort_text), "with --clients: pid (default), bytes, unpublished, "
                                      "writing or connected")
      ("watch", po::value(&watch_text), "refresh every SECONDS until interrupted")
      ("iterations", po::value(&iterations_text), "with --watch: stop after N refreshes");
  // clang-format on
  po::variables_map vm;
  int code;
  if (!parse_args(cmd, options, {}, &vm, &code,
                  "status [--json] [--clients [--sort ORDER]] [--watch SECONDS]")) {
    return code;
  }
  ClientOrder order = ClientOrder::kPid;
  if (vm.count("sort")) {
    if (!clients && !json) return usage_error("--sort needs --clients or --json", cmd.name);
    auto parsed = parse_client_order(sort_text);
    if (!parsed) {
      return usage_error("--sort '" + sort_text + "' is not an order; use " + kClientOrders,
                         cmd.name);
    }
    order = *parsed;
  }
  double watch = 0;
  if (vm.count("watch")) {
    auto seconds = parse_seconds(watch_text, "--watch", kMinWatchSeconds, kMaxWatchSeconds);
    if (!seconds.ok()) return usage_error(seconds.status().message(), cmd.name);
    watch = *seconds;
  }
  uint64_t iterations = 0;  // until interrupted
  if (vm.count("iterations")) {
    if (!vm.count("watch")) return usage_error("--iterations needs --watch", cmd.name);
    auto count = parse_count(iterations_text, "--iterations", 1, UINT32_MAX);
    if (!count.ok()) return usage_error(count.status().message(), cmd.name);
    iterations = *count;
  }
  auto client = connect(cmd, "status");
  if (!client.ok()) return fail(client.status());
  // On a terminal, a picture (status_view.h); piped, plain text.
  const bool tty = ::isatty(STDOUT_FILENO);
  const bool picture = !json && !clients && tty;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, [](int) { g_stop = 1; });
  std::optional<WatchScreen> screen;
  if (!json && tty && watch > 0) screen.emplace(STDOUT_FILENO);
  for (uint64_t i = 0; !g_stop; ++i) {
    auto stats = client->status();
    if (!stats.ok()) {
      screen.reset();  // the message must stay on the terminal's own screen
      return fail(stats.status());
    }
    const TerminalSize size = terminal_size(STDOUT_FILENO);
    std::string frame;
    if (json) {
      frame = status_json(*stats, order) + "\n";
    } else if (clients) {
      frame = clients_table(stats->clients, order, tty ? size.columns : 0);
    } else if (picture) {
      frame = status_picture(*stats, size, screen ? size.rows - 1 : 0);
    } else {
      frame = status_text(*stats);
    }
    if (screen) {
      screen->draw(frame);
    } else {
      std::cout << frame << std::flush;
    }
    if (watch <= 0 || (iterations > 0 && i + 1 >= iterations)) break;
    if (!json && !screen) std::cout << "\n";
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(watch);
    while (!g_stop && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return 0;
}

int cmd_metrics(const Command& cmd) {
  po::options_description options("Options");
  po::variables_map vm;
  int code;
  if (!parse_args(cmd, options, {}, &vm, &code, "metrics")) return code;
  const std::string socket = cmd.socket.empty() ? default_socket_path() : cmd.socket;
  auto text = fetch_metrics(socket, std::chrono::milliseconds(10000));
  if (!text.ok()) {
    // Still a valid exposition: a textfile collector then reports shelf_up 0.
    std::cout << metrics_down_text() << std::flush;
    return fail(text.status());
  }
  std::cout << *text << std::flush;
  return 0;
}

// The longest `shelf wait --timeout`: a year; more is surely a typo.
constexpr double kMaxWaitSeconds = 365.0 * 86400;
// How soon `shelf wait` tries again to reach a shelfd that is not running.
// Connecting is all it can do until one listens; the names themselves are
// waited for by the daemon's notice (WaitFor), not by asking again.
constexpr auto kReconnectDelay = std::chrono::milliseconds(100);

// Between tries to reach a shelfd that is not running (yet, or any more):
// says why once (`told`), then sleeps kReconnectDelay, or `left` if less.
void pause_before_reconnecting(const Status& why, bool& told,
                               std::optional<std::chrono::steady_clock::duration> left) {
  if (!told) std::cerr << "shelf: " << shown(why.message()) << "; still waiting\n";
  told = true;
  std::chrono::steady_clock::duration pause = kReconnectDelay;
  if (left) pause = std::min(pause, *left);
  std::this_thread::sleep_for(pause);
}

int cmd_wait(const Command& cmd) {
  std::vector<std::string> names;
  po::options_description options("Options (--timeout SECONDS: give up after that long, exit 1)");
  options.add_options()("name", po::value(&names), "dataset names");
  po::positional_options_description positional;
  positional.add("name", -1);
  po::variables_map vm;
  int code;
  const std::string synopsis = "wait NAME... [--timeout SECONDS]";
  if (!parse_args(cmd, options, positional, &vm, &code, synopsis)) return code;
  if (names.empty()) return usage_error("missing NAME; usage: shelf " + synopsis, cmd.name);
  std::optional<std::chrono::milliseconds> timeout;
  if (cmd.timeout_text) {
    auto seconds = parse_seconds(*cmd.timeout_text, "--timeout", 0, kMaxWaitSeconds);
    if (!seconds.ok()) return usage_error(seconds.status().message(), cmd.name);
    timeout = std::chrono::milliseconds(static_cast<int64_t>(*seconds * 1000));
  }
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  bool told = false;
  for (;;) {
    std::optional<std::chrono::milliseconds> left = timeout;
    if (timeout) {
      left = std::max(
          std::chrono::milliseconds(0),
          *timeout - std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start));
    }
    auto client = connect(cmd, "wait");
    const Status status = client.ok() ? client->wait_for_datasets(names, left) : client.status();
    if (status.ok()) return 0;
    // TimedOut: the timeout passed, and the message names what is missing.
    if (status.code() != Status::Code::kUnavailable) return fail(status);
    if (left && left->count() == 0) {
      std::string missing;
      for (const std::string& name : names) missing += (missing.empty() ? "'" : ", '") + name + "'";
      return fail(Status::timed_out("timed out waiting for " + missing +
                                    " to be published: " + status.message()));
    }
    // The daemon is not running (or stopped during the wait): wait for it.
    pause_before_reconnecting(status, told, left);
  }
}

// ------------------------------------------------------------- events --

// "'name' 1000 rows in 2 partitions, 8.00 KiB" and the like, after the kind.
std::string event_text(const Event& e) {
  const std::string name = "'" + shown(e.name) + "'";
  const std::string who =
      "  (pid " + std::to_string(e.pid) + ", uid " + std::to_string(e.uid) + ")";
  const std::string sizes =
      std::to_string(e.num_rows) + " rows in " + std::to_string(e.num_partitions) + " partition" +
      (e.num_partitions == 1 ? "" : "s") + ", " + format_bytes(e.memory_bytes);
  switch (e.kind) {
    case EventKind::kPublish:
    case EventKind::kOverride:
      return name + "  " + sizes + who;
    case EventKind::kUnpublish:
      return name + "  (was " + sizes + ")" + who;
    case EventKind::kQuarantine:
      return name + "  " + format_bytes(e.memory_bytes) + " kept, not served: " + shown(e.reason);
    case EventKind::kRestart:
      return "shelfd restarted (generation " + std::to_string(e.previous_generation) + " -> " +
             std::to_string(e.generation) + ")";
    case EventKind::kDropped:
      return std::to_string(e.dropped) + " event" + (e.dropped == 1 ? "" : "s") +
             " not shown: this reader fell behind";
  }
  return "";
}

// One JSON object: the keys of the event's kind only (docs/cli.md).
std::string event_json(const Event& e) {
  std::string out = "{\"kind\":" + json_string(event_kind_name(e.kind)) +
                    ",\"time\":" + json_string(format_time(e.time_ns)) +
                    ",\"time_ns\":" + std::to_string(e.time_ns);
  auto add = [&out](const char* key, const std::string& json) {
    out += std::string(",\"") + key + "\":" + json;
  };
  switch (e.kind) {
    case EventKind::kPublish:
    case EventKind::kOverride:
    case EventKind::kUnpublish:
      add("name", json_string(e.name));
      add("pid", std::to_string(e.pid));
      add("uid", std::to_string(e.uid));
      add("rows", std::to_string(e.num_rows));
      add("partitions", std::to_string(e.num_partitions));
      add("memory_bytes", std::to_string(e.memory_bytes));
      break;
    case EventKind::kQuarantine:
      add("name", json_string(e.name));
      add("memory_bytes", std::to_string(e.memory_bytes));
      add("reason", json_string(e.reason));
      break;
    case EventKind::kRestart:
      add("generation", std::to_string(e.generation));
      add("previous_generation", std::to_string(e.previous_generation));
      break;
    case EventKind::kDropped:
      add("dropped", std::to_string(e.dropped));
      break;
  }
  return out + "}";
}

// Streams the events of one subscription until the daemon goes (true), or
// the deadline, an interruption or a closed stdout ends it all (false).
bool print_events(EventStream& stream, bool json,
                  std::optional<std::chrono::steady_clock::time_point> deadline) {
  const auto interrupted = [] { return g_stop != 0; };
  for (;;) {
    std::optional<std::chrono::milliseconds> left;
    if (deadline) {
      left =
          std::max(std::chrono::milliseconds(0), std::chrono::ceil<std::chrono::milliseconds>(
                                                     *deadline - std::chrono::steady_clock::now()));
    }
    auto e = stream.next(left, interrupted);
    if (!e.ok()) return e.status().code() == Status::Code::kUnavailable && !g_stop;
    if (json) {
      std::cout << event_json(*e) << "\n" << std::flush;
    } else {
      std::string kind(event_kind_name(e->kind));
      kind.resize(std::max<size_t>(kind.size(), 10), ' ');
      std::cout << format_time(e->time_ns) << "  " << kind << "  " << event_text(*e) << "\n"
                << std::flush;
    }
    if (!std::cout) return false;  // stdout closed (SIGPIPE is ignored): done
  }
}

int cmd_events(const Command& cmd) {
  bool json = false;
  po::options_description options(
      "Options (--timeout SECONDS: stop after that long; exit 1 if no shelfd was reached)");
  options.add_options()("json", po::bool_switch(&json), "print one JSON object per line");
  po::variables_map vm;
  int code;
  if (!parse_args(cmd, options, {}, &vm, &code, "events [--json] [--timeout SECONDS]")) {
    return code;
  }
  std::optional<std::chrono::steady_clock::time_point> deadline;
  if (cmd.timeout_text) {
    auto seconds = parse_seconds(*cmd.timeout_text, "--timeout", 0, kMaxWaitSeconds);
    if (!seconds.ok()) return usage_error(seconds.status().message(), cmd.name);
    deadline = std::chrono::steady_clock::now() +
               std::chrono::milliseconds(static_cast<int64_t>(*seconds * 1000));
  }
  // Ctrl-C, SIGTERM and SIGHUP end the stream (the check runs every
  // kWaitCheckMs and on EINTR); a reader that closes the pipe ends it too,
  // seen as a failed write rather than a SIGPIPE death.
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, [](int) { g_stop = 1; });
  ::signal(SIGPIPE, SIG_IGN);
  uint64_t last_generation = 0;  // of the daemon streamed last: a restart is then reported
  bool told = false;
  while (!g_stop) {
    Result<EventStream> stream = Status::unavailable("");
    {
      auto client = connect(cmd, "events");
      stream = client.ok() ? client->subscribe(last_generation) : client.status();
    }  // the stream has a connection of its own: the Client's closes here
    if (stream.ok()) {
      told = false;
      last_generation = stream->generation();
      if (!print_events(*stream, json, deadline)) return 0;
      continue;  // the daemon went: wait for the next one
    }
    if (stream.status().code() != Status::Code::kUnavailable) return fail(stream.status());
    const auto now = std::chrono::steady_clock::now();
    if (deadline && now >= *deadline) {
      return fail(
          Status::timed_out("timed out waiting for a shelfd: " + stream.status().message()));
    }
    // No daemon (yet, or any more): connecting again is all there is to do.
    pause_before_reconnecting(stream.status(), told,
                              deadline ? std::optional(*deadline - now) : std::nullopt);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Command cmd;
  po::options_description global(kUsage);
  global.add_options()("help,h", "show this help")(
      "socket", po::value(&cmd.socket),
      "the daemon's socket (default: $SHELF_SOCKET, else per-user)")(
      "timeout", po::value<std::string>(),
      "seconds to wait for each answer of shelfd (default: 30)");
  po::options_description hidden;
  hidden.add_options()("command", po::value(&cmd.name))("args",
                                                        po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(global).add(hidden);
  po::positional_options_description positional;
  positional.add("command", 1).add("args", -1);
  po::variables_map vm;
  try {
    // "--" ends the options of the command, not only the global ones: what
    // follows goes to the command as it is, so `shelf head -- -x` reads '-x'.
    std::vector<std::string> words(argv + 1, argv + argc);
    const auto end_of_options = std::find(words.begin(), words.end(), "--");
    std::vector<std::string> after(end_of_options, words.end());
    words.erase(end_of_options, words.end());
    po::parsed_options parsed = po::command_line_parser(words)
                                    .options(all)
                                    .positional(positional)
                                    .allow_unregistered()
                                    .run();
    po::store(parsed, vm);
    po::notify(vm);
    cmd.args = po::collect_unrecognized(parsed.options, po::include_positional);
    if (!cmd.args.empty() && cmd.args.front() == cmd.name) cmd.args.erase(cmd.args.begin());
    if (cmd.name.empty() && after.size() > 1) {  // `shelf -- head x`
      cmd.name = after[1];
      after.erase(after.begin() + 1);
    }
    cmd.args.insert(cmd.args.end(), after.begin(), after.end());
  } catch (const po::error& e) {
    return usage_error(e.what(), "");
  }
  if (vm.count("timeout")) cmd.timeout_text = vm["timeout"].as<std::string>();
  if (vm.count("timeout") && cmd.name != "wait" && cmd.name != "events") {
    auto seconds = parse_seconds(vm["timeout"].as<std::string>(), "--timeout", 0.1, 86400);
    if (!seconds.ok()) return usage_error(seconds.status().message(), "");
    cmd.timeout = std::chrono::milliseconds(static_cast<int64_t>(*seconds * 1000));
  }
  if (cmd.name.empty() || cmd.name == "help") {
    if (vm.count("help") || cmd.name == "help") {
      std::cout << global << "\n";
      return 0;
    }
    return usage_error("no command given", "");
  }
  if (vm.count("help")) cmd.args.push_back("--help");
  if (cmd.name == "publish") return cmd_publish(cmd);
  if (cmd.name == "list") return cmd_list(cmd);
  if (cmd.name == "head") return cmd_head(cmd);
  if (cmd.name == "info") return cmd_info(cmd);
  if (cmd.name == "publish-view") return cmd_publish_view(cmd);
  if (cmd.name == "persist") return cmd_persist(cmd);
  if (cmd.name == "unpublish") return cmd_unpublish(cmd);
  if (cmd.name == "pin" || cmd.name == "unpin") return cmd_pin(cmd, cmd.name == "pin");
  if (cmd.name == "status") return cmd_status(cmd);
  if (cmd.name == "metrics") return cmd_metrics(cmd);
  if (cmd.name == "save") return cmd_save(cmd);
  if (cmd.name == "load") return cmd_load(cmd);
  if (cmd.name == "wait") return cmd_wait(cmd);
  if (cmd.name == "events") return cmd_events(cmd);
  return usage_error("unknown command '" + shown(cmd.name) + "'", "");
}
