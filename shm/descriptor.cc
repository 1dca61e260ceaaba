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
  header.layout_version = kLayoutVersion;
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
  auto bad = [&](const std::string& what) {
    std::string msg = "bad dataset descriptor: " + what;
    return from_client ? Status::invalid_argument(msg) : Status::corruption(msg);
  };
  DescriptorView v;
  v.bytes_ = bytes;
  if (bytes.size() < sizeof(DescriptorHeaderLayout) ||
      reinterpret_cast<uintptr_t>(bytes.data()) % alignof(DescriptorHeaderLayout) != 0) {
    return bad("too short or misaligned");
  }
  v.header_ = reinterpret_cast<const DescriptorHeaderLayout*>(bytes.data());
  const DescriptorHeaderLayout& h = *v.header_;
  if (h.magic != kDescriptorMagic) return bad("wrong magic number");
  if (h.layout_version != kLayoutVersion) {
    return bad("layout version " + std::to_string(h.layout_version) + ", this build reads " +
               std::to_string(kLayoutVersion));
  }
  if (h.num_columns == 0 || h.num_columns > kMaxColumns) {
    return bad("a dataset needs 1 to " + std::to_string(kMaxColumns) + " columns, not " +
               std::to_string(h.num_columns));
  }
  if (h.num_partitions > kMaxPartitions) {
    return bad("more than " + std::to_string(kMaxPartitions) + " partitions");
  }
  if (h.names_length > uint64_t{kMaxColumns} * kMaxColumnNameBytes ||
      encoded_size(h.num_columns, h.num_partitions, h.names_length) != bytes.size()) {
    return bad("its size does not match its counts");
  }
  const std::byte* p = bytes.data() + sizeof(DescriptorHeaderLayout);
  v.columns_ = reinterpret_cast<const ColumnLayout*>(p);
  p += h.num_columns * sizeof(ColumnLayout);
  v.partitions_ = reinterpret_cast<const PartitionLayout*>(p);
  p += h.num_partitions * sizeof(PartitionLayout);
  v.chunks_ = reinterpret_cast<const ChunkLayout*>(p);
  p += h.num_partitions * h.num_columns * sizeof(ChunkLayout);
  v.names_ = reinterpret_cast<const char*>(p);

  std::unordered_set<std::string_view> names;
  for (uint32_t c = 0; c < h.num_columns; ++c) {
    const ColumnLayout& col = v.columns_[c];
    if (!is_valid_type(col.type)) return bad("column " + std::to_string(c) + " has no valid type");
    if (col.name_length == 0 || col.name_length > kMaxColumnNameBytes ||
        col.name_offset > h.names_length || col.name_length > h.names_length - col.name_offset) {
      return bad("column " + std::to_string(c) + " has a bad name");
    }
    if (!names.insert(v.column_name(c)).second) {
      return bad("column name '" + std::string(v.column_name(c)) + "' appears twice");
    }
    if (col.type == static_cast<uint8_t>(Type::kBytes) && h.num_columns != 1) {
      return bad("a bytes column must be the only column");
    }
  }

  uint64_t rows = 0, data_bytes = 0;
  for (uint64_t part = 0; part < h.num_partitions; ++part) {
    const PartitionLayout& pl = v.partitions_[part];
    if (pl.extent_offset % kPageSize != 0 || pl.extent_length % kPageSize != 0 ||
        pl.extent_length <= kExtentHeaderBytes ||
        pl.extent_offset + pl.extent_length < pl.extent_offset) {
      return bad("partition " + std::to_string(part) + " has a bad extent");
    }
    const uint64_t begin = pl.extent_offset + kExtentHeaderBytes;
    const uint64_t end = pl.extent_offset + pl.extent_length;
    rows += pl.num_rows;
    for (uint32_t c = 0; c < h.num_columns; ++c) {
      const ChunkLayout& ch = v.chunk(part, c);
      const Type type = v.column_type(c);
      const std::string where =
          "partition " + std::to_string(part) + " column '" + std::string(v.column_name(c)) + "'";
      if (!buffer_ok(ch.validity, begin, end) || !buffer_ok(ch.offsets, begin, end) ||
          !buffer_ok(ch.data, begin, end)) {
        return bad(where + ": a buffer lies outside its extent or is misaligned");
      }
      const uint64_t n = pl.num_rows;
      if (ch.null_count > n || (ch.null_count > 0 && ch.validity.length != (n + 7) / 8) ||
          (ch.null_count == 0 && ch.validity.length != 0)) {
        return bad(where + ": validity bitmap does not match its null count");
      }
      bool lengths_ok;
      if (type == Type::kString) {
        lengths_ok = n < (UINT64_MAX / 8) && ch.offsets.length == (n + 1) * 8;
      } else if (type == Type::kBytes) {
        lengths_ok = ch.offsets.length == 0 && ch.data.length == n && ch.null_count == 0;
      } else {
        lengths_ok = ch.offsets.length == 0 && n <= UINT64_MAX / 8 &&
                     ch.data.length == n * fixed_width(type);
      }
      if (!lengths_ok) return bad(where + ": buffer lengths do not match the row count");
      data_bytes += ch.validity.length + ch.offsets.length + ch.data.length;
    }
  }
  if (rows != h.num_rows || data_bytes != h.data_bytes) {
    return bad("row or byte totals do not add up");
  }
  return v;
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
