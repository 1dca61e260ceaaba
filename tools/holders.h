// Who holds what: the CLI's views of MemoryStats::clients (shelf status
// --clients, the last line of shelf status, the holders in shelf info).
// Every text here escapes what the processes and datasets named themselves.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <shelf/client.h>

namespace shelf::tools {

// The orders of `shelf status --clients --sort`.
enum class ClientOrder {
  kPid,          // ascending
  kBytes,        // held_bytes, largest first
  kUnpublished,  // unpublished_bytes, largest first
  kWriting,      // writing_bytes, largest first
  kConnected,    // oldest first
};
// "pid", "bytes", ...; nullopt for anything else.
std::optional<ClientOrder> parse_client_order(std::string_view word);
inline constexpr const char* kClientOrders = "pid, bytes, unpublished, writing or connected";

// A table, a row per process, in `order`; commands cut to fit `columns`.
std::string clients_table(const std::vector<ClientInfo>& clients, ClientOrder order, int columns);
// A JSON array of the processes, in `order`, with what each holds.
std::string clients_json(const std::vector<ClientInfo>& clients, ClientOrder order);
// "pid 42 (python3 job.py) alone holds 1.5 GiB of unpublished datasets ...",
// or "pid 42 (...) and 2 others hold ...":
// the process whose exit would give back the most unpublished memory, or,
// when every such dataset is shared, the one holding the most of it; empty
// when no unpublished dataset is held.
std::string biggest_unpublished_holder(const MemoryStats& stats);
// The processes, but `self`, that hold the published dataset `name`, and
// those still holding an earlier version of it (unpublished or replaced).
struct Holders {
  std::vector<const ClientInfo*> current;
  std::vector<const ClientInfo*> earlier;
};
Holders holders_of(const MemoryStats& stats, std::string_view name, uint32_t self);
// "pid 42 (alice): python3 job.py, 2 leases": one holder for shelf info.
std::string holder_line(const ClientInfo& client, std::string_view name, bool published);
// The same holders as a JSON array (pid, uid, command, connections, leases).
std::string holders_json(const std::vector<const ClientInfo*>& holders, std::string_view name,
                         bool published);

// What each user uses against its quota (shelfd --user-quota): a table
// (USER, UID, USED, QUOTA, OF QUOTA), and a JSON array of {uid, user,
// used_bytes, quota_bytes (null for none)}.
std::string users_table(const std::vector<UserUsageInfo>& users);
std::string users_json(const std::vector<UserUsageInfo>& users);

}  // namespace shelf::tools
