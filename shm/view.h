// Views: a published name that holds a definition instead of data, which
// readers evaluate when they read it (docs/views.md). This header is the
// definition's encoding only (layout.h, ViewHeaderLayout): the client
// builds it, the daemon checks it and copies it into the segment, readers
// decode it. Evaluating a view is libclient's (libclient/src/derived.h).
//
// Threads: free functions over the bytes they are given; no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <shelf/result.h>

#include "shm/layout.h"

namespace shelf::shm {

struct ViewDefinition {
  ViewKind kind = ViewKind::kFilter;
  // The datasets (or views) it reads: one for kFilter; those a kGraph's
  // graph reads (none, for a graph that reads no shelf dataset).
  std::vector<std::string> bases;
  // kFilter only.
  std::string where;                 // a filter expression; empty: every row
  std::vector<std::string> columns;  // in output order; empty: every column of the base
  std::optional<uint64_t> limit;     // rows kept at most
  // kGraph only: the pickled collection, opaque here.
  std::string graph;
  // Set by the daemon at publish (stamp_view), read back by parse_view.
  int64_t created_ns = 0;
  uint32_t publisher_uid = 0;
  uint32_t publisher_pid = 0;
};

// True when `bytes` start with kViewMagic: a view's definition, not a
// dataset's descriptor (which starts with kDescriptorMagic).
bool is_view(std::span<const std::byte> bytes);

// The encoded definition, publisher fields 0. Its lengths are not checked
// here: parse_view is the one validator.
std::vector<std::byte> encode_view(const ViewDefinition& view);

// Checks and decodes: magic, version, kind, body length and XXH3; every
// base a name of 1..kMaxNameBytes; kFilter: one base, an expression of at
// most kMaxFilterBytes, at most kMaxColumns columns of 1..kMaxColumnNameBytes
// each and none twice, no graph; kGraph: at most kMaxViewBases bases, a
// graph of 1..kMaxViewGraphBytes, no filter. Whether the expression parses
// against the base is the reader's concern: the base may be replaced by one
// of another schema. Errors: Corruption (from the segment) or
// InvalidArgument (from a client), as `from_client` says.
Result<ViewDefinition> parse_view(std::span<const std::byte> bytes, bool from_client);

// Writes the publisher fields into encoded bytes (the daemon's copy in the
// segment); the body and its checksum are unchanged.
void stamp_view(std::byte* bytes, int64_t created_ns, uint32_t uid, uint32_t pid);

}  // namespace shelf::shm
