// The Store's spilling (store.h, "Spilling"; docs/design.md, "Spilling"):
// datasets nobody reads leave the segment for files of --spill-dir when a
// request needs their memory, and come back when a get asks for them.
//
// A spill, step by step: the spiller writes the file while the dataset is
// still published and served (kSpilling; its memory stays: unread() is
// false). Then, on the loop, the entry becomes kSpilled (so a lease-table
// get asks the daemon), a fence, and the lease tables are scanned as
// retire() does: a reader that leased it meanwhile keeps it resident (the
// entry goes back, the file goes). Else its partitions are freed. A kill at
// any step leaves either a published dataset (and a file the next restart
// removes) or a spilled one whose partitions nobody owns (swept).
//
// A restore: extents are reserved for the partitions and a new descriptor
// (others spilled first if the limit says so), the spiller reads the file
// into them and checks every buffer's XXH3 against the relocated
// descriptor; then, on the loop, the relocated descriptor is written into
// its new extent, the extents are sealed and the entry is published again,
// pointing at it, under a new publish id. The old descriptor is freed, or
// kept while a process from before a restart may read it (a list reads
// descriptor headers without a lease). A damaged file quarantines the
// dataset.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <dirent.h>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

#include "base/check.h"
#include "base/fault_point.h"
#include "base/units.h"
#include "server/log.h"
#include "server/store.h"
#include "server/store_internal.h"
#include "shm/intent.h"

namespace shelf::server {

using namespace internal;

uint64_t Store::restore_bytes(const Dataset& d) const {
  uint64_t bytes = 0;
  for (uint64_t p : d.spilled_payloads) bytes += placement(p, shm::ExtentKind::kPartition).length;
  return bytes + placement(d.descriptor_length, shm::ExtentKind::kDescriptor).length;
}

std::string Store::spill_prefix() const {
  const auto* header = reinterpret_cast<const shm::SegmentHeaderLayout*>(mapping_.data());
  return segment_.name() + "." + std::to_string(header->created_ns);
}

Status Store::start_spilling() {
  if (options_.spill_dir.empty()) return Status();
  SHELF_ASSIGN_OR_RETURN(spiller_, Spiller::start(segment_, mapping_.data()));
  std::set<uint64_t> named;
  for (const auto& [id, d] : datasets_) {
    if (d.residence == Dataset::Residence::kSpilled) named.insert(d.publish_id);
  }
  DIR* dir = ::opendir(options_.spill_dir.c_str());
  if (dir == nullptr)
    return Status::from_errno("cannot read --spill-dir " + options_.spill_dir, errno);
  uint32_t removed = 0;
  while (const dirent* e = ::readdir(dir)) {
    bool temporary = false;
    const uint64_t id = spill_file_publish_id(e->d_name, spill_prefix(), &temporary);
    if (id == 0 || (!temporary && named.count(id) > 0)) continue;
    if (::unlinkat(::dirfd(dir), e->d_name, 0) == 0) ++removed;
  }
  ::closedir(dir);
  if (removed > 0) {
    log_info("spill: removed " + std::to_string(removed) + " file(s) of " + spill_prefix() +
             " in " + options_.spill_dir + " that no dataset names (left by a spill or a " +
             "restore cut short)");
  }
  return Status();
}

std::optional<uint64_t> Store::await_room(SessionId session, uint64_t payload_bytes) {
  if (payload_bytes == 0 || payload_bytes > options_.memory_limit) return std::nullopt;
  const uint64_t length = placement(payload_bytes, shm::ExtentKind::kPartition).length;
  // Nobody's datasets go to disk for a request allocate() refuses anyway.
  if (!check_quota(sessions_.at(session).uid, length).ok()) return std::nullopt;
  return await_extents(length);
}

std::optional<uint64_t> Store::await_room(const protocol::PublishRequest& request) {
  uint64_t length = 0;
  for (const protocol::PublishItem& item : request.items) {
    if (item.descriptor.size() > options_.memory_limit)
      return std::nullopt;  // publish() refuses it
    length += placement(item.descriptor.size(), shm::ExtentKind::kDescriptor).length;
  }
  if (request.items.size() > 1) {
    length +=
        placement(shm::intent_payload_bytes(request.items.size()), shm::ExtentKind::kIntent).length;
  }
  return await_extents(length);
}

std::optional<uint64_t> Store::await_extents(uint64_t length) {
  if (make_room(length)) return std::nullopt;
  // Spills first, for what the punches under way will not give back: they
  // take longest. Then the punches.
  if (auto ticket = spill_for(length, 0)) return ticket;
  if (punching_bytes_ > 0) return punch_ticket();
  return std::nullopt;
}

std::optional<uint64_t> Store::await_resident(std::string_view name) {
  auto it = names_.find(name);
  if (!spiller_ || it == names_.end()) return std::nullopt;
  Dataset& d = datasets_.at(it->second);
  if (!d.quarantine_reason.empty()) return std::nullopt;
  if (d.residence == Dataset::Residence::kRestoring) return d.spill_ticket;
  // get() says why its last restore failed.
  if (d.residence != Dataset::Residence::kSpilled || !d.restore_error.ok()) {
    return std::nullopt;
  }
  const uint64_t need = restore_bytes(d);
  if (!make_room(need)) {
    if (auto ticket = spill_for(need, it->second)) return ticket;
    if (punching_bytes_ > 0) return punch_ticket();
    return std::nullopt;  // get() says it cannot be restored now, and why
  }
  if (Status s = start_restore(it->second); !s.ok()) {
    log_warn("cannot restore " + quoted(d.name) + " now: " + s.message());
    d.restore_error = std::move(s);  // get() says it
    return std::nullopt;
  }
  return d.spill_ticket;
}

bool Store::spillable(const Dataset& d,
                      const std::unordered_map<uint64_t, uint32_t>& in_tables) const {
  return d.published && !d.pinned && d.quarantine_reason.empty() && !d.unverified &&
         d.residence == Dataset::Residence::kResident && !d.spill_failed && !d.partitions.empty() &&
         unread(d) && in_tables.count(d.publish_id) == 0;
}

std::optional<uint64_t> Store::spill_for(uint64_t bytes, uint64_t keep_dataset) {
  // Without --spill-dir, or no spill makes room for it.
  if (!spiller_ || bytes > options_.memory_limit) return std::nullopt;
  spill_down_to(options_.memory_limit - bytes, keep_dataset);
  if (spills_.empty()) return std::nullopt;
  // The spiller runs its jobs in order: the newest ticket ends last.
  uint64_t last = 0;
  for (const auto& [ticket, id] : spills_) last = std::max(last, ticket);
  return last;
}

void Store::spill_above_threshold() {
  if (!spiller_ || options_.spill_above_percent == 100) return;
  // A scan that found nothing to spill (everything held or pinned) is not
  // repeated every turn: it reads every lease table. Again after a while
  // (a lease-table release is silent), or once a dataset may have become
  // spillable.
  const auto now = std::chrono::steady_clock::now();
  if (!spill_candidates_changed_ && now < next_threshold_scan_) return;
  spill_candidates_changed_ = false;
  const size_t spilling = spills_.size();
  spill_down_to(spill_above_bytes(), 0);
  const bool fruitless = spills_.size() == spilling &&
                         used_bytes_ - punching_bytes_ > spill_above_bytes() + spilling_bytes_;
  next_threshold_scan_ = fruitless ? now + kThresholdRescan : now;
}

void Store::spill_down_to(uint64_t target, uint64_t keep_dataset) {
  // Memory being punched is as good as back.
  const uint64_t staying = used_bytes_ - punching_bytes_;
  if (staying <= target || staying - target <= spilling_bytes_) return;
  const uint64_t need = staying - target;
  const std::unordered_map<uint64_t, uint32_t> in_tables = table_leases();
  std::vector<std::pair<int64_t, uint64_t>> candidates;  // last used, dataset id
  for (const auto& [id, d] : datasets_) {
    if (id != keep_dataset && spillable(d, in_tables)) candidates.emplace_back(d.last_used_ns, id);
  }
  std::sort(candidates.begin(), candidates.end());
  for (size_t i = 0; i < candidates.size() && spilling_bytes_ < need; ++i) {
    start_spill(candidates[i].second);
  }
}

Spiller::Job Store::spill_job(Spiller::Job::Kind kind, const Dataset& d) {
  Spiller::Job job;
  job.kind = kind;
  job.ticket = next_check_ticket_++;
  job.path = spill_path(d.publish_id);
  job.what = "dataset " + quoted(d.name);
  job.publish_id = d.publish_id;
  return job;
}

void Store::start_spill(uint64_t dataset_id) {
  Dataset& d = datasets_.at(dataset_id);
  Spiller::Job job = spill_job(Spiller::Job::Kind::kSpill, d);
  uint64_t bytes = 0;
  for (const Extent& e : d.partitions) {
    job.ranges.push_back({e.offset + shm::kExtentHeaderBytes, e.length - shm::kExtentHeaderBytes});
    bytes += e.length;
  }
  // Copied out once and checked: a process that maps the segment
  // read-write could change it, and the restore relocates this copy.
  const std::byte* desc = mapping_.data() + d.descriptor.offset + shm::kExtentHeaderBytes;
  job.descriptor.assign(desc, desc + d.descriptor_length);
  if (!shm::DescriptorView::parse(job.descriptor, /*from_client=*/false).ok()) {
    log_warn("spill: the descriptor of " + quoted(d.name) +
             " was changed in the segment from outside shelfd; it stays in memory");
    d.spill_failed = true;
    return;
  }
  d.spilled_descriptor = job.descriptor;
  d.residence = Dataset::Residence::kSpilling;
  d.spill_ticket = job.ticket;
  spills_.emplace(job.ticket, dataset_id);
  spilling_bytes_ += bytes;
  log_debug("spill: writing " + quoted(d.name) + " (" + format_bytes(bytes) + ") to " + job.path);
  spiller_->add(std::move(job));
}

Status Store::start_restore(uint64_t dataset_id) {
  Dataset& d = datasets_.at(dataset_id);
  const auto pid = static_cast<uint32_t>(::getpid());
  // A new descriptor extent too (see the top of this file).
  auto descriptor = reserve_extent(d.descriptor_length, shm::ExtentKind::kDescriptor, pid);
  if (!descriptor.ok()) return descriptor.status();
  std::vector<Extent> to;
  for (uint64_t payload : d.spilled_payloads) {
    auto extent = reserve_extent(payload, shm::ExtentKind::kPartition, pid);
    if (!extent.ok()) {
      to.push_back(*descriptor);
      free_extents(to);
      return extent.status();
    }
    to.push_back(*extent);
  }
  std::vector<std::byte> relocated = relocated_descriptor(d, to);
  auto view = shm::DescriptorView::parse(relocated, /*from_client=*/false);
  SHELF_CHECK(view.ok());  // the same descriptor, published before, moved whole
  Spiller::Job job = spill_job(Spiller::Job::Kind::kRestore, d);
  for (size_t i = 0; i < to.size(); ++i) {
    job.ranges.push_back({to[i].offset + shm::kExtentHeaderBytes, d.spilled_payloads[i]});
  }
  job.check =
      std::make_shared<const Verifier::Descriptor>(std::move(relocated), std::move(view).value());
  d.restoring = std::move(to);
  d.restoring_descriptor = *descriptor;
  d.residence = Dataset::Residence::kRestoring;
  d.spill_ticket = job.ticket;
  spills_.emplace(job.ticket, dataset_id);
  spiller_->add(std::move(job));
  return Status();
}

std::vector<std::byte> Store::relocated_descriptor(const Dataset& d,
                                                   const std::vector<Extent>& to) const {
  std::vector<std::byte> bytes = d.spilled_descriptor;
  // Laid out as DescriptorView::parse checked it (start_spill(), recovery):
  // header, columns, partitions, chunks (partition-major).
  shm::DescriptorHeaderLayout h;
  std::memcpy(&h, bytes.data(), sizeof h);
  const uint64_t partitions_at = sizeof h + h.num_columns * sizeof(shm::ColumnLayout);
  const uint64_t chunks_at = partitions_at + h.num_partitions * sizeof(shm::PartitionLayout);
  SHELF_CHECK(h.num_partitions == to.size());
  for (uint64_t p = 0; p < h.num_partitions; ++p) {
    shm::PartitionLayout part;
    std::byte* at = bytes.data() + partitions_at + p * sizeof part;
    std::memcpy(&part, at, sizeof part);
    const uint64_t from = part.extent_offset;
    part.extent_offset = to[p].offset;
    part.extent_length = to[p].length;
    std::memcpy(at, &part, sizeof part);
    for (uint32_t c = 0; c < h.num_columns; ++c) {
      shm::ChunkLayout chunk;
      std::byte* cat = bytes.data() + chunks_at + (p * h.num_columns + c) * sizeof chunk;
      std::memcpy(&chunk, cat, sizeof chunk);
      for (shm::BufferLayout* b : {&chunk.validity, &chunk.offsets, &chunk.data}) {
        if (b->length > 0) b->offset = b->offset - from + to[p].offset;
      }
      std::memcpy(cat, &chunk, sizeof chunk);
    }
  }
  return bytes;
}

void Store::absorb_spilled(std::vector<Spiller::Outcome> outcomes) {
  for (const Spiller::Outcome& outcome : outcomes) {
    auto it = spills_.find(outcome.ticket);
    SHELF_CHECK(it != spills_.end());
    const uint64_t id = it->second;
    spills_.erase(it);
    finished_checks_.push_back(outcome.ticket);  // the requests waiting for it run again
    if (outcome.kind == Spiller::Job::Kind::kSpill) {
      finish_spill(id, outcome);
    } else {
      finish_restore(id, outcome);
    }
  }
}

void Store::finish_spill(uint64_t dataset_id, const Spiller::Outcome& outcome) {
  Dataset& d = datasets_.at(dataset_id);
  uint64_t bytes = 0;
  for (const Extent& e : d.partitions) bytes += e.length;
  spilling_bytes_ -= bytes;
  d.residence = Dataset::Residence::kResident;
  const std::string path = spill_path(d.publish_id);
  if (!outcome.status.ok()) {
    d.spill_failed = true;
    log_warn("spill: " + outcome.status.message() + "; " + quoted(d.name) + " stays in memory");
    free_if_unread(dataset_id);  // unpublished meanwhile
    return;
  }
  if (!d.published) {  // unpublished or replaced while it was written
    ::unlink(path.c_str());
    free_if_unread(dataset_id);
    return;
  }
  if (d.pinned) {  // pinned while it was written: it stays
    ::unlink(path.c_str());
    return;
  }
  // The commit (see the top of this file): the entry says kSpilled, with
  // only the descriptor's memory, before the lease tables are looked at.
  const uint64_t memory_before = d.memory_bytes;
  d.residence = Dataset::Residence::kSpilled;
  d.memory_bytes = d.descriptor.length;
  index_.begin();
  write_index_entry(d.slot, &d);
  index_.end();
  std::atomic_thread_fence(std::memory_order_seq_cst);  // as retire()'s
  SHELF_FAULT_POINT("daemon.spill.before_scan");
  if (d.leases > 0 || in_lease_tables(d.publish_id, 0)) {
    // Leased meanwhile (a get a moment before the entry changed): it stays.
    d.residence = Dataset::Residence::kResident;
    d.memory_bytes = memory_before;
    index_.begin();
    write_index_entry(d.slot, &d);
    index_.end();
    ::unlink(path.c_str());
    return;
  }
  std::vector<Extent> partitions = std::move(d.partitions);
  d.partitions.clear();
  d.spilled_payloads.clear();
  for (const Extent& e : partitions)
    d.spilled_payloads.push_back(e.length - shm::kExtentHeaderBytes);
  d.summary.memory_bytes = d.memory_bytes;
  uncharge(d.summary.publisher_uid, bytes);
  free_extents(partitions);
  char took[32];
  std::snprintf(took, sizeof took, "%.3f s", outcome.seconds);
  log_info("spill: wrote " + quoted(d.name) + " (" + format_bytes(bytes) + ") to " + path + " in " +
           took + " and freed its memory");
}

void Store::finish_restore(uint64_t dataset_id, const Spiller::Outcome& outcome) {
  Dataset& d = datasets_.at(dataset_id);
  std::vector<Extent> to = std::move(d.restoring);
  d.restoring.clear();
  const Extent descriptor = std::exchange(d.restoring_descriptor, Extent{});
  d.residence = Dataset::Residence::kSpilled;
  auto give_back = [&] {
    std::vector<Extent> all = to;
    all.push_back(descriptor);
    free_extents(all);
  };
  if (!d.published) {  // unpublished meanwhile: free_dataset() removes the file
    give_back();
    free_if_unread(dataset_id);
    return;
  }
  if (outcome.status.code() == Status::Code::kCorruption) {
    give_back();
    quarantine(d, outcome.status.message());
    return;
  }
  if (!outcome.status.ok()) {  // the file could not be read now: it may be later
    give_back();
    log_warn("spill: " + outcome.status.message());
    d.restore_error = outcome.status;
    return;
  }
  // The commit (see the top of this file).
  const std::vector<std::byte> relocated = relocated_descriptor(d, to);
  std::memcpy(mapping_.data() + descriptor.offset + shm::kExtentHeaderBytes, relocated.data(),
              relocated.size());
  uint64_t bytes = 0;
  std::vector<Extent> sealed = to;
  sealed.push_back(descriptor);
  for (const Extent& e : sealed) {
    // Release: pairs with the acquire of kSealed in Client::get_dataset().
    std::atomic_ref<uint32_t>(extent_header(e.offset)->state)
        .store(static_cast<uint32_t>(shm::ExtentState::kSealed), std::memory_order_release);
  }
  for (const Extent& e : to) bytes += e.length;
  const Extent old_descriptor = std::exchange(d.descriptor, descriptor);
  const std::string path = spill_path(d.publish_id);
  d.partitions = std::move(to);
  d.memory_bytes = d.descriptor.length + bytes;
  spill_candidates_changed_ = true;
  d.summary.memory_bytes = d.memory_bytes;
  charge(d.summary.publisher_uid, bytes);
  d.spilled_payloads.clear();
  d.spilled_descriptor.clear();
  d.residence = Dataset::Residence::kResident;
  d.last_used_ns = now_ns();
  index_.begin();
  d.publish_id = index_.take_publish_id();
  write_index_entry(d.slot, &d);
  index_.end();
  release_old_descriptor(d, old_descriptor);
  SHELF_FAULT_POINT("daemon.restore.before_unlink");
  ::unlink(path.c_str());
  char took[32];
  std::snprintf(took, sizeof took, "%.3f s", outcome.seconds);
  log_info("spill: restored " + quoted(d.name) + " (" + format_bytes(bytes) + ") from " + path +
           " in " + took);
}

void Store::release_old_descriptor(const Dataset& d, const Extent& old) {
  if (!d.restart_hold) return free_extents({old});
  // A process from before the restart may read it: kept, as the restart's
  // other unreferenced extents, until no such process is left.
  held_extents_.push_back(old);
  held_bytes_ += old.length;
  pending_free_bytes_ += old.length;
}

void Store::quarantine(Dataset& d, const std::string& reason) {
  d.quarantine_reason = reason;
  index_.begin();
  write_index_entry(d.slot, &d);
  index_.add_published(-1);
  index_.end();
  log_quarantine(d);
  new_quarantines_.push_back({d.name, d.memory_bytes, d.quarantine_reason});
}

}  // namespace shelf::server
