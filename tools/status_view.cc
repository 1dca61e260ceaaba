#include "tools/status_view.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <sys/ioctl.h>
#include <unistd.h>
#include <vector>

#include "base/units.h"
#include "tools/format.h"
#include "tools/holders.h"

namespace shelf::tools {

namespace {

// The three kinds of cell in a bar, and what fills the rest.
struct Glyphs {
  const char* used;
  const char* pending;
  const char* free;
};
constexpr Glyphs kUtf8Glyphs = {"\u2588", "\u2592", "\u00b7"};  // full block, shade, middle dot
constexpr Glyphs kAsciiGlyphs = {"#", "=", "."};

bool locale_is_utf8() {
  for (const char* name : {"LC_ALL", "LC_CTYPE", "LANG"}) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    const std::string_view value(v);
    return value.find("UTF-8") != std::string_view::npos ||
           value.find("utf8") != std::string_view::npos ||
           value.find("UTF8") != std::string_view::npos ||
           value.find("utf-8") != std::string_view::npos;
  }
  return false;
}

// Cells of `width` for `part` of `whole`, at least one when part > 0.
int cells(uint64_t part, uint64_t whole, int width) {
  if (whole == 0 || part == 0) return 0;
  const double share = static_cast<double>(part) / static_cast<double>(whole);
  return std::clamp(static_cast<int>(share * width + 0.5), 1, width);
}

std::string repeat(const char* glyph, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += glyph;
  return out;
}

std::string percent(uint64_t part, uint64_t whole) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%5.1f%%",
                whole ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0);
  return buf;
}

// `text` cut or padded to `width` bytes (names are UTF-8: cut at a character).
std::string fit(const std::string& text, size_t width) {
  if (text.size() <= width) return text + std::string(width - text.size(), ' ');
  size_t end = width >= 1 ? width - 1 : 0;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end) + "~" + std::string(width - end - 1, ' ');
}

std::string memory_lines(const MemoryStats& m, const Glyphs& g, int bar, int columns) {
  const uint64_t pending = std::min(m.pending_free_bytes, m.used_bytes);
  const int pending_cells = cells(pending, m.memory_limit, bar);
  const int used_cells =
      std::min(bar - pending_cells, cells(m.used_bytes - pending, m.memory_limit, bar));
  const int free_cells = bar - used_cells - pending_cells;
  std::string out = "memory   [" + repeat(g.used, used_cells) + repeat(g.pending, pending_cells) +
                    repeat(g.free, free_cells) + "] " + percent(m.used_bytes, m.memory_limit) +
                    " of " + format_bytes(m.memory_limit) + "\n";
  // The legend, wrapped onto more lines where the terminal is narrow.
  const std::string parts[] = {
      std::string(g.used) + " used " + format_bytes(m.used_bytes - pending),
      std::string(g.pending) + " freed, not yet back " + format_bytes(pending),
      std::string(g.free) + " free " + format_bytes(m.free_bytes())};
  std::string line = "        ";
  size_t line_width = line.size();  // in characters: each glyph is one
  for (const std::string& part : parts) {
    const size_t part_width = part.size() - std::strlen(g.used) + 1;
    if (line_width > 8 && line_width + 2 + part_width > static_cast<size_t>(columns)) {
      out += line + "\n";
      line = "        ";
      line_width = line.size();
    }
    line += " " + part + " ";
    line_width += part_width + 2;
  }
  out += line + "\n";
  return out;
}

}  // namespace

TerminalSize terminal_size(int fd) {
  TerminalSize size;
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    size.columns = ws.ws_col;
    size.rows = ws.ws_row > 0 ? ws.ws_row : size.rows;
  }
  size.utf8 = locale_is_utf8();
  return size;
}

std::string status_picture(const MemoryStats& m, const TerminalSize& size, int max_lines) {
  const Glyphs& g = size.utf8 ? kUtf8Glyphs : kAsciiGlyphs;
  const int columns = std::max(size.columns, 40);
  // "memory   [" + bar + "] 100.0% of 1023.99 GiB": 32 columns besides the bar.
  const int bar = std::clamp(columns - 34, 10, 100);
  std::string out = "shelfd pid " + std::to_string(m.daemon_pid) + " at " + m.socket_path +
                    ", up since " + format_time(m.started_ns - m.started_ns % 1000000000) + "\n";
  if (out.size() > static_cast<size_t>(columns) + 1) out = fit(out, columns - 1) + "\n";
  out += memory_lines(m, g, bar, columns);
  out += "datasets " + std::to_string(m.datasets.size()) + ", leases " +
         std::to_string(m.num_leases) + ", connections " + std::to_string(m.num_connections) +
         (m.quarantined.empty() ? "" : ", quarantined " + std::to_string(m.quarantined.size())) +
         "\n";
  std::vector<const DatasetInfo*> order;
  uint64_t total = 0;
  for (const DatasetInfo& d : m.datasets) {
    order.push_back(&d);
    total += d.memory_bytes;
  }
  std::sort(order.begin(), order.end(), [](const DatasetInfo* a, const DatasetInfo* b) {
    return a->memory_bytes != b->memory_bytes ? a->memory_bytes > b->memory_bytes
                                              : a->name < b->name;
  });
  // The biggest holder of unpublished memory last, as in the plain text.
  const std::string holder = biggest_unpublished_holder(m);
  const std::string footer = holder.empty() ? "" : "\n" + fit(holder, columns - 1) + "\n";
  if (order.empty()) return out + footer;
  // NAME [bar] share memory leases
  const size_t name_width = static_cast<size_t>(std::clamp(columns / 4, 8, 32));
  const int dataset_bar = std::max(columns - static_cast<int>(name_width) - 34, 5);
  size_t shown = order.size();
  // The lines above, this one and the footer's.
  const int lines_left = max_lines > 0 ? max_lines - 4 - (footer.empty() ? 0 : 2) : 0;
  if (max_lines > 0 && static_cast<int>(shown) > lines_left) {
    shown = static_cast<size_t>(std::max(lines_left - 1, 0));
  }
  out += "\n";
  for (size_t i = 0; i < shown; ++i) {
    const DatasetInfo& d = *order[i];
    const int n = cells(d.memory_bytes, total, dataset_bar);
    out += "  " + fit(d.name, name_width) + " [" + repeat(g.used, n) +
           std::string(static_cast<size_t>(dataset_bar - n), ' ') + "] " +
           percent(d.memory_bytes, total) + "  " + fit(format_bytes(d.memory_bytes), 10) +
           " leases " + std::to_string(d.leases) + "\n";
  }
  if (shown < order.size()) out += "  ... " + std::to_string(order.size() - shown) + " more\n";
  return out + footer;
}

WatchScreen::WatchScreen(int fd) : fd_(fd) {
  const std::string_view enter = "\x1b[?1049h\x1b[?25l";  // alternate screen, hide the cursor
  ssize_t n = ::write(fd_, enter.data(), enter.size());
  (void)n;
}

WatchScreen::~WatchScreen() {
  const std::string_view leave = "\x1b[?25h\x1b[?1049l";  // show the cursor, the screen back
  ssize_t n = ::write(fd_, leave.data(), leave.size());
  (void)n;
}

void WatchScreen::draw(const std::string& frame) {
  std::string out = "\x1b[H";  // home; then each line overwrites the last frame's
  size_t begin = 0;
  while (begin < frame.size()) {
    size_t end = frame.find('\n', begin);
    if (end == std::string::npos) end = frame.size();
    out.append(frame, begin, end - begin).append("\x1b[K\n");  // clear to the line's end
    begin = end + 1;
  }
  out += "\x1b[J";  // and below the last line, where a longer frame was
  for (size_t done = 0; done < out.size();) {
    ssize_t n = ::write(fd_, out.data() + done, out.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

}  // namespace shelf::tools
