// render_metrics(): the Prometheus text format on a snapshot made by hand
// (the scrape of a real shelfd is python/tests/test_metrics.py).
#include "server/metrics.h"

#include <gtest/gtest.h>

namespace shelf::server {
namespace {

protocol::DatasetSummary dataset(std::string name, uint64_t memory) {
  protocol::DatasetSummary d;
  d.name = std::move(name);
  d.memory_bytes = memory;
  return d;
}

TEST(MetricsTest, LabelValuesAreEscaped) {
  EXPECT_EQ(escape_label_value("plain"), "plain");
  EXPECT_EQ(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(MetricsTest, OnlyTheLargestDatasetsGetSeriesAndTheRestIsSummed) {
  MetricsSnapshot m;
  m.status.datasets = {dataset("a", 10), dataset("b", 30), dataset("c\"", 20), dataset("d", 5)};
  const std::string text = render_metrics(m, 2);
  EXPECT_NE(text.find("shelf_dataset_memory_bytes{dataset=\"b\"} 30\n"), std::string::npos);
  EXPECT_NE(text.find("shelf_dataset_memory_bytes{dataset=\"c\\\"\"} 20\n"), std::string::npos);
  EXPECT_EQ(text.find("dataset=\"a\""), std::string::npos);
  EXPECT_EQ(text.find("dataset=\"d\""), std::string::npos);
  EXPECT_NE(text.find("shelf_dataset_memory_other_bytes 15\n"), std::string::npos);
  EXPECT_NE(text.find("shelf_datasets 4\n"), std::string::npos);
  // 0: no dataset series at all, everything in "other".
  EXPECT_EQ(render_metrics(m, 0).find("shelf_dataset_memory_bytes{"), std::string::npos);
}

TEST(MetricsTest, RefusalsAreCountedByRequestAndReason) {
  MetricsSnapshot m;
  m.counters.count_refused(DaemonCounters::Request::kAllocate, Status::Code::kResourceExhausted);
  m.counters.count_refused(DaemonCounters::Request::kAllocate, Status::Code::kResourceExhausted);
  m.counters.count_refused(DaemonCounters::request_of(protocol::MessageType::kGet),
                           Status::Code::kNotFound);
  m.counters.count_refused(DaemonCounters::Request::kGet, Status::Code::kOk);  // not a refusal
  const std::string text = render_metrics(m, 20);
  EXPECT_NE(
      text.find("shelf_refused_total{request=\"allocate\",reason=\"resource_exhausted\"} 2\n"),
      std::string::npos);
  EXPECT_NE(text.find("shelf_refused_total{request=\"get\",reason=\"not_found\"} 1\n"),
            std::string::npos);
  EXPECT_EQ(text.find("reason=\"ok\""), std::string::npos);
}

TEST(MetricsTest, EveryCodeUpToTheLastIsCountedUnderItsOwnReason) {
  MetricsSnapshot m;
  for (uint8_t c = 1; c <= static_cast<uint8_t>(Status::kLastCode); ++c) {
    m.counters.count_refused(DaemonCounters::Request::kWaitFor, static_cast<Status::Code>(c));
  }
  const std::string text = render_metrics(m, 20);
  EXPECT_NE(text.find("shelf_refused_total{request=\"wait_for\",reason=\"internal\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("shelf_refused_total{request=\"wait_for\",reason=\"timed_out\"} 1\n"),
            std::string::npos);
  EXPECT_EQ(text.find("reason=\"\""), std::string::npos);  // no code without a label
}

TEST(MetricsTest, SpillingAndPinsAreCounted) {
  MetricsSnapshot m;
  m.status.datasets.resize(3);
  m.status.datasets[1].pinned = true;
  m.status.spilled_datasets = 2;
  m.status.spilled_file_bytes = 123456;
  const std::string text = render_metrics(m, 20);
  EXPECT_NE(text.find("\nshelf_datasets_pinned 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nshelf_spilled_datasets 2\n"), std::string::npos);
  EXPECT_NE(text.find("\nshelf_spilled_file_bytes 123456\n"), std::string::npos);
}

TEST(MetricsTest, EveryFamilyHasHelpAndTypeAndStartTimeHasMilliseconds) {
  MetricsSnapshot m;
  m.status.started_ns = 1700000000123456789;
  const std::string text = render_metrics(m, 20);
  EXPECT_NE(text.find("shelf_start_time_seconds 1700000000.123\n"), std::string::npos);
  for (const char* name :
       {"shelf_up", "shelf_memory_limit_bytes", "shelf_memory_used_bytes",
        "shelf_memory_resident_bytes", "shelf_memory_pending_free_bytes", "shelf_datasets",
        "shelf_leases", "shelf_connections", "shelf_publishes_total", "shelf_unpublishes_total",
        "shelf_refused_total", "shelf_dataset_memory_bytes", "shelf_datasets_pinned",
        "shelf_spilled_datasets", "shelf_spilled_file_bytes"}) {
    EXPECT_NE(text.find(std::string("# HELP ") + name + " "), std::string::npos) << name;
    EXPECT_NE(text.find(std::string("# TYPE ") + name + " "), std::string::npos) << name;
  }
}

TEST(MetricsTest, LoopTurnsAreAHistogramWithCumulativeBucketsAndTheirMaximum) {
  MetricsSnapshot m;
  m.counters.count_turn(50'000);         // 50 us: le 0.0001
  m.counters.count_turn(100'000);        // on a bound: in that bucket
  m.counters.count_turn(3'000'000);      // 3 ms: le 0.01
  m.counters.count_turn(250'000'000);    // 250 ms: le 1
  m.counters.count_turn(4'000'000'000);  // 4 s: only +Inf
  const std::string text = render_metrics(m, 20);
  EXPECT_NE(text.find("# TYPE shelf_loop_turn_seconds histogram\n"), std::string::npos);
  for (const char* line :
       {"shelf_loop_turn_seconds_bucket{le=\"0.0001\"} 2\n",
        "shelf_loop_turn_seconds_bucket{le=\"0.001\"} 2\n",
        "shelf_loop_turn_seconds_bucket{le=\"0.01\"} 3\n",
        "shelf_loop_turn_seconds_bucket{le=\"0.1\"} 3\n",
        "shelf_loop_turn_seconds_bucket{le=\"1\"} 4\n",
        "shelf_loop_turn_seconds_bucket{le=\"+Inf\"} 5\n", "shelf_loop_turn_seconds_count 5\n",
        "shelf_loop_turn_seconds_sum 4.25315\n", "shelf_loop_turn_max_seconds 4\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << text;
  }
  // The sum stays exact to the nanosecond however long shelfd has run.
  m.counters.count_turn(int64_t{1'000'000'000'000'000});
  EXPECT_NE(render_metrics(m, 20).find("shelf_loop_turn_seconds_sum 1000004.25315\n"),
            std::string::npos);
}

}  // namespace
}  // namespace shelf::server
