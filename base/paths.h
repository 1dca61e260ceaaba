// Where a daemon and its clients meet, by default.
#pragma once

#include <string>
#include <string_view>

namespace shelf {

// $SHELF_SOCKET if set and non-empty; else $XDG_RUNTIME_DIR/shelf/shelf.sock
// if XDG_RUNTIME_DIR is set; else /tmp/shelf-<uid>/shelf.sock.
std::string default_socket_path();
// The segment name a daemon serving `socket_path` uses unless told otherwise:
// "shelf-<uid>-<16 hex digits of a hash of the path>", so two daemons on two
// sockets never share a segment by accident.
std::string default_segment_name(std::string_view socket_path);

}  // namespace shelf
