// MetricsServer: serves GET /metrics (Prometheus's text format) from a thread
// of its own, on a Unix socket (<socket>.metrics, always: `shelf metrics`
// reads it) and, with shelfd --metrics-listen ADDR:PORT, on TCP.
//
// Thread contract. The daemon is single-threaded by design and stays so for
// everything it owns: this thread never touches the Store, the daemon's
// connections or its counters. It owns its listening sockets, its scrapers'
// connections and the last snapshot it was given. The two threads meet in
// exactly two places:
//   - refresh_fd(): an eventfd this thread writes when a scrape wants figures
//     newer than it has. The event loop watches it; when it is readable the
//     loop calls take_refresh() and then publish() with a new snapshot. So
//     figures are taken by the loop, between two requests, only when someone
//     scrapes, at most once per kMetricsMinRefresh, and one snapshot answers
//     every scrape waiting for it.
//   - publish(): hands a snapshot over under a mutex and wakes this thread.
// A scrape that waits longer than kMetricsRefreshWait for the loop (a loop
// busy punching holes, say) is answered from the last snapshot. Nothing this
// thread does blocks the loop: a slow, malformed or idle scraper only ties up
// its own connection, which closes after kMetricsScrapeTimeout; at most
// kMaxMetricsConnections are open (a new one then takes the place of the
// oldest that has not sent a whole request; when none has, it is answered 503
// and closed), and a request larger than kMaxMetricsRequestBytes is refused
// (431).
//
// Lifetime: start() runs the thread; the destructor stops and joins it, closes
// every connection and removes the Unix socket file.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <shelf/result.h>

#include "base/unique_fd.h"
#include "server/file_safety.h"
#include "server/metrics.h"

namespace shelf::server {

// A scrape's whole life, from accept to the last byte sent.
inline constexpr std::chrono::milliseconds kMetricsScrapeTimeout{5000};
// Figures younger than this answer a scrape without asking the loop again,
// so that however fast scrapers come, the loop takes at most 10 snapshots a
// second (each walks every dataset). Prometheus scrapes every 15 s or so.
inline constexpr std::chrono::milliseconds kMetricsMinRefresh{100};
// How long a scrape waits for the event loop's fresh figures before it is
// answered from the last ones.
inline constexpr std::chrono::milliseconds kMetricsRefreshWait{1000};
// Scrapers connected at once; Prometheus uses one per target, so 64 leaves
// room for several servers and people with curl.
inline constexpr size_t kMaxMetricsConnections = 64;
// A GET with its headers is a few hundred bytes; 8 KiB is what many HTTP
// servers allow for a request's headers.
inline constexpr size_t kMaxMetricsRequestBytes = 8192;

struct MetricsOptions {
  std::string unix_path;       // where `shelf metrics` connects; mode 0600 (0660 with a group)
  std::string tcp_listen;      // "ADDR:PORT", "[V6ADDR]:PORT" or empty; port 0 picks one
  uint32_t top_datasets = 20;  // shelf_dataset_memory_bytes series (--metrics-datasets)
};

class MetricsServer {
 public:
  // Binds the sockets and starts the thread. Errors: InvalidArgument (a
  // tcp_listen that is not ADDR:PORT, an address that does not resolve),
  // IoError naming the address (cannot bind, e.g. in use).
  static Result<std::unique_ptr<MetricsServer>> start(const MetricsOptions& options);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Event loop side (see the thread contract above).
  int refresh_fd() const { return refresh_fd_.get(); }
  // Clears refresh_fd(); true when a refresh was asked for.
  bool take_refresh();
  void publish(MetricsSnapshot snapshot);

  // "127.0.0.1:9464" as bound (the port chosen when 0 was asked), or empty.
  const std::string& tcp_address() const { return tcp_address_; }
  const std::string& unix_path() const { return options_.unix_path; }

 private:
  class Loop;  // the thread's poll loop and its scrapers (metrics_server.cc)
  MetricsServer() = default;

  MetricsOptions options_;
  std::string tcp_address_;
  UniqueFd unix_fd_, tcp_fd_;
  std::optional<FileId> unix_id_;  // the socket file we made, removed at exit if still ours
  UniqueFd refresh_fd_;            // written by this thread, read by the loop
  UniqueFd wake_fd_;               // written by publish() and the destructor, read by this thread
  std::mutex mu_;
  // Guarded by mu_: the newest snapshot, its number (0: none yet), stop.
  MetricsSnapshot snapshot_;
  uint64_t snapshot_seq_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace shelf::server
