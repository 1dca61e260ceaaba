// Metrics: the daemon's counters, the snapshot of figures it hands to the
// metrics thread, and their rendering in Prometheus's text exposition format
// (version 0.0.4: https://prometheus.io/docs/instrumenting/exposition_formats/).
//
// Thread contract: DaemonCounters belongs to the daemon's event loop, the
// only thread that counts into it. The loop copies it, with the store's
// status, into a MetricsSnapshot (a plain value) and hands that to the
// metrics thread (server/metrics_server.h); render_metrics() reads only its
// argument, so it runs on any thread. Nothing here touches the Store.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include <shelf/status.h>

#include "protocol/messages.h"

namespace shelf::server {

// What the daemon has done since it started. Counts only go up.
struct DaemonCounters {
  // The request a refusal answered: a message type, or a connection refused
  // before any message (kConnect), or a frame that was not one (kBadFrame).
  enum class Request : uint8_t {
    kConnect,
    kBadFrame,
    kHello,
    kAllocate,
    kAbort,
    kPublish,
    kGet,
    kRelease,
    kUnpublish,
    kList,
    kStatus,
    kWaitFor,
    kLeaseReleased,
    kSubscribe,
    kPin,
  };
  static constexpr size_t kRequests = 15;
  // Status::Code, kOk included (never counted): each code, the newest too.
  static constexpr size_t kCodes = static_cast<size_t>(Status::kLastCode) + 1;

  uint64_t publishes = 0;    // names published (a publish of 3 names counts 3)
  uint64_t unpublishes = 0;  // names unpublished
  // Requests answered with an error, by request and status code.
  std::array<std::array<uint64_t, kCodes>, kRequests> refused{};

  // How long the turns of the event loop took, from epoll_wait's return to
  // its next call: while a turn runs, every other client waits, so a long
  // one is a stall of everyone. Counts per bucket (not cumulative): turn i
  // of at most kTurnBucketNs[i], the last bucket those longer than all.
  static constexpr std::array<int64_t, 5> kTurnBucketNs = {100'000, 1'000'000, 10'000'000,
                                                           100'000'000, 1'000'000'000};
  std::array<uint64_t, kTurnBucketNs.size() + 1> turns{};
  int64_t turn_ns_sum = 0;
  int64_t turn_ns_max = 0;

  void count_refused(Request request, Status::Code code);
  void count_turn(int64_t ns);
  // The Request of a message type (one is_request_type() accepts).
  static Request request_of(protocol::MessageType type);
};

// Everything one rendering shows, taken at one instant by the event loop.
struct MetricsSnapshot {
  protocol::StatusResponse status;  // Store::status()
  DaemonCounters counters;
  int64_t taken_ns = 0;  // CLOCK_REALTIME when the loop took it
};

// The snapshot in Prometheus's text format: HELP and TYPE lines, then the
// samples. shelf_dataset_memory_bytes lists only the `top_datasets` largest
// datasets (by memory_bytes, then name), so a shelf of thousands of datasets
// does not give Prometheus thousands of series; the rest is summed in
// shelf_dataset_memory_other_bytes. Label values are escaped as the format
// asks (backslash, double quote, newline).
std::string render_metrics(const MetricsSnapshot& snapshot, uint32_t top_datasets);

// `value` escaped for a label value between double quotes.
std::string escape_label_value(std::string_view value);

}  // namespace shelf::server
