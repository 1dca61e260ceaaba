#include "shm/descriptor.h"

#include <cstring>
#include <string>
#include <unordered_set>

namespace shelf::shm {

DescriptorBuilder::DescriptorBuilder(Schema schema) : schema_(std::move(schema)) {}

void DescriptorBuilder::add_partition(const PartitionLayout& partition,
                                      std::span<const ChunkLayout> chunks) {
  partitions_.push_back(partition);
  chunks_.insert(chunks_.end(), chunks.begin(), chunks.end());
}

uint64_t DescriptorView::encoded_size(uint32_t num_columns, uint64_t num_partitions,
                                      uint64_t names_length) {
  return sizeof(DescriptorHeaderLayout) + num_columns * sizeof(ColumnLayout) +
         num_partitions * sizeof(PartitionLayout) +
         num_partitions * num_columns * sizeof(ChunkLayout) + names_length;
}

std::vector<std::byte> DescriptorBuilder::finish() const {
  uint64_t names_length = 0;
  for (const Field& f : schema_) names_length += f.name.size();
  const auto num_columns = static_cast<uint32_t>(schema_.size());
  std::vector<std::byte> out(
      DescriptorView::encoded_size(num_columns, partitions_.size(), names_length));
  std::byte* p = out.data();

  DescriptorHeaderLayout header{};
  header.magic = kDescriptorMagic;
  header.layout_version = kDescriptorVersion;
  header.num_columns = num_columns;
  header.num_partitions = partitions_.size();
  for (const PartitionLayout& part : partitions_) header.num_rows += part.num_rows;
  for (const ChunkLayout& c : chunks_) {
    header.data_bytes += c.validity.length + c.offsets.length + c.data.length;
  }
  header.names_length = names_length;
  std::memcpy(p, &header, sizeof header);
  p += sizeof header;

  uint64_t name_offset = 0;
  for (const Field& f : schema_) {
    ColumnLayout column{};
    column.type = static_cast<uint8_t>(f.type);
    column.name_length = static_cast<uint32_t>(f.name.size());
    column.name_offset = name_offset;
    name_offset += f.name.size();
    std::memcpy(p, &column, sizeof column);
    p += sizeof column;
  }
  if (!partitions_.empty()) {
    std::memcpy(p, partitions_.data(), partitions_.size() * sizeof(PartitionLayout));
    p += partitions_.size() * sizeof(PartitionLayout);
  }
  if (!chunks_.empty()) {
    std::memcpy(p, chunks_.data(), chunks_.size() * sizeof(ChunkLayout));
    p += chunks_.size() * sizeof(ChunkLayout);
  }
  for (const Field& f : schema_) {
    std::memcpy(p, f.name.data(), f.name.size());
    p += f.name.size();
  }
  return out;
}

namespace {

// Checks one buffer: absent (length 0), or aligned and inside [begin, end).
bool buffer_ok(const BufferLayout& b, uint64_t begin, uint64_t end) {
  if (b.length == 0) return true;
  return b.offset % kBufferAlignment == 0 && b.offset >= begin && b.offset <= end &&
         b.length <= end - b.offset;
}

}  // namespace

Result<DescriptorView> DescriptorView::parse(std::span<const std::byte> bytes, bool from_client) {
  DescriptorView v;
  std::string problem = v.locate(bytes);
  if (problem.empty()) problem = v.check_columns();
  uint64_t rows = 0, data_bytes = 0;
  for (uint64_t part = 0; problem.empty() && part < v.num_partitions(); ++part) {
    problem = v.check_partition(part, rows, data_bytes);
  }
  if (problem.empty() && (rows != v.header().num_rows || data_bytes != v.header().data_bytes)) {
    problem = "row or byte totals do not add up";
  }
  if (problem.empty()) return v;
  std::string msg = "bad dataset descriptor: " + problem;
  return from_client ? Status::invalid_argument(msg) : Status::corruption(msg);
}

std::string DescriptorView::locate(std::span<const std::byte> bytes) {
  bytes_ = bytes;
  if (bytes.size() < sizeof(DescriptorHeaderLayout) ||
      reinterpret_cast<uintptr_t>(bytes.data()) % alignof(DescriptorHeaderLayout) != 0) {
    return "too short or misaligned";
  }
  header_ = reinterpret_cast<const DescriptorHeaderLayout*>(bytes.data());
  const DescriptorHeaderLayout& h = *header_;
  if (h.magic != kDescriptorMagic) return "wrong magic number";
  if (h.layout_version != kDescriptorVersion) {
    return "layout version " + std::to_string(h.layout_version) + ", this build reads " +
           std::to_string(kDescriptorVersion);
  }
  if (h.num_columns == 0 || h.num_columns > kMaxColumns) {
    return "a dataset needs 1 to " + std::to_string(kMaxColumns) + " columns, not " +
           std::to_string(h.num_columns);
  }
  if (h.num_partitions > kMaxPartitions) {
    return "more than " + std::to_string(kMaxPartitions) + " partitions";
  }
  if (h.names_length > uint64_t{kMaxColumns} * kMaxColumnNameBytes ||
      encoded_size(h.num_columns, h.num_partitions, h.names_length) != bytes.size()) {
    return "its size does not match its counts";
  }
  const std::byte* p = bytes.data() + sizeof(DescriptorHeaderLayout);
  columns_ = reinterpret_cast<const ColumnLayout*>(p);
  p += h.num_columns * sizeof(ColumnLayout);
  partitions_ = reinterpret_cast<const PartitionLayout*>(p);
  p += h.num_partitions * sizeof(PartitionLayout);
  chunks_ = reinterpret_cast<const ChunkLayout*>(p);
  p += h.num_partitions * h.num_columns * sizeof(ChunkLayout);
  names_ = reinterpret_cast<const char*>(p);
  return std::string();
}

std::string DescriptorView::check_columns() const {
  const DescriptorHeaderLayout& h = *header_;
  std::unordered_set<std::string_view> names;
  for (uint32_t c = 0; c < h.num_columns; ++c) {
    const ColumnLayout& col = columns_[c];
    if (!is_valid_type(col.type)) return "column " + std::to_string(c) + " has no valid type";
    if (col.name_length == 0 || col.name_length > kMaxColumnNameBytes ||
        col.name_offset > h.names_length || col.name_length > h.names_length - col.name_offset) {
      return "column " + std::to_string(c) + " has a bad name";
    }
    if (!names.insert(column_name(c)).second) {
      return "column name '" + std::string(column_name(c)) + "' appears twice";
    }
    if (col.type == static_cast<uint8_t>(Type::kBytes) && h.num_columns != 1) {
      return "a bytes column must be the only column";
    }
  }
  return std::string();
}

std::string DescriptorView::check_partition(uint64_t part, uint64_t& rows,
                                            uint64_t& data_bytes) const {
  const PartitionLayout& pl = partitions_[part];
  if (pl.extent_offset % kPageSize != 0 || pl.extent_length % kPageSize != 0 ||
      pl.extent_length <= kExtentHeaderBytes ||
      pl.extent_offset + pl.extent_length < pl.extent_offset) {
    return "partition " + std::to_string(part) + " has a bad extent";
  }
  const uint64_t n = pl.num_rows;
  if (n > kMaxRowsPerPartition) {
    return "partition " + std::to_string(part) + " has " + std::to_string(n) +
           " rows; the limit is " + std::to_string(kMaxRowsPerPartition);
  }
  const uint64_t begin = pl.extent_offset + kExtentHeaderBytes;
  const uint64_t end = pl.extent_offset + pl.extent_length;
  rows += n;
  for (uint32_t c = 0; c < num_columns(); ++c) {
    const ChunkLayout& ch = chunk(part, c);
    const Type type = column_type(c);
    const std::string where =
        "partition " + std::to_string(part) + " column '" + std::string(column_name(c)) + "'";
    if (!buffer_ok(ch.validity, begin, end) || !buffer_ok(ch.offsets, begin, end) ||
        !buffer_ok(ch.data, begin, end)) {
      return where + ": a buffer lies outside its extent or is misaligned";
    }
    if (ch.null_count > n || (ch.null_count > 0 && ch.validity.length != (n + 7) / 8) ||
        (ch.null_count == 0 && ch.validity.length != 0)) {
      return where + ": validity bitmap does not match its null count";
    }
    // n <= kMaxRowsPerPartition (2^48): no product below overflows.
    bool lengths_ok;
    if (type == Type::kString) {
      lengths_ok = ch.offsets.length == (n + 1) * 8;
    } else if (type == Type::kBytes) {
      lengths_ok = ch.offsets.length == 0 && ch.data.length == n && ch.null_count == 0;
    } else {
      lengths_ok = ch.offsets.length == 0 && ch.data.length == n * fixed_width(type);
    }
    if (!lengths_ok) return where + ": buffer lengths do not match the row count";
    data_bytes += ch.validity.length + ch.offsets.length + ch.data.length;
  }
  return std::string();
}

std::string_view DescriptorView::column_name(uint32_t column) const {
  const ColumnLayout& c = columns_[column];
  return {names_ + c.name_offset, c.name_length};
}

Schema DescriptorView::schema() const {
  Schema schema;
  schema.reserve(num_columns());
  for (uint32_t c = 0; c < num_columns(); ++c) {
    schema.push_back(Field{std::string(column_name(c)), column_type(c)});
  }
  return schema;
}

}  // namespace shelf::shm
