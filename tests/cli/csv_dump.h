// dump_dataset: a published dataset as text — schema, partition sizes and
// every cell (bit patterns for floats, nulls marked) — so that two datasets
// are equal exactly when their dumps are. For the CSV tests that check that
// chunk sizes, thread counts, compression and pipes change nothing.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

#include <shelf/client.h>

namespace shelf::test {

inline std::string dump_cell(const ColumnView& col, uint64_t r) {
  if (!col.is_valid(r)) return "null";
  if (col.type() == Type::kString) return "'" + std::string(col.string(r)) + "'";
  const uint32_t width = fixed_width(col.type());
  uint64_t bits = 0;
  std::memcpy(&bits, col.data().data() + r * width, width);
  return std::to_string(bits);
}

// Empty string when `name` cannot be read.
inline std::string dump_dataset(Client& client, const std::string& name) {
  auto ds = client.get_dataset(name);
  if (!ds.ok()) return "";
  std::string out;
  for (const Field& f : ds->schema()) out += f.name + ":" + std::string(type_name(f.type)) + ",";
  out += "\n";
  for (uint64_t p = 0; p < ds->num_partitions(); ++p) {
    out += "partition " + std::to_string(p) + ": " + std::to_string(ds->num_rows(p)) + " rows\n";
    for (uint64_t r = 0; r < ds->num_rows(p); ++r) {
      for (size_t c = 0; c < ds->schema().size(); ++c) {
        out += dump_cell(ds->column(p, c), r) + (c + 1 < ds->schema().size() ? "," : "\n");
      }
    }
  }
  return out;
}

}  // namespace shelf::test
