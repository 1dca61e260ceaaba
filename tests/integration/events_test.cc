// Events (Client::subscribe, `shelf events`): subscribers in other
// processes told of every publish, override and unpublish by the daemon as
// it commits them; a subscriber that does not read is capped, and told what
// it missed; `shelf events` outlives a kill -9 of shelfd and reports the
// restart and what the new daemon quarantined. Real shelfd, real processes.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <optional>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/events.h>
#include <shelf/limits.h>

#include "shm/descriptor.h"
#include "shm/layout.h"
#include "shm/segment.h"
#include "tests/integration/integration_util.h"

namespace shelf::test {
namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

int64_t wall_clock_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// The next event, which must come within kWaitTimeout.
Event next_event(EventStream& stream) {
  auto e = stream.next(kWaitTimeout);
  if (!e.ok()) fail_test("no event: " + e.status().to_string());
  return std::move(e).value();
}

class EventsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = TestDaemon::start();
    ASSERT_NE(daemon_, nullptr);
  }
  uint32_t connections() {
    Client c = daemon_->connect();
    return status_of(c).num_connections - 1;  // not this one
  }
  void expect_connections(uint32_t n) {
    ASSERT_TRUE(eventually([&] { return connections() == n; })) << connections();
  }
  std::unique_ptr<TestDaemon> daemon_;
};

TEST_F(EventsTest, ASubscriberProcessSeesPublishOverrideUnpublishInOrderWithTheirFields) {
  const std::string name = unique_name();
  Pipe ready, timed_out;
  const pid_t publisher_pid = ::getpid();
  pid_t subscriber = spawn_child([&] {
    Client c = daemon_->connect();
    EventStream events = c.subscribe().value();
    ready.signal();
    Event e = next_event(events);
    const int64_t latency_ns = wall_clock_ns() - e.time_ns;
    EXPECT_EQ(e.kind, EventKind::kPublish);
    EXPECT_EQ(e.name, name);
    EXPECT_EQ(e.pid, static_cast<uint32_t>(publisher_pid));
    EXPECT_EQ(e.uid, ::getuid());
    EXPECT_EQ(e.num_rows, 3u * 1000);
    EXPECT_EQ(e.num_partitions, 3u);
    EXPECT_GE(e.memory_bytes, 3u * 1000 * 8);
    // "As it happens": the time from the commit to this read. Generous for
    // the sanitizer build on 2 cores; a plain build reads it in well under 1 ms.
    EXPECT_LT(latency_ns, 1'000'000'000) << latency_ns << " ns";
    std::fprintf(stderr, "publish event read %.3f ms after the commit\n", latency_ns / 1e6);
    e = next_event(events);
    EXPECT_EQ(e.kind, EventKind::kOverride);
    EXPECT_EQ(e.name, name);
    EXPECT_EQ(e.num_rows, 10u);
    EXPECT_EQ(e.num_partitions, 1u);
    e = next_event(events);
    EXPECT_EQ(e.kind, EventKind::kUnpublish);
    EXPECT_EQ(e.name, name);
    EXPECT_EQ(e.pid, static_cast<uint32_t>(publisher_pid));
    EXPECT_EQ(e.num_rows, 10u);  // what was removed
    // Refused requests are no events: the next is the publish after them.
    e = next_event(events);
    EXPECT_EQ(e.name, name + "-dup");
    e = next_event(events);
    EXPECT_EQ(e.name, name + "-last");
    // Nothing more: a timeout, and the stream is still usable after it.
    EXPECT_EQ(events.next(50ms).status().code(), Status::Code::kTimedOut);
    timed_out.signal();
    e = next_event(events);
    EXPECT_EQ(e.kind, EventKind::kPublish);
    EXPECT_EQ(e.name, name + "-after");
  });
  ASSERT_TRUE(ready.wait());
  Client c = daemon_->connect();
  TableBuilder three = make_int64_table(c, 1000, 1, 3);
  ASSERT_TRUE(c.publish_dataset(name, three).ok());
  TableBuilder small = make_int64_table(c, 10, 2);
  ASSERT_TRUE(c.publish_dataset(name, small, PublishOptions{true}).ok());
  ASSERT_TRUE(c.unpublish_dataset(name).ok());
  publish_int64(c, name + "-dup", 1, 1);
  TableBuilder again = make_int64_table(c, 1, 1);
  EXPECT_EQ(c.publish_dataset(name + "-dup", again).code(), Status::Code::kAlreadyExists);
  EXPECT_EQ(c.unpublish_dataset(name + "-none").code(), Status::Code::kNotFound);
  publish_int64(c, name + "-last", 1, 1);
  ASSERT_TRUE(timed_out.wait());
  publish_int64(c, name + "-after", 1, 1);
  EXPECT_EQ(wait_child(subscriber), 0);
}

TEST_F(EventsTest, AnInterruptionCheckEndsAWaitForAnEventAndTheStreamGoesOn) {
  Client c = daemon_->connect();
  EventStream events = c.subscribe().value();
  int calls = 0;
  const auto start = std::chrono::steady_clock::now();
  auto e = events.next(3 * kWaitTimeout, [&calls] { return ++calls == 3; });
  EXPECT_EQ(e.status().code(), Status::Code::kTimedOut) << e.status().to_string();
  EXPECT_TRUE(contains(e.status().message(), "interrupted")) << e.status().message();
  EXPECT_EQ(calls, 3);
  EXPECT_LT(std::chrono::steady_clock::now() - start, kWaitTimeout);  // about 3 * kWaitCheckMs
  const std::string name = unique_name();
  publish_int64(c, name, 1, 1);
  EXPECT_EQ(next_event(events).name, name);
}

TEST_F(EventsTest, TwoSubscribersBothSeeEveryEventInOrder) {
  const std::string prefix = unique_name();
  constexpr int kNames = 50;
  Pipe ready;
  auto subscriber = [&] {
    Client c = daemon_->connect();
    EventStream events = c.subscribe().value();
    ready.signal();
    for (int i = 0; i < kNames; ++i) {
      Event e = next_event(events);
      ASSERT_EQ(e.kind, EventKind::kPublish);
      ASSERT_EQ(e.name, prefix + "-" + std::to_string(i));
    }
    for (int i = 0; i < kNames; ++i) {
      Event e = next_event(events);
      ASSERT_EQ(e.kind, EventKind::kUnpublish);
      ASSERT_EQ(e.name, prefix + "-" + std::to_string(i));
    }
  };
  pid_t first = spawn_child(subscriber);
  pid_t second = spawn_child(subscriber);
  ASSERT_TRUE(ready.wait(2));
  Client c = daemon_->connect();
  for (int i = 0; i < kNames; ++i) publish_int64(c, prefix + "-" + std::to_string(i), 10, i);
  for (int i = 0; i < kNames; ++i) {
    ASSERT_TRUE(c.unpublish_dataset(prefix + "-" + std::to_string(i)).ok());
  }
  EXPECT_EQ(wait_child(first), 0);
  EXPECT_EQ(wait_child(second), 0);
}

TEST_F(EventsTest, ASubscriberKilledWithKill9LeavesTheDaemonServingAndOthersTold) {
  Pipe ready;
  pid_t doomed = spawn_child([&] {
    Client c = daemon_->connect();
    EventStream events = c.subscribe().value();
    ready.signal();
    ::pause();
  });
  ASSERT_TRUE(ready.wait());
  Client c = daemon_->connect();
  EventStream live = c.subscribe().value();
  expect_connections(4);  // the doomed one's two, `c` and `live`
  EXPECT_EQ(kill_child(doomed), 128 + SIGKILL);
  expect_connections(2);  // its connections went with it
  const std::string name = unique_name();
  for (int i = 0; i < 20; ++i) publish_int64(c, name + "-" + std::to_string(i), 10, i);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(next_event(live).name, name + "-" + std::to_string(i));
  expect_daemon_serves(*daemon_);
  EXPECT_TRUE(daemon_->alive());
}

// The name a dataset gets in the slow-subscriber test: as long as a name may
// be, so that each event is as large as events get.
std::string long_name(const std::string& prefix, int i) {
  std::string name = prefix + "-" + std::to_string(i) + "-";
  name.resize(kMaxNameBytes, 'x');
  return name;
}

// Bytes an Event frame of `name` takes on the wire (docs/protocol.md, "Events").
size_t event_frame_bytes(const std::string& name) {
  return 12 + 1 + (4 + name.size()) + 8 + 4 + 4 + 3 * 8 + 4 + 3 * 8;
}

uint64_t socket_buffer_bytes() {
  uint64_t n = 0;
  // What shelfd's sockets get: it sets no SO_SNDBUF.
  if (FILE* f = std::fopen("/proc/sys/net/core/wmem_default", "re")) {
    if (std::fscanf(f, "%lu", &n) != 1) n = 0;
    std::fclose(f);
  }
  return n > 0 ? n : 1u << 20;
}

TEST_F(EventsTest, ASubscriberThatDoesNotReadIsCappedAndToldHowManyItMissed) {
  Client c = daemon_->connect();
  EventStream slow = c.subscribe().value();  // not read until every publish is done
  const std::string prefix = unique_name();
  constexpr int kRounds = 40, kPerRound = 100;  // 8,000 events of ~290 bytes: 2.3 MB
  constexpr uint64_t kEvents = 2ull * kRounds * kPerRound;
  // Another subscriber, in another process, that reads as they come.
  Pipe ready;
  pid_t reader = spawn_child([&] {
    Client rc = daemon_->connect();
    EventStream events = rc.subscribe().value();
    ready.signal();
    uint64_t seen = 0, dropped = 0;
    while (seen + dropped < kEvents) {
      Event e = next_event(events);
      if (e.kind == EventKind::kDropped) {
        dropped += e.dropped;
      } else {
        ++seen;
      }
    }
    EXPECT_EQ(seen + dropped, kEvents);
    std::fprintf(stderr, "the reading subscriber saw %lu events, %lu dropped\n",
                 static_cast<unsigned long>(seen), static_cast<unsigned long>(dropped));
  });
  ASSERT_TRUE(ready.wait());
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < kRounds; ++round) {
    std::vector<TableBuilder> tables;
    std::vector<NamedTable> named;
    tables.reserve(kPerRound);
    for (int i = 0; i < kPerRound; ++i) tables.push_back(make_int64_table(c, 1, i));
    for (int i = 0; i < kPerRound; ++i) {
      named.push_back({long_name(prefix, round * kPerRound + i), &tables[i]});
    }
    ASSERT_TRUE(c.publish_datasets(named).ok());
    for (const NamedTable& t : named) ASSERT_TRUE(c.unpublish_dataset(t.name).ok());
  }
  std::fprintf(stderr, "%lu events in %.2f s\n", static_cast<unsigned long>(kEvents),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  EXPECT_EQ(wait_child(reader), 0);
  // The daemon served everyone meanwhile, and still does.
  expect_daemon_serves(*daemon_);
  // Now the slow one reads: what was queued (bounded by the cap and the
  // socket's buffer), then one dropped event counting the rest.
  uint64_t queued = 0;
  Event e = next_event(slow);
  for (; e.kind != EventKind::kDropped; e = next_event(slow)) ++queued;
  const uint64_t bound =
      (kMaxEventBacklogBytes + 2 * socket_buffer_bytes()) / event_frame_bytes(long_name(prefix, 0));
  std::fprintf(stderr, "the slow subscriber had %lu events queued, %lu dropped (bound %lu)\n",
               static_cast<unsigned long>(queued), static_cast<unsigned long>(e.dropped),
               static_cast<unsigned long>(bound));
  ASSERT_LT(bound, kEvents) << "too few events to show the cap";
  EXPECT_LE(queued, bound);
  EXPECT_GT(e.dropped, 0u);
  EXPECT_EQ(queued + e.dropped, kEvents + 2);  // expect_daemon_serves's publish and unpublish
  // And after it the stream goes on.
  EXPECT_EQ(slow.next(50ms).status().code(), Status::Code::kTimedOut);
  publish_int64(c, prefix + "-after", 1, 1);
  e = next_event(slow);
  EXPECT_EQ(e.kind, EventKind::kPublish);
  EXPECT_EQ(e.name, prefix + "-after");
}

// ----------------------------------------------------------- shelf events --

// `shelf events ARGS` with its stdout (and stderr) on pipes the test reads.
struct EventsCommand {
  Pipe out, err;
  pid_t pid = -1;  // until finish() reaps it
  // A test that failed before finish(): the command must not outlive it.
  ~EventsCommand() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};
std::unique_ptr<EventsCommand> start_events(const std::string& socket,
                                            std::vector<std::string> args) {
  auto cmd = std::make_unique<EventsCommand>();
  args.insert(args.begin(), {SHELF_CLI_PATH, "--socket", socket, "events"});
  cmd->pid = ::fork();
  if (cmd->pid == 0) {
    ::dup2(cmd->out.write_fd(), STDOUT_FILENO);
    ::dup2(cmd->err.write_fd(), STDERR_FILENO);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  cmd->out.close_write();
  cmd->err.close_write();
  return cmd;
}
// Returns once `shelf events` is subscribed, with nothing unread on its
// stdout. (Its connection count cannot tell: it connects a Client first,
// which closes once the stream has its own connection.) Publishes probes
// until one is printed, then a last one, and reads up to that one.
void sync_with(EventsCommand& cmd, Client& client) {
  const std::string probe = unique_name() + "-probe";
  bool printed = false;
  for (int i = 0; !printed && i < 100; ++i) {
    publish_int64(client, probe + std::to_string(i), 1, 1);
    printed = cmd.out.read_line(200ms).has_value();
  }
  if (!printed) fail_test("shelf events printed no probe");
  publish_int64(client, probe + "-last", 1, 1);
  for (;;) {
    std::optional<std::string> line = cmd.out.read_line();
    if (!line) fail_test("shelf events did not print the last probe");
    if (contains(*line, probe + "-last")) return;
  }
}

// Its exit code (128 + signal if killed), waiting at most kWaitTimeout.
int finish(EventsCommand& cmd) {
  const auto until = std::chrono::steady_clock::now() + kWaitTimeout;
  int status = 0;
  while (::waitpid(cmd.pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > until) {
      ::kill(cmd.pid, SIGKILL);
      ::waitpid(cmd.pid, &status, 0);
      ADD_FAILURE() << "shelf events did not exit";
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  cmd.pid = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST_F(EventsTest, ShelfEventsPrintsALineAPerEventAndExitsZeroOnEachStopSignal) {
  for (int sig : {SIGINT, SIGTERM}) {
    auto cmd = start_events(daemon_->socket(), {});
    // Names cannot hold what the CLI escapes (control characters); UTF-8
    // comes through as it is.
    const std::string name = unique_name() + "-caf\xc3\xa9";
    Client c = daemon_->connect();
    sync_with(*cmd, c);
    publish_int64(c, name, 1000, 1);
    std::optional<std::string> line = cmd->out.read_line();
    ASSERT_TRUE(line.has_value());
    EXPECT_TRUE(contains(*line, "Z  publish")) << *line;  // UTC time, then the kind
    EXPECT_TRUE(contains(*line, "publish     '" + name + "'  ")) << *line;
    EXPECT_TRUE(contains(*line, "1000 rows in 1 partition, ")) << *line;
    EXPECT_TRUE(contains(*line, "KiB")) << *line;
    EXPECT_TRUE(contains(*line, "(pid " + std::to_string(::getpid()) + ", uid ")) << *line;
    ASSERT_TRUE(c.unpublish_dataset(name).ok());
    line = cmd->out.read_line();
    ASSERT_TRUE(line.has_value());
    EXPECT_TRUE(contains(*line, "Z  unpublish")) << *line;
    const auto sent = std::chrono::steady_clock::now();
    ::kill(cmd->pid, sig);
    EXPECT_EQ(finish(*cmd), 0) << strsignal(sig);
    EXPECT_LT(std::chrono::steady_clock::now() - sent, 5s);
    EXPECT_FALSE(cmd->err.read_line(100ms).has_value());  // said nothing on stderr
  }
}

TEST_F(EventsTest, ShelfEventsExitsZeroWhenItsReaderGoes) {
  auto cmd = start_events(daemon_->socket(), {"--json"});
  Client c = daemon_->connect();
  sync_with(*cmd, c);
  cmd->out.close_read();                  // as `shelf events | head -3` does once it has its lines
  publish_int64(c, unique_name(), 1, 1);  // its write now fails: SIGPIPE, ignored
  EXPECT_EQ(finish(*cmd), 0);
}

TEST_F(EventsTest, ShelfEventsTimeoutExitsZeroWithADaemonAndOneWithout) {
  CommandResult r =
      run_command({SHELF_CLI_PATH, "--socket", daemon_->socket(), "events", "--timeout", "0.2"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  std::unique_ptr<TestDaemon> none = TestDaemon::unstarted();
  r = run_command({SHELF_CLI_PATH, "--socket", none->socket(), "events", "--timeout", "0.3"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "no shelfd at")) << r.err;
  EXPECT_TRUE(contains(r.err, "timed out")) << r.err;
}

TEST_F(EventsTest, ShelfEventsRefusesBadArgumentsWithExitTwo) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"events", "extra"},
           {"events", "--timeout", "-1"},
           {"events", "--timeout", "soon"},
           {"events", "--timeout"},
           {"events", "--bogus"},
           {"events", "--json=maybe"},
       }) {
    std::vector<std::string> argv = {SHELF_CLI_PATH, "--socket", daemon_->socket()};
    argv.insert(argv.end(), args.begin(), args.end());
    CommandResult r = run_command(argv);
    EXPECT_EQ(r.exit_code, 2) << args.back() << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "--help'")) << r.err;  // Try 'shelf [events] --help'.
  }
  CommandResult help = run_command({SHELF_CLI_PATH, "events", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_TRUE(contains(help.out, "--json")) << help.out;
  expect_daemon_serves(*daemon_);
}

// A raw view of the segment, to damage a dataset as a stray writer would
// (as restart_test does).
struct RawSegment {
  shm::ShmObject object;
  shm::Mapping mapping;
  std::byte* at(uint64_t offset) const { return mapping.data() + offset; }
};
RawSegment open_raw(const TestDaemon& daemon) {
  auto object = shm::ShmObject::open(shm::kDefaultShmDir, daemon.segment(), /*writable=*/true);
  if (!object.ok()) fail_test("open segment: " + object.status().to_string());
  auto size = object->size();
  auto mapping = shm::Mapping::map(*object, 0, *size, /*writable=*/true);
  if (!mapping.ok()) fail_test("map segment: " + mapping.status().to_string());
  return RawSegment{std::move(object).value(), std::move(mapping).value()};
}
// Flips a byte of partition 0 of the published dataset `name`.
void damage(const TestDaemon& daemon, const std::string& name) {
  RawSegment seg = open_raw(daemon);
  const auto& h = *reinterpret_cast<const shm::SegmentHeaderLayout*>(seg.at(0));
  for (uint32_t slot = 0; slot < h.index_capacity; ++slot) {
    auto* e = reinterpret_cast<shm::IndexEntryLayout*>(
        seg.at(h.index_offset + uint64_t{slot} * h.index_entry_bytes));
    if (e->state != 1 || std::string(e->name, e->name_length) != name) continue;
    auto view = shm::DescriptorView::parse(
        std::span<const std::byte>(seg.at(e->descriptor_offset), e->descriptor_length), false);
    if (!view.ok()) fail_test("descriptor of " + name + ": " + view.status().to_string());
    const shm::BufferLayout b = view->chunk(0, 0).data;
    *seg.at(b.offset + b.length / 2) ^= std::byte{0x01};
    return;
  }
  fail_test(name + " is not in the index");
}

TEST_F(EventsTest, ShelfEventsOutlivesAKill9AndReportsTheRestartThenTheQuarantine) {
  const std::string victim = unique_name() + "-victim", fine = unique_name() + "-fine";
  auto cmd = start_events(daemon_->socket(), {"--json"});
  {
    Client c = daemon_->connect();
    sync_with(*cmd, c);
    publish_int64(c, fine, 100, 1);
    publish_int64(c, victim, 1000, 2);
  }
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(cmd->out.read_line().has_value());
  uint64_t old_generation = 0;
  {
    Client c = daemon_->connect();
    old_generation = status_of(c).generation;
  }
  daemon_->kill9();
  damage(*daemon_, victim);
  CommandResult restarted = daemon_->restart();
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  // Found by the checks the restarted daemon runs while it serves: the
  // event comes after the restart's, whether the subscriber is back first
  // or not.
  std::optional<std::string> line = cmd->out.read_line();
  ASSERT_TRUE(line.has_value());
  EXPECT_TRUE(contains(*line, "{\"kind\":\"restart\",")) << *line;
  EXPECT_TRUE(contains(*line, "\"generation\":" + std::to_string(old_generation + 1))) << *line;
  EXPECT_TRUE(contains(*line, "\"previous_generation\":" + std::to_string(old_generation)))
      << *line;
  line = cmd->out.read_line();
  ASSERT_TRUE(line.has_value());
  EXPECT_TRUE(contains(*line, "{\"kind\":\"quarantine\",")) << *line;
  EXPECT_TRUE(contains(*line, "\"name\":\"" + victim + "\"")) << *line;
  EXPECT_TRUE(contains(*line, "checksum mismatch in partition 0")) << *line;
  // Then it streams the new daemon's events as it did the old one's.
  Client c = daemon_->connect();
  TableBuilder replacement = make_int64_table(c, 5, 3);
  ASSERT_TRUE(c.publish_dataset(victim, replacement, PublishOptions{true}).ok());
  line = cmd->out.read_line();
  ASSERT_TRUE(line.has_value());
  EXPECT_TRUE(contains(*line, "{\"kind\":\"override\",")) << *line;
  EXPECT_TRUE(contains(*line, "\"rows\":5,")) << *line;
  // It said once that it waits for shelfd, on stderr.
  line = cmd->err.read_line();
  ASSERT_TRUE(line.has_value());
  EXPECT_TRUE(contains(*line, "still waiting")) << *line;
  ::kill(cmd->pid, SIGTERM);
  EXPECT_EQ(finish(*cmd), 0);
}

TEST_F(EventsTest, ASubscriberOfAnEarlierDaemonIsToldOfTheRestartAFirstOneOfNothing) {
  Client c = daemon_->connect();
  const uint64_t first = c.subscribe().value().generation();
  EXPECT_EQ(first, status_of(c).generation);
  // The same daemon: no history.
  EventStream same = c.subscribe(first).value();
  EXPECT_EQ(same.next(50ms).status().code(), Status::Code::kTimedOut);
  daemon_->stop();
  EXPECT_EQ(same.next(kWaitTimeout).status().code(), Status::Code::kUnavailable);
  EXPECT_EQ(same.next(kWaitTimeout).status().code(), Status::Code::kUnavailable);  // and later
  ASSERT_EQ(daemon_->restart().exit_code, 0);
  Client again = daemon_->connect();
  EventStream fresh = again.subscribe().value();  // first-time: nothing
  EXPECT_EQ(fresh.next(50ms).status().code(), Status::Code::kTimedOut);
  EventStream told = again.subscribe(first).value();
  Event e = next_event(told);
  EXPECT_EQ(e.kind, EventKind::kRestart);
  EXPECT_EQ(e.previous_generation, first);
  EXPECT_EQ(e.generation, told.generation());
  EXPECT_GT(e.generation, first);
  EXPECT_EQ(told.next(50ms).status().code(), Status::Code::kTimedOut);  // nothing quarantined
  EXPECT_EQ(told.next(-1ms).status().code(), Status::Code::kInvalidArgument);
}

}  // namespace
}  // namespace shelf::test
