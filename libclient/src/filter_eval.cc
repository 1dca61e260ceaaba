// Filter::evaluate and write_filtered: the predicate is evaluated
// column-at-a-time over chunks of kChunkRows rows. Each node fills byte
// masks (one byte per row, 0 or 1) with one tight loop per (type, operator),
// which the compiler vectorises; the switch on the node's kind runs once per
// chunk, never per row. The root's mask is packed into the Selection bitmap.
//
// SQL's three-valued logic is carried as two masks, `t` (true) and `f`
// (false); a row in neither is unknown. While no null has been seen below a
// node, f is implicitly ~t and is not written (maybe_unknown == false): the
// common no-null case costs one mask per level.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <string_view>
#include <utility>

#include "libclient/src/filter_expr.h"

namespace shelf {
namespace {

using internal::CompareOp;
using internal::ExprNode;
using internal::Literal;

// Rows per chunk: a multiple of 64 (whole bitmap words, whole validity
// bytes). 4096 one-byte masks per level stay in L1 next to the column data
// streaming through.
constexpr size_t kChunkRows = 4096;

// compare_values is built twice, for AVX2 and for the baseline (x86-64:
// SSE2), and the loader picks one (GCC's function multiversioning, an
// ifunc): SSE2 has no 64-bit compare, so `int64 < literal` ran at
// 0.37-0.41x a plain sum of the column, and at 0.57-0.60x with AVX2
// (docs/filter.md). Left out of the ThreadSanitizer and clang (fuzzing)
// builds: not tried there.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define SHELF_FILTER_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SHELF_FILTER_CLONES
#endif

struct Truth {
  uint8_t* t;
  uint8_t* f;          // meaningful only when maybe_unknown
  bool maybe_unknown;  // false: f == ~t, not materialised
};

template <class V, class L>
SHELF_FILTER_CLONES void compare_values(const V* v, size_t n, CompareOp op, L lit, uint8_t* t) {
  switch (op) {
    case CompareOp::kLt:
      for (size_t i = 0; i < n; ++i) t[i] = v[i] < lit;
      break;
    case CompareOp::kLe:
      for (size_t i = 0; i < n; ++i) t[i] = v[i] <= lit;
      break;
    case CompareOp::kEq:
      for (size_t i = 0; i < n; ++i) t[i] = v[i] == lit;
      break;
    case CompareOp::kNe:
      for (size_t i = 0; i < n; ++i) t[i] = v[i] != lit;
      break;
    case CompareOp::kGt:
      for (size_t i = 0; i < n; ++i) t[i] = v[i] > lit;
      break;
    case CompareOp::kGe:
      for (size_t i = 0; i < n; ++i) t[i] = v[i] >= lit;
      break;
  }
}

// A lone comparison of an int64 (or timestamp) column, the commonest
// filter (`balance < 0`), straight into the bitmap, 64 rows per word, with
// no byte mask in between: the byte mask and its packing were ~40% of the
// time of compare_values() + pack_bits() (docs/filter.md). `n` is a
// multiple of 64, or the last chunk's tail.
template <CompareOp kOp>
SHELF_FILTER_CLONES void compare_to_bits(const int64_t* v, size_t n, int64_t lit, uint64_t* words) {
  for (size_t w = 0; w * 64 < n; ++w) {
    const int64_t* x = v + w * 64;
    const size_t rows = std::min<size_t>(64, n - w * 64);
    uint64_t bits = 0;
    for (size_t j = 0; j < rows; ++j) {
      bool hit;
      if constexpr (kOp == CompareOp::kLt) hit = x[j] < lit;
      if constexpr (kOp == CompareOp::kLe) hit = x[j] <= lit;
      if constexpr (kOp == CompareOp::kEq) hit = x[j] == lit;
      if constexpr (kOp == CompareOp::kNe) hit = x[j] != lit;
      if constexpr (kOp == CompareOp::kGt) hit = x[j] > lit;
      if constexpr (kOp == CompareOp::kGe) hit = x[j] >= lit;
      bits |= static_cast<uint64_t>(hit) << j;
    }
    words[w] = bits;
  }
}

void compare_int64_to_bits(const int64_t* v, size_t n, CompareOp op, int64_t lit, uint64_t* words) {
  switch (op) {
    case CompareOp::kLt:
      return compare_to_bits<CompareOp::kLt>(v, n, lit, words);
    case CompareOp::kLe:
      return compare_to_bits<CompareOp::kLe>(v, n, lit, words);
    case CompareOp::kEq:
      return compare_to_bits<CompareOp::kEq>(v, n, lit, words);
    case CompareOp::kNe:
      return compare_to_bits<CompareOp::kNe>(v, n, lit, words);
    case CompareOp::kGt:
      return compare_to_bits<CompareOp::kGt>(v, n, lit, words);
    case CompareOp::kGe:
      return compare_to_bits<CompareOp::kGe>(v, n, lit, words);
  }
}

template <class V, class L>
void in_values(const V* v, size_t n, const std::vector<Literal>& values, L Literal::*member,
               uint8_t* t) {
  std::memset(t, 0, n);
  for (const Literal& lit : values) {
    const auto x = static_cast<V>(lit.*member);
    for (size_t i = 0; i < n; ++i) t[i] |= v[i] == x;
  }
}

// Calls fn(values pointer, literal member) with the column's C++ type.
template <class Fn>
void with_column_type(const ColumnBuffers& c, uint64_t begin, Fn&& fn) {
  const std::byte* d = c.data;
  switch (c.type) {
    case Type::kInt8:
      return fn(reinterpret_cast<const int8_t*>(d) + begin, &Literal::i);
    case Type::kInt16:
      return fn(reinterpret_cast<const int16_t*>(d) + begin, &Literal::i);
    case Type::kInt32:
      return fn(reinterpret_cast<const int32_t*>(d) + begin, &Literal::i);
    case Type::kInt64:
    case Type::kTimestamp:
      return fn(reinterpret_cast<const int64_t*>(d) + begin, &Literal::i);
    case Type::kUInt8:
      return fn(reinterpret_cast<const uint8_t*>(d) + begin, &Literal::u);
    case Type::kBool:
      return fn(reinterpret_cast<const uint8_t*>(d) + begin, &Literal::i);
    case Type::kUInt16:
      return fn(reinterpret_cast<const uint16_t*>(d) + begin, &Literal::u);
    case Type::kUInt32:
      return fn(reinterpret_cast<const uint32_t*>(d) + begin, &Literal::u);
    case Type::kUInt64:
      return fn(reinterpret_cast<const uint64_t*>(d) + begin, &Literal::u);
    case Type::kFloat32:
      return fn(reinterpret_cast<const float*>(d) + begin, &Literal::f);
    case Type::kFloat64:
      return fn(reinterpret_cast<const double*>(d) + begin, &Literal::f);
    case Type::kString:
    case Type::kBytes:
      break;
  }
}

// Row i of a string column; a damaged offset reads as empty, never out of bounds.
std::string_view string_at(const ColumnBuffers& c, uint64_t i) {
  const int64_t b = c.offsets[i];
  const int64_t e = c.offsets[i + 1];
  if (b < 0 || e < b || static_cast<uint64_t>(e) > c.data_bytes) return {};
  return {reinterpret_cast<const char*>(c.data) + b, static_cast<size_t>(e - b)};
}

bool compare_strings(std::string_view a, CompareOp op, std::string_view b) {
  const int c = a.compare(b);
  switch (op) {
    case CompareOp::kLt:
      return c < 0;
    case CompareOp::kLe:
      return c <= 0;
    case CompareOp::kEq:
      return c == 0;
    case CompareOp::kNe:
      return c != 0;
    case CompareOp::kGt:
      return c > 0;
    case CompareOp::kGe:
      return c >= 0;
  }
  return false;
}

// Turns a two-valued result into a three-valued one: null rows become unknown.
void apply_validity(const ColumnBuffers& c, uint64_t begin, size_t n, Truth* r) {
  if (c.validity == nullptr) return;
  const uint8_t* bits = c.validity + begin / 8;  // begin is a multiple of 64
  if (r->maybe_unknown) {
    for (size_t i = 0; i < n; ++i) {
      const uint8_t v = (bits[i >> 3] >> (i & 7)) & 1;
      r->t[i] &= v;
      r->f[i] &= v;
    }
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    const uint8_t v = (bits[i >> 3] >> (i & 7)) & 1;
    r->f[i] = v & (r->t[i] ^ 1);
    r->t[i] &= v;
  }
  r->maybe_unknown = true;
}

void materialise_false(Truth* r, size_t n) {
  if (r->maybe_unknown) return;
  for (size_t i = 0; i < n; ++i) r->f[i] = r->t[i] ^ 1;
  r->maybe_unknown = true;
}

class Evaluator {
 public:
  Evaluator(std::span<const ColumnBuffers> columns, uint8_t* scratch)
      : columns_(columns), scratch_(scratch) {}

  Truth eval(const ExprNode& node, uint64_t begin, size_t n, int level) {
    Truth r{scratch_ + (2 * level) * kChunkRows, scratch_ + (2 * level + 1) * kChunkRows, false};
    switch (node.kind) {
      case ExprNode::Kind::kCompare:
      case ExprNode::Kind::kIn:
        compare(node, begin, n, r.t);
        apply_validity(columns_[node.column], begin, n, &r);
        return r;
      case ExprNode::Kind::kIsNull:
        is_null(node, begin, n, r.t);
        return r;
      case ExprNode::Kind::kConstant:
        std::memset(r.t, node.constant ? 1 : 0, n);
        apply_validity(columns_[node.column], begin, n, &r);
        return r;
      case ExprNode::Kind::kNot:
        r = eval(*node.children[0], begin, n, level);
        if (r.maybe_unknown) {
          std::swap(r.t, r.f);
        } else {
          for (size_t i = 0; i < n; ++i) r.t[i] ^= 1;
        }
        return r;
      case ExprNode::Kind::kAnd:
      case ExprNode::Kind::kOr:
        return chain(node, begin, n, level);
    }
    return r;
  }

 private:
  Truth chain(const ExprNode& node, uint64_t begin, size_t n, int level) {
    const bool is_and = node.kind == ExprNode::Kind::kAnd;
    Truth acc = eval(*node.children[0], begin, n, level);
    for (size_t c = 1; c < node.children.size(); ++c) {
      Truth r = eval(*node.children[c], begin, n, level + 1);
      if (!acc.maybe_unknown && !r.maybe_unknown) {
        if (is_and) {
          for (size_t i = 0; i < n; ++i) acc.t[i] &= r.t[i];
        } else {
          for (size_t i = 0; i < n; ++i) acc.t[i] |= r.t[i];
        }
        continue;
      }
      materialise_false(&acc, n);
      materialise_false(&r, n);
      if (is_and) {
        for (size_t i = 0; i < n; ++i) acc.t[i] &= r.t[i];
        for (size_t i = 0; i < n; ++i) acc.f[i] |= r.f[i];
      } else {
        for (size_t i = 0; i < n; ++i) acc.t[i] |= r.t[i];
        for (size_t i = 0; i < n; ++i) acc.f[i] &= r.f[i];
      }
    }
    return acc;
  }

  void compare(const ExprNode& node, uint64_t begin, size_t n, uint8_t* t) {
    const ColumnBuffers& c = columns_[node.column];
    if (c.type == Type::kString) {
      for (size_t i = 0; i < n; ++i) {
        const std::string_view s = string_at(c, begin + i);
        bool hit = false;
        if (node.kind == ExprNode::Kind::kCompare) {
          hit = compare_strings(s, node.op, node.values[0].s);
        } else {
          for (const Literal& lit : node.values) hit = hit || s == lit.s;
        }
        t[i] = hit;
      }
      return;
    }
    with_column_type(c, begin, [&](const auto* v, auto member) {
      using V = std::remove_cv_t<std::remove_pointer_t<decltype(v)>>;
      if (node.kind == ExprNode::Kind::kIn) return in_values<V>(v, n, node.values, member, t);
      const auto lit = node.values[0].*member;
      if constexpr (std::is_floating_point_v<V>) {
        compare_values(v, n, node.op, lit, t);  // as float64: float32 widens exactly
      } else {
        compare_values(v, n, node.op, static_cast<V>(lit), t);  // in range: checked at parse
      }
    });
  }

  void is_null(const ExprNode& node, uint64_t begin, size_t n, uint8_t* t) {
    const ColumnBuffers& c = columns_[node.column];
    if (c.validity == nullptr) {
      std::memset(t, node.negated ? 1 : 0, n);
      return;
    }
    const uint8_t* bits = c.validity + begin / 8;
    const uint8_t flip = node.negated ? 0 : 1;
    for (size_t i = 0; i < n; ++i) t[i] = ((bits[i >> 3] >> (i & 7)) & 1) ^ flip;
  }

  std::span<const ColumnBuffers> columns_;
  uint8_t* scratch_;
};

// Packs n (a multiple of 8, or the tail) 0/1 bytes into bits, LSB first.
void pack_bits(const uint8_t* mask, size_t n, uint64_t* words) {
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    uint64_t w = 0;
    for (size_t b = 0; b < 8; ++b) {
      uint64_t x;
      std::memcpy(&x, mask + i + 8 * b, 8);
      // Each byte is 0 or 1: the multiply gathers byte j into bit 56 + j
      // without carries (the partial products land on distinct bits).
      w |= ((x * 0x0102040810204080ULL) >> 56) << (8 * b);
    }
    words[i / 64] = w;
  }
  if (i < n) {
    uint64_t w = 0;
    for (size_t j = 0; i + j < n; ++j) w |= uint64_t{mask[i + j]} << j;
    words[i / 64] = w;
  }
}

Status check_columns(const Schema& schema, std::span<const ColumnBuffers> columns, uint64_t rows) {
  if (columns.size() != schema.size()) {
    return Status::invalid_argument("the filter was parsed for " + std::to_string(schema.size()) +
                                    " columns, given " + std::to_string(columns.size()));
  }
  for (size_t i = 0; i < schema.size(); ++i) {
    const ColumnBuffers& c = columns[i];
    const bool short_data = schema[i].type != Type::kString &&
                            c.data_bytes / std::max<uint32_t>(fixed_width(c.type), 1) < rows;
    if (c.type != schema[i].type || c.rows != rows || short_data ||
        (c.type == Type::kString && c.offsets == nullptr && rows > 0)) {
      return Status::invalid_argument(
          "column '" + schema[i].name + "' given to the filter does not match its schema (" +
          std::string(type_name(schema[i].type)) + ", " + std::to_string(rows) + " rows)");
    }
  }
  return Status();
}

}  // namespace

ColumnBuffers ColumnBuffers::of(const ColumnView& view) {
  ColumnBuffers c;
  c.type = view.type();
  c.rows = view.length();
  // No nulls: no bitmap to read (the evaluator's two-valued fast path).
  c.validity = view.null_count() > 0 ? view.validity_bitmap().data() : nullptr;
  c.offsets = view.string_offsets().empty() ? nullptr : view.string_offsets().data();
  c.data = view.data().data();
  c.data_bytes = view.data().size();
  return c;
}

void Selection::truncate(uint64_t n) {
  if (count_ <= n) return;
  uint64_t seen = 0;
  size_t i = 0;
  for (; i < words_.size(); ++i) {
    const auto here = static_cast<uint64_t>(std::popcount(words_[i]));
    if (seen + here > n) break;
    seen += here;
  }
  // Word i holds the last kept rows: keep its lowest n - seen set bits.
  uint64_t kept = 0;
  for (uint64_t w = words_[i], left = n - seen; left > 0; --left, w &= w - 1) {
    kept |= w & (~w + 1);
  }
  words_[i] = kept;
  std::fill(words_.begin() + static_cast<std::ptrdiff_t>(i) + 1, words_.end(), 0);
  count_ = n;
}

Result<Selection> Filter::evaluate(std::span<const ColumnBuffers> columns, uint64_t rows,
                                   uint64_t max_kept) const {
  SHELF_RETURN_IF_ERROR(check_columns(impl_->input, columns, rows));
  Selection sel;
  sel.rows_ = rows;
  // With max_kept the bitmap grows a chunk at a time: a stop after the first
  // chunk allocates 64 words, not rows / 64 (2 MiB for 16M rows).
  sel.words_.assign(max_kept == UINT64_MAX || !impl_->root ? (rows + 63) / 64 : 0, 0);
  if (!impl_->root) {
    for (uint64_t i = 0; i < rows / 64; ++i) sel.words_[i] = ~uint64_t{0};
    if (rows % 64 != 0) sel.words_.back() = (uint64_t{1} << (rows % 64)) - 1;
    sel.count_ = rows;
    return sel;
  }
  const internal::ExprNode& root = *impl_->root;
  const bool int64_compare =
      root.kind == internal::ExprNode::Kind::kCompare &&
      (columns[root.column].type == Type::kInt64 || columns[root.column].type == Type::kTimestamp);
  std::vector<uint8_t> scratch(int64_compare ? 0
                                             : 2 * static_cast<size_t>(impl_->levels) * kChunkRows);
  Evaluator evaluator(columns, scratch.data());
  uint64_t kept = 0;
  for (uint64_t begin = 0; begin < rows; begin += kChunkRows) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunkRows, rows - begin));
    if (max_kept != UINT64_MAX) sel.words_.resize(begin / 64 + (n + 63) / 64);
    uint64_t* words = sel.words_.data() + begin / 64;
    if (int64_compare) {
      const ColumnBuffers& c = columns[root.column];
      compare_int64_to_bits(reinterpret_cast<const int64_t*>(c.data) + begin, n, root.op,
                            root.values[0].i, words);
      // A null row is unknown, so not kept: the validity bitmap, word for word.
      if (c.validity != nullptr) {
        for (size_t w = 0; w < (n + 63) / 64; ++w) {
          uint64_t valid = 0;
          std::memcpy(&valid, c.validity + begin / 8 + 8 * w,
                      std::min<size_t>(8, (n - 64 * w + 7) / 8));
          words[w] &= valid;
        }
      }
    } else {
      const Truth r = evaluator.eval(root, begin, n, 0);
      pack_bits(r.t, n, words);
    }
    if (max_kept == UINT64_MAX) continue;
    for (size_t w = 0; w < (n + 63) / 64; ++w)
      kept += static_cast<uint64_t>(std::popcount(words[w]));
    if (kept >= max_kept) break;
  }
  uint64_t count = 0;
  for (uint64_t w : sel.words_) count += static_cast<uint64_t>(std::popcount(w));
  sel.count_ = count;
  return sel;
}

Result<Selection> Filter::evaluate(const Dataset& dataset, uint64_t partition) const {
  if (dataset.schema() != impl_->input) {
    return Status::invalid_argument("dataset '" + dataset.name() +
                                    "' does not have the schema this filter was parsed against");
  }
  if (partition >= dataset.num_partitions()) {
    return Status::invalid_argument("dataset '" + dataset.name() + "' has no partition " +
                                    std::to_string(partition));
  }
  std::vector<ColumnBuffers> columns;
  columns.reserve(impl_->input.size());
  for (size_t c = 0; c < impl_->input.size(); ++c) {
    columns.push_back(ColumnBuffers::of(dataset.column(partition, c)));
  }
  return evaluate(columns, dataset.num_rows(partition));
}

}  // namespace shelf
