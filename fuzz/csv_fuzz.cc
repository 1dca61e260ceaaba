// Fuzzes pass 1 of `shelf publish FILE.csv` (plan_csv: libcsv, the header,
// UTF-8 checks, type inference, --schema checks, partitioning) and the value
// parsers behind it.
//
// Input: one option byte (fuzz/seeds.h), then the file. Beyond "no crash, no
// leak, no undefined behaviour" it checks that an error names FILE:LINE and
// that an accepted plan's partitions add up to its rows.
//
// write_csv (pass 2) needs a TableBuilder, hence a daemon: the property test
// in tests/cli/csv_property_test.cc covers it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <sys/mman.h>
#include <unistd.h>

#include "base/check.h"
#include "tools/csv_table.h"

#include "fuzz/seeds.h"

namespace {

// One in-memory file, rewritten for each input: no disk, no cleanup.
int memfd() {
  static const int fd = [] {
    int f = ::memfd_create("fuzz.csv", MFD_CLOEXEC);
    SHELF_CHECK(f >= 0);
    return f;
  }();
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shelf;
  if (size < shelf::fuzz::kCsvOptionBytes) return 0;
  const uint8_t option = data[0];
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);

  // The value parsers on the raw text.
  int64_t i;
  double d;
  bool b;
  (void)tools::parse_int64(text, &i);
  (void)tools::parse_float64(text, &d);
  (void)tools::parse_bool(text, &b);
  (void)tools::parse_timestamp(text, &i);

  const int fd = memfd();
  SHELF_CHECK(::ftruncate(fd, 0) == 0);
  SHELF_CHECK(::pwrite(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size()));
  const std::string path = "/proc/self/fd/" + std::to_string(fd);

  tools::CsvOptions options;
  options.partition_rows = fuzz::kCsvPartitionRows[option & 3];
  if (option & 4) {
    // The first header field, if the file has one that a --schema could name.
    const std::string_view first = text.substr(0, text.find_first_of(",\r\n\""));
    if (!first.empty()) {
      options.forced_types[std::string(first)] = static_cast<Type>(1 + (option >> 3) % 13);
    }
  }
  auto plan = tools::plan_csv({path}, options);
  if (!plan.ok()) {
    const std::string& msg = plan.status().message();
    // "FILE:LINE: what", except the one error about --schema itself.
    if (msg.rfind("--schema", 0) != 0) {
      SHELF_CHECK(msg.rfind(path + ":", 0) == 0);
      const size_t line = path.size() + 1;
      SHELF_CHECK(line < msg.size() && msg[line] >= '1' && msg[line] <= '9');
    }
    return 0;
  }
  uint64_t rows = 0;
  for (const tools::CsvPartition& p : plan->partitions) {
    SHELF_CHECK(options.partition_rows == 0 || p.rows <= options.partition_rows);
    rows += p.rows;
  }
  SHELF_CHECK(rows == plan->total_rows);
  SHELF_CHECK(!plan->schema.empty());
  return 0;
}
