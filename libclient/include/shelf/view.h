// Views: a published name that holds no data, only a definition (a base
// dataset, a filter, a column list, a row limit) that each reader evaluates
// against the base as published when it reads (docs/views.md). Dask's
// "publishing an un-persisted collection publishes a view".
//
//   client.publish_view("negative", {.base = "accounts", .where = "balance < 0"});
//   shelf::Dataset neg = client.get_dataset("negative").value();  // evaluated here
//
// A view takes no buffer memory: its definition lies in a page of the
// segment. It may read another view (at most kMaxViewDepth deep, never
// itself). Its base cannot be unpublished while it is published, unless the
// unpublish cascades (UnpublishOptions::cascade), which removes the views
// too; replacing the base (override) keeps the view, which then reads the
// new data.
//
// Reading a view (Client::get_dataset) takes a lease on its base and
// returns a Dataset over it: a projection or a limit is a zero-copy view of
// the base's buffers; a partition the filter thins is computed into memory
// of the reading process, partition by partition, when it is first used
// (num_rows() uses every partition). The base's lease keeps what is read
// valid even if the base is unpublished or replaced meanwhile.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shelf {

struct ViewDefinition {
  std::string base;                  // the dataset (or view) read
  std::string where;                 // a filter (shelf/filter.h); empty: every row
  std::vector<std::string> columns;  // the output columns, in order; empty: all
  std::optional<uint64_t> limit;     // the first rows kept, at most
  // A view of a Dask collection instead (what Python's publish_dataset of
  // an un-persisted one publishes): its pickle, which only Python
  // evaluates, and the shelf datasets its graph reads (the cascade rule
  // holds for them). `base` and the filter are then empty, and a get of it
  // gives the pickle as a raw-bytes Dataset of one partition.
  std::string graph = {};
  std::vector<std::string> graph_bases = {};
};

}  // namespace shelf
