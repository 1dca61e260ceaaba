// The CSV record tokenizer behind `shelf publish`: RFC 4180 over a byte
// buffer, with the rules libcsv applied for shelf before (CSV_STRICT,
// CSV_STRICT_FINI, CSV_EMPTY_IS_NULL, no space trimming):
//   - a field is exactly the bytes between delimiters; a field that starts
//     with '"' is quoted and ends at a '"' not doubled, which must be
//     followed by the delimiter, CR, LF or the end of the input; inside it,
//     "" is one quote, and delimiters, CR and LF are data;
//   - a '"' inside an unquoted field, or text after a closing quote, is an
//     error; so is a quoted field still open at the end of the input;
//   - a record ends at CR, LF or the end of the input; empty lines are
//     skipped (so CRLF is one record end);
//   - an empty unquoted field is null.
// It is written for speed (one table lookup per byte of unquoted text,
// memchr inside quotes) and for parallel parsing: a caller can start at any
// offset that follows a CR or LF outside quotes (see csv_table.cc).
//
// Threads: a CsvTokenizer is used by one thread; many may parse one buffer.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace shelf::tools {

struct CsvRawField {
  size_t begin = 0;      // offset in the buffer of the first byte inside any quotes
  size_t length = 0;     // bytes, before undoubling quotes
  bool quoted = false;   // written in quotes (so never null)
  bool escaped = false;  // holds a doubled quote: see CsvTokenizer::text()
};

enum class CsvParse {
  kRecord,    // one record in fields(); next() is where the next one may start
  kNeedMore,  // the record goes past the end of the buffer (and it is not the input's end)
  kError,     // error() says what; it concerns the record that started at the given offset
};

class CsvTokenizer {
 public:
  explicit CsvTokenizer(char delimiter) : delimiter_(delimiter) {
    special_.fill(false);
    for (unsigned char c : {static_cast<unsigned char>(delimiter), static_cast<unsigned char>('"'),
                            static_cast<unsigned char>('\r'), static_cast<unsigned char>('\n')}) {
      special_[c] = true;
    }
  }

  // Parses the record starting at buf[pos] (which must not be CR or LF).
  // `at_end`: buf[size] is the end of the whole input.
  CsvParse parse(const char* buf, size_t size, size_t pos, bool at_end) {
    count_ = 0;
    for (;;) {
      CsvRawField& f = next_field();
      if (pos < size && buf[pos] == '"') {
        f.quoted = true;
        f.escaped = false;
        f.begin = pos + 1;
        size_t p = pos + 1;
        for (;;) {
          const void* q = p < size ? std::memchr(buf + p, '"', size - p) : nullptr;
          if (q == nullptr) return at_end ? fail(kUnclosed) : CsvParse::kNeedMore;
          p = static_cast<size_t>(static_cast<const char*>(q) - buf);
          if (p + 1 == size && !at_end) return CsvParse::kNeedMore;  // "" or end?
          if (p + 1 < size && buf[p + 1] == '"') {
            f.escaped = true;
            p += 2;
            continue;
          }
          break;
        }
        f.length = p - f.begin;
        pos = p + 1;
        if (pos == size) return end_record(pos);  // at_end: checked above
        const char c = buf[pos];
        if (c == delimiter_) {
          ++pos;
          continue;
        }
        if (c == '\r' || c == '\n') return end_record(pos + 1);
        return fail(kStray);
      }
      f.begin = pos;
      f.quoted = false;
      f.escaped = false;
      size_t p = skip_plain(buf, size, pos);
      if (p == size) {
        if (!at_end) return CsvParse::kNeedMore;
        f.length = p - pos;
        return end_record(p);
      }
      const char c = buf[p];
      f.length = p - pos;
      if (c == '"') return fail(kStray);
      if (c == delimiter_) {
        pos = p + 1;
        continue;
      }
      return end_record(p + 1);  // CR or LF
    }
  }

  std::span<const CsvRawField> fields() const { return {fields_.data(), count_}; }
  // Where the record just parsed ended (past its CR or LF).
  size_t next() const { return next_; }
  const char* error() const { return error_; }

  // The text of a field, quotes undoubled (into a scratch string when needed).
  std::string_view text(const char* buf, const CsvRawField& f) {
    if (!f.escaped) return std::string_view(buf + f.begin, f.length);
    scratch_.clear();
    for (size_t i = f.begin; i < f.begin + f.length; ++i) {
      scratch_ += buf[i];
      if (buf[i] == '"') ++i;  // the second quote of a pair
    }
    return scratch_;
  }
  // Bytes of the field's text, quotes undoubled.
  static size_t text_length(const char* buf, const CsvRawField& f) {
    if (!f.escaped) return f.length;
    size_t quotes = 0;
    for (size_t i = f.begin; i < f.begin + f.length; ++i) quotes += buf[i] == '"';
    return f.length - quotes / 2;
  }

  static constexpr const char* kStray =
      "malformed CSV: a quote inside an unquoted field, or text after a closing quote";
  static constexpr const char* kUnclosed = "malformed CSV: a quoted field is never closed";

 private:
  // The first byte at or after p that is the delimiter, a quote, CR or LF
  // (or size): 16 bytes at a time with SSE2 (every x86-64 has it), then
  // byte by byte near the end of the buffer.
  size_t skip_plain(const char* buf, size_t size, size_t p) const {
#if defined(__SSE2__)
    while (p + 16 <= size) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(buf + p));
      const __m128i hit = _mm_or_si128(
          _mm_or_si128(_mm_cmpeq_epi8(v, delimiter_x16_), _mm_cmpeq_epi8(v, _mm_set1_epi8('"'))),
          _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\n')),
                       _mm_cmpeq_epi8(v, _mm_set1_epi8('\r'))));
      const unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(hit));
      if (mask != 0) return p + static_cast<size_t>(__builtin_ctz(mask));
      p += 16;
    }
#endif
    while (p < size && !special_[static_cast<unsigned char>(buf[p])]) ++p;
    return p;
  }

  // The next field slot; slots are reused from record to record.
  CsvRawField& next_field() {
    if (count_ == fields_.size()) fields_.resize(fields_.size() * 2 + 8);
    return fields_[count_++];
  }
  CsvParse end_record(size_t next) {
    next_ = next;
    return CsvParse::kRecord;
  }
  CsvParse fail(const char* what) {
    error_ = what;
    return CsvParse::kError;
  }

  char delimiter_;
  std::array<bool, 256> special_;
#if defined(__SSE2__)
  __m128i delimiter_x16_ = _mm_set1_epi8(delimiter_);
#endif
  std::vector<CsvRawField> fields_;
  size_t count_ = 0;  // fields of the current record
  size_t next_ = 0;
  const char* error_ = "";
  std::string scratch_;
};

}  // namespace shelf::tools
