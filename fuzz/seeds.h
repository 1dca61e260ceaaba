// What the fuzz targets' inputs look like, shared by the targets and
// make_seeds.cc so that the seeds stay in the targets' format.
#pragma once

#include <cstddef>
#include <cstdint>

namespace shelf::fuzz {

// fuzz_csv: the first byte picks the options, the rest is the file.
//   bits 0-1: partition_rows = 0, 1, 2 or 7 (0: one partition per file)
//   bit 2:    force the first column's type to the one bits 3-7 pick (mod 13)
inline constexpr size_t kCsvOptionBytes = 1;
inline constexpr uint64_t kCsvPartitionRows[4] = {0, 1, 2, 7};

// fuzz_cli_values: the first byte picks the range of parse_count, the rest
// is one command-line value.
//   bits 0-1: the most it accepts, kCliCountMax[bits]
//   bit 2:    the least is 1 (else 0)
inline constexpr size_t kCliValueOptionBytes = 1;
inline constexpr uint64_t kCliCountMax[4] = {1, 1000, UINT32_MAX, UINT64_MAX};

}  // namespace shelf::fuzz
