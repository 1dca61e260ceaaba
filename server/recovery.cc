// Restart recovery: re-attaching a segment an earlier shelfd left, and
// keeping what processes that outlived it may still use until they are gone.
// The contract is in store.h ("Restart"); the steps in docs/shm_layout.md,
// "Lifetime and recovery".
#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <thread>
#include <unistd.h>
#include <utility>

#include "base/check.h"
#include "base/fault_point.h"
#include "base/parallel.h"
#include "base/unique_fd.h"
#include "base/units.h"
#include "server/log.h"
#include "server/store.h"
#include "server/store_internal.h"
#include "shm/checksum.h"
#include "shm/descriptor.h"
#include "shm/intent.h"
#include "shm/presence.h"
#include "shm/segment_view.h"

namespace shelf::server {

using namespace internal;
using shm::kPageSize;

namespace {

// True when `pid` names a live process other than this one.
bool owner_alive(uint32_t pid) {
  if (pid == 0 || pid == static_cast<uint32_t>(::getpid())) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

// True when the process `pid`, named as the owner of an unsealed extent,
// may still write into the segment: it maps it (`mappers`, from
// processes_mapping()), or it is alive and its mappings are not ours to read
// (another user's, under --group: then liveness is all we can go by, and a
// reused pid holds the extent until it exits, which is safe). A pid reused
// by a process of ours that does not map the segment, or one written into
// a forged header, holds nothing: freeing under a live writer is what must
// never happen, and none of these can write.
bool may_write(uint32_t pid, const std::set<uint32_t>& mappers) {
  if (mappers.count(pid) > 0) return true;
  if (!owner_alive(pid)) return false;
  UniqueFd maps(::open(("/proc/" + std::to_string(pid) + "/maps").c_str(), O_RDONLY | O_CLOEXEC));
  return !maps.valid() && errno == EACCES;
}

// The processes other than this one that map the shm object open as `fd`
// (its inode in /proc/<pid>/maps), among `among` if given, else all.
// Processes of other users are not visible; they could not open a 0600
// segment anyway.
std::set<uint32_t> processes_mapping(int fd, const std::set<uint32_t>* among = nullptr) {
  std::set<uint32_t> found;
  struct stat st;
  if (::fstat(fd, &st) != 0) return found;
  // " MAJ:MIN INODE ": the device and inode columns, as the kernel prints them.
  char id[64];
  std::snprintf(id, sizeof id, " %02x:%02x %llu ", major(st.st_dev), minor(st.st_dev),
                static_cast<unsigned long long>(st.st_ino));
  const std::string inode = id;
  std::vector<uint32_t> pids;
  if (among != nullptr) {
    pids.assign(among->begin(), among->end());
  } else if (DIR* proc = ::opendir("/proc")) {
    while (dirent* e = ::readdir(proc)) {
      char* end = nullptr;
      const unsigned long pid = std::strtoul(e->d_name, &end, 10);
      if (end != e->d_name && *end == '\0' && pid > 0) pids.push_back(static_cast<uint32_t>(pid));
    }
    ::closedir(proc);
  }
  const auto self = static_cast<uint32_t>(::getpid());
  for (uint32_t pid : pids) {
    if (pid == self) continue;
    std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
    for (std::string line; std::getline(maps, line);) {
      // "start-end perms offset dev inode   DIR/NAME"
      if (line.find(inode) != std::string::npos) {
        found.insert(pid);
        break;
      }
    }
  }
  return found;
}

std::string pid_list(const std::set<uint32_t>& pids) {
  std::string out;
  for (uint32_t pid : pids) out += (out.empty() ? "" : " ") + std::to_string(pid);
  return out;
}

uint64_t resident_or_zero(const shm::ShmObject& segment) {
  auto r = segment.resident_bytes();
  return r.ok() ? *r : 0;
}

// Where what `segment` holds past `from` ends: the end of the last extent
// (by its header's length: a publisher's extent may have pages it has not
// touched yet, which read as holes) or of the last resident page that is
// not in an extent; `from` when it holds nothing past it.
Result<uint64_t> held_end(const shm::ShmObject& segment, uint64_t from, uint64_t file_bytes) {
  uint64_t end = from;
  for (uint64_t at = from; at < file_bytes;) {
    const off_t data = ::lseek(segment.fd(), static_cast<off_t>(at), SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // no data past `at`
    if (data < 0) return Status::from_errno("look for data in " + segment.path(), errno);
    const uint64_t page = static_cast<uint64_t>(data) / kPageSize * kPageSize;
    shm::ExtentHeaderLayout x{};
    const bool extent = ::pread(segment.fd(), &x, sizeof x, static_cast<off_t>(page)) == sizeof x &&
                        x.magic == shm::kExtentMagic && x.length % kPageSize == 0 &&
                        x.length > shm::kExtentHeaderBytes && x.length <= file_bytes - page;
    at = page + (extent ? x.length : kPageSize);
    end = std::max(end, at);
  }
  return end;
}

// A restart may lower --memory-limit only when what the segment holds fits
// under the new limit and inside the smaller extent area (2 x the limit)
// that comes with it. Measured from the file alone (its resident pages),
// before anything is written, so a refusal leaves it untouched. The
// resident pages include what recovery would free (half-written
// partitions), so a fit is never overstated.
Status check_limit_fits(const shm::ShmObject& segment, const shm::SegmentHeaderLayout& h,
                        uint64_t file_bytes, uint64_t limit, bool limit_given) {
  SHELF_ASSIGN_OR_RETURN(uint64_t resident, segment.resident_bytes());
  const uint64_t area_end = h.data_offset + data_area_bytes(limit);
  // Nothing can lie past an area that reaches the end of the file: the walk
  // over the extents is needed only when the area shrinks.
  uint64_t data_end = h.data_offset;
  if (area_end < file_bytes) {
    SHELF_ASSIGN_OR_RETURN(data_end, held_end(segment, h.data_offset, file_bytes));
  }
  const bool over_limit = limit < h.memory_limit && resident > limit;
  const bool past_area = data_end > area_end;
  if (!over_limit && !past_area) return Status();
  // The smallest limit that holds it all: the resident bytes, and an extent
  // area (twice the limit) that reaches past the last of them.
  // (A limit must also exceed the header and index, as at create().)
  uint64_t least =
      std::max({resident, kMinMemoryLimit, header_and_index_bytes(h.index_capacity) + kPageSize});
  least = std::max(least, align_up((data_end - h.data_offset + 1) / 2, kPageSize));
  least = align_up(least, kPageSize);
  const std::string& path = segment.path();
  std::string why =
      over_limit ? "it holds " + format_bytes(resident) + " (" + std::to_string(resident) +
                       " bytes: its datasets, index and header, and any half-written partitions "
                       "a restart would free), more than --memory-limit " +
                       format_bytes(limit) + " (" + std::to_string(limit) + " bytes)"
                 : "";
  if (past_area) {
    why += std::string(why.empty() ? "" : ", and ") + "it holds data up to offset " +
           std::to_string(data_end) + ", past the " + format_bytes(data_area_bytes(limit)) +
           " extent area (twice the limit) that --memory-limit " + format_bytes(limit) +
           " gives, which ends at offset " + std::to_string(area_end);
  }
  return Status::invalid_argument(
      path + " cannot shrink to --memory-limit " + format_bytes(limit) + ": " + why +
      "; it was left untouched. Start shelfd with --memory-limit " + std::to_string(least) + " (" +
      format_bytes(least) + ") or more" +
      (limit_given ? ", or without --memory-limit to keep its " + format_bytes(h.memory_limit)
                   : std::string()) +
      "; to go lower, unpublish datasets first (shelf unpublish NAME) under the current limit");
}

// Gives the segment an extent area of twice `limit` and the file the size
// that ends it, keeping every byte below the new end where it is. The header
// is written one field at a time, so the order keeps, after every step,
// 2 x memory_limit <= data_bytes <= segment_bytes - data_offset <= file size
// - data_offset, the chain attach() accepts: what grows is raised from the
// file down to the limit, then what shrinks is lowered from the limit up to
// the file. A shelfd killed in between leaves a segment the next start
// accepts and resizes again. The caller checked nothing resident lies past
// the new end (check_limit_fits).
Status resize_segment(const shm::ShmObject& segment, uint64_t file_bytes, uint64_t limit) {
  SHELF_ASSIGN_OR_RETURN(shm::Mapping page, shm::Mapping::map(segment, 0, kPageSize, true));
  auto* h = reinterpret_cast<shm::SegmentHeaderLayout*>(page.data());
  const uint64_t data_bytes = data_area_bytes(limit);
  const uint64_t segment_bytes = h->data_offset + data_bytes;
  // Release: keeps the stores in program order, so a kill leaves a prefix of
  // them. No client reads these fields while no daemon serves.
  auto set = [](uint64_t& field, uint64_t value) {
    std::atomic_ref<uint64_t>(field).store(value, std::memory_order_release);
  };
  if (file_bytes < segment_bytes) SHELF_RETURN_IF_ERROR(segment.resize(segment_bytes));
  if (h->segment_bytes < segment_bytes) set(h->segment_bytes, segment_bytes);
  if (h->data_bytes < data_bytes) set(h->data_bytes, data_bytes);
  if (h->memory_limit < limit) set(h->memory_limit, limit);
  if (h->memory_limit > limit) set(h->memory_limit, limit);
  if (h->data_bytes > data_bytes) set(h->data_bytes, data_bytes);
  if (h->segment_bytes > segment_bytes) set(h->segment_bytes, segment_bytes);
  if (file_bytes > segment_bytes) SHELF_RETURN_IF_ERROR(segment.resize(segment_bytes));
  return Status();
}

// True for a segment a shelfd died making, before it served (so it holds no
// data): empty (killed before its size was set), or a header whose magic,
// stored last, is not there yet while what initialise() writes first is
// either not written or this layout's, of the first generation, with no page
// past the index's room (no extent was ever made). Anything else is
// someone's data, even a served segment whose magic was zeroed.
bool never_finished(const shm::ShmObject& segment, const shm::SegmentHeaderLayout& h,
                    uint64_t file_bytes) {
  if (file_bytes == 0) return true;
  if (file_bytes < kPageSize || h.magic != 0 || h.generation > 1) return false;
  const bool blank = h.layout_version == 0 && h.page_size == 0 && h.segment_bytes == 0;
  const bool being_written = h.layout_version == shm::kLayoutVersion && h.page_size == kPageSize;
  if (!blank && !being_written) return false;
  const off_t data = ::lseek(segment.fd(), static_cast<off_t>(shm::index_area_bytes()), SEEK_DATA);
  return data < 0 && errno == ENXIO;  // nothing there (or the file ends before it)
}

// The name index is rebuilt at every start (recover()), so any bucket count
// the header may hold after a capacity change cut short is accepted: a
// power of two the index could have.
bool hash_capacity_ok(uint32_t hash_capacity) {
  return std::has_single_bit(hash_capacity) && hash_capacity >= shm::hash_capacity_for(1) &&
         hash_capacity <= shm::hash_capacity_for(kMaxIndexCapacity);
}

// A restart with another --max-datasets: a larger index must fit under the
// limit with what is stored, and a smaller one must leave out only free
// slots. Refused before anything is written, saying what would work.
Status check_index_fits(const shm::ShmObject& segment, const shm::SegmentHeaderLayout& h,
                        const StoreOptions& options) {
  const uint32_t from = h.index_capacity, to = options.max_datasets;
  if (to == from) return Status();
  const std::string& path = segment.path();
  if (to < from) {
    // Slots [to, from) must all be free; any other state (a dataset, a
    // quarantined or torn entry) keeps its slot.
    SHELF_ASSIGN_OR_RETURN(
        shm::Mapping index,
        shm::Mapping::map(segment, 0, shm::index_entry_offset(from), /*writable=*/false));
    uint64_t least = to;
    for (uint64_t slot = to; slot < from; ++slot) {
      const auto* e = reinterpret_cast<const shm::IndexEntryLayout*>(index.data() +
                                                                     shm::index_entry_offset(slot));
      if (e->state != static_cast<uint32_t>(shm::IndexEntryState::kFree) || e->seq % 2 != 0) {
        least = slot + 1;
      }
    }
    // A publish cut short by a kill writes its entries at the restart.
    SHELF_ASSIGN_OR_RETURN(shm::PendingIntent pending,
                           shm::read_pending_intent(segment, h.data_offset, h.segment_bytes, from));
    for (const shm::IntentItemLayout& item : pending.items) {
      if (item.slot >= to) least = std::max(least, item.slot + 1);
    }
    if (least > to) {
      return Status::invalid_argument(
          path + " cannot shrink to --max-datasets " + std::to_string(to) + ": index slot " +
          std::to_string(least - 1) +
          " holds a dataset; it was left untouched. Start shelfd with --max-datasets " +
          std::to_string(least) + " or more, or without --max-datasets to keep its " +
          std::to_string(from) + "; to go lower, unpublish datasets first");
    }
    return Status();
  }
  SHELF_ASSIGN_OR_RETURN(uint64_t resident, segment.resident_bytes());
  const uint64_t more = header_and_index_bytes(to) - header_and_index_bytes(from);
  if (resident + more > options.memory_limit || !index_fits(to, options.memory_limit)) {
    return Status::invalid_argument(
        path + " cannot take --max-datasets " + std::to_string(to) + ": the index would take " +
        format_bytes(header_and_index_bytes(to)) + ", and with what the segment holds (" +
        format_bytes(resident) + ") that passes --memory-limit " +
        format_bytes(options.memory_limit) +
        "; it was left untouched. Start shelfd with a larger --memory-limit too");
  }
  return Status();
}

// Gives the index `capacity` slots: the pages a larger one uses are
// allocated first, then the header says so (capacity, then bucket count;
// recover() rebuilds the buckets and frees the pages a smaller one no longer
// uses). A shelfd killed in between leaves a header the next start accepts.
Status set_index_capacity(const shm::ShmObject& segment, shm::Mapping& mapping, uint32_t capacity) {
  SHELF_RETURN_IF_ERROR(reserve_index_pages(segment, capacity));
  SHELF_FAULT_POINT("daemon.index_capacity.before_header");
  auto* h = reinterpret_cast<shm::SegmentHeaderLayout*>(mapping.data());
  std::atomic_ref<uint32_t>(h->index_capacity).store(capacity, std::memory_order_release);
  SHELF_FAULT_POINT("daemon.index_capacity.mid_header");
  std::atomic_ref<uint32_t>(h->hash_capacity)
      .store(shm::hash_capacity_for(capacity), std::memory_order_release);
  return Status();
}

}  // namespace

Result<std::unique_ptr<Store>> Store::attach(StoreOptions options, shm::ShmObject segment) {
  const std::string path = options.segment_path();
  // A live daemon's segment is never touched, not even read; and what is
  // unlinked below by name is the object locked here.
  SHELF_RETURN_IF_ERROR(segment.lock_while_linked());
  // The segment is left exactly as it is: it may hold data someone wants.
  auto refuse = [&](const std::string& why) {
    return Status::invalid_argument(path + " " + why +
                                    "; it was left untouched. To drop its datasets and start "
                                    "empty, start shelfd with --discard");
  };
  SHELF_ASSIGN_OR_RETURN(uint64_t file_bytes, segment.size());
  shm::SegmentHeaderLayout h{};
  if (file_bytes >= kPageSize) {
    SHELF_ASSIGN_OR_RETURN(shm::Mapping page, shm::Mapping::map(segment, 0, kPageSize, false));
    // Acquire: pairs with the release store of the magic in initialise().
    h.magic = shm::load_acquire(reinterpret_cast<const uint64_t&>(*page.data()));
    std::memcpy(&h, page.data(), sizeof h);
  }
  SHELF_ASSIGN_OR_RETURN(uint32_t owner, segment.owner());
  if (owner == ::geteuid() && never_finished(segment, h, file_bytes)) {
    // A daemon died while making it, before it served anything: no data.
    log_warn(path + " was never finished by the shelfd that made it; replacing it");
    SHELF_RETURN_IF_ERROR(shm::ShmObject::unlink(options.shm_dir, options.segment_name));
    options.discard = true;
    return create(options);
  }
  if (file_bytes < kPageSize) {
    return refuse("is " + std::to_string(file_bytes) + " bytes, too small to be a shelf segment");
  }
  if (h.magic != shm::kSegmentMagic) return refuse("is not a shelf segment (wrong magic number)");
  if (h.layout_version < shm::kOldestReadableLayoutVersion ||
      h.layout_version > shm::kLayoutVersion) {
    return refuse("has layout version " + std::to_string(h.layout_version) +
                  ", and this shelfd reads versions " +
                  std::to_string(shm::kOldestReadableLayoutVersion) + " to " +
                  std::to_string(shm::kLayoutVersion) +
                  ". A shelfd of the release that made it can still serve its datasets: "
                  "to keep them, `shelf save DIR` with that release, then start this shelfd "
                  "with --discard and `shelf load DIR`");
  }
  // Every size must be the one this build would compute from the header's
  // own limit and index size, so that no offset read later can mislead us.
  // One exception: a resize cut short (resize_segment) leaves the extent
  // area larger than twice the limit, or the file larger than the segment.
  const bool sizes_ok =
      h.page_size == kPageSize && h.index_offset == kPageSize &&
      h.index_entry_bytes == sizeof(shm::IndexEntryLayout) && h.index_capacity > 0 &&
      h.index_capacity <= kMaxIndexCapacity && h.memory_limit >= kMinMemoryLimit &&
      h.memory_limit <= kMaxMemoryLimit && h.data_offset == shm::index_area_bytes() &&
      hash_capacity_ok(h.hash_capacity) && h.hash_offset == shm::hash_offset() &&
      h.data_bytes >= data_area_bytes(h.memory_limit) &&
      h.data_bytes <= data_area_bytes(kMaxMemoryLimit) && h.data_bytes % kPageSize == 0 &&
      h.segment_bytes >= h.data_offset + h.data_bytes && h.segment_bytes <= file_bytes &&
      index_fits(h.index_capacity, h.memory_limit);
  if (!sizes_ok) return refuse("has an inconsistent header (sizes and offsets do not agree)");
  if (!options.max_datasets_given) options.max_datasets = h.index_capacity;
  if (!options.memory_limit_given) options.memory_limit = h.memory_limit;
  SHELF_RETURN_IF_ERROR(
      check_limit_fits(segment, h, file_bytes, options.memory_limit, options.memory_limit_given));
  SHELF_RETURN_IF_ERROR(check_index_fits(segment, h, options));
  SHELF_ASSIGN_OR_RETURN(uint64_t resident, segment.resident_bytes());
  SHELF_RETURN_IF_ERROR(check_shm_room(options.shm_dir, options.memory_limit, resident));
  const uint64_t segment_bytes = h.data_offset + data_area_bytes(options.memory_limit);
  SHELF_RETURN_IF_ERROR(resize_segment(segment, file_bytes, options.memory_limit));
  if (h.memory_limit != options.memory_limit) {
    log_info("restart: --memory-limit " + format_bytes(h.memory_limit) + " -> " +
             format_bytes(options.memory_limit) + "; the extent area of " + options.segment_path() +
             " now spans " + format_bytes(data_area_bytes(options.memory_limit)) +
             " of address space; every dataset stays where it is");
  }
  SHELF_ASSIGN_OR_RETURN(shm::Mapping mapping,
                         shm::Mapping::map(segment, 0, segment_bytes, /*writable=*/true));
  if (h.index_capacity != options.max_datasets) {
    SHELF_RETURN_IF_ERROR(set_index_capacity(segment, mapping, options.max_datasets));
    log_info("restart: --max-datasets " + std::to_string(h.index_capacity) + " -> " +
             std::to_string(options.max_datasets) + "; every dataset stays in its slot");
  }
  SHELF_ASSIGN_OR_RETURN(std::unique_ptr<SegmentWorker> worker, SegmentWorker::start(segment));
  std::unique_ptr<Store> store(
      new Store(options, std::move(segment), std::move(mapping), std::move(worker)));
  store->recover();
  store->probe_page_size();
  SHELF_RETURN_IF_ERROR(store->start_verification());
  return store;
}

std::optional<shm::ExtentHeaderLayout> Store::extent_header_copy(uint64_t offset) const {
  shm::SegmentView view(mapping_.data(), segment_bytes_);
  const auto* in_segment = view.at<shm::ExtentHeaderLayout>(offset);
  if (in_segment == nullptr) return std::nullopt;
  shm::ExtentHeaderLayout h;
  // Acquire first: pairs with the release stores of the state (kWritten by
  // the publisher, kSealed by publish()), so what the copy holds is at
  // least as new as that state.
  const uint32_t state = shm::load_acquire(in_segment->state);
  std::memcpy(&h, in_segment, sizeof h);
  h.state = state;
  return h;
}

std::string Store::extent_problem(uint64_t offset, uint64_t length, shm::ExtentKind kind,
                                  uint64_t* checked_length) const {
  if (offset < data_offset_ || offset % kPageSize != 0 || offset >= segment_bytes_) {
    return "its extent at offset " + std::to_string(offset) +
           " is outside the data area or misaligned";
  }
  const std::optional<shm::ExtentHeaderLayout> h = extent_header_copy(offset);
  if (!h || h->magic != shm::kExtentMagic) return "its extent header is gone";
  if (h->kind != static_cast<uint32_t>(kind)) return "its extent is of the wrong kind";
  if (h->state != static_cast<uint32_t>(shm::ExtentState::kSealed)) {
    return "its extent is not sealed";
  }
  if (h->length % kPageSize != 0 || h->length <= shm::kExtentHeaderBytes ||
      h->length > segment_bytes_ - offset || (length != 0 && h->length != length)) {
    return "its extent has a bad length";
  }
  if (checked_length != nullptr) *checked_length = h->length;
  return std::string();
}

bool Store::recover_entry(uint32_t slot, std::set<std::string, std::less<>>& seen) {
  shm::MutableSegmentView view(mapping_.data(), segment_bytes_);
  auto* in_segment = view.at<shm::IndexEntryLayout>(shm::index_entry_offset(slot));
  SHELF_CHECK(in_segment != nullptr);
  // Checked and used from a private copy (see recover_descriptor()).
  shm::IndexEntryLayout copy;
  std::memcpy(&copy, in_segment, sizeof copy);
  const shm::IndexEntryLayout* entry = &copy;
  auto drop = [&](const std::string& why) {
    log_error("restart: index slot " + std::to_string(slot) + " " + why + "; dropped it");
    ++recovery_.dropped;
    // write_index_entry() needs an even seq to start from.
    if (in_segment->seq % 2 != 0) ++in_segment->seq;
    write_index_entry(slot, nullptr);
    return false;
  };
  // Odd: the previous daemon died while rewriting it, so it may be half old,
  // half new. publish() writes the entry last, so nothing else is lost.
  if (entry->seq % 2 != 0) return drop("was being rewritten when the previous shelfd died");
  if (entry->state == static_cast<uint32_t>(shm::IndexEntryState::kFree)) return false;
  // A quarantined entry is checked again: the same bytes quarantine it again.
  // An unverified one (the previous daemon died before it had checked its
  // checksums) is checked like a published one.
  if (!shm::is_listed(entry->state) &&
      entry->state != static_cast<uint32_t>(shm::IndexEntryState::kQuarantined)) {
    return drop("has an unknown state " + std::to_string(entry->state));
  }
  if (entry->name_length == 0 || entry->name_length > kMaxNameBytes) {
    return drop("has a bad name length");
  }
  std::string name(entry->name, entry->name_length);
  if (!check_name(name).ok()) return drop("has a name that is not valid");
  if (seen.count(name) > 0) return drop("repeats the name " + quoted(name));

  Dataset d;
  d.name = name;
  d.published = true;
  d.slot = slot;
  d.publish_id = entry->publish_id;
  d.summary.name = name;
  d.summary.created_ns = entry->created_ns;
  d.pinned = (entry->flags & shm::kEntryPinned) != 0;
  std::string problem;  // the first thing found wrong: the quarantine reason
  std::vector<std::byte> descriptor_bytes;
  std::shared_ptr<const Verifier::Descriptor> to_verify;
  const bool spilled = entry->state == static_cast<uint32_t>(shm::IndexEntryState::kSpilled) ||
                       (entry->state == static_cast<uint32_t>(shm::IndexEntryState::kQuarantined) &&
                        (entry->flags & shm::kEntryInSpillFile) != 0);
  if ((entry->flags & shm::kEntryView) != 0) {
    recover_view(*entry, d, problem);
  } else if (auto descriptor = recover_descriptor(*entry, d, problem, descriptor_bytes); spilled) {
    // Its partitions are in its spill file; their old offsets name nothing.
    if (descriptor) {
      recover_spilled(*descriptor, d, problem);
      d.spilled_descriptor = std::move(descriptor_bytes);  // parsed: what a restore relocates
    }
  } else if (descriptor) {
    recover_partitions(*descriptor, d, problem);
    if (problem.empty() && entry->data_bytes != d.memory_bytes) {
      problem = "its index entry and its extents disagree on its size";
    }
    d.summary = summarise(name, descriptor->header(), 0);
    // Its checksums are checked once shelfd serves (start_verification()).
    // The view points into the copy's buffer, which the move keeps.
    if (problem.empty()) {
      to_verify = std::make_shared<const Verifier::Descriptor>(std::move(descriptor_bytes),
                                                               std::move(*descriptor));
      d.unverified = true;
      ++recovery_.unverified;
      recovery_.unverified_bytes += checksummed_bytes(to_verify->view);
    }
  }
  d.summary.memory_bytes = d.memory_bytes;
  used_bytes_ += d.memory_bytes;
  charge(d.summary.publisher_uid, d.memory_bytes);
  if (problem.empty()) {
    ++recovery_.datasets;
  } else {
    ++recovery_.quarantined;
    d.quarantine_reason = problem;
    log_quarantine(d);
  }
  if (d.view && problem.empty()) {
    for (const std::string& base : d.view_bases) views_by_base_.emplace(base, name);
  }
  const uint64_t id = next_dataset_id_++;
  datasets_.emplace(id, std::move(d));
  names_.emplace(name, id);
  seen.insert(std::move(name));
  if (to_verify) to_verify_.emplace_back(id, std::move(to_verify));
  return true;
}

void Store::recover_spilled(const shm::DescriptorView& v, Dataset& d, std::string& problem) {
  d.residence = Dataset::Residence::kSpilled;
  d.summary = summarise(d.name, v.header(), 0);
  for (uint64_t p = 0; p < v.num_partitions(); ++p) {
    const uint64_t length = v.partition(p).extent_length;
    if (length < shm::kExtentHeaderBytes) {
      if (problem.empty()) problem = "partition " + std::to_string(p) + ": its length is bad";
      return;
    }
    d.spilled_payloads.push_back(length - shm::kExtentHeaderBytes);
  }
  if (options_.spill_dir.empty()) {
    if (problem.empty()) {
      problem =
          "its buffers were spilled to a file, but this shelfd has no --spill-dir: "
          "restart it with the --spill-dir of the shelfd that spilled it";
    }
    return;
  }
  const std::string path = spill_path(d.publish_id);
  const uint64_t want = Spiller::file_bytes(d.descriptor_length, d.spilled_payloads);
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    if (problem.empty()) problem = "its spill file " + path + " is missing";
    return;
  }
  if (static_cast<uint64_t>(st.st_size) != want) {
    if (problem.empty()) {
      problem = "its spill file " + path + " is " + std::to_string(st.st_size) + " bytes, not " +
                std::to_string(want);
    }
    return;
  }
}

bool Store::claim(Dataset& d, uint64_t offset, uint64_t length) {
  if (!allocator_.mark_allocated(offset, length)) return false;
  d.memory_bytes += length;
  return true;
}

std::optional<shm::DescriptorView> Store::recover_descriptor(const shm::IndexEntryLayout& entry,
                                                             Dataset& d, std::string& problem,
                                                             std::vector<std::byte>& copy) {
  if (!copy_descriptor(entry, d, problem, copy)) return std::nullopt;
  auto parsed = shm::DescriptorView::parse(copy, /*from_client=*/false);
  if (!parsed.ok()) {
    problem = parsed.status().message();
    return std::nullopt;
  }
  return std::move(parsed).value();
}

void Store::recover_view(const shm::IndexEntryLayout& entry, Dataset& d, std::string& problem) {
  d.view = true;  // also when damaged: a rewrite of its entry keeps kEntryView
  std::vector<std::byte> copy;
  if (!copy_descriptor(entry, d, problem, copy)) return;
  auto parsed = shm::parse_view(copy, /*from_client=*/false);
  if (!parsed.ok()) {
    problem = parsed.status().message();
    return;
  }
  if (entry.data_bytes != d.memory_bytes) {
    problem = "its index entry and its extent disagree on its size";
  }
  d.view_bases = parsed->bases;
  d.summary = summarise_view(d.name, *parsed, 0);
}

bool Store::copy_descriptor(const shm::IndexEntryLayout& entry, Dataset& d, std::string& problem,
                            std::vector<std::byte>& copy) {
  const uint64_t desc_offset = entry.descriptor_offset;
  if (desc_offset < shm::kExtentHeaderBytes) {
    problem = "its descriptor offset is bad";
    return false;
  }
  const uint64_t extent = desc_offset - shm::kExtentHeaderBytes;
  uint64_t length = 0;
  if (std::string p = extent_problem(extent, 0, shm::ExtentKind::kDescriptor, &length);
      !p.empty()) {
    problem = "descriptor: " + p;
    return false;
  }
  if (!claim(d, extent, length)) {
    problem = "its descriptor overlaps another dataset's memory";
    return false;
  }
  d.descriptor = Extent{extent, length};
  if (entry.descriptor_length > length - shm::kExtentHeaderBytes) {
    problem = "its descriptor is longer than its extent";
    return false;
  }
  d.descriptor_length = entry.descriptor_length;
  // Parsed from a private copy: a process that maps the segment read-write
  // could change the bytes between a check and a use.
  copy.assign(mapping_.data() + desc_offset, mapping_.data() + desc_offset + d.descriptor_length);
  return true;
}

void Store::recover_partitions(const shm::DescriptorView& v, Dataset& d, std::string& problem) {
  for (uint64_t p = 0; p < v.num_partitions(); ++p) {
    const shm::PartitionLayout& part = v.partition(p);
    const std::string where = "partition " + std::to_string(p);
    if (std::string e =
            extent_problem(part.extent_offset, part.extent_length, shm::ExtentKind::kPartition);
        !e.empty()) {
      if (problem.empty()) problem = where + ": " + e;
      continue;
    }
    if (!claim(d, part.extent_offset, part.extent_length)) {
      if (problem.empty()) problem = where + " overlaps another dataset's memory";
      continue;
    }
    d.partitions.push_back(Extent{part.extent_offset, part.extent_length});
  }
}

void Store::sweep_gap(uint64_t begin, uint64_t end) {
  // Only resident pages matter: SEEK_DATA skips the holes of the sparse area.
  uint64_t at = begin, punch_from = begin;
  while (at < end) {
    const off_t data = ::lseek(segment_.fd(), static_cast<off_t>(at), SEEK_DATA);
    if (data < 0 || static_cast<uint64_t>(data) >= end) break;  // ENXIO: no data after `at`
    const uint64_t page = static_cast<uint64_t>(data) / kPageSize * kPageSize;
    // A private copy: the checks below hold for what is used.
    const std::optional<shm::ExtentHeaderLayout> h = extent_header_copy(page);
    const bool extent = h && h->magic == shm::kExtentMagic && h->length % kPageSize == 0 &&
                        h->length > shm::kExtentHeaderBytes && h->length <= end - page;
    if (!extent) {
      at = page + kPageSize;
      continue;
    }
    const uint32_t state = h->state;
    const bool unsealed = state == static_cast<uint32_t>(shm::ExtentState::kAllocated) ||
                          state == static_cast<uint32_t>(shm::ExtentState::kWritten);
    if (h->kind == static_cast<uint32_t>(shm::ExtentKind::kPartition) && unsealed &&
        may_write(h->owner_pid, old_mappers_) && allocator_.mark_allocated(page, h->length)) {
      // Its publisher lived through the crash and may still write into its
      // mapping: freeing the pages now would let that write land in the
      // memory of whoever gets them next. Held until it exits.
      if (page > punch_from) punch_range(punch_from, page - punch_from);
      orphans_.push_back(Orphan{page, h->length, h->owner_pid});
      used_bytes_ += h->length;
      unsealed_bytes_ += h->length;
      recovery_.orphaned_bytes += h->length;
      at = punch_from = page + h->length;
      continue;
    }
    if (state == static_cast<uint32_t>(shm::ExtentState::kSealed) && readers_from_before() &&
        allocator_.mark_allocated(page, h->length)) {
      // Sealed but no longer published (unpublished while leased, most
      // likely): a process that mapped the segment may still read it.
      if (page > punch_from) punch_range(punch_from, page - punch_from);
      held_extents_.push_back(Extent{page, h->length});
      held_bytes_ += h->length;
      used_bytes_ += h->length;
      pending_free_bytes_ += h->length;
      at = punch_from = page + h->length;
      continue;
    }
    at = page + h->length;  // an extent nobody owns: skip it whole, punched below
  }
  if (end > punch_from) punch_range(punch_from, end - punch_from);
}

void Store::recover() {
  const auto started = std::chrono::steady_clock::now();
  recovery_.attached = true;
  const uint64_t resident_before = resident_or_zero(segment_);
  used_bytes_ = index_bytes_;  // the header and the index, as in initialise()
  std::set<std::string, std::less<>> seen;
  std::vector<bool> used_slot(options_.max_datasets, false);
  // Readers that outlived the old daemon may be looking names up: they see
  // one change of the index (odd index_seq: they ask the daemon, which is
  // gone). A daemon that died mid-change left it odd.
  // The geometry is the daemon's own from here on (attach() checked the
  // header's copy; a change of the capacity may have been cut short,
  // set_index_capacity()): the header is told, and the buckets rebuilt below.
  auto* index_header = reinterpret_cast<shm::SegmentHeaderLayout*>(mapping_.data());
  index_header->index_capacity = options_.max_datasets;
  index_header->hash_capacity = shm::hash_capacity_for(options_.max_datasets);
  index_header->hash_offset = shm::hash_offset();
  index_ = shm::NameIndexWriter(shm::MutableSegmentView(mapping_.data(), segment_bytes_),
                                options_.max_datasets);
  index_.reset_seq();
  index_.begin();
  finish_pending_publish();
  for (uint32_t slot = 0; slot < options_.max_datasets; ++slot) {
    used_slot[slot] = recover_entry(slot, seen);
  }
  rebuild_name_index();
  index_.end();
  // The room past this capacity's entries and buckets is a hole again: a
  // smaller index than before leaves nothing behind there.
  const shm::IndexPages pages = shm::index_pages(options_.max_datasets);
  punch_range(pages.entries_end, shm::hash_offset() - pages.entries_end);
  punch_range(pages.buckets_end, data_offset_ - pages.buckets_end);
  for (uint32_t slot = 0; slot < options_.max_datasets; ++slot) {
    if (!used_slot[slot]) free_slots_.push(slot);
  }
  // Readers that outlived the old daemon hold Datasets whose leases died
  // with it; what they may read stays until they are gone.
  // Those of shelfd's user are found in /proc; a presence lock of a
  // generation up to the old daemon's shows the others too (shm/presence.h).
  old_mappers_ = processes_mapping(segment_.fd());
  for (uint32_t pid : old_mappers_) old_mappers_seen_[pid] = {process_uid(pid), process_name(pid)};
  const uint64_t old_generation =
      reinterpret_cast<const shm::SegmentHeaderLayout*>(mapping_.data())->generation;
  auto present = shm::present_before(segment_, old_generation + 1);
  // Unknown counts as present: holding memory too long is safe, not holding it is not.
  presence_from_before_ = !present.ok() || *present;
  if (!present.ok()) log_warn("restart: " + present.status().message());
  for (auto& [id, d] : datasets_) d.restart_hold = readers_from_before();
  recovery_.old_mappers = static_cast<uint32_t>(old_mappers_.size());
  recovery_.unseen_readers = presence_from_before_ && old_mappers_.empty();
  // Everything no dataset owns goes back to the OS: extents being written
  // when the daemon died, datasets unpublished but still leased then (leases
  // end with the connections), memory that was being punched.
  std::map<uint64_t, uint64_t> owned;
  for (const auto& [id, d] : datasets_) {
    if (d.descriptor.length > 0) owned.emplace(d.descriptor.offset, d.descriptor.length);
    for (const Extent& e : d.partitions) owned.emplace(e.offset, e.length);
  }
  uint64_t at = data_offset_;
  for (const auto& [offset, length] : owned) {
    if (offset > at) sweep_gap(at, offset);
    at = offset + length;
  }
  if (segment_bytes_ > at) sweep_gap(at, segment_bytes_);
  recovery_.held_bytes = held_bytes_;
  const uint64_t resident_after = resident_or_zero(segment_);
  recovery_.freed_bytes = resident_before > resident_after ? resident_before - resident_after : 0;

  auto* header = reinterpret_cast<shm::SegmentHeaderLayout*>(mapping_.data());
  header->layout_version = shm::kLayoutVersion;  // a version 4 segment: see layout.h
  generation_ = header->generation + 1;
  started_ns_ = now_ns();
  header->daemon_pid = static_cast<uint32_t>(::getpid());
  // Release: a client that reads the new generation sees the new pid too.
  std::atomic_ref<uint64_t>(header->generation).store(generation_, std::memory_order_release);
  recovery_.generation = generation_;
  recovery_.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  log_recovery();
}

void Store::finish_pending_publish() {
  auto pending =
      shm::read_pending_intent(segment_, data_offset_, segment_bytes_, options_.max_datasets);
  if (!pending.ok()) {
    log_error("restart: cannot read the intent record of a publish cut short: " +
              pending.status().message() + "; of its names, those already written are served");
    return;
  }
  if (pending->extent_offset == 0) return;
  if (!pending->problem.empty()) {
    log_error("restart: the intent record of a publish cut short is damaged (" + pending->problem +
              "); of its names, those already written are served");
  } else {
    for (const shm::IntentItemLayout& item : pending->items) {
      // The entry may have been torn by the kill: made even, then rewritten.
      shm::IndexEntryLayout* entry = index_.entry(static_cast<uint32_t>(item.slot));
      if (entry->seq % 2 != 0) ++entry->seq;
      store_index_entry(static_cast<uint32_t>(item.slot), item.entry);
    }
    log_warn("restart: the previous shelfd died committing a publish of " +
             std::to_string(pending->items.size()) + " names; wrote the rest of them");
  }
  // Its extent is no dataset's: the sweep below frees it.
  std::atomic_ref<uint64_t>(shm::pending_publish(mapping_.data())->intent_offset)
      .store(0, std::memory_order_release);
}

void Store::rebuild_buckets() {
  index_.clear();
  // Twice as many buckets as entries, all empty now: every insert finds one.
  for (const auto& [name, id] : names_) SHELF_CHECK(index_.insert(name, datasets_.at(id).slot));
}

void Store::rebuild_name_index() {
  // Validating the old buckets would cost as much as making new ones, and
  // they could only be wrong where the entries say otherwise: rebuilt.
  for (const auto& [id, d] : datasets_) index_.raise_publish_id(d.publish_id);
  rebuild_buckets();
  uint64_t published = 0;
  for (const auto& [name, id] : names_) {
    Dataset& d = datasets_.at(id);
    shm::IndexEntryLayout e;
    std::memcpy(&e, index_.entry(d.slot), sizeof e);  // only this thread writes it
    // An entry without an id (none should be) gets one: ids tell publishes apart.
    if (d.publish_id == 0) d.publish_id = index_.take_publish_id();
    e.publish_id = d.publish_id;
    // Only the state changes: the other fields stay as evidence for the
    // next restart, which checks the same bytes again.
    e.state = static_cast<uint32_t>(entry_state(d));
    store_index_entry(d.slot, e);
    if (d.quarantine_reason.empty()) ++published;
  }
  index_.add_published(static_cast<int64_t>(published));
}

void Store::log_quarantine(const Dataset& d) {
  log_error("restart: dataset " + quoted(d.name) +
            " is quarantined, not served: " + d.quarantine_reason + ". Its " +
            format_bytes(d.memory_bytes) + " stay in use until `shelf unpublish " + d.name +
            "` (or a publish with --override) removes it");
}

Status Store::start_verification() {
  if (to_verify_.empty()) return Status();
  const unsigned threads = options_.verify_threads > 0 ? options_.verify_threads : core_count();
  SHELF_ASSIGN_OR_RETURN(verifier_, Verifier::start(mapping_.data(), threads));
  verify_started_ = std::chrono::steady_clock::now();
  for (auto& [id, descriptor] : to_verify_) {
    Dataset& d = datasets_.at(id);
    d.verifying = true;
    d.verify_ticket = next_check_ticket_++;
    verifier_->add(id, std::move(descriptor));
  }
  std::vector<std::pair<uint64_t, std::shared_ptr<const Verifier::Descriptor>>>().swap(to_verify_);
  return Status();
}

std::optional<uint64_t> Store::await_verification(std::string_view name) {
  auto it = names_.find(name);
  if (it == names_.end() || !datasets_.at(it->second).unverified) return std::nullopt;
  Dataset& d = datasets_.at(it->second);
  // Small: checked here and now (XXH3 of 1 MiB is ~0.1 ms of the loop),
  // rather than after whatever large partitions the threads are inside
  // (a get waited 321 ms with 16 GiB to check).
  if (d.summary.data_bytes <= kCheckOnLoopBytes) {
    if (std::optional<Verifier::Outcome> outcome = verifier_->check_now(it->second)) {
      // Gets of it parked before run again too: its ticket is finished.
      absorb_verified({std::move(*outcome)});
      return std::nullopt;
    }
  }
  verifier_->prioritise(it->second);
  return d.verify_ticket;
}

void Store::absorb_verified(std::vector<Verifier::Outcome> outcomes) {
  for (const Verifier::Outcome& outcome : outcomes) {
    SHELF_FAULT_POINT("daemon.verify.before_outcome");
    Dataset& d = datasets_.at(outcome.dataset);
    d.verifying = false;
    finished_checks_.push_back(d.verify_ticket);  // its parked Gets run again
    if (!d.published) {                           // unpublished or replaced meanwhile
      free_if_unread(outcome.dataset);
      continue;
    }
    d.unverified = false;
    if (!outcome.problem.empty()) d.quarantine_reason = outcome.problem;
    index_.begin();
    write_index_entry(d.slot, &d);
    if (!outcome.problem.empty()) index_.add_published(-1);
    index_.end();
    if (outcome.problem.empty()) continue;
    ++verify_quarantined_;
    log_quarantine(d);
    new_quarantines_.push_back({d.name, d.memory_bytes, d.quarantine_reason});
  }
  end_verification_if_done();
}

void Store::end_verification_if_done() {
  if (verifier_->progress().datasets_left > 0) return;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - verify_started_).count();
  const uint64_t bytes = verifier_->progress().bytes_done;
  char took[64];
  std::snprintf(took, sizeof took, "%.2f s (%.2f GB/s on %u threads)", seconds,
                seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0,
                verifier_->threads());
  log_info("restart: checked the checksums of " + format_bytes(bytes) + " in " + took + "; " +
           std::to_string(verify_quarantined_) + " datasets quarantined");
  verifier_.reset();
}

void Store::log_recovery() const {
  char rate[64];
  std::snprintf(rate, sizeof rate, "%.3f s", recovery_.seconds);
  log_info("restart: re-attached " + segment_.path() + " (generation " +
           std::to_string(generation_) + "): " + std::to_string(recovery_.datasets) +
           " datasets served again, " + std::to_string(recovery_.quarantined) + " quarantined, " +
           std::to_string(recovery_.dropped) + " index entries dropped, in " + rate +
           "; the checksums of " + std::to_string(recovery_.unverified) + " datasets (" +
           format_bytes(recovery_.unverified_bytes) +
           ") are checked in the background (a get of one waits for its own); freed " +
           format_bytes(recovery_.freed_bytes) + " not owned by any dataset" +
           (recovery_.orphaned_bytes > 0
                ? "; holding " + format_bytes(recovery_.orphaned_bytes) +
                      " being written by publishers still alive until they exit"
                : std::string()) +
           (recovery_.old_mappers > 0
                ? "; " + std::to_string(recovery_.old_mappers) +
                      " processes still map the segment (pid " + pid_list(old_mappers_) +
                      "): until they exit, unpublished memory is not given back (" +
                      format_bytes(recovery_.held_bytes) + " held now)"
                : std::string()) +
           (recovery_.unseen_readers
                ? "; processes shelfd may not look at (another user's) still map the segment "
                  "(their presence locks): until they exit, unpublished memory is not given "
                  "back (" +
                      format_bytes(recovery_.held_bytes) + " held now)"
                : std::string()));
}

std::vector<uint32_t> Store::orphan_owners() const {
  std::set<uint32_t> pids;
  for (const Orphan& o : orphans_) pids.insert(o.pid);
  pids.insert(old_mappers_.begin(), old_mappers_.end());
  return std::vector<uint32_t>(pids.begin(), pids.end());
}

void Store::recheck_old_mappers() {
  if (old_mappers_.empty()) return;
  const std::set<uint32_t> still = processes_mapping(segment_.fd(), &old_mappers_);
  for (auto it = old_mappers_.begin(); it != old_mappers_.end();) {
    it = still.count(*it) ? std::next(it) : old_mappers_.erase(it);
  }
  if (old_mappers_.empty()) recheck_presence();
}

void Store::recheck_presence() {
  if (presence_from_before_) {
    auto present = shm::present_before(segment_, generation_);
    if (!present.ok() || *present) return;
    presence_from_before_ = false;
  }
  if (old_mappers_.empty()) end_restart_holds();
}

void Store::end_restart_holds() {
  std::vector<uint64_t> to_free;
  for (auto& [id, d] : datasets_) {
    if (!d.restart_hold) continue;
    d.restart_hold = false;
    if (!d.published && unread(d)) to_free.push_back(id);
  }
  for (uint64_t id : to_free) {
    pending_free_bytes_ -= datasets_.at(id).memory_bytes;
    free_dataset(id);
  }
  pending_free_bytes_ -= held_bytes_;
  held_bytes_ = 0;
  free_extents(std::exchange(held_extents_, {}));
  log_info(
      "no process maps the segment as the previous shelfd left it any more: its memory is "
      "freed as usual again");
}

void Store::owner_gone(uint32_t pid) {
  std::vector<Extent> freed;
  for (auto it = orphans_.begin(); it != orphans_.end();) {
    if (it->pid != pid) {
      ++it;
      continue;
    }
    unsealed_bytes_ -= it->length;
    freed.push_back(Extent{it->offset, it->length});
    it = orphans_.erase(it);
  }
  if (!freed.empty()) {
    log_info("pid " + std::to_string(pid) +
             " exited: freed the extents it was writing when the "
             "previous shelfd died");
  }
  free_extents(freed);
  if (old_mappers_.erase(pid) > 0 && old_mappers_.empty()) recheck_presence();
}

}  // namespace shelf::server
