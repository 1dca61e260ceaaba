// The limits of shelf, in one place. Those of the data model first: the
// daemon enforces them, the client library checks them before it asks, and
// the tools (the CLI, snapshots) read and write files within them; tests and
// docs quote them from here. A change that narrows one changes what existing
// segments and snapshots may hold: bump shm::kLayoutVersion and the snapshot
// format version with it (docs/shm_layout.md, docs/snapshot_format.md).
// Then the limits of the filter language and of the CSV reader, which bound
// input only and may change freely.
//
// Thread- and process-safe: constants only.
#pragma once

#include <cstddef>
#include <cstdint>

namespace shelf {

// A dataset name: bytes of UTF-8, no control characters. It must fit an
// index entry (256 bytes, docs/shm_layout.md) with the entry's other fields.
inline constexpr uint32_t kMaxNameBytes = 200;
// Columns of one dataset, and bytes of UTF-8 in one column name. Together they
// bound a descriptor, and so the message that carries it.
inline constexpr uint32_t kMaxColumns = 4096;
inline constexpr uint32_t kMaxColumnNameBytes = 1024;
// Partitions of one dataset.
inline constexpr uint64_t kMaxPartitions = uint64_t{1} << 20;
// Rows of one partition: 2^48 keeps every buffer size of a partition (rows
// times at most 8 bytes) far from overflowing a uint64_t.
inline constexpr uint64_t kMaxRowsPerPartition = uint64_t{1} << 48;
// Alignment of every column buffer, in shared memory and in snapshot files:
// Arrow's recommendation (one cache line, enough for AVX-512 loads).
inline constexpr uint64_t kBufferAlignment = 64;
// Names one publish may carry (all or nothing).
inline constexpr uint32_t kMaxPublishItems = 65536;
// Leases one connection may hold at once by round trips, past those of its
// lease table (kLeaseSlots). Each costs the daemon a few dozen bytes, so
// without a bound one client could grow it without end; 65,536 is far past
// any real reader's need (a Dataset per lease).
inline constexpr size_t kMaxLeasesPerConnection = 65536;
// Slots in a connection's lease table (docs/leases.md): leases a client
// takes and ends in shared memory, without a message. Past them a get takes
// its lease by a round trip (counted in kMaxLeasesPerConnection). 1,024
// slots are 8 KiB; the daemon scans only the slots a client has ever used
// (the table's high-water mark), so a large table costs a free nothing.
inline constexpr uint32_t kLeaseSlots = 1024;
// How often shelfd looks again at what keeps memory from being freed
// without telling it: the lease tables, for datasets they kept (besides when
// a client says it let one go and when a connection closes: the backstop
// for a release message that never came), and the presence locks of
// readers that outlived a restart (shm/presence.h), whose exit no event
// reports.
inline constexpr int kHoldRecheckMs = 1000;
// Names one WaitFor request may wait for. A connection has at most one
// WaitFor pending (replies are in order), so this bounds the waits one
// connection costs the daemon: a name and an entry per name.
inline constexpr uint32_t kMaxWaitNames = 4096;
// How often a wait that can be interrupted (Client::wait_for_datasets with
// an `interrupted` check: Python's, for Ctrl-C) asks whether it should end.
// A signal ends the poll at once (EINTR) in the thread it is delivered to;
// the slices cover one that arrives just before poll() starts, one delivered
// to another thread, and a check that turns true for another reason. 100 ms:
// Ctrl-C feels immediate, and a waiter costs 10 checks a second.
inline constexpr int kWaitCheckMs = 100;
// What status() keeps of each client process (shelf status --clients): its
// command line and client name, cut to kMaxCommandBytes, and the
// kMaxHoldingsPerClient largest of the datasets it holds (its totals count
// them all). They bound a status response whatever the clients send or
// hold: 1,024 connections of ~4 KiB each.
inline constexpr uint32_t kMaxCommandBytes = 1024;
inline constexpr uint32_t kMaxHoldingsPerClient = 256;

// Unsent bytes shelfd keeps for one event subscriber (Client::subscribe,
// `shelf events`; docs/protocol.md, "Events"): about 10,000 events of short
// names. Past it that subscriber's events are counted, not queued, and once
// it has read what was queued it gets one `dropped` event with the count.
// So a subscriber that stops reading never stalls the daemon, and costs it
// at most about twice this (the sent prefix of the buffer is dropped
// lazily); 1 MiB is far past what a reader that keeps up ever has queued.
inline constexpr size_t kMaxEventBacklogBytes = size_t{1} << 20;

// How long shelfd waits for a new connection's Hello before closing it: a
// client that connects and says nothing must not hold a connection slot for
// ever. Every client sends Hello at once, so 5 s is far past a real one.
inline constexpr int kHelloTimeoutMs = 5000;

// ---- The filter language (libclient/include/shelf/filter.h), checked by
// Filter::parse; docs/filter.md quotes them.
// Bytes of one `--where` expression: far past any hand-written filter, and
// small enough that parsing it is instant. An `in` list has no bound of its
// own: this one bounds it.
inline constexpr size_t kMaxFilterBytes = 64 * 1024;
// Nested parentheses and `not`s: the parser recurses once per level, so this
// bounds its stack.
inline constexpr int kMaxFilterNesting = 64;

// ---- Views (docs/views.md), checked by shelfd at publish.
// How deep views may read other views: a reader resolves each level with a
// get of its own, and a chain this long is far past any sensible design.
inline constexpr uint32_t kMaxViewDepth = 16;
// The datasets a view of a Dask graph may read, and the bytes of its pickle
// (it lies in one extent of the segment, charged as any: a graph that
// embeds data should be persisted and published as data instead).
inline constexpr uint32_t kMaxViewBases = 1024;
inline constexpr uint64_t kMaxViewGraphBytes = uint64_t{64} << 20;

// ---- The CSV reader (tools/csv_*.h, `shelf publish`); docs/csv.md and
// docs/cli.md quote them.
// How long a named FIFO may stay without a writer (no data and no end)
// before `shelf publish` refuses it instead of waiting for ever. Not for a
// pipe (standard input, `<(...)`): a process holds its other end, and a
// slow one is waited for as `cat` would.
inline constexpr int kFifoWriterWaitMs = 5000;
// Default bytes per parsing chunk: large enough that per-chunk work is
// noise, small enough that every thread gets several.
inline constexpr uint64_t kCsvChunkBytes = 8 << 20;
// Most parsing threads `--threads` may ask for: past any core count we
// expect, and it keeps a typo from starting millions of threads.
inline constexpr uint64_t kMaxCsvThreads = 1024;

// `value` rounded up to a multiple of `alignment` (which is not 0).
constexpr uint64_t align_up(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace shelf
