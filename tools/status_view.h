// `shelf status` on a terminal: memory as a bar (used / freed but not yet
// back / free, against the limit) and each dataset as a bar of its share of
// the datasets' memory; and `--watch` redrawing that in place, as top does.
//
// Not thread-safe: a WatchScreen owns the terminal while it lives; one per
// process.
#pragma once

#include <string>

#include <shelf/client.h>

namespace shelf::tools {

struct TerminalSize {
  int columns = 80;
  int rows = 24;
  bool utf8 = true;  // block characters; else ASCII ('#', '=', '.')
};
// The size of the terminal on `fd` (80x24 when it cannot say) and whether the
// locale ($LC_ALL, $LC_CTYPE, $LANG) is UTF-8.
TerminalSize terminal_size(int fd);

// The status as a picture, lines ending in '\n', none wider than
// size.columns. `max_lines` > 0 cuts the dataset list to fit (with a
// "... N more" line), for --watch.
std::string status_picture(const MemoryStats& stats, const TerminalSize& size, int max_lines = 0);

// A full-screen view that redraws in place: the alternate screen (the
// terminal's own contents come back afterwards), no cursor, and each frame
// written over the last from the top-left corner, every line cleared only to
// its end and the rest of the screen below the last, so nothing blinks. The
// destructor (also after Ctrl-C: the caller stops its loop on SIGINT) shows
// the cursor again and leaves the alternate screen.
class WatchScreen {
 public:
  explicit WatchScreen(int fd);
  ~WatchScreen();
  WatchScreen(const WatchScreen&) = delete;
  WatchScreen& operator=(const WatchScreen&) = delete;
  void draw(const std::string& frame);

 private:
  int fd_;
};

}  // namespace shelf::tools
