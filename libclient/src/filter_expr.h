// The parsed form of a Filter's predicate (include/shelf/filter.h), shared by
// the parser (filter.cc) and the evaluator (filter_eval.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <shelf/filter.h>

namespace shelf::internal {

enum class CompareOp : uint8_t { kLt, kLe, kEq, kNe, kGt, kGe };

// A literal already converted to its column's domain: `i` for signed
// integers, bool and timestamp, `u` for unsigned integers, `f` for floats,
// `s` for strings. The parser resolves integer literals outside a column's
// range into kConstant nodes, so the evaluator compares in the column's own
// type (one vectorisable loop per type and operator).
struct Literal {
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  std::string s;
};

struct ExprNode {
  enum class Kind : uint8_t {
    kCompare,   // column op values[0]
    kIn,        // column == any of values (empty: false for every valid row)
    kIsNull,    // column is null (negated: is not null)
    kConstant,  // `constant` for every valid row of column, unknown for its nulls
    kAnd,       // every child (n-ary, so long chains do not nest)
    kOr,        // any child
    kNot,       // children[0]
  };
  Kind kind = Kind::kConstant;
  size_t column = 0;
  CompareOp op = CompareOp::kEq;
  bool negated = false;
  bool constant = false;
  std::vector<Literal> values;
  std::vector<std::unique_ptr<ExprNode>> children;
};

// Levels of scratch masks the evaluation of `node` needs (its depth + 1).
int scratch_levels(const ExprNode& node);

}  // namespace shelf::internal

namespace shelf {

struct Filter::Impl {
  Schema input;
  Schema output;
  std::vector<size_t> output_columns;
  std::optional<uint64_t> limit;
  std::unique_ptr<internal::ExprNode> root;  // null: every row
  int levels = 0;
};

}  // namespace shelf
