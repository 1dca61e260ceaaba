#include "tools/csv_table.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "base/parallel.h"
#include "base/utf8.h"
#include "tools/csv_source.h"
#include "tools/csv_tokenizer.h"
#include "tools/csv_values.h"
#include "tools/progress.h"

namespace shelf::tools {

CsvPlan::CsvPlan() = default;
CsvPlan::~CsvPlan() = default;
CsvPlan::CsvPlan(CsvPlan&&) noexcept = default;
CsvPlan& CsvPlan::operator=(CsvPlan&&) noexcept = default;

namespace {

// How far a chunk that guessed its start may read past its end for its last
// record before it stops guessing (it is parsed again from a known start).
constexpr uint64_t kMaxGuessOverrunBytes = 64 << 20;
constexpr size_t kMinReadBytes = 64 << 10;

std::string at(const std::string& path, uint64_t line) {
  return path + ":" + std::to_string(line) + ": ";
}

unsigned thread_count(const CsvOptions& o) { return o.threads ? o.threads : core_count(); }

// True when every byte of [data, data+size) is valid UTF-8. A field is a
// piece of such a range cut at ASCII bytes, and a UTF-8 sequence holds no
// ASCII byte, so a valid range means every field in it is valid.
bool range_is_utf8(const char* data, size_t size) {
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    if (w & 0x8080808080808080ull) break;
  }
  return is_valid_utf8(std::string_view(data + i, size - i));
}

// Line ends in [begin, end), for FILE:LINE: each LF, CRLF and lone CR ends
// one line (a file with old Mac line ends has a line per record, as an
// editor shows it). `after` is the byte at `end`, or -1 where the input
// ends there: a CR just before `end` is a line end unless `after` is LF.
// 16 bytes at a time (std::count is a byte loop at -O2, and counting was a
// fifth of pass 1).
uint64_t count_line_ends(const char* begin, const char* end, int after) {
  uint64_t n = 0;
#if defined(__SSE2__)
  // Per byte lane, minus one per line end (cmpeq gives -1): an LF, or a CR
  // whose next byte (the lane shifted by one, read unaligned) is not LF.
  // Summed with SAD before a lane can pass 255.
  const __m128i lf = _mm_set1_epi8('\n');
  const __m128i cr = _mm_set1_epi8('\r');
  while (begin + 17 <= end) {
    __m128i lanes = _mm_setzero_si128();
    for (int k = 0; k < 255 && begin + 17 <= end; ++k, begin += 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(begin));
      const __m128i next = _mm_loadu_si128(reinterpret_cast<const __m128i*>(begin + 1));
      const __m128i lone_cr = _mm_andnot_si128(_mm_cmpeq_epi8(next, lf), _mm_cmpeq_epi8(v, cr));
      lanes = _mm_sub_epi8(lanes, _mm_or_si128(_mm_cmpeq_epi8(v, lf), lone_cr));
    }
    const __m128i sums = _mm_sad_epu8(lanes, _mm_setzero_si128());
    n += static_cast<uint64_t>(_mm_cvtsi128_si64(sums)) +
         static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(sums, sums)));
  }
#endif
  for (; begin < end; ++begin) {
    if (*begin == '\n') {
      ++n;
    } else if (*begin == '\r') {
      const int next = begin + 1 < end ? static_cast<unsigned char>(begin[1]) : after;
      n += next != '\n';
    }
  }
  return n;
}

// The bytes [base, base + size()) of one source, read on demand.
class ChunkBuffer {
 public:
  Status load(const CsvSource& src, uint64_t base, size_t length) {
    src_ = &src;
    base_ = base;
    bytes_.resize(length);
    SHELF_ASSIGN_OR_RETURN(size_t got, src.read_at(base, bytes_.data(), length));
    bytes_.resize(got);
    return Status();
  }
  // Reads more: at least kMinReadBytes, or as much again as it holds.
  Status extend() {
    const size_t old = bytes_.size();
    const size_t more = std::max(kMinReadBytes, old);
    bytes_.resize(old + more);
    SHELF_ASSIGN_OR_RETURN(size_t got, src_->read_at(base_ + old, bytes_.data() + old, more));
    bytes_.resize(old + got);
    return Status();
  }
  // Makes the byte at `pos` readable if the input has one (a CR at the end
  // of what was read may be the first half of a CRLF).
  Status read_through(size_t pos) {
    while (pos >= size() && !at_end()) SHELF_RETURN_IF_ERROR(extend());
    return Status();
  }
  // The byte at `pos` (read_through it first), or -1 past the input's end.
  int byte_at(size_t pos) const {
    return pos < size() ? static_cast<unsigned char>(bytes_[pos]) : -1;
  }
  // count_line_ends of [from, to): read_through(to) first.
  uint64_t line_ends(size_t from, size_t to) const {
    return count_line_ends(data() + from, data() + to, byte_at(to));
  }
  const char* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  uint64_t base() const { return base_; }
  bool at_end() const { return base_ + bytes_.size() >= src_->size(); }

 private:
  const CsvSource* src_ = nullptr;
  uint64_t base_ = 0;
  std::vector<char> bytes_;
};

// What one input's records must look like.
struct FileShape {
  const CsvSource* src = nullptr;
  std::string name;
  uint64_t data_start = 0;    // first byte after the header
  uint64_t header_lines = 0;  // line ends before data_start (count_line_ends)
  uint64_t header_line = 1;   // where the header record starts
  const std::vector<std::string>* columns = nullptr;
  const std::vector<std::optional<Type>>* forced = nullptr;
  const CsvOptions* options = nullptr;

  bool is_null(const CsvRawField& f, std::string_view text) const {
    if (f.quoted) return false;
    if (f.length == 0) return true;
    for (const std::string& n : options->null_values) {
      if (n == text) return true;
    }
    return false;
  }
};

// What the values of one column seen so far could be.
struct ColumnScan {
  bool any = false;
  bool can_bool = true;
  bool can_int = true;
  bool can_uint = true;
  bool can_float = true;
  bool float_exact = true;  // every integer text is exactly a double
  uint64_t string_bytes = 0;

  void see(std::string_view text) {
    any = true;
    if (can_bool) {
      bool b;
      can_bool = parse_bool(text, &b);
    }
    if (!can_int && !can_uint && !can_float) return;
    switch (number_shape(text)) {
      case NumberShape::kSmallInt:
        return;  // int64, uint64 and an exact float64
      case NumberShape::kNegativeSmallInt:
        can_uint = false;
        return;
      case NumberShape::kDecimal:
        can_int = can_uint = false;
        return;
      case NumberShape::kOther:
        break;
    }
    int64_t i;
    if (can_int && parse_number(text, &i)) {
      can_uint = can_uint && i >= 0;
      if (float_exact && (i > (int64_t{1} << 53) || i < -(int64_t{1} << 53))) see_big_integer(text);
      return;  // an int64 is a float64 too
    }
    can_int = false;
    uint64_t u;
    const bool is_uint = can_uint && parse_number(text, &u);
    can_uint = is_uint;
    if (can_float) {
      double d;
      can_float = parse_number(text, &d);
      if (can_float && float_exact) see_big_integer(text);
    }
  }
  // An integer text whose double is not exactly it would lose digits.
  void see_big_integer(std::string_view text) {
    text = trim(text);
    bool negative = false;
    if (!text.empty() && (text[0] == '+' || text[0] == '-')) {
      negative = text[0] == '-';
      text.remove_prefix(1);
    }
    if (text.empty() || text.find_first_not_of("0123456789") != std::string_view::npos) return;
    while (text.size() > 1 && text[0] == '0') text.remove_prefix(1);
    double d;
    if (!parse_number(text, &d)) return;
    char buf[400];
    std::snprintf(buf, sizeof buf, "%.0f", d);
    float_exact = text == buf;
    (void)negative;
  }
  void merge(const ColumnScan& o) {
    any = any || o.any;
    can_bool = can_bool && o.can_bool;
    can_int = can_int && o.can_int;
    can_uint = can_uint && o.can_uint;
    can_float = can_float && o.can_float;
    float_exact = float_exact && o.float_exact;
    string_bytes += o.string_bytes;
  }
  Type type() const {
    if (!any) return Type::kString;
    if (can_bool) return Type::kBool;
    if (can_int) return Type::kInt64;
    if (can_uint) return Type::kUInt64;
    if (can_float && float_exact) return Type::kFloat64;
    return Type::kString;
  }
  bool lost_digits() const { return any && !can_int && !can_uint && can_float && !float_exact; }
};

// Pass 1 over one chunk: its records checked, its columns scanned.
struct ChunkScan {
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t rows = 0;
  uint64_t newlines = 0;  // line ends in [begin, end) (count_line_ends)
  uint64_t xxh3 = 0;
  bool gave_up = false;   // a guessed start read too far: scan again from a known one
  bool io_error = false;  // `error` is about reading, not about the CSV
  Status error;           // of the record that starts error_newlines line ends after begin
  uint64_t error_newlines = 0;
  std::vector<ColumnScan> columns;
  // Per cut row asked for: string bytes of each column before it.
  std::vector<std::vector<uint64_t>> cut_bytes;
};

struct ScanRequest {
  uint64_t start = 0;        // a record boundary, or where to guess one from
  uint64_t stop = 0;         // records starting at or past it belong to the next chunk
  bool guess_start = false;  // `start` is a nominal offset: begin after the next CR or LF
  bool utf8_per_field = false;
  std::vector<uint64_t> cuts;  // local row indices (ascending) to take cut_bytes at
};

// Checks one record's fields (pass 1). Returns the error for it, if any.
Status check_record(const FileShape& shape, CsvTokenizer& tok, const char* buf,
                    const ScanRequest& req, ChunkScan& out) {
  const std::span<const CsvRawField> fields = tok.fields();
  const std::vector<std::string>& cols = *shape.columns;
  if (fields.size() != cols.size()) {
    return Status::invalid_argument("expected " + std::to_string(cols.size()) + " fields, found " +
                                    std::to_string(fields.size()));
  }
  for (size_t c = 0; c < fields.size(); ++c) {
    const CsvRawField& f = fields[c];
    const std::string_view text = tok.text(buf, f);
    if (shape.is_null(f, text)) continue;
    size_t bad;
    if (req.utf8_per_field && !is_valid_utf8(text, &bad)) {
      return Status::invalid_argument("column '" + cols[c] + "' is not valid UTF-8 (byte " +
                                      std::to_string(bad) + " of the field)");
    }
    const std::optional<Type>& forced = (*shape.forced)[c];
    if (forced) {
      if (!value_fits(*forced, text)) {
        return Status::invalid_argument("column '" + cols[c] + "': '" + std::string(text) +
                                        "' is not a " + std::string(type_name(*forced)));
      }
    } else {
      out.columns[c].see(text);
    }
    out.columns[c].string_bytes += text.size();
  }
  return Status();
}

// Finds the first record boundary at or past buf's second byte (the chunk
// buffer starts one byte before the nominal offset). False: none yet.
bool find_guessed_start(const ChunkBuffer& buf, size_t* pos) {
  for (size_t i = 0; i < buf.size(); ++i) {
    if (buf.data()[i] == '\n' || buf.data()[i] == '\r') {
      *pos = i + 1;
      return true;
    }
  }
  return false;
}

ChunkScan scan_chunk(const FileShape& shape, const ScanRequest& req) {
  ChunkScan out;
  out.columns.resize(shape.columns->size());
  ChunkBuffer buf;
  const CsvSource& src = *shape.src;
  const uint64_t first = req.guess_start ? req.start - 1 : req.start;
  const uint64_t want = req.stop > first ? req.stop - first : 0;
  auto io_failed = [&](Status s) {
    out.error = std::move(s);
    out.io_error = true;
    return out;
  };
  if (Status s = buf.load(src, first, want + std::min<uint64_t>(want / 16 + 1, kMinReadBytes));
      !s.ok()) {
    return io_failed(s);
  }
  size_t pos = 0;
  if (req.guess_start) {
    while (!find_guessed_start(buf, &pos)) {
      if (buf.at_end()) {
        pos = buf.size();
        break;
      }
      if (Status s = buf.extend(); !s.ok()) return io_failed(s);
    }
  }
  out.begin = buf.base() + pos;
  CsvTokenizer tok(shape.options->delimiter);
  size_t record_start = pos, checked_end = pos;
  while (buf.base() + pos < req.stop && pos < buf.size()) {
    const char c = buf.data()[pos];
    if (c == '\r' || c == '\n') {
      ++pos;
      continue;
    }
    const CsvParse r = tok.parse(buf.data(), buf.size(), pos, buf.at_end());
    if (r == CsvParse::kNeedMore) {
      if (req.guess_start && buf.size() > want + kMaxGuessOverrunBytes) {
        out.gave_up = true;
        return out;
      }
      if (Status s = buf.extend(); !s.ok()) return io_failed(s);
      continue;
    }
    record_start = pos;
    if (r == CsvParse::kError) {
      out.error = Status::invalid_argument(tok.error());
      checked_end = pos;
      break;
    }
    checked_end = tok.next();
    if (Status s = check_record(shape, tok, buf.data(), req, out); !s.ok()) {
      out.error = s;
      break;
    }
    ++out.rows;
    if (out.cut_bytes.size() < req.cuts.size() && req.cuts[out.cut_bytes.size()] == out.rows) {
      std::vector<uint64_t> bytes;
      for (const ColumnScan& col : out.columns) bytes.push_back(col.string_bytes);
      out.cut_bytes.push_back(std::move(bytes));
    }
    pos = tok.next();
  }
  const size_t begin_pos = static_cast<size_t>(out.begin - buf.base());
  // Invalid UTF-8 somewhere: scan again checking each field, which finds the
  // first bad one in record order.
  if (!req.utf8_per_field &&
      !range_is_utf8(buf.data() + begin_pos, std::max(checked_end, begin_pos) - begin_pos)) {
    ScanRequest again = req;
    again.utf8_per_field = true;
    return scan_chunk(shape, again);
  }
  if (!out.error.ok()) {
    out.error_newlines = buf.line_ends(begin_pos, record_start);  // a record starts there
    return out;
  }
  out.end = buf.base() + pos;
  if (Status s = buf.read_through(pos); !s.ok()) return io_failed(s);
  out.newlines = buf.line_ends(begin_pos, pos);
  out.xxh3 = XXH3_64bits(buf.data() + begin_pos, pos - begin_pos);
  return out;
}

// ------------------------------------------------------------- pass 1 --

// A UTF-8 byte order mark, skipped before the header (or the first record).
constexpr char kBom[] = "\xef\xbb\xbf";

// Reads the header record of one input (or, with --no-header, only skips a
// BOM); sets data_start and header_lines. Errors say FILE:1.
Status read_header(FileShape& shape, std::vector<std::string>* names, uint64_t* xxh3) {
  ChunkBuffer buf;
  SHELF_RETURN_IF_ERROR(buf.load(*shape.src, 0, kMinReadBytes));
  size_t pos = buf.size() >= 3 && std::memcmp(buf.data(), kBom, 3) == 0 ? 3 : 0;
  if (shape.options->header) {
    CsvTokenizer tok(shape.options->delimiter);
    for (;;) {
      while (pos < buf.size() && (buf.data()[pos] == '\r' || buf.data()[pos] == '\n')) ++pos;
      if (pos == buf.size() && !buf.at_end()) {
        SHELF_RETURN_IF_ERROR(buf.extend());
        continue;
      }
      if (pos == buf.size()) {
        return Status::invalid_argument(at(shape.name, 1) +
                                        "the file is empty; expected a header row");
      }
      const CsvParse r = tok.parse(buf.data(), buf.size(), pos, buf.at_end());
      if (r == CsvParse::kNeedMore) {
        SHELF_RETURN_IF_ERROR(buf.extend());
        continue;
      }
      const uint64_t line = 1 + buf.line_ends(0, pos);  // a record starts at pos
      if (r == CsvParse::kError)
        return Status::invalid_argument(at(shape.name, line) + tok.error());
      for (const CsvRawField& f : tok.fields()) names->emplace_back(tok.text(buf.data(), f));
      shape.header_line = line;
      pos = tok.next();
      break;
    }
  }
  shape.data_start = pos;
  SHELF_RETURN_IF_ERROR(buf.read_through(pos));
  shape.header_lines = buf.line_ends(0, pos);
  *xxh3 = XXH3_64bits(buf.data(), pos);
  return Status();
}

// The header's names: each non-empty, UTF-8, once.
Status check_names(const std::string& path, uint64_t line, const std::vector<std::string>& names) {
  std::set<std::string> seen;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    if (name.empty()) {
      return Status::invalid_argument(at(path, line) + "header field " + std::to_string(i + 1) +
                                      " is empty; every column needs a name");
    }
    if (!is_valid_utf8(name)) {
      return Status::invalid_argument(at(path, line) + "header is not valid UTF-8");
    }
    if (!seen.insert(name).second) {
      return Status::invalid_argument(at(path, line) + "column name '" + name +
                                      "' appears twice in the header");
    }
  }
  return Status();
}

class Planner {
 public:
  Planner(const std::vector<std::string>& files, const CsvOptions& options) {
    plan_.options = options;
    plan_.options.progress = nullptr;  // the plan outlives the caller's Progress
    progress_ = options.progress;
    inputs_ = files;
  }

  Result<CsvPlan> run() && {
    SHELF_RETURN_IF_ERROR(open_inputs());
    SHELF_RETURN_IF_ERROR(read_headers());
    SHELF_RETURN_IF_ERROR(scan_all());
    infer_schema();
    SHELF_RETURN_IF_ERROR(plan_partitions());
    return std::move(plan_);
  }

 private:
  Status open_inputs() {
    uint64_t total = 0;
    for (const std::string& path : inputs_) {
      // A stream is read (and decompressed) once first: that shows as bytes
      // done of an unknown total.
      CsvSource::OnSpoolProgress spooled;
      uint64_t last = 0;
      if (progress_) {
        spooled = [this, &last](uint64_t done, uint64_t) {
          progress_->add_bytes(done - last);
          last = done;
        };
      }
      SHELF_ASSIGN_OR_RETURN(std::unique_ptr<CsvSource> src, CsvSource::open(path, spooled));
      plan_.files.push_back(src->name());
      total += src->size();
      plan_.sources.push_back(std::move(src));
    }
    if (progress_) progress_->restart("publish", 2 * total);  // two passes
    return Status();
  }

  Status read_headers() {
    const CsvOptions& o = plan_.options;
    for (size_t fi = 0; fi < plan_.sources.size(); ++fi) {
      FileShape shape;
      shape.src = plan_.sources[fi].get();
      shape.name = plan_.files[fi];
      shape.options = &plan_.options;
      std::vector<std::string> names;
      uint64_t xxh3 = 0;
      SHELF_RETURN_IF_ERROR(read_header(shape, &names, &xxh3));
      const uint64_t line = shape.header_line;
      if (!o.header) names = o.names;
      SHELF_RETURN_IF_ERROR(check_names(shape.name, line, names));
      if (fi == 0) {
        columns_ = names;
        SHELF_RETURN_IF_ERROR(set_forced_types());
      } else if (names != columns_) {
        return Status::invalid_argument(at(shape.name, line) +
                                        "header differs from the header of " + plan_.files[0]);
      }
      shapes_.push_back(shape);
      plan_.file_xxh3.push_back(xxh3);
    }
    for (FileShape& s : shapes_) {
      s.columns = &columns_;
      s.forced = &forced_;
    }
    return Status();
  }

  Status set_forced_types() {
    forced_.assign(columns_.size(), std::nullopt);
    for (const auto& [name, type] : plan_.options.forced_types) {
      auto it = std::find(columns_.begin(), columns_.end(), name);
      if (it == columns_.end()) {
        return Status::invalid_argument("--schema names column '" + name + "', which " +
                                        plan_.files[0] + " does not have");
      }
      forced_[static_cast<size_t>(it - columns_.begin())] = type;
    }
    return Status();
  }

  // Cuts every input into chunks and scans them all in parallel; then
  // confirms each chunk's start from the one before it, in order, scanning
  // again (from the right start) any chunk that guessed wrong.
  Status scan_all() {
    const uint64_t step = std::max<uint64_t>(1, plan_.options.chunk_bytes);
    for (size_t fi = 0; fi < shapes_.size(); ++fi) {
      const uint64_t begin = shapes_[fi].data_start, size = shapes_[fi].src->size();
      uint64_t off = begin;
      do {
        CsvChunk c;
        c.file = fi;
        c.begin = off;
        c.end = std::min(size, std::max(off, off + step));
        plan_.chunks.push_back(c);
        off = c.end;
      } while (off < size);
    }
    std::vector<ChunkScan> scans(plan_.chunks.size());
    parallel_for(scans.size(), thread_count(plan_.options), [&](size_t i) {
      const CsvChunk& c = plan_.chunks[i];
      ScanRequest req;
      req.start = c.begin;
      req.stop = c.end;
      req.guess_start = c.begin != shapes_[c.file].data_start;
      scans[i] = scan_chunk(shapes_[c.file], req);
      if (progress_) progress_->add_bytes(c.end - c.begin);
    });
    columns_scan_.assign(columns_.size(), ColumnScan{});
    uint64_t prev_end = 0, line = 0, row = 0;
    for (size_t i = 0; i < plan_.chunks.size(); ++i) {
      CsvChunk& c = plan_.chunks[i];
      const FileShape& shape = shapes_[c.file];
      if (i == 0 || plan_.chunks[i - 1].file != c.file) {
        prev_end = shape.data_start;
        line = 1 + shape.header_lines;
        row = 0;
      }
      const uint64_t nominal_end = c.end;
      if (prev_end >= nominal_end) {  // the record before it swallowed this chunk
        scans[i] = ChunkScan{};
        scans[i].begin = scans[i].end = prev_end;
        scans[i].xxh3 = XXH3_64bits(nullptr, 0);
        scans[i].columns.resize(columns_.size());
      } else if (scans[i].begin != prev_end || scans[i].gave_up) {
        ScanRequest req;
        req.start = prev_end;
        req.stop = nominal_end;
        scans[i] = scan_chunk(shape, req);
      }
      ChunkScan& s = scans[i];
      if (!s.error.ok()) {
        if (s.io_error) return s.error;
        return Status::invalid_argument(at(shape.name, line + s.error_newlines) +
                                        s.error.message());
      }
      c.begin = s.begin;
      c.end = s.end;
      c.rows = s.rows;
      c.first_row = row;
      c.first_line = line;
      c.xxh3 = s.xxh3;
      for (size_t k = 0; k < columns_.size(); ++k) columns_scan_[k].merge(s.columns[k]);
      chunk_string_bytes_.emplace_back();
      for (const ColumnScan& col : s.columns)
        chunk_string_bytes_.back().push_back(col.string_bytes);
      prev_end = s.end;
      line += s.newlines;
      row += s.rows;
      plan_.total_rows += s.rows;
    }
    return Status();
  }

  void infer_schema() {
    for (size_t c = 0; c < columns_.size(); ++c) {
      const ColumnScan& scan = columns_scan_[c];
      const Type type = forced_[c] ? *forced_[c] : scan.type();
      if (!forced_[c] && scan.lost_digits()) {
        plan_.warnings.push_back(
            "column '" + columns_[c] +
            "' is kept as strings: it holds integers that float64 cannot hold exactly (beyond "
            "int64, mixed with negative or decimal numbers, or beyond uint64); --schema " +
            columns_[c] + ":float64 accepts the rounding");
      }
      plan_.schema.push_back(Field{columns_[c], type});
    }
  }

  Status plan_partitions();

  CsvPlan plan_;
  Progress* progress_ = nullptr;
  std::vector<std::string> inputs_;
  std::vector<FileShape> shapes_;
  std::vector<std::string> columns_;
  std::vector<std::optional<Type>> forced_;
  std::vector<ColumnScan> columns_scan_;
  std::vector<std::vector<uint64_t>> chunk_string_bytes_;  // per chunk, per column
};

// One partition per file, or one every partition_rows rows of each file; a
// chunk across a partition's end is scanned again for its string bytes on
// each side.
Status Planner::plan_partitions() {
  const uint64_t n = plan_.options.partition_rows;
  std::vector<size_t> string_cols;
  for (size_t c = 0; c < plan_.schema.size(); ++c) {
    if (plan_.schema[c].type == Type::kString) string_cols.push_back(c);
  }
  // Cuts (local rows) inside each chunk, and their scans.
  std::vector<std::vector<uint64_t>> cuts(plan_.chunks.size());
  std::vector<size_t> to_scan;
  for (size_t i = 0; i < plan_.chunks.size() && n > 0; ++i) {
    const CsvChunk& c = plan_.chunks[i];
    for (uint64_t r = (c.first_row / n + 1) * n; r < c.first_row + c.rows; r += n) {
      cuts[i].push_back(r - c.first_row);
    }
    if (!cuts[i].empty() && !string_cols.empty()) to_scan.push_back(i);
  }
  std::vector<ChunkScan> rescans(to_scan.size());
  parallel_for(to_scan.size(), thread_count(plan_.options), [&](size_t k) {
    const CsvChunk& c = plan_.chunks[to_scan[k]];
    ScanRequest req;
    req.start = c.begin;
    req.stop = c.end;
    req.cuts = cuts[to_scan[k]];
    rescans[k] = scan_chunk(shapes_[c.file], req);
  });
  for (const ChunkScan& s : rescans) {
    if (!s.error.ok()) return s.error;  // the file changed under us
  }
  size_t next_rescan = 0;
  CsvPartition* current = nullptr;
  for (size_t i = 0; i < plan_.chunks.size(); ++i) {
    const CsvChunk& c = plan_.chunks[i];
    const bool new_file = i == 0 || plan_.chunks[i - 1].file != c.file;
    auto open_partition = [&](uint64_t first_row) {
      plan_.partitions.push_back(
          CsvPartition{c.file, first_row, 0, std::vector<uint64_t>(string_cols.size())});
      current = &plan_.partitions.back();
    };
    if (new_file) open_partition(0);
    const ChunkScan* rescan = next_rescan < to_scan.size() && to_scan[next_rescan] == i
                                  ? &rescans[next_rescan++]
                                  : nullptr;
    std::vector<uint64_t> before(string_cols.size(), 0);  // bytes of this chunk so far
    uint64_t done = 0;                                    // rows of this chunk so far
    for (size_t k = 0; k <= cuts[i].size(); ++k) {
      const uint64_t upto = k < cuts[i].size() ? cuts[i][k] : c.rows;
      if (n > 0 && current->rows == n && upto > done) open_partition(c.first_row + done);
      for (size_t s = 0; s < string_cols.size(); ++s) {
        const uint64_t total = k < cuts[i].size() && rescan
                                   ? rescan->cut_bytes[k][string_cols[s]]
                                   : chunk_string_bytes_[i][string_cols[s]];
        current->string_bytes[s] += total - before[s];
        before[s] = total;
      }
      current->rows += upto - done;
      done = upto;
    }
  }
  return Status();
}

}  // namespace

Result<CsvPlan> plan_csv(const std::vector<std::string>& files, const CsvOptions& options) {
  if (files.empty()) return Status::invalid_argument("no CSV file given");
  if (options.delimiter == '"' || options.delimiter == '\r' || options.delimiter == '\n') {
    return Status::invalid_argument("the delimiter cannot be a quote, CR or LF");
  }
  if (!options.header && options.names.empty()) {
    return Status::invalid_argument("--no-header needs --names to name the columns");
  }
  if (options.header && !options.names.empty()) {
    return Status::invalid_argument("--names is for files without a header (--no-header)");
  }
  return Planner(files, options).run();
}

// ------------------------------------------------------------- pass 2 --

namespace {

// Parses `text` as the column's type into the value slot at `slot`.
using StoreFn = bool (*)(std::string_view text, std::byte* slot);

template <class T, bool (*Parse)(std::string_view, T*)>
bool store(std::string_view text, std::byte* slot) {
  T value;
  if (!Parse(text, &value)) return false;
  std::memcpy(slot, &value, sizeof value);
  return true;
}

StoreFn store_for(Type type) {
  switch (type) {
    case Type::kInt8:
      return store<int8_t, parse_number<int8_t>>;
    case Type::kInt16:
      return store<int16_t, parse_number<int16_t>>;
    case Type::kInt32:
      return store<int32_t, parse_number<int32_t>>;
    case Type::kInt64:
      return store<int64_t, parse_number<int64_t>>;
    case Type::kUInt8:
      return store<uint8_t, parse_number<uint8_t>>;
    case Type::kUInt16:
      return store<uint16_t, parse_number<uint16_t>>;
    case Type::kUInt32:
      return store<uint32_t, parse_number<uint32_t>>;
    case Type::kUInt64:
      return store<uint64_t, parse_number<uint64_t>>;
    case Type::kFloat32:
      return store<float, parse_number<float>>;
    case Type::kFloat64:
      return store<double, parse_number<double>>;
    case Type::kTimestamp:
      return store<int64_t, parse_timestamp>;
    case Type::kBool:
      return store<uint8_t, parse_bool_byte>;
    case Type::kString:
    case Type::kBytes:
      break;
  }
  return nullptr;
}

// One partition being filled: where each fixed-width column's values live.
struct Target {
  PartitionBuilder builder;
  std::vector<std::byte*> values;  // per column; null for strings
};

// One chunk's strings and nulls, parsed in parallel and then appended to
// the partitions in chunk order (StringColumnWriter appends, in row order).
struct Staged {
  std::vector<std::string> bytes;           // per column (string columns only)
  std::vector<std::vector<uint64_t>> ends;  // per column: end of each row's text in bytes
  std::vector<std::vector<uint8_t>> nulls;  // per column: 1 = null
  std::vector<std::pair<size_t, uint64_t>> fixed_nulls;  // (column, row in chunk)
};

class Writer {
 public:
  // `only_file`: write that input's partitions only.
  Writer(const CsvPlan& plan, TableBuilder& table, Progress* progress,
         std::optional<size_t> only_file)
      : plan_(plan), table_(table), progress_(progress), only_file_(only_file) {}

  Status run() {
    SHELF_RETURN_IF_ERROR(check_headers());
    SHELF_RETURN_IF_ERROR(add_partitions());
    for (const Field& f : plan_.schema) {
      stores_.push_back(store_for(f.type));
      widths_.push_back(fixed_width(f.type));
      if (f.type == Type::kBytes) return Status::internal("bytes column in a CSV table");
    }
    std::vector<size_t> chunks;  // indices into plan_.chunks, in order
    for (size_t i = 0; i < plan_.chunks.size(); ++i) {
      if (wanted(plan_.chunks[i].file)) chunks.push_back(i);
    }
    const size_t n = chunks.size();
    std::vector<Status> errors(n);
    std::mutex mu;
    std::condition_variable turn;
    size_t next_commit = 0;
    std::atomic<bool> failed{false};
    parallel_for(n, thread_count(plan_.options), [&](size_t k) {
      Staged staged;
      Status s = failed.load() ? Status() : write_chunk(chunks[k], staged);
      std::unique_lock<std::mutex> lock(mu);
      turn.wait(lock, [&] { return next_commit == k; });
      if (s.ok() && !failed.load()) s = commit(chunks[k], staged);
      if (!s.ok()) {
        errors[k] = s;
        failed = true;
      }
      ++next_commit;
      turn.notify_all();
    });
    for (const Status& s : errors) SHELF_RETURN_IF_ERROR(s);
    for (const auto& src : plan_.sources) SHELF_RETURN_IF_ERROR(src->check_unchanged());
    return Status();
  }

 private:
  const std::string& path(size_t file) const { return plan_.files[file]; }

  // Each file's size and header bytes are what pass 1 saw.
  Status check_headers() {
    if (plan_.sources.size() != plan_.files.size() ||
        plan_.file_xxh3.size() != plan_.files.size()) {
      return Status::invalid_argument("this plan's inputs are gone (a plan is written once)");
    }
    for (size_t fi = 0; fi < plan_.files.size(); ++fi) {
      const CsvSource& src = *plan_.sources[fi];
      SHELF_RETURN_IF_ERROR(src.check_unchanged());
      uint64_t data_start = src.size();
      for (const CsvChunk& c : plan_.chunks) {
        if (c.file == fi) {
          data_start = c.begin;
          break;
        }
      }
      ChunkBuffer buf;
      SHELF_RETURN_IF_ERROR(buf.load(src, 0, data_start));
      if (buf.size() != data_start || XXH3_64bits(buf.data(), buf.size()) != plan_.file_xxh3[fi]) {
        return Status::invalid_argument(at(path(fi), 1) +
                                        "the header differs from when it was first read; " +
                                        path(fi) + " changed while it was read");
      }
    }
    return Status();
  }

  bool wanted(size_t file) const { return !only_file_ || *only_file_ == file; }

  Status add_partitions() {
    targets_.assign(plan_.files.size(), {});
    for (const CsvPartition& p : plan_.partitions) {
      if (!wanted(p.file)) continue;
      SHELF_ASSIGN_OR_RETURN(PartitionBuilder builder,
                             table_.add_partition(p.rows, p.string_bytes));
      Target t{builder, {}};
      for (size_t c = 0; c < plan_.schema.size(); ++c) {
        const Type type = plan_.schema[c].type;
        t.values.push_back(type == Type::kString ? nullptr : fixed_values(builder, type, c));
      }
      targets_[p.file].push_back(std::move(t));
    }
    return Status();
  }

  static std::byte* fixed_values(PartitionBuilder& part, Type type, size_t c) {
    return with_parser(type, [&](auto, auto value) {
      using T = decltype(value);
      return reinterpret_cast<std::byte*>(part.values<T>(c).data());
    });
  }

  // The partition of data row `row` of `file`, and the row within it.
  Target& target(size_t file, uint64_t row, uint64_t* local) {
    const uint64_t n = plan_.options.partition_rows;
    const uint64_t index = n ? row / n : 0;
    *local = n ? row % n : row;
    return targets_[file][index];
  }

  Status write_chunk(size_t i, Staged& staged);
  Status commit(size_t i, Staged& staged);

  const CsvPlan& plan_;
  TableBuilder& table_;
  Progress* progress_;
  std::optional<size_t> only_file_;
  std::vector<std::vector<Target>> targets_;  // per file, its partitions in order
  std::vector<StoreFn> stores_;               // per column; null for strings
  std::vector<uint32_t> widths_;              // per column: bytes per value
};

// Parses chunk i again, writes its fixed-width values in place and stages
// its strings and nulls. Anything unlike pass 1 means the file changed.
Status Writer::write_chunk(size_t i, Staged& st) {
  const CsvChunk& c = plan_.chunks[i];
  const CsvSource& src = *plan_.sources[c.file];
  ChunkBuffer buf;
  SHELF_RETURN_IF_ERROR(buf.load(src, c.begin, c.end - c.begin));
  const std::string& name = path(c.file);
  const char* data = buf.data();
  size_t pos = 0;
  auto changed = [&](const std::string& what) {
    const uint64_t line = c.first_line + buf.line_ends(0, pos);
    return Status::invalid_argument(at(name, line) + what + "; " + name +
                                    " changed while it was read");
  };
  const size_t width = plan_.schema.size();
  st.bytes.resize(width);
  st.ends.resize(width);
  st.nulls.resize(width);
  FileShape shape;
  shape.options = &plan_.options;
  CsvTokenizer tok(plan_.options.delimiter);
  uint64_t row = 0;
  while (pos < buf.size()) {
    if (data[pos] == '\r' || data[pos] == '\n') {
      ++pos;
      continue;
    }
    if (buf.size() != c.end - c.begin ||
        tok.parse(data, buf.size(), pos, buf.at_end()) != CsvParse::kRecord) {
      return changed("a record is not what it was");
    }
    const std::span<const CsvRawField> fields = tok.fields();
    if (fields.size() != width) {
      return changed("expected " + std::to_string(width) + " fields, found " +
                     std::to_string(fields.size()));
    }
    if (row >= c.rows) return changed("more rows than when it was first read");
    uint64_t local;
    Target& t = target(c.file, c.first_row + row, &local);
    for (size_t col = 0; col < width; ++col) {
      const CsvRawField& f = fields[col];
      const std::string_view text = tok.text(data, f);
      const bool null = shape.is_null(f, text);
      const Field& field = plan_.schema[col];
      if (field.type == Type::kString) {
        if (!null) st.bytes[col].append(text);
        st.ends[col].push_back(st.bytes[col].size());
        st.nulls[col].push_back(null);
        continue;
      }
      std::byte* slot = t.values[col] + local * widths_[col];
      if (null) {
        st.fixed_nulls.emplace_back(col, row);
        if (field.type == Type::kFloat64) {
          const double nan = std::numeric_limits<double>::quiet_NaN();
          std::memcpy(slot, &nan, sizeof nan);
        } else if (field.type == Type::kFloat32) {
          const float nan = std::numeric_limits<float>::quiet_NaN();
          std::memcpy(slot, &nan, sizeof nan);
        }
      } else if (!stores_[col](text, slot)) {
        return changed("column '" + field.name + "': '" + std::string(text) + "' is not a " +
                       std::string(type_name(field.type)));
      }
    }
    ++row;
    pos = tok.next();
  }
  if (row != c.rows) return changed("fewer rows than when it was first read");
  if (XXH3_64bits(data, buf.size()) != c.xxh3) {
    return Status::invalid_argument(name + " changed while it was read: its bytes differ from " +
                                    "what the first pass checked");
  }
  return Status();
}

// Appends chunk i's strings and marks its nulls. Called in chunk order,
// one chunk at a time.
Status Writer::commit(size_t i, Staged& st) {
  const CsvChunk& c = plan_.chunks[i];
  const uint64_t n = plan_.options.partition_rows;
  for (size_t col = 0; col < plan_.schema.size(); ++col) {
    if (plan_.schema[col].type != Type::kString) continue;
    const std::string_view bytes = st.bytes[col];
    uint64_t prev = 0;
    // Row by row, in runs that share one partition.
    for (uint64_t r = 0; r < c.rows;) {
      uint64_t local;
      StringColumnWriter w = target(c.file, c.first_row + r, &local).builder.strings(col);
      const uint64_t run_end = n ? std::min(c.rows, r + (n - local)) : c.rows;
      for (; r < run_end; ++r) {
        const uint64_t end = st.ends[col][r];
        Status s = st.nulls[col][r] ? w.append_null() : w.append(bytes.substr(prev, end - prev));
        if (!s.ok()) {
          return Status::invalid_argument(path(c.file) +
                                          " changed while it was read: " + s.message());
        }
        prev = end;
      }
    }
  }
  for (const auto& [col, r] : st.fixed_nulls) {
    uint64_t local;
    target(c.file, c.first_row + r, &local).builder.set_null(col, local);
  }
  if (progress_) {
    progress_->add_bytes(c.end - c.begin);
    progress_->add_rows(c.rows);
  }
  return Status();
}

}  // namespace

Status write_csv(const CsvPlan& plan, TableBuilder& table, Progress* progress) {
  return Writer(plan, table, progress, std::nullopt).run();
}

Status write_csv_file(const CsvPlan& plan, size_t file, TableBuilder& table, Progress* progress) {
  if (file >= plan.files.size()) return Status::internal("write_csv_file: no such input");
  return Writer(plan, table, progress, file).run();
}

Status write_csv(const CsvPlan& plan, TableBuilder& table) {
  return write_csv(plan, table, nullptr);
}

}  // namespace shelf::tools
