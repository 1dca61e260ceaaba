#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <set>
#include <string>
#include <thread>

#include <shelf/table_builder.h>

#include "base/check.h"
#include "base/fault_point.h"
#include "base/parallel.h"
#include "base/utf8.h"
#include "libclient/src/table_state.h"
#include "shm/checksum.h"
#include "shm/descriptor.h"
#include "shm/layout.h"
#include "shm/segment.h"

namespace shelf {
namespace internal {

namespace {

// Threads that fault a new partition's pages in: one per 32 MiB, up to one
// per core. Reserving is clearing the pages, ~1.4 GB/s on one core here: it
// was most of a 1 GiB publish (docs/benchmarks.md, figure 1). 32, not 64:
// a 64 MiB partition on two threads made publishing 512 MiB of them from
// ready buffers 393 -> 257 ms (filter_bench, same run).
unsigned reserve_threads(uint64_t length) { return threads_for(length, uint64_t{32} << 20); }

// A thread hashes at least this much at seal (a thread costs ~50 us to
// start; XXH3 does 32 MiB in ~3 ms).
constexpr uint64_t kHashBytesPerThread = uint64_t{32} << 20;

}  // namespace

Result<std::unique_ptr<TableState>> TableState::create(std::shared_ptr<Client::Impl> client,
                                                       Schema schema) {
  if (schema.empty() || schema.size() > kMaxColumns) {
    return Status::invalid_argument("a table needs 1 to " + std::to_string(kMaxColumns) +
                                    " columns, not " + std::to_string(schema.size()));
  }
  std::set<std::string_view> names;
  for (const Field& f : schema) {
    if (f.name.empty() || f.name.size() > kMaxColumnNameBytes) {
      return Status::invalid_argument("column name '" + f.name + "' must be 1 to " +
                                      std::to_string(kMaxColumnNameBytes) + " bytes");
    }
    // The same rule as dataset names: names print safely in `shelf head`/`info`.
    if (const size_t at = find_control_character(f.name); at != std::string::npos) {
      return Status::invalid_argument("column name '" + escape_unprintable(f.name) +
                                      "' contains a control character at byte " +
                                      std::to_string(at));
    }
    if (!is_valid_utf8(f.name)) {
      return Status::invalid_argument("column name '" + escape_unprintable(f.name) +
                                      "' is not valid UTF-8");
    }
    if (!names.insert(f.name).second) {
      return Status::invalid_argument("column name '" + f.name + "' appears twice");
    }
    if (!is_valid_type(static_cast<uint8_t>(f.type))) {
      return Status::invalid_argument("column '" + f.name + "' has no valid type");
    }
    if (f.type == Type::kBytes && schema.size() != 1) {
      return Status::invalid_argument("a bytes column must be the only column");
    }
  }
  auto state = std::make_unique<TableState>();
  state->client = std::move(client);
  state->schema = std::move(schema);
  return state;
}

TableState::~TableState() {
  if (published || client->broken()) return;  // a lost connection frees them anyway
  for (const auto& p : partitions) {
    std::vector<std::byte> frame;
    protocol::encode_request(frame, protocol::AbortRequest{p->extent_offset});
    client->post(frame);
  }
}

Result<PartitionState*> TableState::add_partition(uint64_t rows,
                                                  std::span<const uint64_t> string_bytes) {
  if (sealed) {
    return Status::invalid_argument(
        "this table was already handed to publish; build a new table to add partitions");
  }
  if (rows > kMaxRowsPerPartition)
    return Status::invalid_argument("too many rows in one partition");
  size_t string_columns = 0;
  for (const Field& f : schema) string_columns += f.type == Type::kString ? 1 : 0;
  if (string_bytes.size() != string_columns) {
    return Status::invalid_argument("add_partition needs the byte size of each of the " +
                                    std::to_string(string_columns) + " string columns, got " +
                                    std::to_string(string_bytes.size()));
  }
  auto p = std::make_unique<PartitionState>();
  p->table = this;
  p->rows = rows;
  uint64_t pos = shm::kExtentHeaderBytes;
  size_t next_string = 0;
  for (const Field& f : schema) {
    // One column adds under 2^53 bytes (rows and string bytes are bounded),
    // so checking here keeps pos from ever wrapping around.
    if (pos > (uint64_t{1} << 60)) return Status::invalid_argument("partition too large");
    PartitionState::Column c;
    pos = align_up(pos, kBufferAlignment);
    c.validity = pos;
    pos += f.type == Type::kBytes ? 0 : (rows + 7) / 8;
    pos = align_up(pos, kBufferAlignment);
    c.offsets = pos;
    if (f.type == Type::kString) pos += (rows + 1) * 8;
    pos = align_up(pos, kBufferAlignment);
    c.data = pos;
    if (f.type == Type::kString) {
      c.data_capacity = string_bytes[next_string++];
      if (c.data_capacity > kMaxRowsPerPartition * 8)
        return Status::invalid_argument("string column too large");
    } else if (f.type == Type::kBytes) {
      c.data_capacity = rows;
    } else {
      c.data_capacity = rows * fixed_width(f.type);
    }
    pos += c.data_capacity;
    p->columns.push_back(c);
  }
  std::vector<std::byte> frame;
  protocol::encode_request(frame, protocol::AllocateRequest{pos - shm::kExtentHeaderBytes + 1});
  SHELF_ASSIGN_OR_RETURN(protocol::AllocateResponse r,
                         client->call_and_decode(frame, protocol::MessageType::kAllocate,
                                                 protocol::decode_allocate_response));
  p->extent_offset = r.offset;
  p->extent_length = r.length;
  auto abort_extent = [&](Status s) {
    std::vector<std::byte> f;
    protocol::encode_request(f, protocol::AbortRequest{r.offset});
    client->post(f);
    return s;
  };
  auto segment = client->writable_segment();
  if (!segment.ok()) return abort_extent(segment.status());
  auto mapping = shm::Mapping::map(**segment, r.offset, r.length, /*writable=*/true);
  if (!mapping.ok()) return abort_extent(mapping.status());
  // The daemon reserved the header page; the rest is ours to reserve, in our
  // own time rather than the daemon's (a full /dev/shm is an error here, not
  // a SIGBUS later), by faults that hold up no one else's reservation and map
  // every page in one call. The daemon checks at publish that no hole is left.
  if (r.length > shm::kPageSize) {
    const uint64_t length = r.length - shm::kPageSize;
    Status reserved =
        (*segment)->reserve_through(mapping->data() + shm::kPageSize, r.offset + shm::kPageSize,
                                    length, reserve_threads(length));
    if (!reserved.ok()) return abort_extent(reserved);
  }
  p->mapping.emplace(std::move(mapping).value());
  // Fresh extents read as zeros, but say what the string writers rely on.
  for (size_t c = 0; c < schema.size(); ++c) {
    if (schema[c].type == Type::kString)
      reinterpret_cast<int64_t*>(p->at(p->columns[c].offsets))[0] = 0;
  }
  partitions.push_back(std::move(p));
  return partitions.back().get();
}

void TableState::mark_published() {
  published = true;
  for (auto& p : partitions) p->mapping.reset();
}

void PartitionState::set_null(size_t column, uint64_t row) {
  SHELF_CHECK(column < columns.size() && row < rows);
  SHELF_CHECK(table->schema[column].type != Type::kBytes);  // a payload has no bitmap
  Column& c = columns[column];
  auto* bitmap = reinterpret_cast<uint8_t*>(at(c.validity));
  if (!c.has_validity) {  // first null in this column: every row so far was valid
    std::memset(bitmap, 0xff, (rows + 7) / 8);
    c.has_validity = true;
  }
  bitmap[row / 8] &= static_cast<uint8_t>(~(1u << (row % 8)));
}

namespace {

uint64_t count_valid(const uint8_t* bitmap, uint64_t rows) {
  uint64_t valid = 0;
  const uint64_t full_bytes = rows / 8;
  for (uint64_t i = 0; i < full_bytes; ++i) valid += std::popcount(bitmap[i]);
  if (rows % 8 != 0) {
    const auto mask = static_cast<uint8_t>((1u << (rows % 8)) - 1);
    valid += std::popcount(static_cast<uint8_t>(bitmap[full_bytes] & mask));
  }
  return valid;
}

}  // namespace

Result<std::vector<std::byte>> TableState::seal() {
  if (sealed) return descriptor;
  // Lay out every buffer first, then hash them on threads: XXH3 on one core
  // was a tenth of publishing 512 MiB from ready buffers (docs/filter.md).
  std::vector<std::vector<shm::ChunkLayout>> chunks(partitions.size());
  struct Hash {
    const std::byte* data;
    uint64_t length;
    uint64_t* xxh3;
  };
  std::vector<Hash> hashes;
  uint64_t hashed_bytes = 0;
  for (size_t pi = 0; pi < partitions.size(); ++pi) {
    PartitionState& p = *partitions[pi];
    chunks[pi].resize(schema.size());
    for (size_t ci = 0; ci < schema.size(); ++ci) {
      const PartitionState::Column& c = p.columns[ci];
      const Type type = schema[ci].type;
      shm::ChunkLayout& chunk = chunks[pi][ci];
      auto buffer = [&](shm::BufferLayout& b, uint64_t offset_in_extent, uint64_t length) {
        b = shm::BufferLayout{p.extent_offset + offset_in_extent, length, 0};
        if (length == 0) return;
        hashes.push_back({p.at(offset_in_extent), length, &b.xxh3});
        hashed_bytes += length;
      };
      if (c.has_validity) {
        const auto* bitmap = reinterpret_cast<const uint8_t*>(p.at(c.validity));
        chunk.null_count = p.rows - count_valid(bitmap, p.rows);
      }
      buffer(chunk.validity, c.validity, chunk.null_count > 0 ? (p.rows + 7) / 8 : 0);
      uint64_t data_length = c.data_capacity;
      if (type == Type::kString) {
        if (c.strings_written != p.rows) {
          return Status::invalid_argument("column '" + schema[ci].name + "' of partition " +
                                          std::to_string(pi) + " has " +
                                          std::to_string(c.strings_written) + " of its " +
                                          std::to_string(p.rows) + " strings written");
        }
        buffer(chunk.offsets, c.offsets, (p.rows + 1) * 8);
        data_length =
            static_cast<uint64_t>(reinterpret_cast<const int64_t*>(p.at(c.offsets))[p.rows]);
      } else {
        buffer(chunk.offsets, c.offsets, 0);
      }
      buffer(chunk.data, c.data, data_length);
    }
  }
  // The longest first, so that no thread is left with a long one at the end.
  std::sort(hashes.begin(), hashes.end(),
            [](const Hash& a, const Hash& b) { return a.length > b.length; });
  parallel_for(hashes.size(), threads_for(hashed_bytes, kHashBytesPerThread),
               [&](size_t i) { *hashes[i].xxh3 = shm::xxh3(hashes[i].data, hashes[i].length); });
  shm::DescriptorBuilder builder(schema);
  for (size_t pi = 0; pi < partitions.size(); ++pi) {
    const PartitionState& p = *partitions[pi];
    builder.add_partition(shm::PartitionLayout{p.rows, p.extent_offset, p.extent_length, 0},
                          chunks[pi]);
  }
  SHELF_FAULT_POINT("client.seal.before_written");
  for (const auto& p : partitions) {
    auto* header = reinterpret_cast<shm::ExtentHeaderLayout*>(p->mapping->data());
    // Release: makes every byte written into the partition visible before the
    // state; pairs with the daemon's acquire load in Store::publish().
    std::atomic_ref<uint32_t>(header->state)
        .store(static_cast<uint32_t>(shm::ExtentState::kWritten), std::memory_order_release);
  }
  descriptor = builder.finish();
  sealed = true;
  SHELF_FAULT_POINT("client.seal.after_written");
  return descriptor;
}

}  // namespace internal

// ------------------------------------------------------ public wrappers --

Status StringColumnWriter::append(std::string_view value) {
  if (!p_->writable()) return Status::invalid_argument("the table is published: it is read-only");
  internal::PartitionState::Column& c = p_->columns[column_];
  if (c.strings_written >= p_->rows) {
    return Status::invalid_argument("every one of the " + std::to_string(p_->rows) +
                                    " rows of column '" + p_->table->schema[column_].name +
                                    "' is written already");
  }
  auto* offsets = reinterpret_cast<int64_t*>(p_->at(c.offsets));
  const auto used = static_cast<uint64_t>(offsets[c.strings_written]);
  if (value.size() > c.data_capacity - used) {
    return Status::invalid_argument("column '" + p_->table->schema[column_].name +
                                    "' needs more than the " + std::to_string(c.data_capacity) +
                                    " string bytes reserved for it in add_partition");
  }
  // An empty view may have a null data(): memcpy must not see it.
  if (!value.empty()) std::memcpy(p_->at(c.data + used), value.data(), value.size());
  offsets[c.strings_written + 1] = static_cast<int64_t>(used + value.size());
  ++c.strings_written;
  return Status();
}

Status StringColumnWriter::append_null() {
  const uint64_t row = p_->columns[column_].strings_written;
  SHELF_RETURN_IF_ERROR(append({}));
  p_->set_null(column_, row);
  return Status();
}

uint64_t StringColumnWriter::rows_written() const { return p_->columns[column_].strings_written; }

uint64_t PartitionBuilder::num_rows() const { return p_->rows; }
size_t PartitionBuilder::schema_size() const { return p_->table->schema.size(); }
Type PartitionBuilder::column_type(size_t column) const { return p_->table->schema[column].type; }
std::byte* PartitionBuilder::data(size_t column) { return p_->at(p_->columns[column].data); }
bool PartitionBuilder::writable() const { return p_->writable(); }

StringColumnWriter PartitionBuilder::strings(size_t column) {
  SHELF_CHECK(column < schema_size() && column_type(column) == Type::kString);
  return StringColumnWriter(p_, column);
}

void PartitionBuilder::set_null(size_t column, uint64_t row) { p_->set_null(column, row); }

std::span<std::byte> PartitionBuilder::bytes() {
  if (!is_bytes_schema(p_->table->schema) || !p_->writable()) return {};
  return {data(0), static_cast<size_t>(p_->rows)};
}

TableBuilder::TableBuilder(std::unique_ptr<internal::TableState> state)
    : state_(std::move(state)) {}
TableBuilder::TableBuilder(TableBuilder&&) noexcept = default;
TableBuilder& TableBuilder::operator=(TableBuilder&&) noexcept = default;
TableBuilder::~TableBuilder() = default;

const Schema& TableBuilder::schema() const { return state_->schema; }
uint64_t TableBuilder::num_partitions() const { return state_->partitions.size(); }

Result<PartitionBuilder> TableBuilder::add_partition(uint64_t num_rows,
                                                     std::span<const uint64_t> string_bytes) {
  SHELF_ASSIGN_OR_RETURN(internal::PartitionState * p,
                         state_->add_partition(num_rows, string_bytes));
  return PartitionBuilder(p);
}

Status TableBuilder::append_partition(uint64_t num_rows, std::span<const ColumnData> columns) {
  const Schema& schema = state_->schema;
  if (columns.size() != schema.size()) {
    return Status::invalid_argument("append_partition needs " + std::to_string(schema.size()) +
                                    " columns, got " + std::to_string(columns.size()));
  }
  std::vector<uint64_t> string_bytes;
  for (size_t i = 0; i < schema.size(); ++i) {
    const ColumnData& c = columns[i];
    const Type type = schema[i].type;
    if (type == Type::kString) {
      if (c.offsets == nullptr || c.offsets[num_rows] < c.offsets[0] ||
          static_cast<uint64_t>(c.offsets[num_rows]) > c.data_bytes) {
        return Status::invalid_argument("column '" + schema[i].name +
                                        "': string offsets missing or past its data");
      }
      string_bytes.push_back(static_cast<uint64_t>(c.offsets[num_rows] - c.offsets[0]));
    } else {
      const uint64_t want = type == Type::kBytes ? num_rows : num_rows * fixed_width(type);
      if (c.data_bytes != want || (want > 0 && c.data == nullptr)) {
        return Status::invalid_argument(
            "column '" + schema[i].name + "' has " + std::to_string(c.data_bytes) + " bytes; " +
            std::to_string(num_rows) + " rows of " + std::string(type_name(type)) + " need " +
            std::to_string(want));
      }
    }
  }
  SHELF_ASSIGN_OR_RETURN(PartitionBuilder p, add_partition(num_rows, string_bytes));
  internal::PartitionState& state = *p.p_;
  for (size_t i = 0; i < schema.size(); ++i) {
    const ColumnData& c = columns[i];
    internal::PartitionState::Column& col = state.columns[i];
    if (schema[i].type == Type::kString) {
      const int64_t base = c.offsets[0];
      auto* offsets = reinterpret_cast<int64_t*>(state.at(col.offsets));
      for (uint64_t r = 0; r <= num_rows; ++r) offsets[r] = c.offsets[r] - base;
      const auto data_bytes = static_cast<size_t>(c.offsets[num_rows] - base);
      if (data_bytes > 0) {
        std::memcpy(state.at(col.data), static_cast<const char*>(c.data) + base, data_bytes);
      }
      col.strings_written = num_rows;
    } else if (c.data_bytes > 0) {
      std::memcpy(state.at(col.data), c.data, c.data_bytes);
    }
    if (c.validity != nullptr && schema[i].type != Type::kBytes) {
      std::memcpy(state.at(col.validity), c.validity, (num_rows + 7) / 8);
      col.has_validity = true;
    }
  }
  return Status();
}

Status TableBuilder::append_bytes(std::span<const std::byte> payload) {
  if (!is_bytes_schema(state_->schema)) {
    return Status::invalid_argument("append_bytes needs a table made with bytes_schema()");
  }
  ColumnData c{payload.data(), payload.size(), nullptr, nullptr};
  return append_partition(payload.size(), std::span<const ColumnData>(&c, 1));
}

}  // namespace shelf
