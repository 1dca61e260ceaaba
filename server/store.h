// Store: the daemon's state. It owns the segment, the dataset index in it,
// the extent allocator, memory accounting, sessions' unsealed extents and
// leases. It is the only code that mutates the index or the allocator.
//
// Single-threaded: the daemon's event loop calls it; nothing here blocks on a
// client. Every operation either succeeds or changes nothing ("On error, no
// operation is performed"), so one client's mistake never harms another's data.
//
// Three units define it: store.cc, the live store (sessions, publish, leases,
// accounting, hole punching), recovery.cc, re-attaching a segment an
// earlier shelfd left (its section below, "Restart", states the contract),
// and spill.cc, moving datasets to the spill directory and back ("Spilling").
// They share one class because recovery rebuilds exactly the state the live
// store keeps (index, allocator, accounting), and keeps it honest afterwards
// (orphans, old mappers); a separate class would have to expose all of it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <shelf/result.h>

#include "base/unique_fd.h"
#include "protocol/messages.h"
#include "server/segment_worker.h"
#include "server/spiller.h"
#include "server/verifier.h"
#include "shm/descriptor.h"
#include "shm/extent_allocator.h"
#include "shm/layout.h"
#include "shm/lease_table.h"
#include "shm/name_index.h"
#include "shm/segment.h"
#include "shm/view.h"

namespace shelf::server {

// Bounds of StoreOptions (the shelfd flags --memory-limit, --max-datasets),
// checked by create() and against the header of a segment being re-attached.
inline constexpr uint64_t kMinMemoryLimit = uint64_t{1} << 20;  // 1 MiB
// 1 PiB: far past any machine's /dev/shm; keeps every offset sum far from
// overflowing.
inline constexpr uint64_t kMaxMemoryLimit = uint64_t{1} << 50;
// The layout's bound (shm/layout.h): 2^20 slots of 256 bytes.
inline constexpr uint32_t kMaxIndexCapacity = shm::kMaxIndexCapacity;
// Partition extents this large start and end on huge-page boundaries when
// the segment's tmpfs gives huge pages (Store::placement).
inline constexpr uint64_t kHugeExtentBytes = 8 * shm::kHugePageSize;

struct StoreOptions {
  // The segment is shm_dir/segment_name: /dev/shm, or a tmpfs of the user's
  // choice (shelfd --shm-dir), e.g. one mounted with huge pages.
  std::string shm_dir{shm::kDefaultShmDir};
  std::string segment_name;
  std::string segment_path() const { return shm::object_path(shm_dir, segment_name); }
  uint64_t memory_limit = 0;       // bytes; everything in the segment is charged to it
  uint32_t max_datasets = 16384;   // index slots
  uint32_t mode = 0600;            // permissions of the segment
  bool verify_on_publish = false;  // recompute every buffer's XXH3 before publishing
  // Threads that check the checksums of what a restart found, in the
  // background (server/verifier.h); 0: one per core.
  unsigned verify_threads = 0;
  // An existing segment of this name is re-attached (its datasets served
  // again) unless `discard` is set: then it is removed and a fresh one made.
  bool discard = false;
  // False when the user did not choose the value: an existing segment's own
  // limit / index size is adopted instead of refusing it for a mismatch.
  bool memory_limit_given = true;
  bool max_datasets_given = true;
  // Remove the segment (and so every dataset) when the Store goes; by default
  // it stays in /dev/shm for the next shelfd to re-attach.
  bool remove_on_exit = false;
  // Quotas (--user-quota): the most a user's published datasets and
  // unsealed extents may take. `user_quota` holds for every uid, 0 for
  // none; `user_quotas` gives uids a quota of their own instead.
  uint64_t user_quota = 0;
  std::map<uint32_t, uint64_t> user_quotas;
  // Spilling (--spill-dir; docs/design.md, "Spilling"): when a request
  // needs memory the limit does not leave, datasets nobody reads are
  // written to files here and their memory freed; a get restores them.
  // Empty: off, and such a request is refused as before. An absolute path
  // of a directory of our own that no one else may write
  // (internal::prepare_spill_dir).
  std::string spill_dir;
  // --spill-above: past this percentage of the memory limit, datasets are
  // spilled as soon as the loop sees it, before a request must wait for it
  // (Store::spill_above_threshold()). 100: only when a request needs it.
  uint32_t spill_above_percent = 100;
};

// What re-attaching an existing segment found (Store::recovery()).
struct RecoveryReport {
  bool attached = false;  // false: a new, empty segment was made
  uint64_t generation = 0;
  uint32_t datasets = 0;     // served again
  uint32_t quarantined = 0;  // kept but not served: damaged
  uint32_t dropped = 0;      // index entries that were torn or unreadable
  // Served again whose checksums the Verifier checks in the background,
  // and the bytes of their buffers (a get of one waits for its own).
  uint32_t unverified = 0;
  uint64_t unverified_bytes = 0;
  uint64_t freed_bytes = 0;     // resident bytes given back (unsealed, unreferenced)
  uint64_t orphaned_bytes = 0;  // unsealed extents held until their live owner exits
  uint32_t old_mappers = 0;     // other processes that had the segment mapped
  uint64_t held_bytes = 0;      // sealed but unpublished, held while they map it
  // Processes no /proc look finds (another user's) hold presence locks of an
  // earlier generation: they map the segment as the old daemon left it.
  bool unseen_readers = false;
  double seconds = 0;
};

class Store {
 public:
  // Opens <shm_dir>/<segment_name> and takes an exclusive lock on it. A
  // segment left by an earlier daemon is re-attached: its header is checked
  // (magic, layout version, sizes), every published dataset is checked
  // (extents sealed, in bounds, not overlapping, every buffer's XXH3), and
  // the index, allocator and accounting are rebuilt from it. A damaged
  // dataset is quarantined: kept and reported, never served. Unsealed and
  // unreferenced extents are freed, except those of a publisher that is still
  // alive (held until it exits: it may still write into them). All leases
  // end. The header's generation is bumped. With `discard`, or when there is
  // no segment, a new empty one is made.
  // Errors: AlreadyExists (a live daemon uses it), InvalidArgument naming the
  // segment and what to do (--discard) when it is not a shelf segment of this
  // layout version, is inconsistent, or its limit / index size differ from
  // ones the user gave; the segment is then left untouched.
  // InvalidArgument or ResourceExhausted from internal::check_shm_dir (the
  // directory is not a usable tmpfs, or cannot hold the limit).
  static Result<std::unique_ptr<Store>> create(const StoreOptions& options);
  // Unmaps the segment. It stays in /dev/shm for the next daemon unless
  // options.remove_on_exit.
  ~Store();

  // ---- Restart (recovery.cc) ----
  const RecoveryReport& recovery() const { return recovery_; }
  // Processes whose exit the daemon must report (owner_gone()): publishers
  // that were writing when the previous daemon died and still live (their
  // extents are held), and processes that had the segment mapped when it was
  // re-attached (they may read Datasets of the old daemon, whose leases are
  // gone: nothing that existed then is punched while one of them maps it).
  std::vector<uint32_t> orphan_owners() const;
  // `pid` has exited: frees what was held only for it.
  void owner_gone(uint32_t pid);

  // ---- Sessions: one per connection ----
  using SessionId = uint64_t;
  SessionId open_session(uint32_t pid, uint32_t uid);
  // What status() says of the session's process, from its Hello: both cut
  // to kMaxCommandBytes.
  void describe_session(SessionId session, std::string client_name, std::string command);
  // Frees the session's unsealed extents and ends its leases, those of its
  // lease table included.
  void close_session(SessionId session);
  // Makes the session's lease table (docs/leases.md) and returns its memfd,
  // to send to the client. Errors: ResourceExhausted (no memfd); the
  // session then takes every lease by a round trip.
  Result<UniqueFd> open_lease_table(SessionId session);
  // Looks again at the lease tables for the datasets they kept from being
  // freed (a client said it let one go, or the timer: kHoldRecheckMs), and
  // frees those no table names any more.
  void recheck_table_holds();
  // True while some unpublished dataset waits for a lease table to let it go.
  bool has_table_holds() const { return !table_holds_.empty(); }
  // Looks again for presence locks of an earlier generation (shm/presence.h;
  // the timer: kHoldRecheckMs, as their holders' exit is not reported). Once
  // none is left and no old mapper either, frees what the restart held.
  void recheck_presence();
  // True while a presence lock of an earlier generation keeps restart holds.
  bool waits_for_presence() const { return presence_from_before_; }

  // Reserves an extent with room for `payload_bytes` after its header.
  Result<protocol::AllocateResponse> allocate(SessionId session, uint64_t payload_bytes);
  // Gives back one of the session's unsealed extents.
  Status abort(SessionId session, uint64_t extent_offset);
  // Seals the extents the descriptors name and publishes every name, all or
  // nothing. Errors: InvalidArgument (bad name or descriptor, extent not the
  // session's or not written), AlreadyExists (name taken, no override),
  // ResourceExhausted (descriptor memory over the limit, index full),
  // Corruption (checksum mismatch with verify_on_publish). An item whose
  // descriptor is a view's definition (shm/view.h) publishes a view: its
  // base must be published, and it may not read itself through other views
  // nor nest deeper than kMaxViewDepth (InvalidArgument; NotFound for the
  // base).
  Status publish(SessionId session, const protocol::PublishRequest& request);
  // Takes a lease on a published dataset. NotFound names the dataset;
  // ResourceExhausted past kMaxLeasesPerConnection.
  Result<protocol::GetResponse> get(SessionId session, const std::string& name);
  // Ends a lease of the session. InvalidArgument when it holds no such
  // lease. The last lease of an unpublished dataset frees it.
  Status release(SessionId session, uint64_t lease_id);
  // Removes the name; memory returns when the last lease ends. A dataset
  // that views read (directly or through other views) is removed only with
  // `cascade`, and then those views first; else InvalidArgument names them.
  // Returns the summaries of every name removed, in the order removed.
  Result<std::vector<protocol::DatasetSummary>> unpublish(const std::string& name, bool cascade);
  // Pins the dataset (never spilled, also after a restart: its entry's
  // kEntryPinned) or unpins it. Pinning needs it served, as get() does: the
  // daemon restores a spilled one first (await_resident()); get()'s errors
  // otherwise. NotFound names it.
  Status pin(const std::string& name, bool pinned);
  // True when `name` is published and served (not quarantined): what a
  // WaitFor waits for.
  bool serves(std::string_view name) const;
  // What list() says of the dataset published (or quarantined) under
  // `name`, leases left 0; nullopt when there is none. For the daemon's
  // events: called before a publish, it tells an override from a new name.
  std::optional<protocol::DatasetSummary> summary(std::string_view name) const;
  // The datasets found damaged at the start and still kept (as status()
  // lists them), by name.
  std::vector<protocol::QuarantinedDataset> quarantined() const;
  int64_t started_ns() const { return started_ns_; }

  // ---- The segment worker (server/segment_worker.h) ----
  // Readable (for the daemon's epoll) when the worker thread has finished
  // something: then call collect_background().
  int background_ready_fd() const { return worker_->ready_fd(); }
  // The extents the worker has punched leave the allocator and the
  // accounting; the publish checks it has finished are noted in their
  // sessions, and their tickets kept for take_finished_checks().
  void collect_background();
  // Waits for the worker to finish everything handed to it, then
  // collect_background(): what tests do to see memory back.
  void wait_for_background();
  // The tickets of the publish checks collected since the last call (by
  // collect_background(), or by a request that had to wait for the worker).
  std::vector<uint64_t> take_finished_checks() { return std::exchange(finished_checks_, {}); }
  // The checks of a publish that read a lot (SEEK_HOLE over its partitions,
  // and their checksums with verify_on_publish) go to the worker when the
  // partitions not checked yet add up to more than kCheckAtOnceBytes: returns
  // the ticket collect_background() gives back once they are done. Then
  // publish() of the same request uses what they found. nullopt: publish()
  // can run now (it checks what is left itself, as for any request it
  // finds wrong).
  std::optional<uint64_t> start_publish_checks(SessionId session,
                                               const protocol::PublishRequest& request);

  protocol::ListResponse list() const;
  // `who_holds`: with the unpublished datasets still read and the client
  // rows (shelf status --clients); the metrics go without them.
  protocol::StatusResponse status(bool who_holds = true) const;

  // ---- Checksums after a restart (server/verifier.h) ----
  // Readable (for the daemon's epoll) when the verifier has finished
  // datasets: collect_background() takes them. -1 when none runs.
  int verifier_ready_fd() const { return verifier_ ? verifier_->ready_fd() : -1; }
  // A Get of `name` must wait while the dataset's checksums are checked:
  // the ticket take_finished_checks() gives back once they are (and the
  // verifier takes it next). nullopt: get() answers now; a small dataset
  // (kCheckOnLoopBytes) no thread has started on is checked here first.
  std::optional<uint64_t> await_verification(std::string_view name);
  // ---- Spilling (spill.cc; docs/design.md, "Spilling") ----
  // Readable (for the daemon's epoll) when the spiller has finished a job:
  // collect_background() takes it. -1 without --spill-dir.
  int spiller_ready_fd() const { return spiller_ ? spiller_->ready_fd() : -1; }
  // An Allocate of `payload_bytes` that the limit does not leave room for
  // waits while memory being punched comes back, and (with --spill-dir)
  // while datasets are spilled: the ticket take_finished_checks() gives
  // back once what it waits for has ended (then ask again). nullopt:
  // allocate() answers now (there is room, or nothing to wait for).
  std::optional<uint64_t> await_room(SessionId session, uint64_t payload_bytes);
  // The same for the descriptors (and intent record) a Publish reserves.
  std::optional<uint64_t> await_room(const protocol::PublishRequest& request);
  // A Get of a spilled dataset waits while it is restored (and, if its
  // memory is not free, while others are spilled first): the ticket as
  // above. nullopt: get() answers now.
  std::optional<uint64_t> await_resident(std::string_view name);
  // With --spill-above under 100%: starts spilling the least recently used
  // datasets nobody holds while the use, less what is being spilled, is
  // above it. Returns at once; the daemon calls it at the end of each turn
  // of its loop, after the requests a restore woke have taken their leases.
  void spill_above_threshold();
  // Where spill_above_threshold() starts: --spill-above of the limit.
  uint64_t spill_above_bytes() const {
    return options_.memory_limit / 100 * options_.spill_above_percent;
  }
  // What a Get (or a Pin) of `name` waits for: await_verification(), then
  // await_resident().
  std::optional<uint64_t> await_served(std::string_view name) {
    if (auto ticket = await_verification(name)) return ticket;
    return await_resident(name);
  }

  // What the verifier quarantined since the last call: the daemon's events.
  std::vector<protocol::QuarantinedDataset> take_new_quarantines() {
    return std::exchange(new_quarantines_, {});
  }

  const std::string& segment_name() const { return segment_.name(); }
  const std::string& shm_dir() const { return options_.shm_dir; }
  const std::string& segment_path() const { return segment_.path(); }
  uint64_t segment_bytes() const { return segment_bytes_; }
  uint64_t generation() const { return generation_; }
  uint64_t memory_limit() const { return options_.memory_limit; }
  uint64_t used_bytes() const { return used_bytes_; }

  // Checks the name rules (1..kMaxNameBytes bytes, valid UTF-8, no control
  // characters). The error says what is wrong with `name`.
  static Status check_name(std::string_view name);

 private:
  // The members are grouped by concern; each group says which file defines
  // its functions. Everything is store.cc unless it says recovery.cc.

  // ---- Types --------------------------------------------------------------
  struct Extent {
    uint64_t offset = 0;
    uint64_t length = 0;
  };
  struct Dataset {
    std::string name;
    bool published = false;
    uint32_t slot = 0;        // index slot while published
    uint64_t publish_id = 0;  // of its index entry: unique, never reused
    Extent descriptor;        // the extent holding the descriptor
    uint64_t descriptor_length = 0;
    std::vector<Extent> partitions;
    uint64_t memory_bytes = 0;
    uint32_t leases = 0;  // taken by round trips (Get)
    // A lease table named it when it left the index, or marked a list of
    // an index that still named it: it stays until none does
    // (table_holds_).
    bool table_held = false;
    uint64_t retired_seq = 0;  // index_seq once it left the index
    // Found at restart; its checksums are not checked yet (its entry says
    // kUnverified). `verifying`: the Verifier has it, so its memory stays
    // until the Outcome comes, published or not; gets wait for
    // `verify_ticket`.
    bool unverified = false;
    bool verifying = false;
    uint64_t verify_ticket = 0;
    protocol::DatasetSummary summary;
    // Spilling (spill.cc). kSpilling: its file is being written, it is
    // still served; kSpilled: its partitions are in the file only (the
    // entry says kSpilled, `partitions` is empty); kRestoring: being read
    // back into `restoring`, and gets wait for `spill_ticket`.
    enum class Residence { kResident, kSpilling, kSpilled, kRestoring };
    Residence residence = Residence::kResident;
    uint64_t spill_ticket = 0;
    std::vector<uint64_t> spilled_payloads;  // each partition's bytes after its extent header
    std::vector<Extent> restoring;
    Extent restoring_descriptor;  // the relocated descriptor's extent, while kRestoring
    bool spill_failed = false;    // not tried again: its last spill failed
    // Why its last restore could not read its file (not a damage: that
    // quarantines it); the next get says so, and the one after tries again.
    Status restore_error;
    // A private copy of its descriptor, parsed, taken when it was spilled
    // (or found spilled at a restart): what its restore relocates.
    std::vector<std::byte> spilled_descriptor;
    int64_t last_used_ns = 0;  // published, or got through the daemon: spill order
    bool pinned = false;       // never spilled (pin(), PublishRequest::pin)
    // Non-empty: found damaged at restart; kept and reported, never served.
    std::string quarantine_reason;
    // Existed when the segment was re-attached while other processes mapped
    // it: they may still read it through a Dataset of the old daemon, so it
    // counts as leased until they are gone (old_mappers_).
    bool restart_hold = false;
    // A view (docs/views.md): `descriptor` holds its definition
    // (shm/view.h), it has no partitions; view_bases is what it reads.
    bool view = false;
    std::vector<std::string> view_bases;
  };
  struct Session {
    uint32_t pid = 0;
    uint32_t uid = 0;
    int64_t connected_ns = 0;
    std::string client_name;  // as describe_session() set them
    std::string command;
    std::map<uint64_t, uint64_t> unsealed;  // extent offset -> length
    // What the worker found of unsealed extents (by offset) for the publish
    // this session's connection waits to run again (start_publish_checks);
    // that publish() takes it.
    std::map<uint64_t, Status> checked;
    std::unordered_map<uint64_t, uint64_t> leases;  // lease id -> dataset id
    std::optional<shm::LeaseTable> table;           // its leases without messages
  };
  // A publish request once validated: the parsed descriptor of each item
  // and the memory their copies in the segment will take.
  struct PublishPlan {
    // One per item, in request order: a dataset's parsed descriptor, or a
    // view's definition.
    struct Item {
      std::optional<shm::DescriptorView> descriptor;
      std::optional<shm::ViewDefinition> view;
    };
    std::vector<Item> items;
    uint64_t charged_bytes = 0;  // the descriptors' extents: what the publisher is charged
    uint64_t new_bytes = 0;      // those and the intent record's
  };

  // ---- Constant after start ------------------------------------------------
  Store(StoreOptions options, shm::ShmObject segment, shm::Mapping mapping,
        std::unique_ptr<SegmentWorker> worker);
  // Writes the header of a new segment and charges the header and index.
  Status initialise();

  StoreOptions options_;  // memory_limit / max_datasets: the segment's own after attach
  shm::ShmObject segment_;
  shm::Mapping mapping_;  // the whole segment, read-write
  uint64_t segment_bytes_ = 0;
  uint64_t data_offset_ = 0;  // end of the header and the index's room: first extent byte
  uint64_t index_bytes_ = 0;  // what the header and the index are charged (index_pages())
  uint64_t generation_ = 0;
  int64_t started_ns_ = 0;

  // ---- Index: published names and the datasets they own --------------------
  // The index entry of `dataset` (published or quarantined), or of a free
  // slot when null.
  static shm::IndexEntryLayout index_entry_of(const Dataset* dataset);
  // What the entry of a dataset in the index says of it.
  static shm::IndexEntryState entry_state(const Dataset& dataset);
  // Rewrites index slot `slot` under its seqlock: `dataset`'s entry, or a
  // free slot when null. Between index_.begin() and index_.end().
  void write_index_entry(uint32_t slot, const Dataset* dataset);
  // Stores `e` (but its seq) into slot `slot` under the entry's seqlock.
  void store_index_entry(uint32_t slot, const shm::IndexEntryLayout& e);
  // Frees an unpublished dataset nobody reads, and forgets it.
  void free_dataset(uint64_t dataset_id);
  // A dataset that has just left the index (unpublished or replaced): freed
  // at once unless someone may be reading it, else counted as pending until
  // the last reader lets it go. Scans the lease tables (docs/leases.md).
  void retire(uint64_t dataset_id);
  // A reader of an unpublished dataset let it go: frees it if it was the last.
  void free_if_unread(uint64_t dataset_id);
  // Leases in lease tables, by publish id: what list() and status() count.
  std::unordered_map<uint64_t, uint32_t> table_leases() const;
  // list() with the table leases counted already (status() needs them too).
  protocol::ListResponse list(const std::unordered_map<uint64_t, uint32_t>& table_leases) const;
  // status()'s who-holds-what: fills s.unpublished and s.clients, given
  // s.datasets and the table leases.
  void describe_holders(const std::unordered_map<uint64_t, uint32_t>& table_leases,
                        protocol::StatusResponse& s) const;
  // A process's row of describe_holders() as it is gathered: what it
  // holds by Holding::dataset, and its leases of each.
  struct HolderRow {
    protocol::ClientSummary summary;
    std::unordered_map<uint32_t, uint32_t> held;
  };
  // The rows of the connected processes and of the old mappers, by pid,
  // with the datasets `index_of` gives an index.
  std::map<uint32_t, HolderRow> holder_rows(
      const std::unordered_map<uint64_t, uint32_t>& index_of) const;
  // True when a live lease table names `publish_id`, or marks a list of an
  // index older than `retired_seq` (which may have read its descriptor).
  // After a seq_cst fence that follows the index change (docs/leases.md,
  // "The daemon's side" and "Lists").
  bool in_lease_tables(uint64_t publish_id, uint64_t retired_seq) const;
  // The oldest index_seq a live lease table marks a list of; UINT64_MAX
  // when none does.
  uint64_t oldest_listing() const;
  // A dataset nobody may be reading: no lease, no restart hold, no
  // verifier thread.
  static bool unread(const Dataset& d) {
    return d.leases == 0 && !d.restart_hold && !d.table_held && !d.verifying &&
           (d.residence == Dataset::Residence::kResident ||
            d.residence == Dataset::Residence::kSpilled);
  }

  std::unordered_map<uint64_t, Dataset> datasets_;  // published and unpublished-but-leased
  // Every published view, by the name of its base: who must go first when a
  // base is unpublished (views_reading()).
  std::multimap<std::string, std::string> views_by_base_;
  std::map<std::string, uint64_t, std::less<>> names_;  // published name -> dataset id
  // Index slots no entry uses, lowest first: handing out the lowest keeps
  // the used slots packed at the front, below the header's used_slots_end
  // (shm/name_index.h), so lists walk few free entries.
  std::priority_queue<uint32_t, std::vector<uint32_t>, std::greater<>> free_slots_;
  uint64_t next_dataset_id_ = 1;
  // The name index and the header's index seqlock and counters, which
  // clients read without asking (shm/name_index.h).
  shm::NameIndexWriter index_;

  // ---- Accounting: the allocator and the bytes charged to the limit ---------
  // What an extent with room for `payload_bytes` takes: its header, whole pages.
  static uint64_t extent_length(uint64_t payload_bytes);
  // Where an extent goes: its length and alignment. On a tmpfs that gives
  // huge pages (page_bytes_), a partition extent of kHugeExtentBytes or more
  // takes whole, aligned huge pages, which wastes at most an eighth of it;
  // smaller ones, descriptors and intents are packed at 4 KiB, so they
  // share huge pages instead of taking one each (docs/design.md, "Huge
  // pages").
  struct Placement {
    uint64_t length;
    uint64_t alignment;
  };
  Placement placement(uint64_t payload_bytes, shm::ExtentKind kind) const;
  // Sets page_bytes_ from the segment's filesystem (ShmObject::
  // probe_page_size on a free range of the data area). Before serving.
  void probe_page_size();
  Result<Extent> reserve_extent(uint64_t payload_bytes, shm::ExtentKind kind, uint32_t pid);
  // True when `bytes` more fit under the limit now (memory being punched
  // still counts: await_extents() waits for it).
  bool make_room(uint64_t bytes) const;
  // The ticket a request waiting for punches under way parks on:
  // take_finished_checks() gives it back once one has ended.
  uint64_t punch_ticket();
  // ResourceExhausted with used / limit / requested, what uses the memory
  // and what to do.
  Status over_limit(uint64_t requested) const;
  // For over_limit(): the largest datasets, the processes holding
  // unpublished memory and those writing, each with its bytes.
  std::string what_uses_memory() const;
  shm::ExtentHeaderLayout* extent_header(uint64_t offset);
  // OK when a published dataset may be read now; else why not, as get()
  // says it (quarantined, unchecked, spilled and not restored). A restore
  // error is said once: the next call tries again.
  Status check_served(Dataset& dataset);

  // ---- Quotas: what each user's datasets and unsealed extents take --------
  // What a user is charged: its unsealed extents (allocate(), until they are
  // published or given back) and its published datasets (quarantined ones
  // too), from seal_item() until retire() or recovery's recover_entry(). A
  // dataset's user is its publisher (DatasetSummary::publisher_uid, which
  // the descriptor keeps across restarts). Unpublished memory still read is
  // no user's: its readers hold it.
  uint64_t quota_of(uint32_t uid) const;  // 0: none
  // ResourceExhausted naming the uid, its quota, its use and `bytes` when
  // `bytes` more would pass its quota.
  Status check_quota(uint32_t uid, uint64_t bytes) const;
  void charge(uint32_t uid, uint64_t bytes) { charged_[uid] += bytes; }
  void uncharge(uint32_t uid, uint64_t bytes);
  std::unordered_map<uint32_t, uint64_t> charged_;  // by uid; no entry while 0

  shm::ExtentAllocator allocator_;
  uint64_t used_bytes_ = 0;  // everything charged, header and index included
  // The page size the segment's tmpfs gives: kPageSize, or kHugePageSize on
  // a huge= mount (probe_page_size()).
  uint64_t page_bytes_ = shm::kPageSize;
  uint64_t unsealed_bytes_ = 0;      // allocated to publishers, not yet published
  uint64_t pending_free_bytes_ = 0;  // unpublished but still read (leases, restart holds)

  // ---- Sessions and leases ------------------------------------------------
  std::unordered_map<SessionId, Session> sessions_;
  uint64_t next_session_id_ = 1;
  uint64_t next_lease_id_ = 1;
  uint32_t num_leases_ = 0;
  std::vector<uint64_t> table_holds_;  // unpublished datasets a lease table names

  // ---- Publishing: publish()'s three phases ----------------------------------
  // 1. Validates every item and checks names, index slots and the limit for
  //    all of them; changes nothing. `checked`: what the worker found of
  //    some of the extents (by offset), for this request.
  Result<PublishPlan> validate_publish(const Session& session,
                                       const protocol::PublishRequest& request,
                                       const std::map<uint64_t, Status>& checked);
  // The checks of item `item`'s partition `p`: the session's own unsealed
  // extent, used once in the request, then what `checked` says of it or
  // else check_partition_bytes().
  Status check_publish_partition(const Session& session, const protocol::PublishItem& item,
                                 const shm::DescriptorView& view, uint64_t p,
                                 const std::map<uint64_t, Status>& checked,
                                 std::set<uint64_t>& extents_in_request);
  // The checks of one view's definition: it parses, its bases are published.
  Result<shm::ViewDefinition> check_view(const protocol::PublishItem& item) const;
  // The checks of the graph of views as it will be once `request` (parsed
  // into `planned`) is published, every item at once: no view reads
  // itself, and no chain of views is longer than kMaxViewDepth, counting
  // the views above a replaced name too. Linear in the views it reaches.
  Status check_view_graph(const protocol::PublishRequest& request,
                          const std::vector<PublishPlan::Item>& planned) const;
  // The published views that read `name`, directly or through others, each
  // once, each after every view that reads it: the order a cascade removes
  // them in.
  std::vector<std::string> views_reading(const std::string& name) const;
  // unpublish() of one name that no view reads.
  void unpublish_one(const std::string& name);
  // Takes a view that leaves the index out of views_by_base_.
  void forget_view(const Dataset& view);
  // "dataset 'x' partition 3": how errors name a partition.
  static std::string partition_name(std::string_view dataset, uint64_t p);
  // The checks of one partition that read a lot: no hole, written, and
  // (verify_on_publish) its checksums; `where` names it in the errors.
  // Touches only the segment and `view`: it runs on the worker's thread too.
  Status check_partition_bytes(const shm::DescriptorView& view, uint64_t p,
                               const std::string& where) const;
  // Publishes whose unchecked partitions add up to no more than this are
  // checked on the loop (the checks walk ~7 ms per GiB: 16 MiB is ~0.1 ms),
  // larger ones by the worker first (start_publish_checks).
  static constexpr uint64_t kCheckAtOnceBytes = 16ull << 20;
  // A dataset a restart found, of at most this many buffer bytes, is
  // checked on the loop when a get asks for it (await_verification).
  static constexpr uint64_t kCheckOnLoopBytes = 1ull << 20;
  // What each check handed to the worker is for: its session and extents.
  struct PendingCheck {
    SessionId session = 0;
    std::vector<uint64_t> extents;
    // One result per extent, filled on the worker's thread; read on the
    // loop once the check is collected.
    std::shared_ptr<std::vector<Status>> results;
  };
  std::unordered_map<uint64_t, PendingCheck> pending_checks_;  // by ticket
  std::vector<uint64_t> finished_checks_;                      // take_finished_checks()
  uint64_t next_check_ticket_ = 1;
  // 2. Reserves a descriptor extent per item; on error frees those it took.
  Result<std::vector<Extent>> reserve_descriptors(const Session& session,
                                                  const protocol::PublishRequest& request);
  // 3. Commits, in three steps that cannot fail. seal_item() writes an
  //    item's descriptor, seals its extents and gives it its slot and
  //    publish id; write_intent() records the entries of several items and
  //    points the segment at the record (the commit point); enter_item()
  //    makes one item published (between index_.begin() and end()) and
  //    returns the dataset it replaced, for the caller to retire.
  Dataset seal_item(Session& session, const protocol::PublishItem& item,
                    const PublishPlan::Item& planned, const Extent& descriptor, int64_t created_ns);
  // seal_item()'s part for a dataset: seals its partitions' extents and
  // moves them from the session's unsealed ones into `dataset`.
  void seal_partitions(Session& session, const shm::DescriptorView& view, Dataset& dataset);
  void write_intent(const Extent& intent, const std::vector<Dataset>& sealed);
  std::optional<uint64_t> enter_item(Dataset dataset);

  // ---- Hole punching: giving freed memory back to the OS -------------------
  // Frees extents: small ones at once, the rest by the worker, which hands
  // them back to collect_background().
  void free_extents(const std::vector<Extent>& extents);
  // Punches on the loop, at once: small frees, and recovery's unowned ranges
  // (before the loop serves anyone).
  void punch_range(uint64_t offset, uint64_t length);
  // The extent's pages are gone: it leaves the allocator and the accounting.
  void finish_punch(const Extent& extent);

  // Frees of up to this many bytes are punched on the loop, at once (~0.6 ms
  // here), so that a small or middling unpublish has given its memory back
  // when it answers; larger ones go to the segment worker, and so does any
  // free while a thread of ours may hold the file's lock (the worker busy, a
  // spill or restore in flight: a restore reserves with posix_fallocate).
  // tmpfs punches under that lock, and a 1-row unpublish on the loop waited
  // for the worker's step of a 1 GiB one (spinning on the lock for ~1 ms, or
  // asleep for up to 10 ms). The worker punches a small free between the
  // steps of a large one, so it is not held back for long.
  static constexpr uint64_t kPunchAtOnceBytes = 16ull << 20;
  std::unique_ptr<SegmentWorker> worker_;
  uint64_t punching_bytes_ = 0;  // handed to the worker: still allocated and in used_bytes_
  uint64_t punch_ticket_ = 0;    // punch_ticket(), 0 while no request waits for punches
  // What the worker finished: punched extents leave the accounting, checks
  // are noted in their sessions.
  void absorb(SegmentWorker::Done done);

  // ---- Restart: re-attaching a segment (server/recovery.cc) ----------------
  // Contract: after attach() succeeds, the index, allocator and accounting
  // describe exactly what the segment holds (see create()); every dataset is
  // either served or quarantined, and no memory is punched that a process
  // which outlived the previous daemon may still write (orphans_) or read
  // (old_mappers_). Until those processes are gone, owner_gone() and
  // recheck_old_mappers() keep what is held for them; then it is freed as
  // usual.

  // Re-attaches an existing segment: checks its header, then recover().
  static Result<std::unique_ptr<Store>> attach(StoreOptions options, shm::ShmObject segment);
  // Rebuilds the daemon's state from an attached segment (see create()).
  void recover();
  // A publish of several names that the previous daemon was committing when
  // it died (its intent record is pointed at): writes every entry of the
  // record, then lets the record go. A damaged record is logged and let go.
  // Between index_.begin() and end(), before the entries are walked.
  void finish_pending_publish();
  // Checks the published index entry in `slot` and adds its dataset (healthy
  // or quarantined) to the in-memory state; false if the entry is unusable.
  bool recover_entry(uint32_t slot, std::set<std::string, std::less<>>& seen);
  // recover_entry()'s checks of the descriptor and of the partitions: each
  // claims what it can for `d` and sets `problem` (when still empty) to the
  // first thing found wrong. The descriptor is parsed from `copy`, which it
  // fills with the descriptor's bytes: the view lives as long as it.
  std::optional<shm::DescriptorView> recover_descriptor(const shm::IndexEntryLayout& entry,
                                                        Dataset& d, std::string& problem,
                                                        std::vector<std::byte>& copy);
  void recover_partitions(const shm::DescriptorView& view, Dataset& d, std::string& problem);
  // A view's entry: its definition, checked (shm::parse_view).
  void recover_view(const shm::IndexEntryLayout& entry, Dataset& d, std::string& problem);
  // The descriptor (or view definition) extent of `entry`: checked,
  // claimed for `d`, its bytes copied into `copy`. False (and `problem`
  // set) when it cannot be used.
  bool copy_descriptor(const shm::IndexEntryLayout& entry, Dataset& d, std::string& problem,
                       std::vector<std::byte>& copy);
  // A spilled entry's: its partitions' sizes from the descriptor, and its
  // spill file, which must be there with the size they make.
  void recover_spilled(const shm::DescriptorView& view, Dataset& d, std::string& problem);
  // Claims [offset, offset+length) for `d` in the allocator; false if it
  // overlaps memory already claimed.
  bool claim(Dataset& d, uint64_t offset, uint64_t length);
  // What is wrong with the sealed extent of `kind` at `offset` (of `length`,
  // unless 0); empty when nothing is.
  std::string extent_problem(uint64_t offset, uint64_t length, shm::ExtentKind kind,
                             uint64_t* checked_length = nullptr) const;
  // The extent header at `offset` copied out of the segment (its state
  // loaded with acquire first), or nullopt when it does not fit: recovery
  // checks and uses copies, as a process mapping the segment read-write may
  // change the header between a check and a use.
  std::optional<shm::ExtentHeaderLayout> extent_header_copy(uint64_t offset) const;
  // Frees every resident page of [begin, end) that no dataset owns, keeping
  // the unsealed extents of publishers still alive.
  void sweep_gap(uint64_t begin, uint64_t end);
  // Drops the old mappers that no longer map the segment (reads their
  // /proc/<pid>/maps); then recheck_presence() when none is left.
  void recheck_old_mappers();
  // True while a process that mapped the segment before the restart may
  // still read it: an old mapper, or a presence lock of an earlier
  // generation (presence_from_before_).
  bool readers_from_before() const { return !old_mappers_.empty() || presence_from_before_; }
  // Frees what was kept for the old mappers.
  void end_restart_holds();
  // Rebuilds the name index from the recovered datasets: buckets, publish
  // ids, counts, quarantined entries marked.
  void rebuild_name_index();
  // Empties the buckets and inserts every published name again (its slot's
  // entry is already written). Between index_.begin() and end().
  void rebuild_buckets();
  void log_recovery() const;
  // Logs why `d` is quarantined (its quarantine_reason), and what to do.
  static void log_quarantine(const Dataset& d);
  // Hands the datasets recover() left unverified to a new Verifier.
  Status start_verification();
  // What the verifier finished: a dataset served as verified, quarantined,
  // or (cancelled, unpublished meanwhile) let go.
  void absorb_verified(std::vector<Verifier::Outcome> outcomes);
  // Once the verifier has nothing left: logs what it did, and stops it.
  void end_verification_if_done();

  // ---- Spilling (server/spill.cc) ------------------------------------------
  // Starts the spiller (with --spill-dir) and removes the files of this
  // segment in the spill directory that no index entry names (a spill or a
  // restore a killed shelfd left). After create() or attach().
  Status start_spilling();
  // Its files are named for the segment's name and the time it was made
  // (its header's created_ns, kept across restarts), so that two segments of
  // one name (in two --shm-dirs) sharing a spill directory never take each
  // other's files.
  std::string spill_prefix() const;
  // Its buffers are in its spill file (the entry says kSpilled, or
  // kQuarantined with kEntryInSpillFile).
  static bool on_disk(const Dataset& d) {
    return d.residence == Dataset::Residence::kSpilled ||
           d.residence == Dataset::Residence::kRestoring;
  }
  // Frees the descriptor extent a restore replaced, or holds it while
  // `d` is held for processes from before a restart (held_extents_).
  void release_old_descriptor(const Dataset& d, const Extent& old);
  // What restoring `d` takes from the limit: its partitions' extents and a
  // new descriptor's.
  uint64_t restore_bytes(const Dataset& d) const;
  std::string spill_path(uint64_t publish_id) const {
    return spill_file_path(options_.spill_dir, spill_prefix(), publish_id);
  }
  // Hands datasets to the spiller, least recently used first, until the
  // ones being spilled add up to `bytes` more than used_bytes_ leaves under
  // the limit: the ticket of the last one, nullopt if none could go.
  std::optional<uint64_t> spill_for(uint64_t bytes, uint64_t keep_dataset);
  // spill_for()'s and spill_above_threshold()'s: hands datasets (other than
  // `keep_dataset`) to the spiller, least recently used first, until
  // used_bytes_ less what is being spilled is no more than `target`.
  void spill_down_to(uint64_t target, uint64_t keep_dataset);
  // await_room()'s: extents of `length` bytes in all.
  std::optional<uint64_t> await_extents(uint64_t length);
  // A dataset the spiller may take now: published, resident, nobody reads
  // it, not pinned, its last spill did not fail. `in_tables`: table_leases().
  bool spillable(const Dataset& d, const std::unordered_map<uint64_t, uint32_t>& in_tables) const;
  // A job of `kind` for `d`'s file, with a new ticket.
  Spiller::Job spill_job(Spiller::Job::Kind kind, const Dataset& d);
  void start_spill(uint64_t dataset_id);
  Status start_restore(uint64_t dataset_id);
  // What the spiller finished (collect_background()).
  void absorb_spilled(std::vector<Spiller::Outcome> outcomes);
  void finish_spill(uint64_t dataset_id, const Spiller::Outcome& outcome);
  void finish_restore(uint64_t dataset_id, const Spiller::Outcome& outcome);
  // Quarantines a published dataset with `reason` (its memory stays charged
  // until it is unpublished), for the daemon's events too.
  void quarantine(Dataset& d, const std::string& reason);
  // The copy of `d`'s spilled_descriptor with its partitions moved to `to`
  // (offsets of buffers kept relative to their extents).
  std::vector<std::byte> relocated_descriptor(const Dataset& d,
                                              const std::vector<Extent>& to) const;
  std::unique_ptr<Spiller> spiller_;               // with --spill-dir
  std::unordered_map<uint64_t, uint64_t> spills_;  // spiller ticket -> dataset id
  uint64_t spilling_bytes_ = 0;                    // of the datasets being spilled
  // spill_above_threshold() scans again no sooner than this after a scan
  // that found nothing to spill.
  static constexpr std::chrono::milliseconds kThresholdRescan{100};
  // A dataset may have become spillable since the last scan: published,
  // restored, unpinned, or a lease given back by a round trip.
  bool spill_candidates_changed_ = false;
  std::chrono::steady_clock::time_point next_threshold_scan_;

  RecoveryReport recovery_;
  // Found by recover(), handed to the verifier by start_verification().
  std::vector<std::pair<uint64_t, std::shared_ptr<const Verifier::Descriptor>>> to_verify_;
  std::unique_ptr<Verifier> verifier_;  // until it has handed back every dataset
  std::chrono::steady_clock::time_point verify_started_;
  uint32_t verify_quarantined_ = 0;
  std::vector<protocol::QuarantinedDataset> new_quarantines_;
  struct Orphan {
    uint64_t offset = 0;
    uint64_t length = 0;
    uint32_t pid = 0;
  };
  std::vector<Orphan> orphans_;  // unsealed extents of publishers still alive
  // See orphan_owners(). Emptied as they exit or unmap the segment; then
  // end_restart_holds() frees what was kept for them.
  std::set<uint32_t> old_mappers_;
  // What status() says of each old mapper, read from /proc once at restart.
  struct ProcessSeen {
    uint32_t uid = 0;
    std::string name;
  };
  std::map<uint32_t, ProcessSeen> old_mappers_seen_;
  // A presence lock of a generation before this daemon's was held when last
  // looked at (shm/presence.h): a reader of any user that outlived the old
  // daemon. Cleared by recheck_presence().
  bool presence_from_before_ = false;
  std::vector<Extent> held_extents_;  // sealed, unreferenced at restart
  uint64_t held_bytes_ = 0;
};

}  // namespace shelf::server
