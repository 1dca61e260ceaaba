#include "base/paths.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>

namespace shelf {

std::string default_socket_path() {
  if (const char* s = std::getenv("SHELF_SOCKET"); s != nullptr && *s != '\0') return s;
  if (const char* d = std::getenv("XDG_RUNTIME_DIR"); d != nullptr && *d != '\0') {
    return std::string(d) + "/shelf/shelf.sock";
  }
  return "/tmp/shelf-" + std::to_string(::getuid()) + "/shelf.sock";
}

std::string default_segment_name(std::string_view socket_path) {
  // FNV-1a 64: stable across builds and machines, which std::hash is not.
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : socket_path) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return "shelf-" + std::to_string(::getuid()) + "-" + hex;
}

}  // namespace shelf
