// shelf._shelf: the C++ client library (libclient) as a small Python module.
//
// This layer only moves bytes and maps errors; the Dask-shaped API
// (publish_dataset, datasets, pandas and Dask conversions) is Python, in
// shelf/__init__.py. What matters here:
//  - Column values come out as read-only numpy arrays over the segment, with
//    no copy. Each array's base is the _Dataset it came from, which holds the
//    lease: the daemon keeps the memory until the last such array is gone.
//  - Tables go in with one copy, from numpy buffers straight into the shared
//    memory the TableBuilder reserved.
//  - Status codes become the Python exceptions Dask raises (KeyError,
//    MemoryError, ConnectionError...). A Status message is already a sentence
//    a user can act on, so it is passed through unchanged.
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <shelf/arrow.h>
#include <shelf/client.h>
#include <shelf/filter.h>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

namespace {

// Raised for kCorruption: a checksum or layout check failed.
PyObject* g_corruption_error = nullptr;

[[noreturn]] void raise_status(const shelf::Status& status) {
  using Code = shelf::Status::Code;
  PyObject* type = PyExc_RuntimeError;
  switch (status.code()) {
    case Code::kNotFound:
    case Code::kAlreadyExists:
      type = PyExc_KeyError;
      break;
    case Code::kInvalidArgument:
      type = PyExc_ValueError;
      break;
    case Code::kResourceExhausted:
      type = PyExc_MemoryError;
      break;
    case Code::kUnavailable:
      type = PyExc_ConnectionError;
      break;
    case Code::kPermissionDenied:
      type = PyExc_PermissionError;
      break;
    case Code::kCorruption:
      type = g_corruption_error;
      break;
    case Code::kIoError:
      type = PyExc_OSError;
      break;
    case Code::kTimedOut:
      type = PyExc_TimeoutError;
      break;
    case Code::kOk:
    case Code::kInternal:
      break;
  }
  PyErr_SetString(type, status.message().c_str());
  throw py::error_already_set();
}

void check(const shelf::Status& status) {
  if (!status.ok()) raise_status(status);
}

template <class T>
T take(shelf::Result<T>&& result) {
  if (!result.ok()) raise_status(result.status());
  return std::move(result).value();
}

// The numpy dtype of a fixed-width column ("<i8", "<M8[ns]", "|b1", ...).
py::dtype dtype_of(shelf::Type type) {
  using shelf::Type;
  switch (type) {
    case Type::kInt8:
      return py::dtype("i1");
    case Type::kInt16:
      return py::dtype("<i2");
    case Type::kInt32:
      return py::dtype("<i4");
    case Type::kInt64:
      return py::dtype("<i8");
    case Type::kUInt8:
      return py::dtype("u1");
    case Type::kUInt16:
      return py::dtype("<u2");
    case Type::kUInt32:
      return py::dtype("<u4");
    case Type::kUInt64:
      return py::dtype("<u8");
    case Type::kFloat32:
      return py::dtype("<f4");
    case Type::kFloat64:
      return py::dtype("<f8");
    case Type::kBool:
      return py::dtype("?");  // one byte per value, 0 or 1: numpy's own layout
    case Type::kTimestamp:
      return py::dtype("<M8[ns]");
    case Type::kString:
    case Type::kBytes:
      break;
  }
  throw py::type_error("column type " + std::string(shelf::type_name(type)) + " has no numpy view");
}

shelf::Type parse_type(const std::string& name) {
  auto type = shelf::parse_type(name);
  if (!type) throw py::value_error("unknown shelf column type '" + name + "'");
  return *type;
}

py::array read_only_view(py::dtype dtype, size_t count, const void* data, py::handle owner) {
  py::array array(dtype, {static_cast<py::ssize_t>(count)}, {}, data, owner);
  // Constructed with a base, numpy marks the array writeable; the memory is
  // mapped PROT_READ, so say so before anyone tries (and gets SIGSEGV).
  py::detail::array_proxy(array.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return array;
}

// A published dataset; holds its lease (and, through it, the connection and
// the mapping) for as long as it, or any array taken from it, lives. There is
// deliberately no release(): ending the lease under a live numpy view would
// leave the view reading memory the daemon may reuse.
class PyDataset {
 public:
  explicit PyDataset(shelf::Dataset dataset)
      : dataset_(std::make_shared<shelf::Dataset>(std::move(dataset))) {}

  const shelf::Dataset& get() const { return *dataset_; }
  // Shared with Arrow exports, which keep the lease until their last release.
  const std::shared_ptr<const shelf::Dataset>& shared() const { return dataset_; }

  shelf::ColumnView column(uint64_t partition, size_t column) const {
    if (partition >= dataset_->num_partitions()) {
      throw py::index_error("partition " + std::to_string(partition) + " out of range (" +
                            std::to_string(dataset_->num_partitions()) + " partitions)");
    }
    if (column >= dataset_->schema().size()) {
      throw py::index_error("column " + std::to_string(column) + " out of range");
    }
    return dataset_->column(partition, column);
  }

 private:
  std::shared_ptr<const shelf::Dataset> dataset_;
};

// Zero-copy values of one fixed-width column of one partition.
py::array values(py::object self, uint64_t partition, size_t column) {
  auto& ds = self.cast<PyDataset&>();
  shelf::ColumnView view = ds.column(partition, column);
  return read_only_view(dtype_of(view.type()), view.length(), view.data().data(), self);
}

// The payload of one raw-bytes partition, zero-copy, as a read-only uint8 array.
py::array payload(py::object self, uint64_t partition) {
  auto& ds = self.cast<PyDataset&>();
  if (!ds.get().is_bytes()) throw py::type_error("not a raw-bytes dataset");
  shelf::ColumnView view = ds.column(partition, 0);
  return read_only_view(py::dtype("u1"), view.data().size(), view.data().data(), self);
}

// True where row i is null, or None when the column has no nulls.
py::object null_mask(const PyDataset& ds, uint64_t partition, size_t column, uint64_t rows) {
  shelf::ColumnView view = ds.column(partition, column);
  if (view.null_count() == 0) return py::none();
  rows = std::min<uint64_t>(rows, view.length());
  py::array_t<bool> mask(static_cast<py::ssize_t>(rows));
  bool* out = mask.mutable_data();
  for (uint64_t i = 0; i < rows; ++i) out[i] = !view.is_valid(i);
  return mask;
}

// The first `rows` strings of a string column, as an object array of str
// (None for nulls). This copies: Python strings cannot view shared memory.
py::array strings(const PyDataset& ds, uint64_t partition, size_t column, uint64_t rows) {
  shelf::ColumnView view = ds.column(partition, column);
  if (view.type() != shelf::Type::kString) throw py::type_error("not a string column");
  rows = std::min<uint64_t>(rows, view.length());
  py::array out(py::dtype("O"), std::vector<py::ssize_t>{static_cast<py::ssize_t>(rows)});
  auto** slots = static_cast<PyObject**>(out.mutable_data());  // NULL-filled by numpy
  for (uint64_t i = 0; i < rows; ++i) {
    PyObject* item;
    if (!view.is_valid(i)) {
      item = Py_NewRef(Py_None);
    } else {
      std::string_view s = view.string(i);
      item = PyUnicode_DecodeUTF8(s.data(), static_cast<py::ssize_t>(s.size()), "strict");
      if (item == nullptr) throw py::error_already_set();
    }
    Py_XDECREF(slots[i]);
    slots[i] = item;
  }
  return out;
}

// A table being built; published by PyClient::publish.
class PyTable {
 public:
  explicit PyTable(shelf::TableBuilder table) : table_(std::move(table)) {}
  shelf::TableBuilder& get() {
    if (!table_) throw py::value_error("this table was aborted: its memory is given back");
    return *table_;
  }
  // Gives the table's memory back now, not when Python collects the object
  // (a traceback can hold it for long): a failed publish keeps nothing.
  void abort() { table_.reset(); }

  // Appends one partition of `rows` rows. `columns` follows the schema: a
  // C-contiguous numpy array of the column's exact dtype for fixed-width
  // columns, a sequence of str/None for string columns. `nulls` is None or a
  // list holding, per column, None or a bool array (True = null).
  void append_partition(uint64_t rows, const py::list& columns, const py::object& nulls) {
    const shelf::Schema& schema = get().schema();
    if (columns.size() != schema.size()) {
      throw py::value_error("expected " + std::to_string(schema.size()) + " columns, got " +
                            std::to_string(columns.size()));
    }
    // Pass 1: check everything and size the strings, before any memory is taken.
    std::vector<py::buffer_info> fixed(schema.size());
    std::vector<std::vector<std::string_view>> text(schema.size());
    // The str objects behind `text`: their UTF-8 lives as long as they do,
    // and a sequence may hand out fresh objects on each access.
    std::vector<py::object> keep_alive;
    std::vector<std::vector<bool>> text_null(schema.size());
    std::vector<uint64_t> string_bytes;
    for (size_t c = 0; c < schema.size(); ++c) {
      const shelf::Field& field = schema[c];
      py::handle column = columns[c];
      if (field.type == shelf::Type::kString) {
        py::sequence seq = py::reinterpret_borrow<py::sequence>(column);
        if (static_cast<uint64_t>(py::len(seq)) != rows) bad_length(field.name, py::len(seq), rows);
        uint64_t bytes = 0;
        text[c].reserve(rows);
        text_null[c].reserve(rows);
        for (uint64_t r = 0; r < rows; ++r) {
          py::object item = seq[r];
          const bool is_null = item.is_none() || (PyFloat_Check(item.ptr()) &&
                                                  std::isnan(PyFloat_AsDouble(item.ptr())));
          if (is_null) {
            text[c].emplace_back();
          } else if (PyUnicode_Check(item.ptr())) {
            py::ssize_t size = 0;
            const char* utf8 = PyUnicode_AsUTF8AndSize(item.ptr(), &size);
            if (utf8 == nullptr) throw py::error_already_set();
            text[c].emplace_back(utf8, static_cast<size_t>(size));
            keep_alive.push_back(std::move(item));
          } else {
            throw py::type_error("column '" + field.name + "' holds a " +
                                 std::string(py::str(py::type::of(item).attr("__name__"))) +
                                 " at row " + std::to_string(r) +
                                 "; a string column takes str and None only");
          }
          text_null[c].push_back(is_null);
          bytes += text[c].back().size();
        }
        string_bytes.push_back(bytes);
      } else {
        // Timestamps come as their int64 view: the buffer protocol has no datetime64.
        py::dtype want =
            field.type == shelf::Type::kTimestamp ? py::dtype("<i8") : dtype_of(field.type);
        if (!py::isinstance<py::array>(column)) {
          throw py::type_error("column '" + field.name + "' must be a numpy array");
        }
        py::array array = py::reinterpret_borrow<py::array>(column);
        if (!array.dtype().equal(want)) {
          throw py::type_error("column '" + field.name + "' must be " + std::string(py::str(want)) +
                               ", not " + std::string(py::str(array.dtype())));
        }
        if (!(array.flags() & py::array::c_style)) {
          throw py::value_error("column '" + field.name + "' must be C-contiguous");
        }
        if (static_cast<uint64_t>(array.size()) != rows) {
          bad_length(field.name, array.size(), rows);
        }
        fixed[c] = array.request();
      }
    }
    std::vector<std::optional<py::array_t<bool>>> masks(schema.size());
    if (!nulls.is_none()) {
      py::list list = nulls;
      if (list.size() != schema.size()) {
        throw py::value_error("expected a null mask (or None) for each of " +
                              std::to_string(schema.size()) + " columns");
      }
      for (size_t c = 0; c < schema.size(); ++c) {
        if (list[c].is_none()) continue;
        if (schema[c].type == shelf::Type::kBytes) throw py::value_error("raw bytes have no nulls");
        masks[c] = py::array_t<bool, py::array::c_style | py::array::forcecast>(list[c]);
        if (static_cast<uint64_t>(masks[c]->size()) != rows) {
          bad_length(schema[c].name, masks[c]->size(), rows);
        }
      }
    }
    // Pass 2: reserve the partition and write every column in place.
    shelf::PartitionBuilder p = take(get().add_partition(rows, string_bytes));
    for (size_t c = 0; c < schema.size(); ++c) {
      if (schema[c].type == shelf::Type::kString) {
        shelf::StringColumnWriter writer = p.strings(c);
        for (uint64_t r = 0; r < rows; ++r) {
          check(text_null[c][r] ? writer.append_null() : writer.append(text[c][r]));
        }
        continue;
      }
      if (rows > 0) {
        std::memcpy(writable_values(p, c, schema[c].type), fixed[c].ptr,
                    rows * shelf::fixed_width(schema[c].type));
      }
      if (masks[c]) {
        const bool* m = masks[c]->data();
        for (uint64_t r = 0; r < rows; ++r) {
          if (m[r]) p.set_null(c, r);
        }
      }
    }
  }

  // One raw-bytes partition holding a copy of any C-contiguous buffer.
  void append_bytes(const py::object& payload) {
    Py_buffer view;
    if (PyObject_GetBuffer(payload.ptr(), &view, PyBUF_C_CONTIGUOUS) != 0) {
      throw py::error_already_set();
    }
    shelf::Status status = get().append_bytes(
        {static_cast<const std::byte*>(view.buf), static_cast<size_t>(view.len)});
    PyBuffer_Release(&view);
    check(status);
  }

 private:
  [[noreturn]] static void bad_length(const std::string& column, py::ssize_t got, uint64_t rows) {
    throw py::value_error("column '" + column + "' has " + std::to_string(got) + " rows, not " +
                          std::to_string(rows));
  }
  // The writable values of fixed-width column `c`, whatever its type.
  static void* writable_values(shelf::PartitionBuilder& p, size_t c, shelf::Type type) {
    using shelf::Type;
    switch (type) {
      case Type::kInt8:
        return p.values<int8_t>(c).data();
      case Type::kInt16:
        return p.values<int16_t>(c).data();
      case Type::kInt32:
        return p.values<int32_t>(c).data();
      case Type::kInt64:
      case Type::kTimestamp:
        return p.values<int64_t>(c).data();
      case Type::kUInt8:
      case Type::kBool:
        return p.values<uint8_t>(c).data();
      case Type::kUInt16:
        return p.values<uint16_t>(c).data();
      case Type::kUInt32:
        return p.values<uint32_t>(c).data();
      case Type::kUInt64:
        return p.values<uint64_t>(c).data();
      case Type::kFloat32:
        return p.values<float>(c).data();
      case Type::kFloat64:
        return p.values<double>(c).data();
      case Type::kString:
      case Type::kBytes:
        break;
    }
    throw py::type_error("not a fixed-width column");
  }

  std::optional<shelf::TableBuilder> table_;  // empty once aborted
};

}  // namespace

namespace {

py::dict info_dict(const shelf::DatasetInfo& d) {
  py::dict out;
  out["name"] = d.name;
  out["num_columns"] = d.num_columns;
  out["num_partitions"] = d.num_partitions;
  out["num_rows"] = d.num_rows;
  out["data_bytes"] = d.data_bytes;
  out["memory_bytes"] = d.memory_bytes;
  out["created_ns"] = d.created_ns;
  out["publisher_uid"] = d.publisher_uid;
  out["publisher_pid"] = d.publisher_pid;
  out["spilled"] = d.spilled;
  out["pinned"] = d.pinned;
  out["leases"] = d.leases;
  out["view"] = d.view;
  out["view_of_graph"] = d.view_of_graph;
  out["view_base"] = d.view && !d.view_of_graph ? py::object(py::str(d.view_base)) : py::none();
  return out;
}

// A view's definition as Python sees it (Dataset.view), or None.
py::object view_dict(const shelf::Dataset& d) {
  if (!d.view_definition()) return py::none();
  const shelf::ViewDefinition& v = *d.view_definition();
  py::dict out;
  if (!v.graph.empty()) {
    out["kind"] = "graph";
    out["bases"] = v.graph_bases;
    return out;
  }
  out["kind"] = "filter";
  out["base"] = v.base;
  out["where"] = v.where;
  out["columns"] = v.columns;
  out["limit"] = v.limit ? py::object(py::int_(*v.limit)) : py::none();
  return out;
}

// Seconds (None: without bound) as libclient's timeout; ValueError names `what`.
std::optional<std::chrono::milliseconds> timeout_ms(std::optional<double> timeout,
                                                    const char* what) {
  if (!timeout) return std::nullopt;
  if (!std::isfinite(*timeout) || *timeout < 0) {
    throw py::value_error(std::string(what) +
                          ": timeout must be a number of seconds >= 0, or None");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(std::ceil(*timeout * 1000)));
}

// An event stream (<shelf/events.h>): a connection of its own, which
// shelf.Client.events() iterates. next() waits without the GIL, as
// PyClient::wait() does, Ctrl-C included. An EventStream is used by one
// thread at a time: a second thread calling next() meanwhile is refused
// (RuntimeError) rather than left to race on the socket.
class PyEventStream {
 public:
  explicit PyEventStream(shelf::EventStream stream)
      : stream_(std::make_shared<shelf::EventStream>(std::move(stream))) {}

  // The next event's fields as a dict (shelf/__init__.py picks the keys of
  // its kind), or None when `timeout` passes first. ConnectionError when the
  // daemon has gone.
  py::object next(std::optional<double> timeout) {
    const std::optional<std::chrono::milliseconds> ms = timeout_ms(timeout, "events");
    if (!stream_) throw py::value_error("the event stream is closed");
    if (busy_) throw std::runtime_error("this event stream is being read by another thread");
    bool handler_raised = false;
    const auto interrupted = [&handler_raised] {
      py::gil_scoped_acquire locked;
      handler_raised = PyErr_CheckSignals() != 0;  // its exception stays set
      return handler_raised;
    };
    const std::shared_ptr<shelf::EventStream> stream = stream_;  // a close() meanwhile
    shelf::Result<shelf::Event> event = shelf::Status::internal("no event read");
    busy_ = true;
    {
      py::gil_scoped_release unlocked;
      event = stream->next(ms, interrupted);
    }
    busy_ = false;
    if (handler_raised) throw py::error_already_set();
    if (!event.ok() && event.status().code() == shelf::Status::Code::kTimedOut) return py::none();
    const shelf::Event e = take(std::move(event));
    py::dict out;
    out["kind"] = std::string(shelf::event_kind_name(e.kind));
    out["name"] = e.name;  // UTF-8: the daemon refuses other names
    out["time_ns"] = e.time_ns;
    out["pid"] = e.pid;
    out["uid"] = e.uid;
    out["rows"] = e.num_rows;
    out["partitions"] = e.num_partitions;
    out["memory_bytes"] = e.memory_bytes;
    out["reason"] = e.reason;
    out["generation"] = e.generation;
    out["previous_generation"] = e.previous_generation;
    out["dropped"] = e.dropped;
    return out;
  }

  uint64_t generation() const { return stream_ ? stream_->generation() : 0; }
  void close() { stream_.reset(); }

 private:
  std::shared_ptr<shelf::EventStream> stream_;
  bool busy_ = false;  // a next() is under way (read and written with the GIL held)
};

// One connection to shelfd. Python holds the GIL through every call, so one
// PyClient is never used by two threads at once (a C++ Client is used by one
// thread at a time). The GIL is released only in _Dataset.verify/prefault,
// which read the read-only mapping and nothing else, and in wait(), which
// uses a connection of its own and holds the Client (a shared_ptr) so that a
// close() meanwhile cannot destroy it; meanwhile another thread may drop a
// _Dataset (its Release is serialised with the Client's requests inside
// libclient) or use the client.
class PyClient {
 public:
  explicit PyClient(const std::string& socket) {
    shelf::ClientOptions options;
    options.socket = socket;
    options.client_name = "python";
    client_ = std::make_shared<shelf::Client>(take(shelf::Client::connect(options)));
  }

  shelf::Client& get() {
    if (!client_) throw py::value_error("the shelf client is closed");
    return *client_;
  }
  // Drops the connection unless datasets or tables taken from it still use it.
  void close() { client_.reset(); }

  std::unique_ptr<PyTable> create_table(
      const std::vector<std::pair<std::string, std::string>>& columns) {
    shelf::Schema schema;
    for (const auto& [name, type] : columns) schema.push_back({name, parse_type(type)});
    return std::make_unique<PyTable>(take(get().create_table(std::move(schema))));
  }

  // Publishes (name, table) pairs in one step: all of them or none.
  void publish(const std::vector<std::pair<std::string, PyTable*>>& items, bool override_existing,
               bool pin) {
    std::vector<shelf::NamedTable> tables;
    for (const auto& [name, table] : items) tables.push_back({name, &table->get()});
    shelf::PublishOptions options;
    options.override_existing = override_existing;
    options.pin = pin;
    check(get().publish_datasets(tables, options));
  }

  py::list list() {
    py::list out;
    for (const shelf::DatasetInfo& d : take(get().list_datasets())) out.append(info_dict(d));
    return out;
  }

  // The names alone, sorted, and `in` / len over them: read from the
  // segment's name index (DatasetMap), without a dict per dataset.
  std::vector<std::string> names() { return take(get().datasets().keys()); }
  bool contains(const std::string& name) { return take(get().datasets().contains(name)); }
  size_t count() { return take(get().datasets().size()); }

  std::unique_ptr<PyDataset> get_dataset(const std::string& name) {
    return std::make_unique<PyDataset>(take(get().get_dataset(name)));
  }

  void unpublish(const std::string& name, bool cascade) {
    check(get().unpublish_dataset(name, shelf::UnpublishOptions{cascade}));
  }
  // With the GIL, as get_dataset (a Client is used by one thread at a time).
  void pin(const std::string& name, bool pinned) { check(get().pin_dataset(name, pinned)); }

  // Waits without the GIL: other Python threads run meanwhile. A timeout
  // (TimedOut, naming what is missing) raises TimeoutError. Every
  // kWaitCheckMs, and when a signal interrupts the wait, the check below
  // takes the GIL and runs Python's signal handlers: one that raises (Ctrl-C:
  // KeyboardInterrupt) ends the wait, and its exception is raised here once
  // the wait's connection is closed. The check returns true rather than
  // throwing through libclient, which promises no exceptions.
  void wait(const std::vector<std::string>& names, std::optional<double> timeout) {
    const std::optional<std::chrono::milliseconds> ms = timeout_ms(timeout, "wait_for_dataset");
    bool handler_raised = false;
    const auto interrupted = [&handler_raised] {
      py::gil_scoped_acquire locked;
      // -1: a handler raised; its exception stays set on this thread.
      handler_raised = PyErr_CheckSignals() != 0;
      return handler_raised;
    };
    get();  // raises if closed
    const std::shared_ptr<shelf::Client> client = client_;
    shelf::Status status;
    {
      py::gil_scoped_release unlocked;
      status = client->wait_for_datasets(names, ms, interrupted);
    }
    if (handler_raised) throw py::error_already_set();
    check(status);
  }

  // A new event stream on a connection of its own (Client::subscribe).
  std::unique_ptr<PyEventStream> subscribe(uint64_t last_generation) {
    return std::make_unique<PyEventStream>(take(get().subscribe(last_generation)));
  }

  py::dict status() {
    shelf::MemoryStats s = take(get().status());
    py::dict out;
    out["socket_path"] = s.socket_path;
    out["segment_name"] = s.segment_name;
    out["shm_dir"] = s.shm_dir;
    out["daemon_pid"] = s.daemon_pid;
    out["generation"] = s.generation;
    out["started_ns"] = s.started_ns;
    out["memory_limit"] = s.memory_limit;
    out["used_bytes"] = s.used_bytes;
    out["free_bytes"] = s.free_bytes();
    out["index_bytes"] = s.index_bytes;
    out["unsealed_bytes"] = s.unsealed_bytes;
    out["pending_free_bytes"] = s.pending_free_bytes;
    out["resident_bytes"] = s.resident_bytes;
    out["page_bytes"] = s.page_bytes;
    out["huge_page_bytes"] = s.huge_page_bytes;
    out["num_connections"] = s.num_connections;
    out["num_leases"] = s.num_leases;
    py::list datasets;
    for (const shelf::DatasetInfo& d : s.datasets) datasets.append(info_dict(d));
    out["datasets"] = datasets;
    py::list quarantined;
    for (const shelf::QuarantinedDataset& q : s.quarantined) {
      py::dict d;
      d["name"] = q.name;
      d["memory_bytes"] = q.memory_bytes;
      d["reason"] = q.reason;
      quarantined.append(d);
    }
    out["quarantined"] = quarantined;
    py::list unpublished;
    for (const shelf::UnpublishedDatasetInfo& u : s.unpublished) {
      py::dict d;
      d["name"] = u.name;
      d["memory_bytes"] = u.memory_bytes;
      d["leases"] = u.leases;
      d["restart_hold"] = u.restart_hold;
      unpublished.append(d);
    }
    out["unpublished"] = unpublished;
    py::list clients;
    for (const shelf::ClientInfo& c : s.clients) clients.append(client_dict(c));
    out["clients"] = clients;
    // The keys of `shelf status --json`'s users, but "user" (a uid's name
    // is pwd.getpwuid's to say, as for the clients).
    py::list users;
    for (const shelf::UserUsageInfo& u : s.users) {
      py::dict d;
      d["uid"] = u.uid;
      d["used_bytes"] = u.used_bytes;
      d["quota_bytes"] = u.quota_bytes > 0 ? py::object(py::int_(u.quota_bytes)) : py::none();
      users.append(d);
    }
    out["users"] = users;
    // The keys of `shelf status --json`'s verifying.
    py::dict verifying;
    verifying["datasets_left"] = s.verifying.datasets_left;
    verifying["bytes_left"] = s.verifying.bytes_left;
    verifying["bytes_done"] = s.verifying.bytes_done;
    out["verifying"] = verifying;
    // The keys of `shelf status --json`'s spill.
    py::dict spill;
    spill["dir"] = s.spilling.dir;
    spill["above_bytes"] = s.spilling.above_bytes;
    spill["datasets"] = s.spilling.datasets;
    spill["file_bytes"] = s.spilling.file_bytes;
    out["spill"] = spill;
    return out;
  }

  // Bytes another process wrote, as str: invalid UTF-8 becomes U+FFFD.
  static py::str lenient_str(const std::string& bytes) {
    PyObject* text =
        PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()), "replace");
    if (text == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(text);
  }

  // A process of status()["clients"]: the keys of `shelf status --json`'s,
  // but the time as connected_ns (0 for a process held from before a
  // restart) and the command and client name decoded leniently (a command line
  // need not be UTF-8).
  static py::dict client_dict(const shelf::ClientInfo& c) {
    py::dict d;
    d["pid"] = c.pid;
    d["uid"] = c.uid;
    d["command"] = lenient_str(c.command);
    d["client_name"] = lenient_str(c.client_name);
    d["connected_ns"] = c.connected_ns;
    d["connections"] = c.connections;
    d["leases"] = c.leases;
    d["datasets_held"] = c.datasets_held;
    d["held_bytes"] = c.held_bytes;
    d["unpublished_bytes"] = c.unpublished_bytes;
    d["writing_bytes"] = c.writing_bytes;
    py::list held;
    for (const shelf::HeldDataset& h : c.held) {
      py::dict e;
      e["name"] = h.name;
      e["published"] = h.published;
      e["memory_bytes"] = h.memory_bytes;
      e["leases"] = h.leases;
      e["held_alone"] = h.held_alone;
      held.append(e);
    }
    d["held"] = held;
    return d;
  }

  // Publishes the rows of `base` where `where` holds (shelf/filter.h; empty:
  // every row), the columns `columns` (empty: all), at most `limit` rows,
  // written once into the new dataset's shared memory (Client.publish_filtered).
  // Errors: KeyError (no base, name taken), ValueError (bad expression or
  // column list, with its position), MemoryError (over the daemon's limit).
  void publish_filtered(const std::string& name, const std::string& base, const std::string& where,
                        const std::vector<std::string>& columns, std::optional<uint64_t> limit,
                        bool override_existing, bool pin) {
    shelf::Client& client = get();
    shelf::Dataset dataset = take(client.get_dataset(base));
    shelf::Filter filter = take(shelf::Filter::parse(dataset.schema(), where, columns, limit));
    shelf::TableBuilder table = take(client.create_table(filter.output_schema()));
    check(shelf::write_filtered(dataset, filter, table));
    shelf::PublishOptions options;
    options.override_existing = override_existing;
    options.pin = pin;
    check(client.publish_dataset(name, table, options));
  }

  // A view: its definition only, evaluated by each reader (shelf/view.h).
  // Errors: KeyError (no base, name taken), ValueError (bad expression or
  // column list, a view that would read itself), MemoryError.
  void publish_view(const std::string& name, const std::string& base, const std::string& where,
                    const std::vector<std::string>& columns, std::optional<uint64_t> limit,
                    bool override_existing) {
    shelf::PublishOptions options;
    options.override_existing = override_existing;
    check(get().publish_view(name, {base, where, columns, limit}, options));
  }
  // A view of a pickled Dask collection that reads `bases` (Python's
  // publish_dataset of an un-persisted one).
  void publish_graph_view(const std::string& name, const py::bytes& graph,
                          const std::vector<std::string>& bases, bool override_existing, bool pin) {
    shelf::ViewDefinition view;
    view.graph = graph;
    view.graph_bases = bases;
    shelf::PublishOptions options;
    options.override_existing = override_existing;
    options.pin = pin;
    check(get().publish_view(name, view, options));
  }
  void persist_view(const std::string& view, const std::string& name, bool override_existing,
                    bool pin) {
    shelf::PublishOptions options;
    options.override_existing = override_existing;
    options.pin = pin;
    check(get().persist_view(view, name, options));
  }

  std::string socket_path() { return get().socket_path(); }

 private:
  std::shared_ptr<shelf::Client> client_;  // shared with a wait() under way
};

// ---- Arrow's PyCapsule interface (shelf/arrow.h) ----------------------------
// Capsules named as the spec says ("arrow_schema", "arrow_array_stream"), each owning a heap
// struct. Their destructor releases the struct unless a consumer took it over (and so set its
// release to null), then frees it.

template <class T>
void free_arrow_capsule(PyObject* capsule, const char* name) {
  auto* p = static_cast<T*>(PyCapsule_GetPointer(capsule, name));
  if (p == nullptr) {
    PyErr_Clear();
    return;
  }
  if (p->release != nullptr) p->release(p);
  delete p;
}

template <class T>
py::capsule arrow_capsule(std::unique_ptr<T> p, const char* name) {
  PyCapsule_Destructor destructor = nullptr;
  if constexpr (std::is_same_v<T, ArrowSchema>) {
    destructor = [](PyObject* c) { free_arrow_capsule<ArrowSchema>(c, "arrow_schema"); };
  } else {
    destructor = [](PyObject* c) { free_arrow_capsule<ArrowArrayStream>(c, "arrow_array_stream"); };
  }
  PyObject* capsule = PyCapsule_New(p.get(), name, destructor);
  if (capsule == nullptr) {
    p->release(p.get());
    throw py::error_already_set();
  }
  p.release();
  return py::reinterpret_steal<py::capsule>(capsule);
}

// What of a requested schema (an "arrow_schema" capsule, or None) shelf can
// honour: bool columns asked for as uint8 ("C") are exported unpacked. The
// rest is ignored, as the PyCapsule interface allows: the consumer checks the
// schema it gets.
shelf::ArrowExportOptions arrow_options(const PyDataset& d, const py::object& requested) {
  shelf::ArrowExportOptions options;
  if (requested.is_none()) return options;
  auto* schema = static_cast<ArrowSchema*>(PyCapsule_GetPointer(requested.ptr(), "arrow_schema"));
  if (schema == nullptr) throw py::error_already_set();
  const shelf::Schema& ours = d.get().schema();
  for (int64_t c = 0; c < schema->n_children && static_cast<size_t>(c) < ours.size(); ++c) {
    if (ours[static_cast<size_t>(c)].type == shelf::Type::kBool &&
        std::strcmp(schema->children[c]->format, "C") == 0) {
      options.bools_as_uint8 = true;
    }
  }
  return options;
}

py::capsule arrow_c_schema(const PyDataset& d) {
  auto schema = std::make_unique<ArrowSchema>();
  check(shelf::export_schema(d.get(), schema.get()));
  return arrow_capsule(std::move(schema), "arrow_schema");
}

py::capsule arrow_c_stream(const PyDataset& d, const py::object& requested) {
  auto stream = std::make_unique<ArrowArrayStream>();
  check(shelf::export_stream(d.shared(), stream.get(), arrow_options(d, requested)));
  return arrow_capsule(std::move(stream), "arrow_array_stream");
}

}  // namespace

PYBIND11_MODULE(_shelf, m) {
  m.doc() = "shelf's C++ client library; use the `shelf` package, not this module";

  m.def("default_socket_path", &shelf::default_socket_path,
        "The socket a Client() without socket= connects to; connects to nothing.");

  static py::exception<std::runtime_error> corruption(m, "CorruptionError", PyExc_RuntimeError);
  g_corruption_error = corruption.ptr();

  py::class_<PyDataset>(m, "_Dataset")
      .def_property_readonly("name", [](const PyDataset& d) { return d.get().name(); })
      .def_property_readonly("schema",
                             [](const PyDataset& d) {
                               std::vector<std::pair<std::string, std::string>> out;
                               for (const shelf::Field& f : d.get().schema()) {
                                 out.emplace_back(f.name, std::string(shelf::type_name(f.type)));
                               }
                               return out;
                             })
      .def_property_readonly("num_partitions",
                             [](const PyDataset& d) { return d.get().num_partitions(); })
      .def_property_readonly("num_rows", [](const PyDataset& d) { return d.get().num_rows(); })
      .def_property_readonly("data_bytes", [](const PyDataset& d) { return d.get().data_bytes(); })
      .def_property_readonly("created_ns", [](const PyDataset& d) { return d.get().created_ns(); })
      .def_property_readonly("is_bytes", [](const PyDataset& d) { return d.get().is_bytes(); })
      .def_property_readonly("view", [](const PyDataset& d) { return view_dict(d.get()); })
      .def("null_count",
           [](const PyDataset& d, uint64_t p, size_t c) { return d.column(p, c).null_count(); })
      .def("partition_rows",
           [](const PyDataset& d, uint64_t p) {
             if (p >= d.get().num_partitions()) throw py::index_error("partition out of range");
             return d.get().num_rows(p);
           })
      .def("values", &values, py::arg("partition"), py::arg("column"))
      .def("arrow_c_schema", &arrow_c_schema)
      .def("arrow_c_stream", &arrow_c_stream, py::arg("requested_schema") = py::none())
      .def("payload", &payload, py::arg("partition"))
      .def("null_mask", &null_mask, py::arg("partition"), py::arg("column"), py::arg("rows"))
      .def("strings", &strings, py::arg("partition"), py::arg("column"), py::arg("rows"))
      // Both read every byte of the dataset: other Python threads run meanwhile.
      .def("verify",
           [](const PyDataset& d) {
             shelf::Status status;
             {
               py::gil_scoped_release unlocked;
               status = d.get().verify();
             }
             check(status);
           })
      .def(
          "prefault",
          [](const PyDataset& d, unsigned threads) {
            shelf::Status status;
            {
              py::gil_scoped_release unlocked;
              status = d.get().prefault(threads);
            }
            check(status);
          },
          py::arg("threads") = 2);

  py::class_<PyTable>(m, "_Table")
      .def("append_partition", &PyTable::append_partition, py::arg("rows"), py::arg("columns"),
           py::arg("nulls") = py::none())
      .def("append_bytes", &PyTable::append_bytes, py::arg("payload"))
      .def("abort", &PyTable::abort);

  py::class_<PyEventStream>(m, "_EventStream")
      .def("next", &PyEventStream::next, py::arg("timeout") = py::none())
      .def_property_readonly("generation", &PyEventStream::generation)
      .def("close", &PyEventStream::close);

  py::class_<PyClient>(m, "_Client")
      .def(py::init<const std::string&>(), py::arg("socket") = "")
      .def("close", &PyClient::close)
      .def("create_table", &PyClient::create_table, py::arg("columns"))
      .def("publish", &PyClient::publish, py::arg("items"), py::arg("override"),
           py::arg("pin") = false)
      .def("list", &PyClient::list)
      .def("names", &PyClient::names)
      .def("contains", &PyClient::contains, py::arg("name"))
      .def("count", &PyClient::count)
      .def("get", &PyClient::get_dataset, py::arg("name"))
      .def("unpublish", &PyClient::unpublish, py::arg("name"), py::arg("cascade") = false)
      .def("pin", &PyClient::pin, py::arg("name"), py::arg("pinned"))
      .def("wait", &PyClient::wait, py::arg("names"), py::arg("timeout") = py::none())
      .def("subscribe", &PyClient::subscribe, py::arg("last_generation") = 0)
      .def("status", &PyClient::status)
      .def("publish_filtered", &PyClient::publish_filtered, py::arg("name"), py::arg("base"),
           py::arg("where") = "", py::arg("columns") = std::vector<std::string>{},
           py::arg("limit") = py::none(), py::arg("override") = false, py::arg("pin") = false)
      .def("publish_view", &PyClient::publish_view, py::arg("name"), py::arg("base"),
           py::arg("where") = "", py::arg("columns") = std::vector<std::string>{},
           py::arg("limit") = py::none(), py::arg("override") = false)
      .def("publish_graph_view", &PyClient::publish_graph_view, py::arg("name"), py::arg("graph"),
           py::arg("bases"), py::arg("override") = false, py::arg("pin") = false)
      .def("persist_view", &PyClient::persist_view, py::arg("view"), py::arg("name"),
           py::arg("override") = false, py::arg("pin") = false)
      .def_property_readonly("socket_path", &PyClient::socket_path);
}
