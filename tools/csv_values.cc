#include "tools/csv_values.h"

#include <map>
#include <optional>
#include <set>

#include "base/timestamp.h"

namespace shelf::tools {

bool parse_int64(std::string_view text, int64_t* out) { return parse_number(text, out); }
bool parse_float64(std::string_view text, double* out) { return parse_number(text, out); }

bool parse_bool(std::string_view text, bool* out) {
  text = trim(text);
  if (text == "true" || text == "True" || text == "TRUE") {
    *out = true;
    return true;
  }
  if (text == "false" || text == "False" || text == "FALSE") {
    *out = false;
    return true;
  }
  return false;
}

bool parse_timestamp(std::string_view text, int64_t* out_ns) {
  text = trim(text);
  if (parse_number(text, out_ns)) return true;  // nanoseconds since the epoch
  // Else the date text (base/timestamp.h) the filter language reads too.
  const std::optional<int64_t> ns = parse_timestamp_text(text);
  if (ns) *out_ns = *ns;
  return ns.has_value();
}

Result<std::map<std::string, Type>> parse_schema_option(std::string_view text) {
  std::map<std::string, Type> out;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    size_t colon = item.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
      return Status::invalid_argument("--schema: '" + std::string(item) +
                                      "' is not NAME:TYPE (e.g. balance:int64)");
    }
    auto type = parse_type(item.substr(colon + 1));
    if (!type || *type == Type::kBytes) {
      return Status::invalid_argument(
          "--schema: unknown type '" + std::string(item.substr(colon + 1)) +
          "'; use int8..int64, uint8..uint64, float32, float64, bool, string or timestamp");
    }
    const std::string name(item.substr(0, colon));
    if (out.count(name)) {
      return Status::invalid_argument("--schema names column '" + name +
                                      "' twice; give each column one type");
    }
    out[name] = *type;
  }
  return out;
}

}  // namespace shelf::tools
