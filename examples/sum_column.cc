// sum_column: reads a published dataset and sums one numeric column, without
// copying it: the spans point straight into the daemon's shared memory.
//
//   sum_column accounts balance      # prints the sum, the rows and the time
#include <chrono>
#include <cstdio>
#include <string>

#include <shelf/client.h>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: sum_column DATASET COLUMN\n");
    return 2;
  }
  auto client = shelf::Client::connect();  // $SHELF_SOCKET, else the per-user default
  if (!client.ok()) {
    std::fprintf(stderr, "sum_column: %s\n", client.status().message().c_str());
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  auto dataset = client->get_dataset(argv[1]);  // one round trip; holds a lease
  if (!dataset.ok()) {
    std::fprintf(stderr, "sum_column: %s\n", dataset.status().message().c_str());
    return 1;
  }
  const int column = dataset->column_index(argv[2]);
  if (column < 0) {
    std::fprintf(stderr, "sum_column: dataset '%s' has no column '%s'\n", argv[1], argv[2]);
    return 1;
  }
  const shelf::Type type = dataset->schema()[column].type;
  long double sum = 0;
  uint64_t rows = 0, nulls = 0;
  for (uint64_t p = 0; p < dataset->num_partitions(); ++p) {
    shelf::ColumnView view = dataset->column(p, column);
    rows += view.length();
    nulls += view.null_count();
    if (type == shelf::Type::kInt64) {
      int64_t s = 0;  // nulls hold 0, so they add nothing
      for (int64_t v : view.values<int64_t>()) s += v;
      sum += s;
    } else if (type == shelf::Type::kFloat64) {
      for (uint64_t i = 0; i < view.length(); ++i) {
        if (view.is_valid(i)) sum += view.values<double>()[i];
      }
    } else {
      std::fprintf(stderr, "sum_column: column '%s' is %s; this example sums int64 and float64\n",
                   argv[2], std::string(shelf::type_name(type)).c_str());
      return 1;
    }
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  // A view's rows are computed here from its base (shelf/view.h).
  const char* how = dataset->view_definition() ? "evaluated from its base" : "zero-copy";
  if (type == shelf::Type::kInt64) {
    std::printf("sum(%s.%s) = %lld over %llu rows (%llu null) in %.2f ms, %s\n", argv[1], argv[2],
                static_cast<long long>(sum), static_cast<unsigned long long>(rows),
                static_cast<unsigned long long>(nulls), ms, how);
  } else {
    std::printf("sum(%s.%s) = %.6Lf over %llu rows (%llu null) in %.2f ms, %s\n", argv[1], argv[2],
                sum, static_cast<unsigned long long>(rows), static_cast<unsigned long long>(nulls),
                ms, how);
  }
  return 0;
}
