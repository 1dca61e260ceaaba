// Snapshots: published datasets saved as files so that they survive a reboot
// (`shelf save DIR`), and read back with verification (`shelf load DIR`).
//
// Only the public client API is used: a snapshot is what any reader sees
// (Dataset), and loading is what any publisher does (TableBuilder).
//
// On-disk format, version 1 (docs/snapshot_format.md has all of it, and
// what is and is not durable). One directory per dataset:
//
//   DIR/<escaped name>/manifest                  the commit point, written last
//   DIR/<escaped name>/<generation>-<P>.part     partition P: its buffers, raw
//   DIR/<escaped name>/.lock                     flock: one save at a time
//
// <escaped name> is the dataset name with every byte outside [A-Za-z0-9_.-]
// (and a leading '.') written as %XX; a name that escapes to more than 200
// bytes is cut and ends in "~" + 16 hex digits of its XXH3, so the directory
// name stays under the 255-byte limit. The manifest holds the real name.
// Directories are made 0700 and files 0600: they hold the datasets' contents.
//
// A .part file holds, for each column in schema order, its validity bitmap,
// string offsets and data buffers exactly as they are in shared memory, each
// starting at the next multiple of 64 bytes (zero padding in between); empty
// buffers take no space. The manifest is text, one record per line:
//
//   shelf-snapshot 1
//   name <escaped name>
//   created_ns <when the saved dataset was published>
//   columns <C>
//   column <escaped column name> <type: int64, string, ...>          (C lines)
//   partitions <P>
//   partition <rows> <file> <file bytes> <XXH3-64 of the file, 16 hex>
//   chunk <nulls> <offset> <length> <xxh3> <offset> <length> <xxh3> <offset> <length> <xxh3>
//        (C chunk lines after each partition line: validity, offsets, data;
//         the XXH3s are the ones shelf recorded at publish, as `shelf info` shows)
//   end <XXH3-64 of every byte of the manifest before this line>
//
// Durability: each .part file is written under a name no earlier save used,
// fsync()ed; the directory is fsync()ed; then the manifest is written to a
// temporary name, fsync()ed, renamed over the old one and the directory
// fsync()ed again. A crash at any point leaves either the previous snapshot of
// the dataset or the new one, never a mix; files no manifest names are removed
// by the next save of that dataset.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <shelf/client.h>
#include <shelf/result.h>

namespace shelf::tools {

class Progress;

inline constexpr int kSnapshotVersion = 1;

// The directory name of a dataset in a snapshot (see above).
std::string escape_name(std::string_view name);

struct SnapshotEntry {
  std::string name;
  std::string path;  // DIR/<escaped name>
  uint64_t partitions = 0;
  uint64_t rows = 0;
  uint64_t bytes = 0;  // bytes of the .part files
};

struct SnapshotReport {
  std::vector<SnapshotEntry> datasets;
  // Datasets that were listed but unpublished before this save could read them.
  std::vector<std::string> skipped;
  // Views, which hold no data and are not saved (docs/views.md).
  std::vector<std::string> views;
  uint64_t bytes = 0;
  double seconds = 0;
};

// Saves `names` (every published dataset when empty) into `dir`, which must
// exist. Each dataset is saved atomically on its own (see above); the set is
// not: a failure after some datasets were saved leaves those saved. Before
// writing, the bytes of every buffer are checked against the XXH3 recorded
// at publish, so a damaged segment is never saved as good. Errors: NotFound
// (a named dataset), InvalidArgument (dir missing or not a directory),
// PermissionDenied / IoError naming the file, Corruption, Unavailable
// (another save holds the dataset's lock).
// `progress` (may be null) counts the bytes and rows written.
Result<SnapshotReport> save_snapshot(Client& client, const std::string& dir,
                                     const std::vector<std::string>& names,
                                     Progress* progress = nullptr);

// Loads `names` (every dataset in `dir` when empty) and publishes them all at
// once, or none. Every manifest is read and checked and every file's size is
// checked before any memory is taken; every file's XXH3 is checked before
// anything is published. Errors (nothing is published): NotFound (no
// snapshot of a name), Corruption (a checksum, a size or the manifest is
// wrong: the message names the file), InvalidArgument (unknown format
// version), AlreadyExists (a name is published and !override_existing),
// ResourceExhausted (over the daemon's limit).
// `progress` (may be null) counts the bytes and rows read.
Result<SnapshotReport> load_snapshot(Client& client, const std::string& dir,
                                     const std::vector<std::string>& names, bool override_existing,
                                     Progress* progress = nullptr);

}  // namespace shelf::tools
