#include "server/verifier.h"

#include <algorithm>
#include <cerrno>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/check.h"
#include "shm/checksum.h"

namespace shelf::server {

namespace {

uint64_t partition_bytes(const shm::DescriptorView& view, uint64_t p) {
  uint64_t bytes = 0;
  for (uint32_t c = 0; c < view.num_columns(); ++c) {
    const shm::ChunkLayout& chunk = view.chunk(p, c);
    bytes += chunk.validity.length + chunk.offsets.length + chunk.data.length;
  }
  return bytes;
}

// "checksum mismatch in partition 1 column 'v', ..." (five at most), in
// partition order whichever thread found them first.
std::string mismatch_problem(const shm::DescriptorView& view,
                             std::vector<std::pair<uint64_t, uint32_t>> mismatches) {
  std::sort(mismatches.begin(), mismatches.end());
  std::string list;
  for (size_t i = 0; i < mismatches.size() && i < 5; ++i) {
    list += (i ? ", partition " : "partition ") + std::to_string(mismatches[i].first) +
            " column '" + std::string(view.column_name(mismatches[i].second)) + "'";
  }
  if (mismatches.size() > 5) list += " and " + std::to_string(mismatches.size() - 5) + " more";
  return "checksum mismatch in " + list;
}

}  // namespace

uint64_t checksummed_bytes(const shm::DescriptorView& view) {
  uint64_t bytes = 0;
  for (uint64_t p = 0; p < view.num_partitions(); ++p) bytes += partition_bytes(view, p);
  return bytes;
}

Result<std::unique_ptr<Verifier>> Verifier::start(const std::byte* base, unsigned threads) {
  UniqueFd event_fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!event_fd.valid()) return Status::from_errno("eventfd", errno);
  return std::unique_ptr<Verifier>(new Verifier(base, std::move(event_fd), std::max(threads, 1u)));
}

Verifier::Verifier(const std::byte* base, UniqueFd event_fd, unsigned threads)
    : base_(base), event_fd_(std::move(event_fd)) {
  // The threads take no signals: SIGTERM and SIGINT are the event loop's
  // (its signalfd), and one delivered here would kill shelfd uncleaned.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

Verifier::~Verifier() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void Verifier::add(uint64_t dataset, std::shared_ptr<const Descriptor> descriptor) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Job job;
    job.bytes_left = checksummed_bytes(descriptor->view);
    job.descriptor = std::move(descriptor);
    auto [it, added] = jobs_.emplace(dataset, std::move(job));
    SHELF_CHECK(added);
    if (it->second.descriptor->view.num_partitions() == 0) {
      finish(dataset);
      return;
    }
    order_.push_back(dataset);
  }
  work_.notify_one();
}

void Verifier::prioritise(uint64_t dataset) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = std::find(order_.begin(), order_.end(), dataset);
  if (it == order_.end() || it == order_.begin()) return;
  order_.erase(it);
  order_.push_front(dataset);
}

bool Verifier::cancel(uint64_t dataset) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto job = jobs_.find(dataset);
  // Finished already: its Outcome waits in done_ for take_done().
  if (job == jobs_.end() || job->second.cancelled) return false;
  std::erase(order_, dataset);
  if (job->second.running == 0) {
    jobs_.erase(job);
    return true;
  }
  job->second.cancelled = true;
  job->second.bytes_left = 0;
  return false;
}

std::optional<Verifier::Outcome> Verifier::check_now(uint64_t dataset) {
  std::shared_ptr<const Descriptor> descriptor;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto job = jobs_.find(dataset);
    if (job == jobs_.end() || job->second.cancelled || job->second.next_partition != 0) {
      return std::nullopt;
    }
    descriptor = std::move(job->second.descriptor);
    std::erase(order_, dataset);
    jobs_.erase(job);
  }
  const shm::DescriptorView& view = descriptor->view;
  std::vector<std::pair<uint64_t, uint32_t>> mismatches;
  uint64_t bytes = 0;
  for (uint64_t p = 0; p < view.num_partitions(); ++p) {
    if (const auto m = shm::first_checksum_mismatch(view, base_, p)) {
      mismatches.emplace_back(p, m->column);
    }
    bytes += partition_bytes(view, p);
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    bytes_done_ += bytes;
  }
  Outcome outcome;
  outcome.dataset = dataset;
  if (!mismatches.empty()) outcome.problem = mismatch_problem(view, std::move(mismatches));
  return outcome;
}

std::vector<Verifier::Outcome> Verifier::take_done() {
  uint64_t count = 0;
  (void)::read(event_fd_.get(), &count, sizeof count);  // EAGAIN when nothing was signalled
  std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(done_, {});
}

Verifier::Progress Verifier::progress() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Progress p;
  p.datasets_left = jobs_.size() + done_.size();
  for (const auto& [id, job] : jobs_) p.bytes_left += job.bytes_left;
  p.bytes_done = bytes_done_;
  return p;
}

void Verifier::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_.wait(lock, [this] { return stop_ || !order_.empty(); });
    if (stop_) return;
    const uint64_t dataset = order_.front();
    Job& job = jobs_.at(dataset);
    const uint64_t partition = job.next_partition++;
    if (job.next_partition == job.descriptor->view.num_partitions()) order_.pop_front();
    ++job.running;
    verify_partition(lock, dataset, partition);
  }
}

void Verifier::verify_partition(std::unique_lock<std::mutex>& lock, uint64_t dataset,
                                uint64_t partition) {
  // The job stays in jobs_ while a partition of it runs (finish() waits for
  // running == 0), so its descriptor outlives the unlocked hashing.
  const shm::DescriptorView& view = jobs_.at(dataset).descriptor->view;
  lock.unlock();
  // The daemon's mapping of the segment is fresh after a restart: mapped
  // in one call rather than a fault per 4 KiB page (~2x here). A kernel
  // without MADV_POPULATE_READ (EINVAL) faults them in as the hash reads.
  // In steps: a populate holds the process's mmap lock for reading while
  // it runs, and the loop's mmap of a new client's lease table waited
  // behind a whole 1 GiB partition's (a connect took ~100 ms).
  const shm::PartitionLayout& extent = view.partition(partition);
  for (uint64_t at = 0; at < extent.extent_length; at += kPopulateStepBytes) {
    (void)::madvise(const_cast<std::byte*>(base_) + extent.extent_offset + at,
                    std::min(kPopulateStepBytes, extent.extent_length - at), MADV_POPULATE_READ);
  }
  const auto mismatch = shm::first_checksum_mismatch(view, base_, partition);
  const uint64_t bytes = partition_bytes(view, partition);
  lock.lock();
  Job& job = jobs_.at(dataset);
  --job.running;
  bytes_done_ += bytes;
  if (!job.cancelled) job.bytes_left -= std::min(job.bytes_left, bytes);
  if (mismatch) job.mismatches.emplace_back(partition, mismatch->column);
  const bool handed_out = job.next_partition == job.descriptor->view.num_partitions();
  if (job.running == 0 && (handed_out || job.cancelled)) finish(dataset);
}

void Verifier::finish(uint64_t dataset) {
  auto it = jobs_.find(dataset);
  Outcome outcome;
  outcome.dataset = dataset;
  outcome.cancelled = it->second.cancelled;
  if (!outcome.cancelled && !it->second.mismatches.empty()) {
    outcome.problem = mismatch_problem(it->second.descriptor->view, it->second.mismatches);
  }
  jobs_.erase(it);
  done_.push_back(std::move(outcome));
  const uint64_t one = 1;
  ssize_t n = ::write(event_fd_.get(), &one, sizeof one);
  (void)n;  // the counter cannot overflow at one write per dataset
}

}  // namespace shelf::server
