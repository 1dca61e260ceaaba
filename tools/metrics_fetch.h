// `shelf metrics`: what shelfd's metrics thread serves (server/metrics_server.h)
// on the Unix socket <socket>.metrics, fetched with one HTTP GET.
//
// Thread-safe: no shared state. Never waits longer than `timeout`.
#pragma once

#include <chrono>
#include <string>

#include <shelf/result.h>

namespace shelf::tools {

// The body of GET /metrics from the shelfd serving `socket_path` (Prometheus
// text format). Errors: Unavailable (no daemon there, or it did not answer in
// `timeout`), PermissionDenied, Internal (an answer that is not HTTP 200).
Result<std::string> fetch_metrics(const std::string& socket_path,
                                  std::chrono::milliseconds timeout);

// What `shelf metrics` prints when there is no daemon to ask: shelf_up 0,
// so that node_exporter's textfile collector reports the daemon down.
std::string metrics_down_text();

}  // namespace shelf::tools
