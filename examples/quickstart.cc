// quickstart: the C++ example of docs/cpp.md, whole. Publishes a small table,
// reads it back without a copy, and unpublishes it.
#include <cstdio>

#include <shelf/client.h>

shelf::Status publish_and_read() {
  SHELF_ASSIGN_OR_RETURN(shelf::Client client, shelf::Client::connect());

  // Publish: columns are written straight into shared memory.
  SHELF_ASSIGN_OR_RETURN(
      shelf::TableBuilder table,
      client.create_table({{"name", shelf::Type::kString}, {"balance", shelf::Type::kInt64}}));
  const uint64_t name_bytes[] = {15};  // UTF-8 bytes to reserve per string column
  SHELF_ASSIGN_OR_RETURN(shelf::PartitionBuilder part, table.add_partition(3, name_bytes));
  std::span<int64_t> balance = part.values<int64_t>(1);
  shelf::StringColumnWriter names = part.strings(0);
  const char* who[] = {"Alice", "Bob", "Charlie"};
  for (int i = 0; i < 3; ++i) {
    SHELF_RETURN_IF_ERROR(names.append(who[i]));
    balance[i] = -100 * (i + 1);
  }
  SHELF_RETURN_IF_ERROR(client.publish_dataset("negative_accounts", table));

  // Read, from this or any other process: no copy; a lease keeps it alive.
  SHELF_ASSIGN_OR_RETURN(shelf::Dataset ds, client.get_dataset("negative_accounts"));
  int64_t sum = 0;
  for (uint64_t p = 0; p < ds.num_partitions(); ++p) {
    for (int64_t v : ds.column(p, 1).values<int64_t>()) sum += v;
  }
  std::printf("%s: %llu rows, sum(balance) = %lld\n", ds.name().c_str(),
              static_cast<unsigned long long>(ds.num_rows()), static_cast<long long>(sum));
  return client.unpublish_dataset("negative_accounts");
}

int main() {
  shelf::Status status = publish_and_read();
  if (!status.ok()) {
    std::fprintf(stderr, "quickstart: %s\n", status.to_string().c_str());
    return 1;
  }
  return 0;
}
