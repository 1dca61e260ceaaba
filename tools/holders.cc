#include "tools/holders.h"

#include <algorithm>
#include <cstdio>
#include <pwd.h>
#include <set>

#include "base/units.h"
#include "base/utf8.h"
#include "tools/format.h"

namespace shelf::tools {

namespace {

std::string user_name(uint32_t uid) {
  passwd pw{};
  passwd* found = nullptr;
  char buf[1024];
  if (::getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return std::to_string(uid);
}

// What a row says the process is: its command line, else its client's name.
std::string command_of(const ClientInfo& c) {
  if (!c.command.empty()) return escape_unprintable(c.command);
  if (!c.client_name.empty()) return "(" + escape_unprintable(c.client_name) + ")";
  return "(?)";
}

// command_of() cut for a line of prose: its start and its end, which tell
// one job from another more often than the middle does.
std::string short_command(const ClientInfo& c) {
  constexpr size_t kHead = 28, kTail = 29;
  std::string text = command_of(c);
  if (text.size() <= kHead + 3 + kTail) return text;
  auto boundary = [&](size_t at) {  // not inside a UTF-8 sequence
    while (at > 0 && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) --at;
    return at;
  };
  const size_t head = boundary(kHead), tail = boundary(text.size() - kTail);
  return text.substr(0, head) + "..." + text.substr(tail);
}

// `c`'s leases of `name`: of the published dataset, or of earlier versions.
uint32_t leases_of(const ClientInfo& c, std::string_view name, bool published) {
  uint32_t leases = 0;
  for (const HeldDataset& h : c.held) {
    if (h.name == name && h.published == published) leases += h.leases;
  }
  return leases;
}

std::vector<const ClientInfo*> ordered(const std::vector<ClientInfo>& clients, ClientOrder order) {
  std::vector<const ClientInfo*> rows;
  for (const ClientInfo& c : clients) rows.push_back(&c);
  auto key = [order](const ClientInfo* c) -> uint64_t {
    switch (order) {
      case ClientOrder::kBytes:
        return c->held_bytes;
      case ClientOrder::kUnpublished:
        return c->unpublished_bytes;
      case ClientOrder::kWriting:
        return c->writing_bytes;
      case ClientOrder::kPid:
      case ClientOrder::kConnected:
        return 0;
    }
    return 0;
  };
  std::stable_sort(rows.begin(), rows.end(), [&](const ClientInfo* a, const ClientInfo* b) {
    if (order == ClientOrder::kPid) return a->pid < b->pid;
    // Restart holds (never connected: 0) after the connected ones.
    if (order == ClientOrder::kConnected) {
      return (a->connected_ns == 0 ? INT64_MAX : a->connected_ns) <
             (b->connected_ns == 0 ? INT64_MAX : b->connected_ns);
    }
    return key(a) > key(b);
  });
  return rows;
}

}  // namespace

std::optional<ClientOrder> parse_client_order(std::string_view word) {
  if (word == "pid") return ClientOrder::kPid;
  if (word == "bytes") return ClientOrder::kBytes;
  if (word == "unpublished") return ClientOrder::kUnpublished;
  if (word == "writing") return ClientOrder::kWriting;
  if (word == "connected") return ClientOrder::kConnected;
  return std::nullopt;
}

std::string clients_table(const std::vector<ClientInfo>& clients, ClientOrder order, int columns) {
  std::vector<std::vector<std::string>> rows;
  for (const ClientInfo* c : ordered(clients, order)) {
    rows.push_back(
        {std::to_string(c->pid), escape_unprintable(user_name(c->uid)),
         c->connections == 0 ? "before restart"
                             : format_time(c->connected_ns - c->connected_ns % 1000000000),
         std::to_string(c->connections), std::to_string(c->datasets_held),
         std::to_string(c->leases), format_bytes(c->held_bytes), format_bytes(c->unpublished_bytes),
         format_bytes(c->writing_bytes), command_of(*c)});
  }
  std::string table =
      render_table({"PID", "USER", "CONNECTED", "CONN", "DATASETS", "LEASES", "HOLDS",
                    "ONLY IT HOLDS", "WRITING", "COMMAND"},
                   rows, {true, false, false, true, true, true, true, true, true, false});
  if (columns <= 0) return table;
  // The command is last: cut each line to the terminal rather than wrap.
  std::string out;
  for (size_t start = 0; start < table.size();) {
    size_t end = table.find('\n', start);
    if (end == std::string::npos) end = table.size();
    std::string line = table.substr(start, end - start);
    if (line.size() > static_cast<size_t>(columns)) {
      line = line.substr(0, static_cast<size_t>(std::max(columns - 3, 0))) + "...";
    }
    out += line + "\n";
    start = end + 1;
  }
  return out;
}

std::string clients_json(const std::vector<ClientInfo>& clients, ClientOrder order) {
  std::string out = "[";
  bool first = true;
  for (const ClientInfo* c : ordered(clients, order)) {
    out +=
        std::string(first ? "" : ",") + "{\"pid\":" + std::to_string(c->pid) +
        ",\"uid\":" + std::to_string(c->uid) + ",\"user\":" + json_string(user_name(c->uid)) +
        ",\"command\":" + json_string(c->command) +
        ",\"client_name\":" + json_string(c->client_name) + ",\"connected\":" +
        (c->connected_ns == 0 ? std::string("null") : json_string(format_time(c->connected_ns))) +
        ",\"connections\":" + std::to_string(c->connections) +
        ",\"leases\":" + std::to_string(c->leases) +
        ",\"datasets_held\":" + std::to_string(c->datasets_held) +
        ",\"held_bytes\":" + std::to_string(c->held_bytes) +
        ",\"unpublished_bytes\":" + std::to_string(c->unpublished_bytes) +
        ",\"writing_bytes\":" + std::to_string(c->writing_bytes) + ",\"held\":[";
    for (size_t i = 0; i < c->held.size(); ++i) {
      const HeldDataset& h = c->held[i];
      out += std::string(i ? "," : "") + "{\"name\":" + json_string(h.name) +
             ",\"published\":" + (h.published ? "true" : "false") +
             ",\"memory_bytes\":" + std::to_string(h.memory_bytes) +
             ",\"leases\":" + std::to_string(h.leases) +
             ",\"held_alone\":" + (h.held_alone ? "true" : "false") + "}";
    }
    out += "]}";
    first = false;
  }
  return out + "]";
}

std::string biggest_unpublished_holder(const MemoryStats& stats) {
  const ClientInfo* alone = nullptr;   // most unpublished bytes held alone
  const ClientInfo* shared = nullptr;  // most unpublished bytes held at all
  uint64_t shared_bytes = 0;
  for (const ClientInfo& c : stats.clients) {
    if (c.unpublished_bytes > 0 && (!alone || c.unpublished_bytes > alone->unpublished_bytes)) {
      alone = &c;
    }
    uint64_t bytes = 0;
    for (const HeldDataset& h : c.held) bytes += h.published ? 0 : h.memory_bytes;
    if (bytes > shared_bytes) {
      shared = &c;
      shared_bytes = bytes;
    }
  }
  if (!shared) return "";
  const ClientInfo& c = alone ? *alone : *shared;
  const std::string who = "pid " + std::to_string(c.pid) + " (" + short_command(c) + ")";
  const std::string how =
      c.connections == 0 ? "it mapped the segment before shelfd restarted; it is freed when that "
                           "process exits"
                         : "it comes back when that process lets go or exits";
  if (alone) {
    return who + " alone holds " + format_bytes(c.unpublished_bytes) +
           " of unpublished datasets: " + how + " (shelf status --clients)";
  }
  // Every such dataset is shared: say with how many others.
  std::set<std::string_view> mine;
  for (const HeldDataset& h : c.held) {
    if (!h.published) mine.insert(h.name);
  }
  size_t others = 0;
  for (const ClientInfo& other : stats.clients) {
    if (&other == &c) continue;
    others += std::any_of(other.held.begin(), other.held.end(), [&](const HeldDataset& h) {
      return !h.published && mine.count(h.name) > 0;
    });
  }
  return who + " and " + std::to_string(others) + (others == 1 ? " other process" : " others") +
         " hold " + format_bytes(shared_bytes) +
         " of unpublished datasets: it comes back when they let go or exit (shelf status "
         "--clients)";
}

Holders holders_of(const MemoryStats& stats, std::string_view name, uint32_t self) {
  Holders holders;
  for (const ClientInfo& c : stats.clients) {
    if (c.pid == self) continue;
    bool current = false, earlier = false;
    for (const HeldDataset& h : c.held) {
      if (h.name != name) continue;
      (h.published ? current : earlier) = true;
    }
    if (current) holders.current.push_back(&c);
    if (earlier) holders.earlier.push_back(&c);
  }
  return holders;
}

std::string holder_line(const ClientInfo& c, std::string_view name, bool published) {
  const uint32_t leases = leases_of(c, name, published);
  std::string line = "pid " + std::to_string(c.pid) + " (" + escape_unprintable(user_name(c.uid)) +
                     "): " + short_command(c) + ", ";
  if (c.connections == 0) return line + "mapped the segment before shelfd restarted";
  return line + std::to_string(leases) + (leases == 1 ? " lease" : " leases");
}

std::string holders_json(const std::vector<const ClientInfo*>& holders, std::string_view name,
                         bool published) {
  std::string out = "[";
  for (size_t i = 0; i < holders.size(); ++i) {
    const ClientInfo& c = *holders[i];
    out += std::string(i ? "," : "") + "{\"pid\":" + std::to_string(c.pid) +
           ",\"uid\":" + std::to_string(c.uid) + ",\"command\":" + json_string(c.command) +
           ",\"connections\":" + std::to_string(c.connections) +
           ",\"leases\":" + std::to_string(leases_of(c, name, published)) + "}";
  }
  return out + "]";
}

std::string users_table(const std::vector<UserUsageInfo>& users) {
  std::vector<std::vector<std::string>> rows;
  for (const UserUsageInfo& u : users) {
    std::string share = "-";
    if (u.quota_bytes > 0) {
      char pct[16];
      std::snprintf(pct, sizeof pct, "%.1f%%",
                    100.0 * static_cast<double>(u.used_bytes) / static_cast<double>(u.quota_bytes));
      share = pct;
    }
    rows.push_back({escape_unprintable(user_name(u.uid)), std::to_string(u.uid),
                    format_bytes(u.used_bytes),
                    u.quota_bytes > 0 ? format_bytes(u.quota_bytes) : "none", share});
  }
  return render_table({"USER", "UID", "USED", "QUOTA", "OF QUOTA"}, rows,
                      {false, true, true, true, true});
}

std::string users_json(const std::vector<UserUsageInfo>& users) {
  std::string out = "[";
  for (size_t i = 0; i < users.size(); ++i) {
    const UserUsageInfo& u = users[i];
    out += std::string(i ? "," : "") + "{\"uid\":" + std::to_string(u.uid) +
           ",\"user\":" + json_string(user_name(u.uid)) +
           ",\"used_bytes\":" + std::to_string(u.used_bytes) + ",\"quota_bytes\":" +
           (u.quota_bytes > 0 ? std::to_string(u.quota_bytes) : std::string("null")) + "}";
  }
  return out + "]";
}

}  // namespace shelf::tools
