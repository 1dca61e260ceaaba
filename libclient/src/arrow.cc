// Arrow's C Data and Stream interfaces over shelf datasets (shelf/arrow.h).
//
// Each exported ArrowArray and ArrowSchema, parent or child, owns what its
// private_data points to and nothing else, so a consumer may move a child out
// and release it apart from its parent, as the spec allows.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <shelf/arrow.h>

namespace shelf {

namespace {

// ------------------------------------------------------------ schemas --

struct SchemaPrivate {
  std::string format;
  std::string name;
  std::vector<ArrowSchema> children;  // moved out by a consumer: release set to null
  std::vector<ArrowSchema*> child_pointers;
};

void release_schema(ArrowSchema* schema) {
  auto* p = static_cast<SchemaPrivate*>(schema->private_data);
  for (ArrowSchema& child : p->children) {
    if (child.release != nullptr) child.release(&child);
  }
  delete p;
  schema->release = nullptr;  // the spec's mark of a released struct
}

// Fills `out` with a schema that owns `p`.
void fill_schema(ArrowSchema* out, SchemaPrivate* p, int64_t flags) {
  for (ArrowSchema& child : p->children) p->child_pointers.push_back(&child);
  out->format = p->format.c_str();
  out->name = p->name.c_str();
  out->metadata = nullptr;
  out->flags = flags;
  out->n_children = static_cast<int64_t>(p->children.size());
  out->children = p->child_pointers.empty() ? nullptr : p->child_pointers.data();
  out->dictionary = nullptr;
  out->release = &release_schema;
  out->private_data = p;
}

const char* arrow_format(Type type, const ArrowExportOptions& options) {
  switch (type) {
    case Type::kInt8:
      return "c";
    case Type::kInt16:
      return "s";
    case Type::kInt32:
      return "i";
    case Type::kInt64:
      return "l";
    case Type::kUInt8:
      return "C";
    case Type::kUInt16:
      return "S";
    case Type::kUInt32:
      return "I";
    case Type::kUInt64:
      return "L";
    case Type::kFloat32:
      return "f";
    case Type::kFloat64:
      return "g";
    case Type::kBool:
      return options.bools_as_uint8 ? "C" : "b";
    case Type::kString:
      return "U";  // large_utf8: int64 offsets
    case Type::kTimestamp:
      return "tsn:UTC";
    case Type::kBytes:
      break;
  }
  return nullptr;
}

Status check_table(const Dataset& dataset) {
  if (dataset.is_bytes()) {
    return Status::invalid_argument("dataset '" + dataset.name() +
                                    "' holds raw bytes, not a table: it has no Arrow form");
  }
  return Status();
}

// ------------------------------------------------------------- arrays --

struct ArrayPrivate {
  std::shared_ptr<const Dataset> dataset;  // the lease, until the last release
  std::vector<const void*> buffers;
  std::vector<uint8_t> bits;         // a bool column packed to bits
  std::vector<ArrowArray> children;  // the struct's columns
  std::vector<ArrowArray*> child_pointers;
};

void release_array(ArrowArray* array) {
  auto* p = static_cast<ArrayPrivate*>(array->private_data);
  for (ArrowArray& child : p->children) {
    if (child.release != nullptr) child.release(&child);
  }
  delete p;
  array->release = nullptr;
}

void fill_array(ArrowArray* out, ArrayPrivate* p, int64_t length, int64_t null_count) {
  for (ArrowArray& child : p->children) p->child_pointers.push_back(&child);
  out->length = length;
  out->null_count = null_count;
  out->offset = 0;
  out->n_buffers = static_cast<int64_t>(p->buffers.size());
  out->n_children = static_cast<int64_t>(p->children.size());
  out->buffers = p->buffers.data();
  out->children = p->child_pointers.empty() ? nullptr : p->child_pointers.data();
  out->dictionary = nullptr;
  out->release = &release_array;
  out->private_data = p;
}

// Arrow's LSB-first bits of shelf's one-byte bools (any non-zero byte is true).
std::vector<uint8_t> pack_bools(std::span<const uint8_t> bytes) {
  // At least one byte: a buffer pointer is never null, even for no rows.
  std::vector<uint8_t> bits(std::max<size_t>(1, (bytes.size() + 7) / 8), 0);
  for (size_t i = 0; i < bytes.size(); ++i) {
    bits[i / 8] |= static_cast<uint8_t>((bytes[i] != 0 ? 1u : 0u) << (i % 8));
  }
  return bits;
}

// One column of one partition as a child array.
void fill_column(ArrowArray* out, const std::shared_ptr<const Dataset>& dataset,
                 const ColumnView& column, const ArrowExportOptions& options) {
  auto p = std::make_unique<ArrayPrivate>();
  p->dataset = dataset;
  // No bitmap in shelf means no nulls: the spec allows a null validity buffer then.
  p->buffers.push_back(column.validity_bitmap().empty() ? nullptr
                                                        : column.validity_bitmap().data());
  if (column.type() == Type::kString) {
    p->buffers.push_back(column.string_offsets().data());
    p->buffers.push_back(column.data().data());
  } else if (column.type() == Type::kBool && !options.bools_as_uint8) {
    p->bits = pack_bools(column.values<uint8_t>());
    p->buffers.push_back(p->bits.data());
  } else {
    p->buffers.push_back(column.data().data());
  }
  fill_array(out, p.release(), static_cast<int64_t>(column.length()),
             static_cast<int64_t>(column.null_count()));
}

// ------------------------------------------------------------ streams --

struct StreamPrivate {
  std::shared_ptr<const Dataset> dataset;
  ArrowExportOptions options;
  uint64_t next_partition = 0;
  std::string last_error;
};

int stream_get_schema(ArrowArrayStream* stream, ArrowSchema* out) {
  auto* p = static_cast<StreamPrivate*>(stream->private_data);
  Status s = export_schema(*p->dataset, out, p->options);
  if (s.ok()) return 0;
  p->last_error = s.message();
  return EINVAL;
}

int stream_get_next(ArrowArrayStream* stream, ArrowArray* out) {
  auto* p = static_cast<StreamPrivate*>(stream->private_data);
  if (p->next_partition >= p->dataset->num_partitions()) {
    std::memset(out, 0, sizeof *out);  // released: the end of the stream
    return 0;
  }
  Status s = export_partition(p->dataset, p->next_partition, out, p->options);
  if (!s.ok()) {
    p->last_error = s.message();
    return EINVAL;
  }
  ++p->next_partition;
  return 0;
}

const char* stream_get_last_error(ArrowArrayStream* stream) {
  auto* p = static_cast<StreamPrivate*>(stream->private_data);
  return p->last_error.empty() ? nullptr : p->last_error.c_str();
}

void stream_release(ArrowArrayStream* stream) {
  delete static_cast<StreamPrivate*>(stream->private_data);
  stream->release = nullptr;
}

}  // namespace

Status export_schema(const Dataset& dataset, ArrowSchema* out, const ArrowExportOptions& options) {
  SHELF_RETURN_IF_ERROR(check_table(dataset));
  auto p = std::make_unique<SchemaPrivate>();
  p->format = "+s";
  p->children.resize(dataset.schema().size());
  for (size_t c = 0; c < dataset.schema().size(); ++c) {
    const Field& field = dataset.schema()[c];
    auto child = std::make_unique<SchemaPrivate>();
    child->format = arrow_format(field.type, options);
    child->name = field.name;
    fill_schema(&p->children[c], child.release(), ARROW_FLAG_NULLABLE);
  }
  fill_schema(out, p.release(), 0);
  return Status();
}

Status export_partition(std::shared_ptr<const Dataset> dataset, uint64_t partition, ArrowArray* out,
                        const ArrowExportOptions& options) {
  SHELF_RETURN_IF_ERROR(check_table(*dataset));
  if (partition >= dataset->num_partitions()) {
    return Status::invalid_argument(
        "dataset '" + dataset->name() + "' has " + std::to_string(dataset->num_partitions()) +
        " partitions: there is no partition " + std::to_string(partition));
  }
  auto p = std::make_unique<ArrayPrivate>();
  p->dataset = dataset;
  p->buffers.push_back(nullptr);  // the struct itself has no nulls
  p->children.resize(dataset->schema().size());
  for (size_t c = 0; c < dataset->schema().size(); ++c) {
    fill_column(&p->children[c], dataset, dataset->column(partition, c), options);
  }
  fill_array(out, p.release(), static_cast<int64_t>(dataset->num_rows(partition)), 0);
  return Status();
}

Status export_array(std::shared_ptr<const Dataset> dataset, ArrowArray* out,
                    const ArrowExportOptions& options) {
  if (dataset->num_partitions() != 1) {
    return Status::invalid_argument(
        "dataset '" + dataset->name() + "' has " + std::to_string(dataset->num_partitions()) +
        " partitions: one array of it would be a copy; export it as a stream of partitions");
  }
  return export_partition(std::move(dataset), 0, out, options);
}

Status export_stream(std::shared_ptr<const Dataset> dataset, ArrowArrayStream* out,
                     const ArrowExportOptions& options) {
  SHELF_RETURN_IF_ERROR(check_table(*dataset));
  auto p = std::make_unique<StreamPrivate>();
  p->dataset = std::move(dataset);
  p->options = options;
  out->get_schema = &stream_get_schema;
  out->get_next = &stream_get_next;
  out->get_last_error = &stream_get_last_error;
  out->release = &stream_release;
  out->private_data = p.release();
  return Status();
}

}  // namespace shelf
