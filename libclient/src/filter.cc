// Filter::parse: a hand-written recursive-descent parser over a token list.
// The grammar is in include/shelf/filter.h. Every error says where (the
// number of characters before it) and what was expected there.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

#include "base/timestamp.h"
#include "base/utf8.h"
#include "libclient/src/filter_expr.h"

namespace shelf {
namespace {

using internal::CompareOp;
using internal::ExprNode;
using internal::Literal;

struct Token {
  enum class Kind : uint8_t { kName, kQuotedName, kInteger, kFloat, kString, kSymbol, kEnd };
  Kind kind;
  size_t pos;        // characters (not bytes) of the expression before the token
  std::string text;  // as written; for strings and quoted names, unquoted
  bool is_keyword(std::string_view word) const {
    if (kind != Kind::kName || text.size() != word.size()) return false;
    for (size_t i = 0; i < word.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(text[i])) != word[i]) return false;
    }
    return true;
  }
  bool is_symbol(std::string_view s) const { return kind == Kind::kSymbol && text == s; }
};

std::string at(size_t pos) { return " at column " + std::to_string(pos); }

// What a token is, for "expected X, found Y" messages.
std::string describe(const Token& t) {
  switch (t.kind) {
    case Token::Kind::kEnd:
      return "the end of the expression";
    case Token::Kind::kString:
      return "the string '" + t.text + "'";
    case Token::Kind::kQuotedName:
      return "\"" + t.text + "\"";
    default:
      return "'" + t.text + "'";
  }
}

bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Counts characters of UTF-8 text up to a byte offset, for the "column N"
// of messages. Offsets must come in ascending order: one pass over the text.
class CharacterCounter {
 public:
  explicit CharacterCounter(std::string_view text) : text_(text) {}
  size_t characters_before(size_t byte) {
    for (; byte_ < byte && byte_ < text_.size(); ++byte_) {
      // Every byte but a continuation byte (10xxxxxx) starts a character.
      if ((static_cast<unsigned char>(text_[byte_]) & 0xC0) != 0x80) ++characters_;
    }
    return characters_;
  }

 private:
  std::string_view text_;
  size_t byte_ = 0;
  size_t characters_ = 0;
};

// The character starting at text[i] (its lead byte and the continuation
// bytes the lead announces), printable: a bad byte shows as \xNN.
std::string character_at(std::string_view text, size_t i) {
  const auto lead = static_cast<unsigned char>(text[i]);
  const size_t length = lead >= 0xF0 && lead < 0xF8   ? 4
                        : lead >= 0xE0 && lead < 0xF0 ? 3
                        : lead >= 0xC0 && lead < 0xE0 ? 2
                                                      : 1;
  size_t end = i + 1;
  while (end < text.size() && end - i < length &&
         (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) {
    ++end;
  }
  return escape_unprintable(text.substr(i, end - i));
}

// Reads a quoted string or name starting at text[*i] (the quote); a doubled
// quote stands for one. `column`: where the quote is, in characters.
Status lex_quoted(std::string_view text, size_t* i, size_t column, std::string* out) {
  const char quote = text[*i];
  for (size_t j = *i + 1; j < text.size(); ++j) {
    if (text[j] != quote) {
      out->push_back(text[j]);
    } else if (j + 1 < text.size() && text[j + 1] == quote) {
      out->push_back(quote);
      ++j;
    } else {
      *i = j + 1;
      return Status();
    }
  }
  return Status::invalid_argument(std::string(quote == '\'' ? "string" : "quoted column name") +
                                  " starting" + at(column) + " has no closing " + quote);
}

size_t lex_number(std::string_view text, size_t i, bool* is_float) {
  size_t j = i;
  if (text[j] == '-' || text[j] == '+') ++j;
  while (j < text.size() && is_digit(text[j])) ++j;
  if (j < text.size() && text[j] == '.') {
    *is_float = true;
    ++j;
    while (j < text.size() && is_digit(text[j])) ++j;
  }
  if (j < text.size() && (text[j] == 'e' || text[j] == 'E')) {
    size_t k = j + 1;
    if (k < text.size() && (text[k] == '-' || text[k] == '+')) ++k;
    if (k < text.size() && is_digit(text[k])) {
      *is_float = true;
      j = k;
      while (j < text.size() && is_digit(text[j])) ++j;
    }
  }
  return j;
}

Result<std::vector<Token>> lex(std::string_view text) {
  std::vector<Token> tokens;
  CharacterCounter columns(text);
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    Token t{Token::Kind::kSymbol, columns.characters_before(i), {}};
    const bool number_start =
        is_digit(c) || ((c == '-' || c == '+' || c == '.') && i + 1 < text.size() &&
                        (is_digit(text[i + 1]) || text[i + 1] == '.'));
    if (is_name_start(c)) {
      size_t j = i;
      while (j < text.size() && is_name_char(text[j])) ++j;
      t.kind = Token::Kind::kName;
      t.text = std::string(text.substr(i, j - i));
      i = j;
    } else if (c == '\'' || c == '"') {
      t.kind = c == '\'' ? Token::Kind::kString : Token::Kind::kQuotedName;
      SHELF_RETURN_IF_ERROR(lex_quoted(text, &i, t.pos, &t.text));
    } else if (number_start) {
      bool is_float = false;
      const size_t j = lex_number(text, i, &is_float);
      t.kind = is_float ? Token::Kind::kFloat : Token::Kind::kInteger;
      t.text = std::string(text.substr(i, j - i));
      i = j;
    } else {
      static constexpr std::string_view kTwo[] = {"<=", ">=", "==", "!=", "<>"};
      const std::string_view two = text.substr(i, 2);
      const bool is_two = std::find(std::begin(kTwo), std::end(kTwo), two) != std::end(kTwo);
      if (!is_two && std::string_view("<>=(),").find(c) == std::string_view::npos) {
        return Status::invalid_argument("unexpected character '" + character_at(text, i) + "'" +
                                        at(t.pos));
      }
      t.text = std::string(text.substr(i, is_two ? 2 : 1));
      i += t.text.size();
    }
    tokens.push_back(std::move(t));
  }
  tokens.push_back(Token{Token::Kind::kEnd, columns.characters_before(text.size()), {}});
  return tokens;
}

bool is_unsigned_integer(Type t) {
  return t == Type::kUInt8 || t == Type::kUInt16 || t == Type::kUInt32 || t == Type::kUInt64;
}
bool is_float(Type t) { return t == Type::kFloat32 || t == Type::kFloat64; }

// An integer literal against an integer column: -1 below the column's
// range, +1 above it, 0 inside (and *lit holds it).
int place_integer(Type type, bool negative, uint64_t magnitude, Literal* lit) {
  const int bits = static_cast<int>(fixed_width(type) * 8);
  if (is_unsigned_integer(type)) {
    if (negative && magnitude > 0) return -1;
    const uint64_t max = bits == 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
    if (magnitude > max) return 1;
    lit->u = magnitude;
    return 0;
  }
  const uint64_t max = (uint64_t{1} << (bits - 1)) - 1;
  if (negative) {
    if (magnitude > max + 1) return -1;
    lit->i = magnitude == max + 1 ? std::numeric_limits<int64_t>::min() >> (64 - bits)
                                  : -static_cast<int64_t>(magnitude);
    return 0;
  }
  if (magnitude > max) return 1;
  lit->i = static_cast<int64_t>(magnitude);
  return 0;
}

// True for every row when the literal is beyond every value (side = +1) or
// below every value (side = -1).
bool constant_outcome(CompareOp op, int side) {
  switch (op) {
    case CompareOp::kLt:
    case CompareOp::kLe:
      return side > 0;
    case CompareOp::kGt:
    case CompareOp::kGe:
      return side < 0;
    case CompareOp::kEq:
      return false;
    case CompareOp::kNe:
      return true;
  }
  return false;
}

class Parser {
 public:
  Parser(const Schema& schema, std::vector<Token> tokens)
      : schema_(schema), tokens_(std::move(tokens)) {}

  Result<std::unique_ptr<ExprNode>> parse_all() {
    SHELF_ASSIGN_OR_RETURN(std::unique_ptr<ExprNode> root, parse_or());
    if (peek().kind != Token::Kind::kEnd) {
      return error("expected 'and', 'or' or the end of the expression, found " + describe(peek()) +
                   at(peek().pos));
    }
    return root;
  }

 private:
  const Token& peek() const { return tokens_[pos_]; }
  const Token& next() { return tokens_[pos_++]; }
  static Status error(const std::string& message) { return Status::invalid_argument(message); }

  Result<std::unique_ptr<ExprNode>> parse_or() { return parse_chain(ExprNode::Kind::kOr, "or"); }

  // a OP b OP c ... as one n-ary node; below `or` come `and` chains.
  Result<std::unique_ptr<ExprNode>> parse_chain(ExprNode::Kind kind, std::string_view word) {
    auto parse_operand = [&]() -> Result<std::unique_ptr<ExprNode>> {
      if (kind == ExprNode::Kind::kOr) return parse_chain(ExprNode::Kind::kAnd, "and");
      return parse_not();
    };
    SHELF_ASSIGN_OR_RETURN(std::unique_ptr<ExprNode> first, parse_operand());
    if (!peek().is_keyword(word)) return first;
    auto chain = std::make_unique<ExprNode>();
    chain->kind = kind;
    chain->children.push_back(std::move(first));
    while (peek().is_keyword(word)) {
      next();
      SHELF_ASSIGN_OR_RETURN(std::unique_ptr<ExprNode> operand, parse_operand());
      chain->children.push_back(std::move(operand));
    }
    return chain;
  }

  Result<std::unique_ptr<ExprNode>> parse_not() {
    if (++depth_ > kMaxFilterNesting) {
      return error("the expression nests more than " + std::to_string(kMaxFilterNesting) +
                   " levels of parentheses and 'not'" + at(peek().pos));
    }
    Result<std::unique_ptr<ExprNode>> result = parse_not_inner();
    --depth_;
    return result;
  }

  Result<std::unique_ptr<ExprNode>> parse_not_inner() {
    if (peek().is_keyword("not")) {
      next();
      SHELF_ASSIGN_OR_RETURN(std::unique_ptr<ExprNode> operand, parse_not());
      auto node = std::make_unique<ExprNode>();
      node->kind = ExprNode::Kind::kNot;
      node->children.push_back(std::move(operand));
      return node;
    }
    if (peek().is_symbol("(")) {
      next();
      SHELF_ASSIGN_OR_RETURN(std::unique_ptr<ExprNode> inner, parse_or());
      if (!peek().is_symbol(")")) {
        return error("expected ')' or an operator, found " + describe(peek()) + at(peek().pos));
      }
      next();
      return inner;
    }
    return parse_predicate();
  }

  Result<size_t> parse_column() {
    const Token& t = peek();
    const bool keyword = t.is_keyword("and") || t.is_keyword("or") || t.is_keyword("not") ||
                         t.is_keyword("in") || t.is_keyword("is");
    if ((t.kind != Token::Kind::kName && t.kind != Token::Kind::kQuotedName) || keyword) {
      return error("expected a column name, found " + describe(t) + at(t.pos));
    }
    next();
    for (size_t i = 0; i < schema_.size(); ++i) {
      if (schema_[i].name == t.text) return i;
    }
    return error("unknown column '" + t.text + "'" + at(t.pos) + "; the columns are " +
                 column_list());
  }

  std::string column_list() const {
    std::string names;
    for (const Field& f : schema_) names += (names.empty() ? "" : ", ") + f.name;
    return names;
  }

  Result<std::unique_ptr<ExprNode>> parse_predicate();
  Result<std::unique_ptr<ExprNode>> parse_in(size_t column, bool negated);
  // Reads one value for `column`, after the token `after` (for messages).
  // *side: -1/+1 when an integer lies below/above the column's range.
  Status parse_value(size_t column, const Token& after, Literal* lit, int* side);
  Status convert_integer(size_t column, const Token& t, Literal* lit, int* side);
  Status mismatch(size_t column, const Token& t, const std::string& hint = "") const {
    const Field& f = schema_[column];
    return error("column '" + f.name + "' is " + std::string(type_name(f.type)) +
                 ", so it cannot be compared with " + describe(t) + at(t.pos) + hint);
  }

  const Schema& schema_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
};

Result<std::unique_ptr<ExprNode>> Parser::parse_predicate() {
  SHELF_ASSIGN_OR_RETURN(size_t column, parse_column());
  const Token& col_token = tokens_[pos_ - 1];
  auto node = std::make_unique<ExprNode>();
  node->column = column;
  if (peek().is_keyword("is")) {
    const Token& is = next();
    node->kind = ExprNode::Kind::kIsNull;
    if (peek().is_keyword("not")) {
      next();
      node->negated = true;
    }
    if (!peek().is_keyword("null")) {
      return error("expected 'null' or 'not null' after '" + is.text + "', found " +
                   describe(peek()) + at(peek().pos));
    }
    next();
    return node;
  }
  if (peek().is_keyword("in")) return parse_in(column, false);
  if (peek().is_keyword("not")) {
    next();
    if (!peek().is_keyword("in")) {
      return error("expected 'in' after 'not', found " + describe(peek()) + at(peek().pos));
    }
    return parse_in(column, true);
  }
  static const std::pair<std::string_view, CompareOp> kOps[] = {
      {"<", CompareOp::kLt}, {"<=", CompareOp::kLe}, {"==", CompareOp::kEq},
      {"=", CompareOp::kEq}, {"!=", CompareOp::kNe}, {"<>", CompareOp::kNe},
      {">", CompareOp::kGt}, {">=", CompareOp::kGe}};
  const Token& op = peek();
  const auto* found = std::find_if(std::begin(kOps), std::end(kOps),
                                   [&](const auto& o) { return op.is_symbol(o.first); });
  if (found == std::end(kOps)) {
    return error("expected an operator (<, <=, ==, !=, >, >=, in, is) after column '" +
                 col_token.text + "', found " + describe(op) + at(op.pos));
  }
  next();
  node->kind = ExprNode::Kind::kCompare;
  node->op = found->second;
  Literal lit;
  int side = 0;
  SHELF_RETURN_IF_ERROR(parse_value(column, op, &lit, &side));
  if (side != 0) {
    node->kind = ExprNode::Kind::kConstant;
    node->constant = constant_outcome(node->op, side);
  }
  node->values.push_back(std::move(lit));
  return node;
}

Result<std::unique_ptr<ExprNode>> Parser::parse_in(size_t column, bool negated) {
  const Token& in = next();
  if (!peek().is_symbol("(")) {
    return error("expected '(' after '" + in.text + "', found " + describe(peek()) +
                 at(peek().pos));
  }
  const Token* after = &next();
  auto node = std::make_unique<ExprNode>();
  node->kind = ExprNode::Kind::kIn;
  node->column = column;
  while (true) {
    Literal lit;
    int side = 0;
    SHELF_RETURN_IF_ERROR(parse_value(column, *after, &lit, &side));
    if (side == 0) node->values.push_back(std::move(lit));  // out of range: equals no row
    if (peek().is_symbol(")")) break;
    if (!peek().is_symbol(",")) {
      return error("expected ',' or ')' in the list after '" + in.text + "', found " +
                   describe(peek()) + at(peek().pos));
    }
    after = &next();
  }
  next();
  if (!negated) return node;
  auto not_node = std::make_unique<ExprNode>();
  not_node->kind = ExprNode::Kind::kNot;
  not_node->children.push_back(std::move(node));
  return not_node;
}

Status Parser::parse_value(size_t column, const Token& after, Literal* lit, int* side) {
  const Token& t = peek();
  const Type type = schema_[column].type;
  const bool is_bool_word = t.is_keyword("true") || t.is_keyword("false");
  if (t.is_keyword("null")) {
    return error("a comparison with null is never true" + at(t.pos) +
                 "; write 'is null' or 'is not null'");
  }
  if (t.kind != Token::Kind::kInteger && t.kind != Token::Kind::kFloat &&
      t.kind != Token::Kind::kString && !is_bool_word) {
    return error("expected a value after '" + after.text + "'" + at(t.pos) + ", found " +
                 describe(t));
  }
  next();
  if (type == Type::kBool) {
    if (!is_bool_word) return mismatch(column, t, "; use true or false");
    lit->i = t.is_keyword("true") ? 1 : 0;
    return Status();
  }
  if (is_bool_word) return mismatch(column, t);
  if (type == Type::kString) {
    if (t.kind != Token::Kind::kString) return mismatch(column, t, "; quote strings: 'text'");
    lit->s = t.text;
    return Status();
  }
  if (type == Type::kTimestamp && t.kind == Token::Kind::kString) {
    std::optional<int64_t> ns = parse_timestamp_text(t.text);
    if (!ns) {
      return error("'" + t.text + "'" + at(t.pos) + " is not a timestamp for column '" +
                   schema_[column].name +
                   "'; write '2024-01-31', '2024-01-31T12:00:00.5Z' or integer nanoseconds");
    }
    lit->i = *ns;
    return Status();
  }
  if (t.kind == Token::Kind::kString) return mismatch(column, t);
  if (is_float(type)) {
    const char* end = t.text.data() + t.text.size();
    const char* begin = t.text.data() + (t.text[0] == '+' ? 1 : 0);
    auto [p, ec] = std::from_chars(begin, end, lit->f);
    if (ec != std::errc() || p != end) {
      return error("'" + t.text + "'" + at(t.pos) + " is not a number float64 can hold");
    }
    return Status();
  }
  if (t.kind == Token::Kind::kFloat) {
    return mismatch(column, t,
                    type == Type::kTimestamp
                        ? "; write '2024-01-31', '2024-01-31T12:00:00.5Z' or integer nanoseconds"
                        : "; integer columns take integer values");
  }
  return convert_integer(column, t, lit, side);
}

Status Parser::convert_integer(size_t column, const Token& t, Literal* lit, int* side) {
  const bool negative = t.text[0] == '-';
  const size_t start = (t.text[0] == '-' || t.text[0] == '+') ? 1 : 0;
  uint64_t magnitude = 0;
  const char* end = t.text.data() + t.text.size();
  auto [p, ec] = std::from_chars(t.text.data() + start, end, magnitude);
  if (ec != std::errc() || p != end) {
    return error("integer " + t.text + at(t.pos) + " does not fit in 64 bits");
  }
  *side = place_integer(schema_[column].type, negative, magnitude, lit);
  return Status();
}

Result<std::vector<size_t>> resolve_columns(const Schema& schema,
                                            std::span<const std::string> columns) {
  std::vector<size_t> indices;
  if (columns.empty()) {
    for (size_t i = 0; i < schema.size(); ++i) indices.push_back(i);
    return indices;
  }
  for (const std::string& name : columns) {
    auto it =
        std::find_if(schema.begin(), schema.end(), [&](const Field& f) { return f.name == name; });
    if (it == schema.end()) {
      std::string names;
      for (const Field& f : schema) names += (names.empty() ? "" : ", ") + f.name;
      return Status::invalid_argument("unknown column '" + name +
                                      "' in the column list; the columns are " + names);
    }
    const size_t index = static_cast<size_t>(it - schema.begin());
    if (std::find(indices.begin(), indices.end(), index) != indices.end()) {
      return Status::invalid_argument("column '" + name + "' is listed twice in the column list");
    }
    indices.push_back(index);
  }
  return indices;
}

}  // namespace

int internal::scratch_levels(const ExprNode& node) {
  int deepest = 0;
  for (size_t i = 0; i < node.children.size(); ++i) {
    // The first child writes into this node's level, the others one below.
    deepest = std::max(deepest, scratch_levels(*node.children[i]) + (i == 0 ? 0 : 1));
  }
  return std::max(deepest, 1);
}

Result<Filter> Filter::parse(const Schema& schema, std::string_view where,
                             std::span<const std::string> columns, std::optional<uint64_t> limit) {
  if (is_bytes_schema(schema)) {
    return Status::invalid_argument(
        "a raw-bytes dataset has no columns to filter or select; copy it instead");
  }
  if (where.size() > kMaxFilterBytes) {
    return Status::invalid_argument("the expression is " + std::to_string(where.size()) +
                                    " bytes; the most is " + std::to_string(kMaxFilterBytes));
  }
  auto impl = std::make_unique<Impl>();
  impl->input = schema;
  impl->limit = limit;
  SHELF_ASSIGN_OR_RETURN(impl->output_columns, resolve_columns(schema, columns));
  for (size_t i : impl->output_columns) impl->output.push_back(schema[i]);
  SHELF_ASSIGN_OR_RETURN(std::vector<Token> tokens, lex(where));
  if (tokens.size() > 1) {
    Parser parser(schema, std::move(tokens));
    SHELF_ASSIGN_OR_RETURN(impl->root, parser.parse_all());
    impl->levels = internal::scratch_levels(*impl->root);
  }
  return Filter(std::move(impl));
}

Filter::Filter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Filter::Filter(Filter&&) noexcept = default;
Filter& Filter::operator=(Filter&&) noexcept = default;
Filter::~Filter() = default;

const Schema& Filter::input_schema() const { return impl_->input; }
const Schema& Filter::output_schema() const { return impl_->output; }
const std::vector<size_t>& Filter::output_columns() const { return impl_->output_columns; }
std::optional<uint64_t> Filter::limit() const { return impl_->limit; }
bool Filter::has_predicate() const { return impl_->root != nullptr; }

}  // namespace shelf
