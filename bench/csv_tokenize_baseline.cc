// csv_tokenize_baseline FILE...: libcsv's tokenising speed alone, the
// baseline of bench/csv_bench.py. Feeds each file to libcsv with the options
// shelf used with it (CSV_STRICT, CSV_EMPTY_IS_NULL, no space trimming) and
// counts fields and records: no type inference, no conversion, no output.
// Prints "BYTES FIELDS RECORDS SECONDS".
#include <chrono>
#include <cstdio>
#include <vector>

#include <csv.h>

namespace {

struct Counts {
  unsigned long long fields = 0;
  unsigned long long records = 0;
};

void on_field(void*, size_t, void* c) { ++static_cast<Counts*>(c)->fields; }
void on_record(int, void* c) { ++static_cast<Counts*>(c)->records; }
int no_space(unsigned char) { return 0; }

}  // namespace

int main(int argc, char** argv) {
  Counts counts;
  unsigned long long bytes = 0;
  std::vector<char> block(1 << 20);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 1; i < argc; ++i) {
    std::FILE* f = std::fopen(argv[i], "rb");
    if (f == nullptr) {
      std::perror(argv[i]);
      return 1;
    }
    csv_parser p;
    csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL | CSV_EMPTY_IS_NULL);
    csv_set_space_func(&p, no_space);
    size_t n;
    while ((n = std::fread(block.data(), 1, block.size(), f)) > 0) {
      bytes += n;
      if (csv_parse(&p, block.data(), n, on_field, on_record, &counts) != n) {
        std::fprintf(stderr, "%s: malformed CSV\n", argv[i]);
        return 1;
      }
    }
    csv_fini(&p, on_field, on_record, &counts);
    csv_free(&p);
    std::fclose(f);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%llu %llu %llu %.6f\n", bytes, counts.fields, counts.records, s);
  return 0;
}
