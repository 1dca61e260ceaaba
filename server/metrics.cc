#include "server/metrics.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <vector>

namespace shelf::server {

namespace {

constexpr std::array<std::string_view, DaemonCounters::kRequests> kRequestLabels = {
    "connect",   "bad_frame", "hello",  "allocate", "abort",          "publish",   "get", "release",
    "unpublish", "list",      "status", "wait_for", "lease_released", "subscribe", "pin"};

// Prometheus label values in snake_case, as metric names are.
constexpr std::array<std::string_view, DaemonCounters::kCodes> kReasonLabels = {
    "ok",         "not_found",   "already_exists",    "invalid_argument", "resource_exhausted",
    "corruption", "unavailable", "permission_denied", "io_error",         "internal",
    "timed_out"};
// A code added to Status::Code without a label here would render as reason="".
static_assert(!kReasonLabels.back().empty(), "one reason label for each Status::Code");

// Appends one metric family: its HELP and TYPE lines.
void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void sample(std::string& out, std::string_view name, uint64_t value) {
  out.append(name).append(" ").append(std::to_string(value)).append("\n");
}

// A gauge family of one unlabelled sample.
void gauge(std::string& out, std::string_view name, std::string_view help, uint64_t value) {
  family(out, name, "gauge", help);
  sample(out, name, value);
}

void counter(std::string& out, std::string_view name, std::string_view help, uint64_t value) {
  family(out, name, "counter", help);
  sample(out, name, value);
}

void refused(std::string& out, const DaemonCounters& counters) {
  family(out, "shelf_refused_total", "counter",
         "Requests shelfd answered with an error, by request and reason (the status code). "
         "A publish refused over the memory limit is request=\"allocate\" (its first step) or "
         "\"publish\", reason=\"resource_exhausted\".");
  bool any = false;
  for (size_t r = 0; r < DaemonCounters::kRequests; ++r) {
    for (size_t c = 1; c < DaemonCounters::kCodes; ++c) {
      const uint64_t n = counters.refused[r][c];
      if (n == 0) continue;
      any = true;
      out.append("shelf_refused_total{request=\"")
          .append(kRequestLabels[r])
          .append("\",reason=\"")
          .append(kReasonLabels[c])
          .append("\"} ")
          .append(std::to_string(n))
          .append("\n");
    }
  }
  // A counter that exists from the start lets rate() see the first refusal.
  if (!any)
    out.append("shelf_refused_total{request=\"allocate\",reason=\"resource_exhausted\"} 0\n");
}

void dataset_memory(std::string& out, const protocol::StatusResponse& s, uint32_t top) {
  std::vector<const protocol::DatasetSummary*> order;
  order.reserve(s.datasets.size());
  for (const auto& d : s.datasets) order.push_back(&d);
  const size_t shown = std::min<size_t>(top, order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(shown), order.end(),
                    [](const protocol::DatasetSummary* a, const protocol::DatasetSummary* b) {
                      if (a->memory_bytes != b->memory_bytes)
                        return a->memory_bytes > b->memory_bytes;
                      return a->name < b->name;
                    });
  family(out, "shelf_dataset_memory_bytes", "gauge",
         "Memory a published dataset takes from the limit, for the largest datasets only "
         "(shelfd --metrics-datasets).");
  uint64_t other = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    if (i >= shown) {
      other += order[i]->memory_bytes;
      continue;
    }
    out.append("shelf_dataset_memory_bytes{dataset=\"")
        .append(escape_label_value(order[i]->name))
        .append("\"} ")
        .append(std::to_string(order[i]->memory_bytes))
        .append("\n");
  }
  gauge(out, "shelf_dataset_memory_other_bytes",
        "Memory of the published datasets not listed in shelf_dataset_memory_bytes.", other);
}

// Nanoseconds as seconds, exactly, without trailing zeros ("0.0001", "4").
std::string seconds(int64_t ns) {
  char text[48];
  std::snprintf(text, sizeof text, "%" PRId64 ".%09" PRId64, ns / 1'000'000'000,
                ns % 1'000'000'000);
  std::string out = text;
  while (out.back() == '0') out.pop_back();
  if (out.back() == '.') out.pop_back();
  return out;
}

// A Prometheus histogram: cumulative buckets, then _sum and _count.
void loop_turns(std::string& out, const DaemonCounters& c) {
  family(out, "shelf_loop_turn_seconds", "histogram",
         "How long each turn of shelfd's event loop took (the requests that were ready, and "
         "what they finished): while one runs, every other client waits.");
  uint64_t count = 0;
  for (size_t i = 0; i < c.turns.size(); ++i) {
    count += c.turns[i];
    const std::string le = i < c.kTurnBucketNs.size() ? seconds(c.kTurnBucketNs[i]) : "+Inf";
    out.append("shelf_loop_turn_seconds_bucket{le=\"")
        .append(le)
        .append("\"} ")
        .append(std::to_string(count))
        .append("\n");
  }
  out.append("shelf_loop_turn_seconds_sum ").append(seconds(c.turn_ns_sum)).append("\n");
  out.append("shelf_loop_turn_seconds_count ").append(std::to_string(count)).append("\n");
  family(out, "shelf_loop_turn_max_seconds", "gauge",
         "The longest turn of the event loop since shelfd started.");
  out.append("shelf_loop_turn_max_seconds ").append(seconds(c.turn_ns_max)).append("\n");
}

// Per uid (a uid is a label of few values: the users of one machine).
void user_memory(std::string& out, const protocol::StatusResponse& s) {
  family(out, "shelf_user_memory_bytes", "gauge",
         "Memory a user's published datasets and unsealed partitions take (shelfd --user-quota).");
  for (const protocol::UserUsage& u : s.users) {
    out.append("shelf_user_memory_bytes{uid=\"")
        .append(std::to_string(u.uid))
        .append("\"} ")
        .append(std::to_string(u.used_bytes))
        .append("\n");
  }
  family(out, "shelf_user_quota_bytes", "gauge",
         "A user's quota (shelfd --user-quota); no series for a user without one.");
  for (const protocol::UserUsage& u : s.users) {
    if (u.quota_bytes == 0) continue;
    out.append("shelf_user_quota_bytes{uid=\"")
        .append(std::to_string(u.uid))
        .append("\"} ")
        .append(std::to_string(u.quota_bytes))
        .append("\n");
  }
}

}  // namespace

void DaemonCounters::count_refused(Request request, Status::Code code) {
  const auto c = static_cast<size_t>(code);
  if (c == 0 || c >= kCodes) return;
  ++refused[static_cast<size_t>(request)][c];
}

void DaemonCounters::count_turn(int64_t ns) {
  size_t bucket = 0;
  while (bucket < kTurnBucketNs.size() && ns > kTurnBucketNs[bucket]) ++bucket;
  ++turns[bucket];
  turn_ns_sum += ns;
  turn_ns_max = std::max(turn_ns_max, ns);
}

DaemonCounters::Request DaemonCounters::request_of(protocol::MessageType type) {
  using protocol::MessageType;
  switch (type) {
    case MessageType::kHello:
      return Request::kHello;
    case MessageType::kAllocate:
      return Request::kAllocate;
    case MessageType::kAbort:
      return Request::kAbort;
    case MessageType::kPublish:
      return Request::kPublish;
    case MessageType::kGet:
      return Request::kGet;
    case MessageType::kRelease:
      return Request::kRelease;
    case MessageType::kUnpublish:
      return Request::kUnpublish;
    case MessageType::kList:
      return Request::kList;
    case MessageType::kStatus:
      return Request::kStatus;
    case MessageType::kWaitFor:
      return Request::kWaitFor;
    case MessageType::kLeaseReleased:
      return Request::kLeaseReleased;
    case MessageType::kSubscribe:
      return Request::kSubscribe;
    case MessageType::kPin:
      return Request::kPin;
    case MessageType::kEvent:  // not a request
      break;
  }
  return Request::kBadFrame;
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char ch : value) {
    if (ch == '\\') {
      out += "\\\\";
    } else if (ch == '"') {
      out += "\\\"";
    } else if (ch == '\n') {
      out += "\\n";
    } else {
      out += ch;
    }
  }
  return out;
}

std::string render_metrics(const MetricsSnapshot& snapshot, uint32_t top_datasets) {
  const protocol::StatusResponse& s = snapshot.status;
  std::string out;
  out.reserve(4096 + 96 * std::min<size_t>(top_datasets, s.datasets.size()));
  gauge(out, "shelf_up", "1 while shelfd answers (`shelf metrics` prints 0 when it cannot).", 1);
  family(out, "shelf_start_time_seconds", "gauge",
         "When this shelfd started, in seconds since the Unix epoch.");
  char start[64];
  std::snprintf(start, sizeof start, "%" PRId64 ".%03" PRId64, s.started_ns / 1000000000,
                (s.started_ns % 1000000000) / 1000000);
  out.append("shelf_start_time_seconds ").append(start).append("\n");
  gauge(out, "shelf_memory_limit_bytes", "The memory limit (shelfd --memory-limit).",
        s.memory_limit);
  gauge(out, "shelf_memory_used_bytes",
        "Memory charged to the limit: datasets, extents being written, memory not yet given "
        "back, and the index.",
        s.used_bytes);
  gauge(out, "shelf_memory_resident_bytes", "What the segment's tmpfs really holds for it.",
        s.resident_bytes);
  gauge(out, "shelf_memory_huge_page_bytes",
        "With 2 MiB pages (shelfd --shm-dir on a huge= tmpfs), what of used lies in whole "
        "2 MiB pages the segment uses entirely; 0 with 4 KiB pages.",
        s.huge_page_bytes);
  gauge(out, "shelf_memory_pending_free_bytes",
        "Unpublished memory still read under leases, or being given back to the OS (part of "
        "used).",
        s.pending_free_bytes);
  gauge(out, "shelf_memory_unsealed_bytes", "Memory publishers are writing (part of used).",
        s.unsealed_bytes);
  gauge(out, "shelf_memory_index_bytes", "The segment's header and index (part of used).",
        s.index_bytes);
  gauge(out, "shelf_datasets", "Published datasets.", s.datasets.size());
  gauge(out, "shelf_datasets_quarantined", "Datasets found damaged at restart, kept, not served.",
        s.quarantined.size());
  gauge(out, "shelf_verify_datasets_left",
        "Datasets found at restart whose checksums are not checked yet (a get waits for them).",
        s.verify_datasets_left);
  gauge(out, "shelf_verify_bytes_left",
        "Bytes of those datasets' buffers not hashed yet (0 once the restart's checks are done).",
        s.verify_bytes_left);
  gauge(out, "shelf_datasets_pinned", "Published datasets pinned: never spilled (shelf pin).",
        static_cast<uint64_t>(
            std::count_if(s.datasets.begin(), s.datasets.end(),
                          [](const protocol::DatasetSummary& d) { return d.pinned; })));
  gauge(out, "shelf_spilled_datasets",
        "Published datasets whose buffers are in the spill directory (shelfd --spill-dir).",
        s.spilled_datasets);
  gauge(out, "shelf_spilled_file_bytes", "What their files take in the spill directory.",
        s.spilled_file_bytes);
  gauge(out, "shelf_leases", "Leases held by readers.", s.num_leases);
  gauge(out, "shelf_connections", "Clients connected.", s.num_connections);
  counter(out, "shelf_publishes_total", "Dataset names published since shelfd started.",
          snapshot.counters.publishes);
  counter(out, "shelf_unpublishes_total", "Dataset names unpublished since shelfd started.",
          snapshot.counters.unpublishes);
  refused(out, snapshot.counters);
  loop_turns(out, snapshot.counters);
  dataset_memory(out, s, top_datasets);
  user_memory(out, s);
  return out;
}

}  // namespace shelf::server
