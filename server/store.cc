#include "server/store.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <linux/magic.h>
#include <map>
#include <optional>
#include <set>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <utility>

#include "base/check.h"
#include "base/fault_point.h"
#include "base/units.h"
#include "base/utf8.h"
#include "server/log.h"
#include "server/store_internal.h"
#include "shm/checksum.h"
#include "shm/descriptor.h"
#include "shm/intent.h"
#include "shm/segment_view.h"
#include "shm/seqlock.h"

namespace shelf::server {

using shm::kHugePageSize;
using shm::kPageSize;

namespace internal {

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

std::string process_name(uint32_t pid) {
  std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(comm, name);
  return name;
}

uint32_t process_uid(uint32_t pid) {
  struct stat st;
  const std::string path = "/proc/" + std::to_string(pid);
  return ::stat(path.c_str(), &st) == 0 ? st.st_uid : 0;
}

uint64_t data_area_bytes(uint64_t memory_limit) { return 2 * align_up(memory_limit, kPageSize); }

uint64_t header_and_index_bytes(uint32_t max_datasets) {
  return shm::index_pages(max_datasets).bytes();
}

bool index_fits(uint32_t max_datasets, uint64_t memory_limit) {
  return header_and_index_bytes(max_datasets) < memory_limit;
}

Status reserve_index_pages(const shm::ShmObject& segment, uint32_t max_datasets) {
  const shm::IndexPages pages = shm::index_pages(max_datasets);
  SHELF_RETURN_IF_ERROR(segment.reserve(0, pages.entries_end));
  return segment.reserve(shm::hash_offset(), pages.buckets_end - shm::hash_offset());
}

std::string quoted(std::string_view name) { return "'" + std::string(name) + "'"; }

protocol::DatasetSummary summarise(std::string_view name, const shm::DescriptorHeaderLayout& h,
                                   uint64_t memory_bytes) {
  protocol::DatasetSummary s;
  s.name = std::string(name);
  s.num_columns = h.num_columns;
  s.num_partitions = h.num_partitions;
  s.num_rows = h.num_rows;
  s.data_bytes = h.data_bytes;
  s.memory_bytes = memory_bytes;
  s.created_ns = h.created_ns;
  s.publisher_uid = h.publisher_uid;
  s.publisher_pid = h.publisher_pid;
  return s;
}

protocol::DatasetSummary summarise_view(std::string_view name, const shm::ViewDefinition& v,
                                        uint64_t memory_bytes) {
  protocol::DatasetSummary s;
  s.name = std::string(name);
  s.num_columns = static_cast<uint32_t>(v.columns.size());
  s.memory_bytes = memory_bytes;
  s.created_ns = v.created_ns;
  s.publisher_uid = v.publisher_uid;
  s.publisher_pid = v.publisher_pid;
  s.view = true;
  s.view_of_graph = v.kind == shm::ViewKind::kGraph;
  if (!s.view_of_graph) s.view_base = v.bases.front();
  return s;
}

Status check_shm_dir(const std::string& dir) {
  struct stat st;
  struct statfs fs;
  if (::stat(dir.c_str(), &st) != 0 || ::statfs(dir.c_str(), &fs) != 0) {
    return Status::from_errno("shared-memory directory " + dir, errno);
  }
  if (!S_ISDIR(st.st_mode)) return Status::invalid_argument(dir + " is not a directory");
  // /dev/shm is what shm_open(3) uses wherever it runs (a container's may
  // be another filesystem, or not sticky): only a directory the user chose
  // is held to the rules below.
  if (dir == shm::kDefaultShmDir) return Status();
  if (fs.f_type == HUGETLBFS_MAGIC) {
    return Status::invalid_argument(
        dir +
        " is a hugetlbfs, which shelf does not use: mount a tmpfs with huge=within_size "
        "instead (the README's \"Huge pages\" says how, and why)");
  }
  if (fs.f_type != TMPFS_MAGIC) {
    return Status::invalid_argument(dir +
                                    " is not a tmpfs: datasets there would be written to "
                                    "disk; give --shm-dir a tmpfs (e.g. /dev/shm)");
  }
  if ((st.st_mode & S_IWOTH) != 0 && (st.st_mode & S_ISVTX) == 0) {
    return Status::invalid_argument(dir + " is writable by every user and not sticky (chmod +t " +
                                    dir + "): anyone could replace the segment");
  }
  return Status();
}

Status prepare_spill_dir(const std::string& dir) {
  if (dir.empty() || dir[0] != '/') {
    return Status::invalid_argument("--spill-dir must be an absolute path, not '" + dir + "'");
  }
  if (::mkdir(dir.c_str(), 0700) == 0) {
    log_info("spill: made the spill directory " + dir + " (mode 0700)");
  } else if (errno != EEXIST) {
    return Status::from_errno("cannot make the spill directory " + dir, errno);
  }
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) return Status::from_errno("spill directory " + dir, errno);
  if (!S_ISDIR(st.st_mode)) {
    return Status::invalid_argument("--spill-dir " + dir +
                                    " is not a directory (a symlink is refused too)");
  }
  if (st.st_uid != ::geteuid()) {
    return Status::permission_denied("--spill-dir " + dir + " belongs to uid " +
                                     std::to_string(st.st_uid) +
                                     ", not to shelfd's user: give a directory of its own");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::permission_denied(
        "--spill-dir " + dir + " may be written by others (mode " + mode +
        "), who could replace the datasets spilled there: " + "chmod 700 " + dir);
  }
  return Status();
}

Status check_shm_room(const std::string& dir, uint64_t memory_limit, uint64_t already_held) {
  struct statvfs vfs;
  if (::statvfs(dir.c_str(), &vfs) != 0) return Status();
  const uint64_t available = uint64_t{vfs.f_bavail} * vfs.f_frsize + already_held;
  if (available >= memory_limit) return Status();
  std::string msg = dir + " has " + format_bytes(available) +
                    " available, less than --memory-limit " + format_bytes(memory_limit) +
                    "; lower --memory-limit or enlarge " + dir + " (mount -o remount,size=... " +
                    dir;
  if (dir == shm::kDefaultShmDir && uint64_t{vfs.f_blocks} * vfs.f_frsize <= (64u << 20)) {
    msg += "; in Docker /dev/shm is 64 MiB unless you pass --shm-size";
  }
  return Status::resource_exhausted(msg + ")");
}

}  // namespace internal

using namespace internal;

Status Store::check_name(std::string_view name) {
  if (name.empty()) return Status::invalid_argument("a dataset name cannot be empty");
  if (name.size() > kMaxNameBytes) {
    return Status::invalid_argument("dataset name is " + std::to_string(name.size()) +
                                    " bytes; the limit is " + std::to_string(kMaxNameBytes));
  }
  if (!is_valid_utf8(name)) return Status::invalid_argument("dataset name is not valid UTF-8");
  // Control characters (C0, DEL, C1) are refused so that names print safely
  // in `shelf list`: base/utf8.h has the one rule for names.
  if (const size_t at = find_control_character(name); at != std::string_view::npos) {
    return Status::invalid_argument("dataset name contains a control character at byte " +
                                    std::to_string(at));
  }
  return Status();
}

Result<std::unique_ptr<Store>> Store::create(const StoreOptions& options) {
  if (options.memory_limit < kMinMemoryLimit) {
    return Status::invalid_argument("--memory-limit must be at least 1 MiB");
  }
  if (options.max_datasets == 0 || options.max_datasets > kMaxIndexCapacity) {
    return Status::invalid_argument("--max-datasets must be between 1 and " +
                                    std::to_string(kMaxIndexCapacity));
  }
  const uint64_t index_bytes = header_and_index_bytes(options.max_datasets);
  if (!index_fits(options.max_datasets, options.memory_limit)) {
    return Status::invalid_argument("--memory-limit " + format_bytes(options.memory_limit) +
                                    " cannot even hold the index of --max-datasets " +
                                    std::to_string(options.max_datasets) + " (" +
                                    format_bytes(index_bytes) + ")");
  }
  SHELF_RETURN_IF_ERROR(check_shm_dir(options.shm_dir));
  if (!options.spill_dir.empty()) SHELF_RETURN_IF_ERROR(prepare_spill_dir(options.spill_dir));
  if (options.discard) {
    // Starting fresh on purpose; a live daemon's segment is still refused.
    auto old = shm::ShmObject::open(options.shm_dir, options.segment_name, true);
    if (old.ok()) {
      SHELF_RETURN_IF_ERROR(old->lock_while_linked());
      SHELF_RETURN_IF_ERROR(shm::ShmObject::unlink(options.shm_dir, options.segment_name));
      log_warn("--discard: removed " + options.segment_path() + " and its datasets");
    }
  } else {
    auto existing = shm::ShmObject::open(options.shm_dir, options.segment_name, true);
    if (existing.ok()) {
      SHELF_ASSIGN_OR_RETURN(std::unique_ptr<Store> store,
                             attach(options, std::move(existing).value()));
      SHELF_RETURN_IF_ERROR(store->start_spilling());
      return store;
    }
    if (existing.status().sys_errno() != ENOENT) return existing.status();
  }
  SHELF_RETURN_IF_ERROR(check_shm_room(options.shm_dir, options.memory_limit, 0));

  const uint64_t segment_bytes = shm::index_area_bytes() + data_area_bytes(options.memory_limit);
  auto created =
      shm::ShmObject::create(options.shm_dir, options.segment_name, segment_bytes, options.mode);
  if (!created.ok()) return created.status();
  shm::ShmObject segment = std::move(created).value();
  auto remove_on_error = [&](Status s) {
    (void)shm::ShmObject::unlink(options.shm_dir, options.segment_name);
    return s;
  };
  // Until it is locked, another shelfd starting on this segment name may
  // take the new file for one a crashed daemon left half made, and replace
  // it (attach()). Then that one serves the name: this one must neither
  // serve the file it made nor remove the other's.
  SHELF_FAULT_POINT("daemon.create.before_lock");
  const Status lost = Status::already_exists(
      "another shelfd took " + options.segment_path() +
      " while this one was making it; it serves that segment now (see its --socket)");
  if (Status locked = segment.lock_while_linked(); !locked.ok()) {
    return locked.code() == Status::Code::kAlreadyExists ? lost : locked;
  }
  auto mapping = shm::Mapping::map(segment, 0, segment_bytes, /*writable=*/true);
  if (!mapping.ok()) return remove_on_error(mapping.status());

  auto worker = SegmentWorker::start(segment);
  if (!worker.ok()) return remove_on_error(worker.status());
  std::unique_ptr<Store> store(new Store(options, std::move(segment), std::move(mapping).value(),
                                         std::move(worker).value()));
  if (Status s = store->initialise(); !s.ok()) return remove_on_error(s);
  store->probe_page_size();
  if (Status s = store->start_spilling(); !s.ok()) return remove_on_error(s);
  return store;
}

Store::Store(StoreOptions options, shm::ShmObject segment, shm::Mapping mapping,
             std::unique_ptr<SegmentWorker> worker)
    : options_(std::move(options)),
      segment_(std::move(segment)),
      mapping_(std::move(mapping)),
      segment_bytes_(mapping_.size()),
      data_offset_(shm::index_area_bytes()),
      index_bytes_(header_and_index_bytes(options_.max_datasets)),
      allocator_(data_offset_, data_area_bytes(options_.memory_limit)),
      worker_(std::move(worker)) {}

Store::~Store() {
  spiller_.reset();  // before the mapping it reads and writes goes
  worker_.reset();   // finishes what it was handed
  if (options_.remove_on_exit) (void)shm::ShmObject::unlink(options_.shm_dir, segment_.name());
}

Status Store::initialise() {
  // The header and the index are charged to the limit like any extent; the
  // room for a larger index stays a hole.
  SHELF_RETURN_IF_ERROR(reserve_index_pages(segment_, options_.max_datasets));
  used_bytes_ = index_bytes_;
  generation_ = 1;
  started_ns_ = now_ns();
  auto* header = reinterpret_cast<shm::SegmentHeaderLayout*>(mapping_.data());
  header->layout_version = shm::kLayoutVersion;
  header->page_size = kPageSize;
  header->generation = generation_;
  header->segment_bytes = segment_bytes_;
  header->index_offset = kPageSize;
  header->index_capacity = options_.max_datasets;
  header->index_entry_bytes = sizeof(shm::IndexEntryLayout);
  header->data_offset = data_offset_;
  header->data_bytes = allocator_.capacity();
  header->memory_limit = options_.memory_limit;
  header->created_ns = started_ns_;
  header->daemon_pid = static_cast<uint32_t>(::getpid());
  header->hash_capacity = shm::hash_capacity_for(options_.max_datasets);
  header->hash_offset = shm::hash_offset();
  header->next_publish_id = 1;
  index_ = shm::NameIndexWriter(shm::MutableSegmentView(mapping_.data(), segment_bytes_),
                                options_.max_datasets);
  // Release: the magic is written last, so a client that sees it sees the
  // whole header; pairs with the acquire in the client's segment check.
  std::atomic_ref<uint64_t>(header->magic).store(shm::kSegmentMagic, std::memory_order_release);
  for (uint32_t slot = 0; slot < options_.max_datasets; ++slot) free_slots_.push(slot);
  return Status();
}

Store::SessionId Store::open_session(uint32_t pid, uint32_t uid) {
  SessionId id = next_session_id_++;
  Session& session = sessions_[id];
  session.pid = pid;
  session.uid = uid;
  session.connected_ns = now_ns();
  return id;
}

void Store::describe_session(SessionId session_id, std::string client_name, std::string command) {
  // The client's own words, shown to every other user of status: bounded.
  if (client_name.size() > kMaxCommandBytes) {
    client_name.resize(kMaxCommandBytes);
  }
  if (command.size() > kMaxCommandBytes) command.resize(kMaxCommandBytes);
  Session& session = sessions_.at(session_id);
  session.client_name = std::move(client_name);
  session.command = std::move(command);
}

void Store::close_session(SessionId session_id) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  Session& session = it->second;
  std::vector<Extent> unsealed;
  for (const auto& [offset, length] : session.unsealed) {
    unsealed_bytes_ -= length;
    uncharge(session.uid, length);
    unsealed.push_back(Extent{offset, length});
  }
  free_extents(unsealed);
  std::vector<uint64_t> lease_ids;
  for (const auto& [lease, dataset] : session.leases) lease_ids.push_back(lease);
  for (uint64_t lease : lease_ids) (void)release(session_id, lease);
  const bool had_table = session.table.has_value();
  sessions_.erase(it);
  // Its table is gone with it: what only it kept is free now.
  if (had_table) recheck_table_holds();
}

Result<UniqueFd> Store::open_lease_table(SessionId session_id) {
  Session& session = sessions_.at(session_id);
  SHELF_ASSIGN_OR_RETURN(shm::LeaseTable table, shm::LeaseTable::create(kLeaseSlots, session.pid));
  UniqueFd fd = table.take_fd();
  session.table.emplace(std::move(table));
  return fd;
}

bool Store::in_lease_tables(uint64_t publish_id, uint64_t retired_seq) const {
  for (const auto& [id, session] : sessions_) {
    if (session.table && session.table->keeps(publish_id, retired_seq)) return true;
  }
  return false;
}

uint64_t Store::oldest_listing() const {
  uint64_t oldest = UINT64_MAX;
  for (const auto& [id, session] : sessions_) {
    if (session.table) oldest = std::min(oldest, session.table->oldest_listing());
  }
  return oldest;
}

std::unordered_map<uint64_t, uint32_t> Store::table_leases() const {
  std::unordered_map<uint64_t, uint32_t> counts;
  for (const auto& [id, session] : sessions_) {
    if (session.table)
      session.table->for_each_held([&](uint64_t publish_id) { ++counts[publish_id]; });
  }
  return counts;
}

void Store::retire(uint64_t dataset_id) {
  Dataset& dataset = datasets_.at(dataset_id);
  uncharge(dataset.summary.publisher_uid, dataset.memory_bytes);
  // Nobody will read it through shelfd: its checksums need not be checked.
  // Its memory stays while a verifier thread hashes it; the Gets that waited
  // for it are answered (NotFound) in both cases.
  if (dataset.verifying && verifier_->cancel(dataset_id)) {
    dataset.verifying = false;
    finished_checks_.push_back(dataset.verify_ticket);
    end_verification_if_done();
  }
  // The daemon's half of docs/leases.md: the index no longer names the
  // dataset (index_.end() is behind us); this fence orders that before the
  // scan, as the reader's fence orders its slot before its re-check. So a
  // reader either sees the change and gives up its slot, or is seen here.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  SHELF_FAULT_POINT("daemon.retire.before_scan");
  dataset.retired_seq = index_.sequence();
  if (in_lease_tables(dataset.publish_id, dataset.retired_seq)) {
    dataset.table_held = true;
    table_holds_.push_back(dataset_id);
  }
  if (unread(dataset)) {
    SHELF_FAULT_POINT("daemon.retire.before_free");
    free_dataset(dataset_id);
  } else {
    pending_free_bytes_ += dataset.memory_bytes;
  }
}

void Store::free_if_unread(uint64_t dataset_id) {
  Dataset& dataset = datasets_.at(dataset_id);
  if (unread(dataset) && !dataset.published) {
    pending_free_bytes_ -= dataset.memory_bytes;
    free_dataset(dataset_id);
  }
}

void Store::recheck_table_holds() {
  if (table_holds_.empty()) return;
  // No fence needed: the dataset left the index before the first scan, and
  // a slot that still names it now was set before that scan (a reader
  // that set it later saw the change and cleared it again).
  // One pass over the tables, however many datasets are held.
  // A mark newer than the dataset's retirement is a list of an index
  // without it: it keeps nothing (and lists that never stop cannot keep
  // anything forever).
  const std::unordered_map<uint64_t, uint32_t> held = table_leases();
  const uint64_t oldest = oldest_listing();
  std::vector<uint64_t> released;
  std::erase_if(table_holds_, [&](uint64_t id) {
    Dataset& dataset = datasets_.at(id);
    if (held.count(dataset.publish_id) > 0 || oldest < dataset.retired_seq) return false;
    dataset.table_held = false;
    released.push_back(id);
    return true;
  });
  for (uint64_t id : released) free_if_unread(id);
}

uint64_t Store::quota_of(uint32_t uid) const {
  auto it = options_.user_quotas.find(uid);
  return it != options_.user_quotas.end() ? it->second : options_.user_quota;
}

Status Store::check_quota(uint32_t uid, uint64_t bytes) const {
  const uint64_t quota = quota_of(uid);
  if (quota == 0) return Status();
  auto it = charged_.find(uid);
  const uint64_t used = it == charged_.end() ? 0 : it->second;
  if (used + bytes <= quota) return Status();
  const std::string user = "uid " + std::to_string(uid);
  return Status::resource_exhausted(
      user + " is over its quota: " + format_bytes(used) + " used of " + format_bytes(quota) +
      ", " + format_bytes(bytes) + " requested; unpublish some of its datasets (shelf unpublish " +
      "NAME; shelf list --json gives each one's publisher_uid), or ask whoever runs shelfd for a " +
      "larger --user-quota " + std::to_string(uid) + "=SIZE (uid=" + std::to_string(uid) +
      " quota=" + std::to_string(quota) + " used=" + std::to_string(used) +
      " requested=" + std::to_string(bytes) + ")");
}

void Store::uncharge(uint32_t uid, uint64_t bytes) {
  auto it = charged_.find(uid);
  SHELF_CHECK(it != charged_.end() && it->second >= bytes);
  it->second -= bytes;
  if (it->second == 0) charged_.erase(it);
}

Status Store::over_limit(uint64_t requested) const {
  // Nothing to free makes room for more than the whole limit.
  const bool never_fits = requested > options_.memory_limit;
  return Status::resource_exhausted(
      "memory limit reached: " + format_bytes(used_bytes_) + " used of " +
      format_bytes(options_.memory_limit) + ", " + format_bytes(requested) + " requested" +
      (never_fits ? "; that is more than the whole limit: stop shelfd and start it again"
                  : what_uses_memory() +
                        "; unpublish datasets (shelf unpublish NAME), or stop shelfd and start "
                        "it again") +
      " with a larger --memory-limit: the restart keeps every dataset" +
      (never_fits ? std::string()
       : spiller_ ? std::string("; --spill-dir could not make room: every dataset left in "
                                "memory is read by someone, pinned (shelf unpin NAME), or its "
                                "spill failed (see shelfd's log)")
                  : std::string("; or give shelfd --spill-dir DIR, to write datasets nobody "
                                "reads to disk instead")) +
      " (used=" + std::to_string(used_bytes_) + " limit=" + std::to_string(options_.memory_limit) +
      " requested=" + std::to_string(requested) + ")");
}

namespace {

// How many datasets and processes a memory-limit error names: enough to
// act on, few enough for one line.
constexpr size_t kNamedInRefusal = 3;
// A process's command in a refusal is cut to this many bytes.
constexpr size_t kCommandBytesInRefusal = 60;

// "pid 123 (python3 report.py) 12.00 MiB": a command is the process's own
// words, so it is escaped (a Python MemoryError reaches a terminal as is).
std::string process_with_bytes(uint32_t pid, std::string_view command, uint64_t bytes) {
  std::string out = "pid " + std::to_string(pid);
  if (!command.empty()) {
    const bool cut = command.size() > kCommandBytesInRefusal;
    out += " (" + escape_unprintable(command.substr(0, kCommandBytesInRefusal)) +
           (cut ? "..." : "") + ")";
  }
  return out + " " + format_bytes(bytes);
}

// Up to kNamedInRefusal of `items` (what, bytes), largest first, as
// "a 1 MiB, b 2 MiB".
std::string largest(std::vector<std::pair<std::string, uint64_t>> items) {
  const size_t kept = std::min(items.size(), kNamedInRefusal);
  std::partial_sort(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(kept), items.end(),
                    [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string out;
  for (size_t i = 0; i < kept; ++i) out += (i == 0 ? "" : ", ") + items[i].first;
  if (items.size() > kept) out += " and " + std::to_string(items.size() - kept) + " more";
  return out;
}

}  // namespace

std::string Store::what_uses_memory() const {
  // Only on a refusal: one pass over the datasets and the sessions, as a
  // status does.
  std::string out;
  std::vector<std::pair<std::string, uint64_t>> published;
  for (const auto& [name, id] : names_) {
    const Dataset& d = datasets_.at(id);
    published.emplace_back(quoted(name) + (d.quarantine_reason.empty() ? "" : " (quarantined)") +
                               " " + format_bytes(d.memory_bytes),
                           d.memory_bytes);
  }
  if (!published.empty()) out += "; the largest datasets: " + largest(std::move(published));
  if (pending_free_bytes_ > 0) {
    // Who holds the unpublished datasets still read: what their exit frees.
    std::unordered_map<uint64_t, uint32_t> index_of;
    std::vector<uint64_t> memory;
    for (const auto& [id, d] : datasets_) {
      if (d.published) continue;
      index_of.emplace(id, static_cast<uint32_t>(memory.size()));
      memory.push_back(d.memory_bytes);
    }
    std::vector<std::pair<std::string, uint64_t>> holders;
    for (const auto& [pid, row] : holder_rows(index_of)) {
      uint64_t bytes = 0;
      for (const auto& [index, leases] : row.held) bytes += memory[index];
      if (bytes > 0)
        holders.emplace_back(process_with_bytes(pid, row.summary.command, bytes), bytes);
    }
    out += "; " + format_bytes(pending_free_bytes_) +
           " is unpublished but still read, and comes back when its readers let go" +
           (holders.empty() ? "" : ": " + largest(std::move(holders)));
  }
  if (unsealed_bytes_ > 0) {
    std::map<uint32_t, std::pair<std::string, uint64_t>> writers;  // by pid
    for (const auto& [id, session] : sessions_) {
      uint64_t bytes = 0;
      for (const auto& [offset, length] : session.unsealed) bytes += length;
      if (bytes == 0) continue;
      auto& [command, total] = writers[session.pid];
      if (command.empty()) command = session.command;
      total += bytes;
    }
    std::vector<std::pair<std::string, uint64_t>> by_bytes;
    for (const auto& [pid, w] : writers)
      by_bytes.emplace_back(process_with_bytes(pid, w.first, w.second), w.second);
    out += "; " + format_bytes(unsealed_bytes_) + " is being written, not yet published" +
           (by_bytes.empty() ? "" : ": " + largest(std::move(by_bytes)));
  }
  return out;
}

uint64_t Store::extent_length(uint64_t payload_bytes) {
  return align_up(shm::kExtentHeaderBytes + payload_bytes, kPageSize);
}

Store::Placement Store::placement(uint64_t payload_bytes, shm::ExtentKind kind) const {
  const uint64_t length = extent_length(payload_bytes);
  if (page_bytes_ == kHugePageSize && kind == shm::ExtentKind::kPartition &&
      length >= kHugeExtentBytes) {
    return Placement{align_up(length, kHugePageSize), kHugePageSize};
  }
  return Placement{length, kPageSize};
}

void Store::probe_page_size() {
  page_bytes_ = kPageSize;
  // A free, aligned range of the data area nobody else touches: the
  // allocator's word for it (before the socket opens, or after a restart's
  // recovery has marked every extent it keeps).
  const std::optional<uint64_t> at = allocator_.allocate(kHugePageSize, kHugePageSize);
  if (!at) return;
  Result<uint64_t> probed = segment_.probe_page_size(*at);
  allocator_.free(*at, kHugePageSize);
  if (!probed.ok()) {
    log_warn("could not tell the page size of " + options_.shm_dir + ": " +
             probed.status().message() + "; placing extents for 4 KiB pages");
    return;
  }
  page_bytes_ = *probed;
  worker_->set_page_bytes(page_bytes_);
}

shm::ExtentHeaderLayout* Store::extent_header(uint64_t offset) {
  shm::MutableSegmentView view(mapping_.data(), segment_bytes_);
  auto* header = view.at<shm::ExtentHeaderLayout>(offset);
  SHELF_CHECK(header != nullptr);
  return header;
}

Result<Store::Extent> Store::reserve_extent(uint64_t payload_bytes, shm::ExtentKind kind,
                                            uint32_t pid) {
  if (payload_bytes > options_.memory_limit) return over_limit(payload_bytes);
  const auto [length, alignment] = placement(payload_bytes, kind);
  if (!make_room(length)) return over_limit(length);
  std::optional<uint64_t> offset = allocator_.allocate(length, alignment);
  // Cannot happen while the data area is twice the limit; say so if it does.
  if (!offset) return Status::internal("extent allocator is full below the memory limit");
  // A partition's pages are reserved by its publisher (TableState::
  // add_partition), which spends the time it asked for in its own process;
  // the daemon reserves only the header page it writes, so one client's
  // 1 GiB allocation does not stall everyone else's requests (measured: a
  // get waited 228 ms while shelfd reserved 1 GiB itself). publish() checks
  // that the publisher did reserve everything.
  const uint64_t reserve = kind == shm::ExtentKind::kPartition ? kPageSize : length;
  if (Status s = segment_.reserve_through(mapping_.data() + *offset, *offset, reserve); !s.ok()) {
    allocator_.free(*offset, length);
    return s;
  }
  used_bytes_ += length;
  shm::ExtentHeaderLayout* header = extent_header(*offset);
  header->magic = shm::kExtentMagic;
  header->kind = static_cast<uint32_t>(kind);
  header->length = length;
  header->owner_pid = pid;
  // Release: orders the header fields before the state; pairs with the
  // acquire loads in publish() and in the client.
  std::atomic_ref<uint32_t>(header->state)
      .store(static_cast<uint32_t>(shm::ExtentState::kAllocated), std::memory_order_release);
  return Extent{*offset, length};
}

void Store::free_extents(const std::vector<Extent>& extents) {
  uint64_t total = 0;
  for (const Extent& e : extents) total += e.length;
  if (total <= kPunchAtOnceBytes && worker_->idle() && spills_.empty()) {
    for (const Extent& e : extents) {
      punch_range(e.offset, e.length);
      finish_punch(e);
    }
    return;
  }
  // The extents stay allocated and counted in used_bytes_ until the thread
  // is done with them (collect_background).
  for (const Extent& e : extents) {
    worker_->punch({e.offset, e.length});
    punching_bytes_ += e.length;
  }
}

void Store::punch_range(uint64_t offset, uint64_t length) {
  // Punching the hole gives the pages back to the OS; the range reads as zeros
  // afterwards, which also clears the extent header.
  Status s = segment_.punch(offset, length);
  SHELF_CHECK(s.ok());
}

void Store::finish_punch(const Extent& extent) {
  allocator_.free(extent.offset, extent.length);
  used_bytes_ -= extent.length;
}

void Store::collect_background() {
  absorb(worker_->take_done());
  if (verifier_) absorb_verified(verifier_->take_done());
  if (spiller_) absorb_spilled(spiller_->take_done());
}

void Store::wait_for_background() {
  worker_->wait_until_idle();
  collect_background();
}

void Store::absorb(SegmentWorker::Done done) {
  for (const SegmentWorker::Range& r : done.punched) {
    punching_bytes_ -= r.length;
    finish_punch(Extent{r.offset, r.length});
  }
  // The requests waiting for memory to come back run again.
  if (!done.punched.empty() && punch_ticket_ != 0) {
    finished_checks_.push_back(std::exchange(punch_ticket_, 0));
  }
  for (uint64_t ticket : done.checked) {
    auto it = pending_checks_.find(ticket);
    SHELF_CHECK(it != pending_checks_.end());
    PendingCheck& c = it->second;
    // A session closed meanwhile freed its extents; nothing to note.
    if (auto s = sessions_.find(c.session); s != sessions_.end()) {
      for (size_t i = 0; i < c.extents.size(); ++i) {
        if (s->second.unsealed.count(c.extents[i]) > 0) {
          s->second.checked[c.extents[i]] = (*c.results)[i];
        }
      }
    }
    pending_checks_.erase(it);
    finished_checks_.push_back(ticket);
  }
}

bool Store::make_room(uint64_t bytes) const {
  // Memory on its way back counts until it is back: a request that needs
  // it waits for it (await_extents()), the loop does not.
  return used_bytes_ + bytes <= options_.memory_limit;
}

uint64_t Store::punch_ticket() {
  if (punch_ticket_ == 0) punch_ticket_ = next_check_ticket_++;
  return punch_ticket_;
}

Result<protocol::AllocateResponse> Store::allocate(SessionId session_id, uint64_t payload_bytes) {
  Session& session = sessions_.at(session_id);
  if (payload_bytes == 0) return Status::invalid_argument("cannot allocate 0 bytes");
  // The limit first, as reserve_extent() does: it also keeps extent_length()
  // from overflowing.
  if (payload_bytes > options_.memory_limit) return over_limit(payload_bytes);
  SHELF_RETURN_IF_ERROR(
      check_quota(session.uid, placement(payload_bytes, shm::ExtentKind::kPartition).length));
  SHELF_ASSIGN_OR_RETURN(Extent extent,
                         reserve_extent(payload_bytes, shm::ExtentKind::kPartition, session.pid));
  session.unsealed[extent.offset] = extent.length;
  unsealed_bytes_ += extent.length;
  charge(session.uid, extent.length);
  return protocol::AllocateResponse{extent.offset, extent.length};
}

Status Store::abort(SessionId session_id, uint64_t extent_offset) {
  Session& session = sessions_.at(session_id);
  auto it = session.unsealed.find(extent_offset);
  if (it == session.unsealed.end()) {
    return Status::invalid_argument("no unsealed extent of this connection at offset " +
                                    std::to_string(extent_offset));
  }
  unsealed_bytes_ -= it->second;
  uncharge(session.uid, it->second);
  free_extents({Extent{it->first, it->second}});
  session.unsealed.erase(it);
  return Status();
}

Status Store::publish(SessionId session_id, const protocol::PublishRequest& request) {
  Session& session = sessions_.at(session_id);
  if (request.items.empty()) return Status::invalid_argument("publish needs at least one dataset");
  recheck_old_mappers();
  // 1. Validate everything; change nothing. What the worker found for this
  // request (start_publish_checks) is for this request only: a retry is
  // checked again.
  const std::map<uint64_t, Status> checked = std::exchange(session.checked, {});
  SHELF_ASSIGN_OR_RETURN(PublishPlan plan, validate_publish(session, request, checked));
  // 2. Reserve the descriptor extents (and the intent record's); roll back
  //    if /dev/shm refuses one.
  SHELF_ASSIGN_OR_RETURN(std::vector<Extent> descriptors, reserve_descriptors(session, request));
  std::optional<Extent> intent;
  if (request.items.size() > 1) {
    auto reserved = reserve_extent(shm::intent_payload_bytes(request.items.size()),
                                   shm::ExtentKind::kIntent, session.pid);
    if (!reserved.ok()) {
      free_extents(descriptors);
      return reserved.status();
    }
    intent = *reserved;
  }
  SHELF_FAULT_POINT("daemon.publish.before_commit");
  // 3. Commit. Nothing below can fail.
  const int64_t created = now_ns();
  std::vector<Dataset> sealed;
  for (size_t i = 0; i < request.items.size(); ++i) {
    sealed.push_back(seal_item(session, request.items[i], plan.items[i], descriptors[i], created));
    sealed.back().pinned = request.pin;
  }
  // Several names: the commit point is the intent record (shm/intent.h), so
  // a kill while the entries are written below loses none of them.
  if (intent) write_intent(*intent, sealed);
  std::vector<uint64_t> replaced;  // retired once every new entry is in the index
  // One change of the index for readers, whatever the number of names
  // (docs/shm_layout.md, "The name index").
  index_.begin();
  for (Dataset& dataset : sealed) {
    if (auto old = enter_item(std::move(dataset))) replaced.push_back(*old);
    SHELF_FAULT_POINT("daemon.index.mid_change");  // index_seq odd: readers ask the daemon
  }
  index_.end();
  if (intent) {
    // Release: the entries are stored before the record is let go.
    std::atomic_ref<uint64_t>(shm::pending_publish(mapping_.data())->intent_offset)
        .store(0, std::memory_order_release);
    free_extents({*intent});
  }
  spill_candidates_changed_ = true;
  // Only now. Freed before the entry was rewritten, a crash in between left
  // the slot naming punched memory: a restart found neither version. Now it
  // finds the new one, and the old one's memory unowned, which it frees.
  for (uint64_t id : replaced) {
    SHELF_FAULT_POINT("daemon.publish.before_freeing_replaced");
    retire(id);
  }
  return Status();
}

Result<Store::PublishPlan> Store::validate_publish(const Session& session,
                                                   const protocol::PublishRequest& request,
                                                   const std::map<uint64_t, Status>& checked) {
  PublishPlan plan;
  std::set<std::string_view> names_in_request;
  std::set<uint64_t> extents_in_request;
  size_t new_names = 0;
  for (const protocol::PublishItem& item : request.items) {
    SHELF_RETURN_IF_ERROR(check_name(item.name));
    if (!names_in_request.insert(item.name).second) {
      return Status::invalid_argument("dataset " + quoted(item.name) +
                                      " appears twice in one publish");
    }
    const bool exists = names_.count(item.name) > 0;
    if (exists && !request.override_existing) {
      return Status::already_exists("dataset " + quoted(item.name) +
                                    " already exists; unpublish it first or publish with "
                                    "override (override=True in Python, --override in the CLI)");
    }
    new_names += exists ? 0 : 1;
    if (shm::is_view(item.descriptor)) {
      SHELF_ASSIGN_OR_RETURN(shm::ViewDefinition definition, check_view(item));
      plan.charged_bytes += extent_length(item.descriptor.size());
      plan.items.push_back({std::nullopt, std::move(definition)});
      continue;
    }
    auto view = shm::DescriptorView::parse(item.descriptor, /*from_client=*/true);
    if (!view.ok()) {
      return Status::invalid_argument("dataset " + quoted(item.name) + ": " +
                                      view.status().message());
    }
    for (uint64_t p = 0; p < view->num_partitions(); ++p) {
      SHELF_RETURN_IF_ERROR(
          check_publish_partition(session, item, *view, p, checked, extents_in_request));
    }
    plan.charged_bytes += extent_length(item.descriptor.size());
    plan.items.push_back({std::move(view).value(), std::nullopt});
  }
  plan.new_bytes = plan.charged_bytes;
  if (request.items.size() > 1) {
    plan.new_bytes += extent_length(shm::intent_payload_bytes(request.items.size()));
  }
  SHELF_RETURN_IF_ERROR(check_view_graph(request, plan.items));
  if (new_names > free_slots_.size()) {
    return Status::resource_exhausted(
        "the index is full (" + std::to_string(options_.max_datasets) +
        " datasets, --max-datasets of this segment); unpublish some (shelf unpublish NAME), or "
        "stop shelfd and start it again with a larger --max-datasets: the restart keeps every "
        "dataset");
  }
  SHELF_RETURN_IF_ERROR(check_quota(session.uid, plan.charged_bytes));
  if (!make_room(plan.new_bytes)) return over_limit(plan.new_bytes);
  return plan;
}

Result<shm::ViewDefinition> Store::check_view(const protocol::PublishItem& item) const {
  auto parsed = shm::parse_view(item.descriptor, /*from_client=*/true);
  if (!parsed.ok()) {
    return Status::invalid_argument("view " + quoted(item.name) + ": " + parsed.status().message());
  }
  for (const std::string& base : parsed->bases) {
    SHELF_RETURN_IF_ERROR(check_name(base));
    if (names_.count(base) == 0) {
      return Status::not_found("view " + quoted(item.name) + ": its base " + quoted(base) +
                               " is not published; `shelf list` shows the published datasets");
    }
  }
  return std::move(parsed).value();
}

Status Store::check_view_graph(const protocol::PublishRequest& request,
                               const std::vector<PublishPlan::Item>& planned) const {
  // The graph as it will be once the request is published: its items
  // replace their names (a dataset item has no bases), over the published
  // views'. Only views can lengthen a chain or close a cycle.
  std::map<std::string, const std::vector<std::string>*> items;
  std::map<std::string, std::vector<std::string>> items_reading;  // base -> view items
  for (size_t i = 0; i < planned.size(); ++i) {
    const shm::ViewDefinition* view = planned[i].view ? &*planned[i].view : nullptr;
    items[request.items[i].name] = view ? &view->bases : nullptr;
    if (view == nullptr) continue;
    for (const std::string& base : view->bases)
      items_reading[base].push_back(request.items[i].name);
  }
  if (items_reading.empty()) return Status();
  auto bases_of = [&](const std::string& name) -> const std::vector<std::string>* {
    if (auto it = items.find(name); it != items.end()) return it->second;
    auto it = names_.find(name);
    if (it == names_.end() || !datasets_.at(it->second).view) return nullptr;
    return &datasets_.at(it->second).view_bases;
  };
  auto readers_of = [&](const std::string& name) {
    std::vector<std::string> out;
    auto [begin, end] = views_by_base_.equal_range(name);
    for (auto it = begin; it != end; ++it) {
      if (items.count(it->second) == 0) out.push_back(it->second);  // an item replaces it
    }
    if (auto it = items_reading.find(name); it != items_reading.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
    }
    return out;
  };
  auto too_deep = [&](const std::string& view) {
    return Status::invalid_argument("view " + quoted(view) + ": views nest at most " +
                                    std::to_string(kMaxViewDepth) +
                                    " deep, and this publish would make a longer chain");
  };
  // Longest chain down from a name (in views, itself included), and up from
  // it (the views above it), each memoised: every name is walked once,
  // whatever the fan-out. A walk deeper than kMaxViewDepth stops at once,
  // which also bounds the recursion.
  std::map<std::string, uint32_t> down, up;
  std::vector<std::string> path;
  std::function<Result<uint32_t>(const std::string&)> height_down =
      [&](const std::string& name) -> Result<uint32_t> {
    if (auto found = std::find(path.begin(), path.end(), name); found != path.end()) {
      std::string chain;
      for (auto it = found; it != path.end(); ++it) chain += *it + " -> ";
      return Status::invalid_argument("view " + quoted(name) + " would read itself (" + chain +
                                      name + ")");
    }
    if (auto memo = down.find(name); memo != down.end()) return memo->second;
    const std::vector<std::string>* bases = bases_of(name);
    uint32_t height = 0;
    if (bases != nullptr) {
      if (path.size() >= kMaxViewDepth) return too_deep(path.front());
      path.push_back(name);
      for (const std::string& base : *bases) {
        SHELF_ASSIGN_OR_RETURN(uint32_t below, height_down(base));
        height = std::max(height, below + 1);
      }
      path.pop_back();
    }
    down[name] = height;
    return height;
  };
  std::function<uint32_t(const std::string&, uint32_t)> height_up = [&](const std::string& name,
                                                                        uint32_t depth) {
    if (auto memo = up.find(name); memo != up.end()) return memo->second;
    uint32_t height = 0;
    if (depth <= kMaxViewDepth) {  // no cycle once height_down passed, but stay bounded
      for (const std::string& reader : readers_of(name)) {
        height = std::max(height, height_up(reader, depth + 1) + 1);
      }
    }
    up[name] = height;
    return height;
  };
  for (size_t i = 0; i < planned.size(); ++i) {
    if (!planned[i].view) continue;
    const std::string& name = request.items[i].name;
    SHELF_ASSIGN_OR_RETURN(uint32_t below, height_down(name));
    if (below + height_up(name, 0) > kMaxViewDepth) return too_deep(name);
  }
  return Status();
}

Status Store::check_publish_partition(const Session& session, const protocol::PublishItem& item,
                                      const shm::DescriptorView& view, uint64_t p,
                                      const std::map<uint64_t, Status>& checked,
                                      std::set<uint64_t>& extents_in_request) {
  const shm::PartitionLayout& part = view.partition(p);
  const std::string where = partition_name(item.name, p);
  auto owned = session.unsealed.find(part.extent_offset);
  if (owned == session.unsealed.end() || owned->second != part.extent_length) {
    return Status::invalid_argument(where +
                                    ": its extent is not an unsealed extent of this connection");
  }
  if (!extents_in_request.insert(part.extent_offset).second) {
    return Status::invalid_argument(where + " reuses an extent");
  }
  // Checked by the worker for this publish (start_publish_checks), or now.
  if (auto found = checked.find(part.extent_offset); found != checked.end()) return found->second;
  return check_partition_bytes(view, p, where);
}

std::string Store::partition_name(std::string_view dataset, uint64_t p) {
  return "dataset " + quoted(dataset) + " partition " + std::to_string(p);
}

Status Store::check_partition_bytes(const shm::DescriptorView& view, uint64_t p,
                                    const std::string& where) const {
  const shm::PartitionLayout& part = view.partition(p);
  // No hole may remain: a reader's first touch of one would need a page
  // that a full /dev/shm cannot give (SIGBUS). SEEK_HOLE counts reserved
  // but never-touched tmpfs pages as holes too, so this asks for what the
  // client library does: pages faulted in (MADV_POPULATE_WRITE), or
  // posix_fallocate and then MADV_POPULATE_WRITE.
  // mincore first: it waits for no other fallocate or punch of the file;
  // SEEK_HOLE (which does) only when it finds a page missing, which may be
  // one swapped out.
  SHELF_ASSIGN_OR_RETURN(bool reserved,
                         mapping_.all_pages_present(part.extent_offset, part.extent_length));
  if (!reserved) {
    SHELF_ASSIGN_OR_RETURN(reserved, segment_.is_reserved(part.extent_offset, part.extent_length));
  }
  if (!reserved) {
    return Status::invalid_argument(
        where + ": its extent was not reserved and mapped by the publisher (MADV_POPULATE_WRITE)");
  }
  // Acquire: pairs with the publisher's release store of kWritten, so the
  // partition's bytes are visible here once we see it.
  const auto* header =
      reinterpret_cast<const shm::ExtentHeaderLayout*>(mapping_.data() + part.extent_offset);
  const uint32_t state =
      std::atomic_ref<const uint32_t>(header->state).load(std::memory_order_acquire);
  if (state != static_cast<uint32_t>(shm::ExtentState::kWritten)) {
    return Status::invalid_argument(where + " was not finished writing");
  }
  if (options_.verify_on_publish) {
    if (auto bad = shm::first_checksum_mismatch(view, mapping_.data(), p)) {
      return Status::corruption(where + " column '" + std::string(view.column_name(bad->column)) +
                                "': checksum mismatch");
    }
  }
  return Status();
}

std::optional<uint64_t> Store::start_publish_checks(SessionId session_id,
                                                    const protocol::PublishRequest& request) {
  const Session& session = sessions_.at(session_id);
  PendingCheck check{session_id, {}, nullptr};
  // Each item's descriptor, and the partitions of them to check: the
  // worker's own copies.
  auto descriptors = std::make_shared<std::vector<std::vector<std::byte>>>();
  struct ToCheck {
    size_t descriptor;
    uint64_t partition;
    std::string where;  // partition_name()
  };
  std::vector<ToCheck> partitions;
  uint64_t bytes = 0;
  for (const protocol::PublishItem& item : request.items) {
    if (shm::is_view(item.descriptor)) continue;  // no partitions to check
    auto view = shm::DescriptorView::parse(item.descriptor, /*from_client=*/true);
    if (!view.ok()) return std::nullopt;  // publish() says what is wrong
    bool any = false;
    for (uint64_t p = 0; p < view->num_partitions(); ++p) {
      const shm::PartitionLayout& part = view->partition(p);
      auto owned = session.unsealed.find(part.extent_offset);
      if (owned == session.unsealed.end() || owned->second != part.extent_length) continue;
      if (session.checked.count(part.extent_offset) > 0) continue;
      partitions.push_back({descriptors->size(), p, partition_name(item.name, p)});
      check.extents.push_back(part.extent_offset);
      bytes += part.extent_length;
      any = true;
    }
    if (any) descriptors->push_back(item.descriptor);
  }
  if (bytes <= kCheckAtOnceBytes) return std::nullopt;
  // A partition named twice is checked twice; publish() refuses the request.
  check.results = std::make_shared<std::vector<Status>>(check.extents.size());
  const uint64_t ticket = next_check_ticket_++;
  worker_->check(ticket, [this, descriptors, partitions, results = check.results] {
    // On the worker's thread: the descriptors are this closure's own copies,
    // and check_partition_bytes() reads only the segment.
    for (size_t i = 0; i < partitions.size(); ++i) {
      const ToCheck& c = partitions[i];
      auto view = shm::DescriptorView::parse((*descriptors)[c.descriptor], /*from_client=*/true);
      (*results)[i] =
          view.ok() ? check_partition_bytes(*view, c.partition, c.where) : view.status();
    }
  });
  pending_checks_.emplace(ticket, std::move(check));
  return ticket;
}

Result<std::vector<Store::Extent>> Store::reserve_descriptors(
    const Session& session, const protocol::PublishRequest& request) {
  std::vector<Extent> extents;
  for (const protocol::PublishItem& item : request.items) {
    auto extent = reserve_extent(item.descriptor.size(), shm::ExtentKind::kDescriptor, session.pid);
    if (!extent.ok()) {
      free_extents(extents);
      return extent.status();
    }
    extents.push_back(*extent);
  }
  return extents;
}

Store::Dataset Store::seal_item(Session& session, const protocol::PublishItem& item,
                                const PublishPlan::Item& planned, const Extent& desc_extent,
                                int64_t created_ns) {
  std::byte* desc = mapping_.data() + desc_extent.offset + shm::kExtentHeaderBytes;
  std::memcpy(desc, item.descriptor.data(), item.descriptor.size());

  Dataset dataset;
  dataset.name = item.name;
  dataset.published = true;
  dataset.descriptor = desc_extent;
  dataset.descriptor_length = item.descriptor.size();
  dataset.memory_bytes = desc_extent.length;
  dataset.last_used_ns = created_ns;
  if (planned.view) {
    shm::stamp_view(desc, created_ns, session.uid, session.pid);
    shm::ViewDefinition definition = *planned.view;
    definition.created_ns = created_ns;
    definition.publisher_uid = session.uid;
    definition.publisher_pid = session.pid;
    dataset.view = true;
    dataset.view_bases = definition.bases;
    dataset.summary = summarise_view(item.name, definition, dataset.memory_bytes);
  } else {
    auto* dh = reinterpret_cast<shm::DescriptorHeaderLayout*>(desc);
    dh->created_ns = created_ns;
    dh->publisher_uid = session.uid;
    dh->publisher_pid = session.pid;
    seal_partitions(session, *planned.descriptor, dataset);
    dataset.summary = summarise(item.name, *dh, dataset.memory_bytes);
  }
  std::atomic_ref<uint32_t>(extent_header(desc_extent.offset)->state)
      .store(static_cast<uint32_t>(shm::ExtentState::kSealed), std::memory_order_release);
  charge(session.uid, desc_extent.length);  // its partitions are charged already
  // An override takes the old version's slot (and its bucket: the same name
  // hashes the same); a new name the lowest free one.
  if (auto existing = names_.find(item.name); existing != names_.end()) {
    dataset.slot = datasets_.at(existing->second).slot;
  } else {
    dataset.slot = free_slots_.top();
    free_slots_.pop();
  }
  dataset.publish_id = index_.take_publish_id();
  return dataset;
}

void Store::seal_partitions(Session& session, const shm::DescriptorView& view, Dataset& dataset) {
  for (uint64_t p = 0; p < view.num_partitions(); ++p) {
    const shm::PartitionLayout& part = view.partition(p);
    Extent e{part.extent_offset, part.extent_length};
    session.unsealed.erase(e.offset);
    unsealed_bytes_ -= e.length;
    dataset.partitions.push_back(e);
    dataset.memory_bytes += e.length;
    // Release: pairs with the acquire of kSealed in Client::get_dataset().
    std::atomic_ref<uint32_t>(extent_header(e.offset)->state)
        .store(static_cast<uint32_t>(shm::ExtentState::kSealed), std::memory_order_release);
  }
}

void Store::write_intent(const Extent& intent, const std::vector<Dataset>& sealed) {
  std::vector<shm::IntentItemLayout> items(sealed.size());
  for (size_t i = 0; i < sealed.size(); ++i) {
    items[i].slot = sealed[i].slot;
    items[i].entry = index_entry_of(&sealed[i]);
  }
  shm::write_intent(mapping_.data() + intent.offset + shm::kExtentHeaderBytes, items);
  // Release: the record is whole before it is pointed at (the commit point).
  std::atomic_ref<uint64_t>(shm::pending_publish(mapping_.data())->intent_offset)
      .store(intent.offset, std::memory_order_release);
  SHELF_FAULT_POINT("daemon.publish.intent_written");
}

std::optional<uint64_t> Store::enter_item(Dataset dataset) {
  std::optional<uint64_t> replaced;
  if (auto existing = names_.find(dataset.name); existing != names_.end()) {
    Dataset& old = datasets_.at(existing->second);
    old.published = false;
    if (old.view) forget_view(old);
    if (!old.quarantine_reason.empty()) index_.add_published(1);
    replaced = existing->second;
    names_.erase(existing);
  } else {
    if (!index_.insert(dataset.name, dataset.slot)) {
      // Every bucket taken: someone who maps the segment wrote them. The
      // daemon's own names say what they must hold.
      log_warn("the name index's buckets were overwritten from outside shelfd; rebuilt them");
      rebuild_buckets();
      SHELF_CHECK(index_.insert(dataset.name, dataset.slot));
    }
    index_.add_published(1);
  }
  const uint64_t id = next_dataset_id_++;
  auto [it, inserted] = datasets_.emplace(id, std::move(dataset));
  SHELF_CHECK(inserted);
  names_.emplace(it->second.name, id);
  if (it->second.view) {
    for (const std::string& base : it->second.view_bases) {
      views_by_base_.emplace(base, it->second.name);
    }
  }
  write_index_entry(it->second.slot, &it->second);
  return replaced;
}

void Store::forget_view(const Dataset& view) {
  for (const std::string& base : view.view_bases) {
    auto [begin, end] = views_by_base_.equal_range(base);
    for (auto it = begin; it != end; ++it) {
      if (it->second == view.name) {
        views_by_base_.erase(it);
        break;
      }
    }
  }
}

shm::IndexEntryLayout Store::index_entry_of(const Dataset* dataset) {
  shm::IndexEntryLayout e{};
  if (dataset != nullptr) {
    e.state = static_cast<uint32_t>(entry_state(*dataset));
    e.name_length = static_cast<uint16_t>(dataset->name.size());
    std::memcpy(e.name, dataset->name.data(), dataset->name.size());
    e.descriptor_offset = dataset->descriptor.offset + shm::kExtentHeaderBytes;
    e.descriptor_length = dataset->descriptor_length;
    e.data_bytes = dataset->memory_bytes;
    e.created_ns = dataset->summary.created_ns;
    e.publish_id = dataset->publish_id;
    // Also when quarantined: a restart must know its buffers are in a file.
    if (on_disk(*dataset)) e.flags |= shm::kEntryInSpillFile;
    if (dataset->pinned) e.flags |= shm::kEntryPinned;
    if (dataset->view) e.flags |= shm::kEntryView;
  }
  return e;
}

shm::IndexEntryState Store::entry_state(const Dataset& dataset) {
  if (!dataset.quarantine_reason.empty()) return shm::IndexEntryState::kQuarantined;
  if (on_disk(dataset)) return shm::IndexEntryState::kSpilled;
  return dataset.unverified ? shm::IndexEntryState::kUnverified : shm::IndexEntryState::kPublished;
}

void Store::write_index_entry(uint32_t slot, const Dataset* dataset) {
  store_index_entry(slot, index_entry_of(dataset));
}

void Store::store_index_entry(uint32_t slot, const shm::IndexEntryLayout& e) {
  shm::IndexEntryLayout* entry = index_.entry(slot);
  // The entry's own seqlock (odd while changing) tells a restarted daemon
  // that it was torn; readers rely on the index's (index_.begin()/end(),
  // around every call of this). Word stores: shm/seqlock.h.
  shm::begin_write(entry->seq);
  shm::store_words(reinterpret_cast<std::byte*>(entry) + sizeof entry->seq,
                   reinterpret_cast<const std::byte*>(&e) + sizeof e.seq, sizeof e - sizeof e.seq);
  shm::end_write(entry->seq);
}

bool Store::serves(std::string_view name) const {
  auto it = names_.find(name);
  return it != names_.end() && datasets_.at(it->second).quarantine_reason.empty();
}

std::optional<protocol::DatasetSummary> Store::summary(std::string_view name) const {
  auto it = names_.find(name);
  if (it == names_.end()) return std::nullopt;
  return datasets_.at(it->second).summary;
}

std::vector<protocol::QuarantinedDataset> Store::quarantined() const {
  std::vector<protocol::QuarantinedDataset> out;
  for (const auto& [name, id] : names_) {
    const Dataset& d = datasets_.at(id);
    if (!d.quarantine_reason.empty()) out.push_back({name, d.memory_bytes, d.quarantine_reason});
  }
  return out;
}

Status Store::check_served(Dataset& dataset) {
  const std::string& name = dataset.name;
  if (!dataset.quarantine_reason.empty()) {
    return Status::corruption(
        "dataset " + quoted(name) + " is quarantined: shelfd found it damaged when it restarted (" +
        dataset.quarantine_reason +
        "), so it is not served; publish it again with --override, or "
        "`shelf unpublish " +
        name + (views_by_base_.count(name) > 0 ? " --cascade" : "") + "` to free its memory");
  }
  // The daemon holds a Get back until then (await_verification()).
  if (dataset.unverified) {
    return Status::unavailable("dataset " + quoted(name) +
                               " is being checked after shelfd restarted; try again");
  }
  // The daemon holds a Get back while it is restored (await_resident()):
  // here it could not be, as its memory is not free, or its restore failed.
  // (kSpilling is served: it is still in memory, and a lease taken now
  // keeps it there, finish_spill().)
  if (on_disk(dataset)) {
    if (!dataset.restore_error.ok()) {
      Status failed = std::exchange(dataset.restore_error, Status());
      return Status::from_code(
          static_cast<uint8_t>(failed.code()),
          "dataset " + quoted(name) +
              " is spilled to disk and could not be read back: " + failed.message());
    }
    Status full = over_limit(restore_bytes(dataset));
    return Status::resource_exhausted(
        "dataset " + quoted(name) +
        " is spilled to disk and cannot be restored now: " + full.message());
  }
  return Status();
}

Status Store::pin(const std::string& name, bool pinned) {
  auto it = names_.find(name);
  if (it == names_.end()) {
    return Status::not_found("dataset " + quoted(name) +
                             " not found; `shelf list` shows the published datasets");
  }
  Dataset& dataset = datasets_.at(it->second);
  // Pinned means in memory: the daemon held the request back while it was
  // restored (await_resident()), as a Get.
  if (pinned) SHELF_RETURN_IF_ERROR(check_served(dataset));
  if (dataset.pinned == pinned) return Status();
  dataset.pinned = pinned;
  if (!pinned) spill_candidates_changed_ = true;
  index_.begin();
  write_index_entry(dataset.slot, &dataset);
  index_.end();
  return Status();
}

Result<protocol::GetResponse> Store::get(SessionId session_id, const std::string& name) {
  Session& session = sessions_.at(session_id);
  auto it = names_.find(name);
  if (it == names_.end()) {
    return Status::not_found("dataset " + quoted(name) +
                             " not found; `shelf list` shows the published datasets");
  }
  Dataset& dataset = datasets_.at(it->second);
  SHELF_RETURN_IF_ERROR(check_served(dataset));
  dataset.last_used_ns = now_ns();
  if (session.leases.size() >= kMaxLeasesPerConnection) {
    return Status::resource_exhausted(
        "this connection holds " + std::to_string(session.leases.size()) +
        " leases, the most one connection may hold; destroy the Datasets you no longer need "
        "(each holds a lease), or use another connection");
  }
  const uint64_t lease = next_lease_id_++;
  session.leases.emplace(lease, it->second);
  ++dataset.leases;
  ++num_leases_;
  return protocol::GetResponse{lease, dataset.descriptor.offset + shm::kExtentHeaderBytes,
                               dataset.descriptor_length};
}

Status Store::release(SessionId session_id, uint64_t lease_id) {
  Session& session = sessions_.at(session_id);
  auto it = session.leases.find(lease_id);
  if (it == session.leases.end()) {
    return Status::invalid_argument("no lease " + std::to_string(lease_id) + " on this connection");
  }
  const uint64_t dataset_id = it->second;
  session.leases.erase(it);
  --num_leases_;
  Dataset& dataset = datasets_.at(dataset_id);
  SHELF_CHECK(dataset.leases > 0);
  --dataset.leases;
  spill_candidates_changed_ = true;
  free_if_unread(dataset_id);
  return Status();
}

Result<std::vector<protocol::DatasetSummary>> Store::unpublish(const std::string& name,
                                                               bool cascade) {
  recheck_old_mappers();
  if (names_.count(name) == 0) {
    return Status::not_found("dataset " + quoted(name) +
                             " not found; `shelf list` shows the published datasets");
  }
  const std::vector<std::string> views = views_reading(name);
  if (!views.empty() && !cascade) {
    std::string list;  // those reading it first
    for (auto v = views.rbegin(); v != views.rend(); ++v) {
      list += (list.empty() ? "" : ", ") + quoted(*v);
    }
    return Status::invalid_argument(
        "dataset " + quoted(name) + " is read by views: " + list +
        "; unpublish them first, or unpublish with cascade (--cascade in the CLI, "
        "cascade=True in Python) to remove them too");
  }
  std::vector<protocol::DatasetSummary> removed;
  // Each view after those that read it: at every step each remaining view's
  // bases are still published, also if shelfd is killed midway.
  for (const std::string& v : views) {
    auto it = names_.find(v);
    if (it == names_.end()) continue;
    removed.push_back(datasets_.at(it->second).summary);
    unpublish_one(v);
  }
  removed.push_back(datasets_.at(names_.at(name)).summary);
  unpublish_one(name);
  return removed;
}

std::vector<std::string> Store::views_reading(const std::string& name) const {
  // Depth first, each view after every view that reads it (post-order): the
  // order they can go in. A view reached twice (it reads two of them) is
  // listed once, so the walk ends whatever the graph; publish() keeps
  // chains at most kMaxViewDepth long (check_view_graph()), which bounds
  // the recursion.
  std::vector<std::string> out;
  // `name` itself is never listed: publish() admits no cycle, and a segment
  // a writer changed under shelfd must not make an unpublish take it twice.
  std::set<std::string> seen = {name};
  std::function<void(const std::string&)> visit = [&](const std::string& base) {
    auto [begin, end] = views_by_base_.equal_range(base);
    for (auto it = begin; it != end; ++it) {
      if (!seen.insert(it->second).second) continue;
      visit(it->second);
      out.push_back(it->second);
    }
  };
  visit(name);
  return out;
}

void Store::unpublish_one(const std::string& name) {
  auto it = names_.find(name);
  const uint64_t id = it->second;
  Dataset& dataset = datasets_.at(id);
  names_.erase(it);
  if (dataset.view) forget_view(dataset);
  index_.begin();
  write_index_entry(dataset.slot, nullptr);
  index_.erase(name, dataset.slot);
  if (dataset.quarantine_reason.empty()) index_.add_published(-1);
  index_.end();
  free_slots_.push(dataset.slot);
  dataset.published = false;
  retire(id);
}

void Store::free_dataset(uint64_t dataset_id) {
  auto it = datasets_.find(dataset_id);
  SHELF_CHECK(it != datasets_.end() && !it->second.published && unread(it->second));
  std::vector<Extent> extents = it->second.partitions;
  // A quarantined dataset may own no descriptor extent (it was damaged).
  if (it->second.descriptor.length > 0) extents.push_back(it->second.descriptor);
  free_extents(extents);
  // Its spill file (a quarantined one's too: the name is ours alone).
  if (it->second.residence == Dataset::Residence::kSpilled && !options_.spill_dir.empty()) {
    ::unlink(spill_path(it->second.publish_id).c_str());
  }
  datasets_.erase(it);
}

protocol::ListResponse Store::list() const { return list(table_leases()); }

protocol::ListResponse Store::list(const std::unordered_map<uint64_t, uint32_t>& in_tables) const {
  protocol::ListResponse response;
  response.datasets.reserve(names_.size());
  for (const auto& [name, id] : names_) {
    const Dataset& d = datasets_.at(id);
    if (!d.quarantine_reason.empty()) continue;  // not served: status() reports it
    protocol::DatasetSummary s = d.summary;
    s.spilled = on_disk(d);
    s.pinned = d.pinned;
    auto t = in_tables.find(d.publish_id);
    s.leases = d.leases + (t == in_tables.end() ? 0 : t->second);
    response.datasets.push_back(std::move(s));
  }
  return response;
}

protocol::StatusResponse Store::status(bool who_holds) const {
  protocol::StatusResponse s;
  s.shm_dir = options_.shm_dir;
  s.segment_name = segment_.name();
  s.daemon_pid = static_cast<uint32_t>(::getpid());
  s.generation = generation_;
  s.started_ns = started_ns_;
  s.memory_limit = options_.memory_limit;
  s.used_bytes = used_bytes_;
  s.index_bytes = index_bytes_;
  s.unsealed_bytes = unsealed_bytes_;
  s.pending_free_bytes = pending_free_bytes_ + punching_bytes_;
  auto resident = segment_.resident_bytes();
  s.resident_bytes = resident.ok() ? *resident : 0;
  s.page_bytes = page_bytes_;
  s.huge_page_bytes =
      page_bytes_ == kHugePageSize ? allocator_.allocated_in_whole_blocks(kHugePageSize) : 0;
  s.num_connections = static_cast<uint32_t>(sessions_.size());
  const std::unordered_map<uint64_t, uint32_t> in_tables = table_leases();
  s.num_leases = num_leases_;
  for (const auto& [publish_id, n] : in_tables) s.num_leases += n;
  s.datasets = list(in_tables).datasets;
  s.quarantined = quarantined();
  if (who_holds) describe_holders(in_tables, s);
  // Every uid charged anything, and every uid with a quota of its own.
  std::map<uint32_t, uint64_t> used;
  for (const auto& [uid, bytes] : charged_) used[uid] = bytes;
  for (const auto& [uid, quota] : options_.user_quotas) used.try_emplace(uid, 0);
  for (const auto& [uid, bytes] : used) s.users.push_back({uid, bytes, quota_of(uid)});
  if (verifier_) {
    const Verifier::Progress p = verifier_->progress();
    s.verify_datasets_left = static_cast<uint32_t>(p.datasets_left);
    s.verify_bytes_left = p.bytes_left;
    s.verify_bytes_done = p.bytes_done;
  }
  if (spiller_) {
    s.spill_dir = options_.spill_dir;
    s.spill_above_bytes = spill_above_bytes();
    for (const auto& [id, d] : datasets_) {
      if (!d.published || !on_disk(d) || !d.quarantine_reason.empty()) continue;
      ++s.spilled_datasets;
      s.spilled_file_bytes += Spiller::file_bytes(d.spilled_descriptor.size(), d.spilled_payloads);
    }
  }
  return s;
}

void Store::describe_holders(const std::unordered_map<uint64_t, uint32_t>& in_tables,
                             protocol::StatusResponse& s) const {
  // Every dataset a process may hold gets its index in the response: the
  // served ones as listed, then the unpublished ones still read, by name.
  std::unordered_map<uint64_t, uint32_t> index_of;  // dataset id -> Holding::dataset
  std::vector<uint64_t> memory;                     // by Holding::dataset
  for (const protocol::DatasetSummary& d : s.datasets) {
    index_of.emplace(names_.find(d.name)->second, static_cast<uint32_t>(memory.size()));
    memory.push_back(d.memory_bytes);
  }
  std::vector<std::pair<std::string_view, uint64_t>> unpublished;
  for (const auto& [id, d] : datasets_) {
    if (!d.published) unpublished.emplace_back(d.name, id);
  }
  std::sort(unpublished.begin(), unpublished.end());
  for (const auto& [name, id] : unpublished) {
    const Dataset& d = datasets_.at(id);
    auto t = in_tables.find(d.publish_id);
    s.unpublished.push_back(protocol::UnpublishedDataset{
        d.name, d.memory_bytes, d.leases + (t == in_tables.end() ? 0 : t->second), d.restart_hold});
    index_of.emplace(id, static_cast<uint32_t>(memory.size()));
    memory.push_back(d.memory_bytes);
  }
  std::map<uint32_t, HolderRow> rows = holder_rows(index_of);
  // How many processes hold each dataset: what "alone" means.
  std::vector<uint32_t> holders(memory.size(), 0);
  for (const auto& [pid, row] : rows) {
    for (const auto& [index, leases] : row.held) ++holders[index];
  }
  const auto first_unpublished = static_cast<uint32_t>(s.datasets.size());
  for (auto& [pid, row] : rows) {
    protocol::ClientSummary& c = row.summary;
    c.datasets_held = static_cast<uint32_t>(row.held.size());
    for (const auto& [index, leases] : row.held) {
      const bool alone = holders[index] == 1;
      c.leases += leases;
      c.held_bytes += memory[index];
      if (index >= first_unpublished && alone) c.unpublished_bytes += memory[index];
      c.holdings.push_back({index, leases, alone});
    }
    // The largest, so that a response stays small however much is held.
    auto larger = [&](const protocol::Holding& a, const protocol::Holding& b) {
      return memory[a.dataset] != memory[b.dataset] ? memory[a.dataset] > memory[b.dataset]
                                                    : a.dataset < b.dataset;
    };
    const size_t kept = std::min<size_t>(c.holdings.size(), kMaxHoldingsPerClient);
    std::partial_sort(c.holdings.begin(), c.holdings.begin() + static_cast<std::ptrdiff_t>(kept),
                      c.holdings.end(), larger);
    c.holdings.resize(kept);
    s.clients.push_back(std::move(c));
  }
}

std::map<uint32_t, Store::HolderRow> Store::holder_rows(
    const std::unordered_map<uint64_t, uint32_t>& index_of) const {
  std::unordered_map<uint64_t, uint32_t> by_publish_id;  // -> Holding::dataset
  for (const auto& [id, index] : index_of)
    by_publish_id.emplace(datasets_.at(id).publish_id, index);
  std::map<uint32_t, HolderRow> rows;
  // Oldest first, so that a process's row takes its first connection's words.
  std::vector<std::pair<SessionId, const Session*>> sessions;
  for (const auto& [id, session] : sessions_) sessions.emplace_back(id, &session);
  std::sort(sessions.begin(), sessions.end());
  for (const auto& [id, session] : sessions) {
    HolderRow& row = rows[session->pid];
    protocol::ClientSummary& c = row.summary;
    if (c.connections++ == 0) {
      c.pid = session->pid;
      c.uid = session->uid;
      c.command = session->command;
      c.client_name = session->client_name;
      c.connected_ns = session->connected_ns;
    }
    for (const auto& [offset, length] : session->unsealed) c.writing_bytes += length;
    for (const auto& [lease, dataset_id] : session->leases) {
      if (auto it = index_of.find(dataset_id); it != index_of.end()) ++row.held[it->second];
    }
    if (!session->table) continue;
    // A garbage id in a table (the client's to write) names no dataset.
    session->table->for_each_held([&](uint64_t publish_id) {
      if (auto it = by_publish_id.find(publish_id); it != by_publish_id.end())
        ++row.held[it->second];
    });
  }
  // The processes that mapped the segment before the restart hold what
  // existed then (restart holds), leases or not.
  std::vector<uint32_t> restart_held;
  for (const auto& [id, d] : datasets_) {
    if (!d.restart_hold) continue;
    if (auto it = index_of.find(id); it != index_of.end()) restart_held.push_back(it->second);
  }
  for (const auto& [pid, seen] : old_mappers_seen_) {
    if (old_mappers_.count(pid) == 0) continue;
    HolderRow& row = rows[pid];
    if (row.summary.connections == 0) {
      row.summary.pid = pid;
      row.summary.uid = seen.uid;
      row.summary.command = seen.name;
    }
    for (uint32_t index : restart_held) row.held.try_emplace(index, 0);
  }
  return rows;
}

}  // namespace shelf::server
