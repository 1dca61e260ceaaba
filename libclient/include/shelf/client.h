// Client: one connection to the local shelfd, and the whole C++ API.
//
// The vocabulary is Dask's published datasets: publish_dataset,
// list_datasets, get_dataset, unpublish_dataset and a datasets() mapping.
//
//   shelf::Client client = shelf::Client::connect().value();
//   shelf::Dataset ds = client.get_dataset("accounts").value();
//   std::span<const int64_t> balance = ds.column(0, 1).values<int64_t>();  // no copy
//
// Datasets and TableBuilders a Client hands out keep the connection and the
// mapping alive, so they may outlive the Client object.
//
// Threads. A Client (with the TableBuilders and the DatasetMap it makes) is
// used by one thread at a time: use one per thread, or a lock of your own.
// A Dataset's const members (its views, verify(), prefault()) may be used by
// any number of threads at once. Any thread may destroy (or release()) a
// Dataset or a TableBuilder, also while the Client's thread is in a call: the
// Release or Abort it sends goes through the connection's send path, which a
// mutex shared by the Client and everything it handed out serialises with the
// Client's own requests. Such a destructor waits for at most the one round
// trip in progress (bounded by ClientOptions::request_timeout).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <shelf/dataset.h>
#include <shelf/events.h>
#include <shelf/result.h>
#include <shelf/table_builder.h>
#include <shelf/types.h>
#include <shelf/view.h>

namespace shelf {

// The socket a Client connects to when ClientOptions::socket is empty:
// $SHELF_SOCKET if set and non-empty, else $XDG_RUNTIME_DIR/shelf/shelf.sock,
// else /tmp/shelf-<uid>/shelf.sock. Connects to nothing. (The one definition
// is base/paths.cc, which the tools use as well.)
std::string default_socket_path();

struct ClientOptions {
  std::string socket;  // empty: $SHELF_SOCKET, else the per-user default (see shelfd --help)
  std::string client_name = "libshelf";  // shown in the daemon's log and shelf status --clients
  bool verify_checksums = false;         // verify every buffer's XXH3 in get_dataset: one read pass
  // Longest wait for shelfd to answer one request (or take one): past it the
  // call fails with Unavailable and the connection is dropped, so a hung
  // daemon cannot block a client for ever. 0 waits without bound.
  std::chrono::milliseconds request_timeout{30000};
};

struct PublishOptions {
  bool override_existing = false;  // replace a dataset of the same name (Dask's override=True)
  // Never spilled to disk (shelfd --spill-dir) while published; unpin with
  // Client::pin_dataset(name, false). A replaced dataset's pin goes with it.
  bool pin = false;
};

// What list_datasets() reports of a published dataset.
struct DatasetInfo {
  std::string name;
  uint32_t num_columns = 0;
  uint64_t num_partitions = 0;
  uint64_t num_rows = 0;
  uint64_t data_bytes = 0;    // sum of the buffers
  uint64_t memory_bytes = 0;  // what it takes from the memory limit
  int64_t created_ns = 0;
  uint32_t publisher_uid = 0;
  uint32_t publisher_pid = 0;
  // Readers holding it now: in status().datasets only. list_datasets()
  // reads the segment, not the daemon, and leaves it 0.
  uint32_t leases = 0;
  // Its buffers are in shelfd's spill directory (shelfd --spill-dir), not in
  // memory: memory_bytes is its descriptor's; a get reads it back first.
  bool spilled = false;
  bool pinned = false;  // never spilled (PublishOptions::pin, Client::pin_dataset)
  // A view (shelf/view.h): no buffers (rows, partitions and data_bytes 0;
  // memory_bytes its definition's pages; num_columns those it names, 0 for
  // all), evaluated by readers against view_base; or, view_of_graph, a
  // view of a Dask graph (view_base empty), which Python evaluates.
  bool view = false;
  bool view_of_graph = false;
  std::string view_base;
};

struct GetOptions {
  // At most the first max_rows rows are wanted (`shelf head`): a view is
  // evaluated only that far, and has at most that many rows. A stored
  // dataset is returned whole: its rows are in memory already.
  std::optional<uint64_t> max_rows;
};

struct UnpublishOptions {
  // Also remove every view that reads the dataset, directly or through
  // other views; without it such a dataset is not unpublished.
  bool cascade = false;
};

// A dataset shelfd found damaged when it restarted (a checksum or its
// layout did not match): kept but never served, until unpublished.
struct QuarantinedDataset {
  std::string name;
  uint64_t memory_bytes = 0;
  std::string reason;  // e.g. "checksum mismatch in partition 0 column 'v'"
};

// A dataset that has left the index (unpublished, or replaced by an
// override) but is still read: its memory comes back when the last reader
// lets go (MemoryStats::pending_free_bytes counts it).
struct UnpublishedDatasetInfo {
  std::string name;
  uint64_t memory_bytes = 0;
  uint32_t leases = 0;
  // Kept for processes that mapped the segment before shelfd restarted
  // (ClientInfo::connections 0): they may still read it.
  bool restart_hold = false;
};

// What one process holds of one dataset (ClientInfo::held).
struct HeldDataset {
  std::string name;
  bool published = true;  // false: one of MemoryStats::unpublished
  uint64_t memory_bytes = 0;
  uint32_t leases = 0;      // this process's (0 for a restart hold)
  bool held_alone = false;  // no other process holds it
};

// A process using shelfd, all its connections together (shelf status
// --clients): who holds memory.
struct ClientInfo {
  uint32_t pid = 0;
  uint32_t uid = 0;
  // Its command line as shelfd read it at its first connection (arguments
  // joined by spaces); empty if shelfd could not read it. The process's own
  // words: escape them before printing.
  std::string command;
  std::string client_name;  // ClientOptions::client_name of its first connection
  int64_t connected_ns = 0;
  // 0: not connected, but it mapped the segment before shelfd restarted
  // and may still read what existed then (held for it until it exits).
  uint32_t connections = 0;
  // Over everything it holds:
  uint32_t leases = 0;
  uint32_t datasets_held = 0;
  // The memory of the datasets it holds: by leases, or, for a process from
  // before a restart, by mapping them (restart holds).
  uint64_t held_bytes = 0;
  // Of those, the unpublished ones only it holds: what comes back when it
  // lets them go or exits.
  uint64_t unpublished_bytes = 0;
  uint64_t writing_bytes = 0;  // partitions it is writing, not yet published
  // What it holds, largest first: at most kMaxHoldingsPerClient
  // (<shelf/limits.h>) of the datasets_held.
  std::vector<HeldDataset> held;
};

// What one user's datasets take against its quota (shelfd --user-quota):
// its published datasets (by publisher) and the partitions it is writing.
struct UserUsageInfo {
  uint32_t uid = 0;
  uint64_t used_bytes = 0;
  uint64_t quota_bytes = 0;  // 0: no quota
};

// The daemon's memory at a glance (shelf status).
struct MemoryStats {
  std::string socket_path;
  std::string shm_dir;  // the segment is shm_dir/segment_name (shelfd --shm-dir)
  std::string segment_name;
  uint32_t daemon_pid = 0;
  uint64_t generation = 0;  // of the segment: bumped each time a shelfd (re)attaches it
  int64_t started_ns = 0;
  uint64_t memory_limit = 0;
  uint64_t used_bytes = 0;          // charged to the limit, all of the below included
  uint64_t index_bytes = 0;         // the segment header and the dataset index
  uint64_t unsealed_bytes = 0;      // partitions being written
  uint64_t pending_free_bytes = 0;  // freed but not yet back: still leased, or being released
  uint64_t resident_bytes = 0;      // what the shm_dir's tmpfs really holds for the segment
  // The page size the segment's tmpfs gives: 4096, or 2 MiB on a tmpfs
  // mounted huge=within_size or huge=always. With 2 MiB pages,
  // huge_page_bytes is what of used_bytes lies in whole 2 MiB pages the
  // segment uses entirely: what the kernel can hold in huge pages (it may
  // hold less, when it has no free huge page to give). 0 with 4 KiB pages.
  uint64_t page_bytes = 0;
  uint64_t huge_page_bytes = 0;
  uint32_t num_connections = 0;
  uint32_t num_leases = 0;
  std::vector<DatasetInfo> datasets;
  std::vector<QuarantinedDataset> quarantined;      // not in `datasets`: not served
  std::vector<UnpublishedDatasetInfo> unpublished;  // by name
  std::vector<ClientInfo> clients;                  // by pid
  // Every user using memory, and every user given a quota of its own, by uid.
  std::vector<UserUsageInfo> users;
  // After a restart, shelfd serves at once and checks the checksums of the
  // datasets it found in the background; a get of one of them waits for
  // its own. What is left of that, all 0 once it is done.
  struct Verification {
    uint32_t datasets_left = 0;
    uint64_t bytes_left = 0;
    uint64_t bytes_done = 0;
  };
  Verification verifying;
  // shelfd --spill-dir: where, past what use it spills before a request
  // must wait (--spill-above; the limit when only then), and what the
  // spilled datasets' files take. Empty and 0 without --spill-dir.
  struct Spilling {
    std::string dir;
    uint64_t above_bytes = 0;
    uint32_t datasets = 0;
    uint64_t file_bytes = 0;
  };
  Spilling spilling;
  uint64_t free_bytes() const { return memory_limit > used_bytes ? memory_limit - used_bytes : 0; }
};

class DatasetMap;

// A name and the table to publish under it, for publish_datasets().
struct NamedTable {
  std::string name;
  TableBuilder* table;
};

class Client {
 public:
  // Connects to shelfd and maps its segment read-only. Errors: Unavailable
  // ("no shelfd at SOCKET — start it with: shelfd --socket SOCKET", or the
  // daemon's segment cannot be opened from this process), PermissionDenied
  // (a daemon of another user, or one that does not serve you), Corruption
  // (the segment is not what the daemon said). Never NotFound: that code
  // means only "no dataset of that name".
  //
  // When shelfd dies or stops, every call fails at once with Unavailable
  // (and so does every later call on this Client): connect again. A shelfd
  // started again on the same segment serves the same datasets. Datasets
  // obtained before stay readable: their mapping is this process's own, and
  // the restarted daemon frees nothing that existed before while this
  // process still maps the segment.
  static Result<Client> connect(const ClientOptions& options = {});

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  // A new, empty, unpublished table. `schema` needs 1..4096 uniquely named
  // columns; bytes_schema() makes a raw-bytes dataset.
  Result<TableBuilder> create_table(Schema schema);

  // Seals `table` (checksums every buffer: past 64 MiB on up to one thread
  // per core, joined before it returns) and publishes it under `name` in
  // one step: readers see all of it or nothing. Errors: AlreadyExists (name
  // taken and no override), InvalidArgument (bad name, unfinished string
  // column), ResourceExhausted. On error nothing is published and `table`
  // stays unpublished (a retry, e.g. with override, may follow).
  Status publish_dataset(std::string_view name, TableBuilder& table,
                         const PublishOptions& options = {});
  // Publishes several names at once, all or nothing.
  Status publish_datasets(std::span<const NamedTable> tables, const PublishOptions& options = {});

  // Every published dataset, sorted by name, read from the segment's name
  // index without a message to the daemon (one consistent state of it;
  // DatasetInfo::leases is 0: status() has the lease counts). Errors:
  // Unavailable when the daemon is gone, as for every call.
  Result<std::vector<DatasetInfo>> list_datasets();
  // Takes a lease and maps the dataset (one round trip, whatever its size).
  // A name the segment's index does not hold is NotFound with no message.
  // A view is evaluated against its base as published now (shelf/view.h):
  // the lease is then the base's. Errors: NotFound ("dataset 'x' not
  // found"; for a view, its base), Corruption, InvalidArgument (a view whose
  // filter no longer fits its base's schema: the base was replaced).
  Result<Dataset> get_dataset(std::string_view name, const GetOptions& options = {});
  // Publishes a view: a name that holds only `view`'s definition, which
  // readers evaluate (shelf/view.h). The filter is parsed against the base
  // now, so a bad one fails here. Errors: NotFound (the base), AlreadyExists,
  // InvalidArgument (the filter or columns, a view that would read itself,
  // deeper than kMaxViewDepth), ResourceExhausted (the definition's page
  // over the limit, the index full).
  Status publish_view(std::string_view name, const ViewDefinition& view,
                      const PublishOptions& options = {});
  // The definition of view `name`, read without evaluating it (so also of a
  // view that cannot be read now: its base gone or replaced by one it does
  // not fit). Errors: NotFound, InvalidArgument when `name` is a dataset.
  Result<ViewDefinition> view_definition(std::string_view name);
  // Materialises view `view`: evaluates it and publishes its rows as the
  // dataset `name`, written once into shared memory (`shelf persist`).
  // Errors: get_dataset()'s, InvalidArgument when `view` is a dataset, and
  // publish_dataset()'s.
  Status persist_view(std::string_view view, std::string_view name,
                      const PublishOptions& options = {});
  // Removes the name at once; readers holding it keep reading, and its memory
  // comes back when the last of them lets go. NotFound names the dataset;
  // InvalidArgument names the views that read it, unless options.cascade.
  Status unpublish_dataset(std::string_view name, const UnpublishOptions& options = {});
  // Pins the dataset: shelfd never spills it to disk (shelfd --spill-dir),
  // also after a restart; a spilled one is read back into memory first, so
  // this may take as long as a get of it. `pinned` false unpins it. Any
  // client may pin or unpin, as any may unpublish. Errors: NotFound, and
  // what get_dataset() says of a dataset it cannot serve.
  Status pin_dataset(std::string_view name, bool pinned = true);
  // The dict-like view (Dask's client.datasets). It shares this Client's
  // connection, so it stays valid when the Client is moved or destroyed.
  DatasetMap datasets();
  Result<MemoryStats> status();

  // Waits until every name is published (and served: not quarantined), for
  // at most `timeout` (none: without bound). The daemon tells us when: this
  // sends one WaitFor on a connection of its own, opened for the wait and
  // closed after it, so the Client's connection stays free and a Dataset
  // destroyed on another thread meanwhile is not held up. Blocks the calling
  // thread. A non-empty `interrupted` is called on that thread when a signal
  // interrupts the wait (EINTR) and every kWaitCheckMs (limits.h) meanwhile;
  // when it returns true the wait ends as a timeout does (the Python module
  // passes one that checks for Ctrl-C). It must not throw: it is called from
  // within the library. Errors: TimedOut when the timeout passes first, or
  // `interrupted` ends the wait (the message says which, and names the names
  // still unpublished), Unavailable when shelfd stops or restarts during the
  // wait (connect again and wait again: `shelf wait` does), InvalidArgument
  // (no names, more than kMaxWaitNames, a bad name). Either way the wait's
  // connection is closed before this returns.
  Status wait_for_datasets(std::span<const std::string> names,
                           std::optional<std::chrono::milliseconds> timeout = std::nullopt,
                           const std::function<bool()>& interrupted = {});
  // wait_for_datasets({name}) then get_dataset(name); waits again if the
  // name is unpublished between the two. Errors as both.
  Result<Dataset> wait_for_dataset(std::string_view name,
                                   std::optional<std::chrono::milliseconds> timeout = std::nullopt,
                                   const std::function<bool()>& interrupted = {});

  // Opens an event stream (<shelf/events.h>) on a connection of its own:
  // every publish, override and unpublish from now on. `last_generation`
  // is the generation() of an earlier stream (of a daemon since gone), or
  // 0: when it is not the daemon's now, the stream starts with a kRestart
  // event and a kQuarantine event per dataset the new daemon found damaged.
  // Errors: Unavailable (no daemon, or this Client's has gone), and
  // connect()'s.
  Result<EventStream> subscribe(uint64_t last_generation = 0);

  const std::string& socket_path() const;

  class Impl;

 private:
  friend class DatasetMap;
  explicit Client(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;  // shared with Datasets and TableBuilders (Plasma's pattern)
};

// Dict-like access to the published datasets, shared by every client of the
// daemon. It holds the connection of the Client that made it (as a Dataset
// does), so it stays valid after that Client is moved or destroyed; use it on
// that Client's thread.
class DatasetMap {
 public:
  Result<Dataset> get(std::string_view name) { return client_.get_dataset(name); }
  // Publishes `table` under `name`; AlreadyExists if it is taken (as Dask's
  // mapping raises KeyError: use publish_dataset with override to replace).
  Status set(std::string_view name, TableBuilder& table) {
    return client_.publish_dataset(name, table);
  }
  Status erase(std::string_view name) { return client_.unpublish_dataset(name); }
  // These three read the segment's name index, with no message to the
  // daemon (a poll(2) of the socket checks that it still serves).
  Result<bool> contains(std::string_view name);
  Result<size_t> size();
  // The names, sorted.
  Result<std::vector<std::string>> keys();
  // Range-for over the names: a snapshot taken by begin(); empty if the
  // daemon could not be asked (use keys() to see that error).
  std::vector<std::string>::const_iterator begin();
  std::vector<std::string>::const_iterator end() const { return snapshot_.end(); }

 private:
  friend class Client;
  explicit DatasetMap(Client client) : client_(std::move(client)) {}
  Client client_;  // shares the Impl of the Client that made this map
  std::vector<std::string> snapshot_;
};

}  // namespace shelf
