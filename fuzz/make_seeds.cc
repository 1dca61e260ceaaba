// Writes the seed corpora of the fuzz targets into DIR/protocol,
// DIR/descriptor, DIR/csv and DIR/store, one small file per seed, from the real
// encoders: libFuzzer starts from valid messages instead of having to
// discover the magic numbers and length prefixes by chance.
//
//   make_fuzz_seeds DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <shelf/types.h>

#include "protocol/messages.h"
#include "shm/descriptor.h"
#include "shm/layout.h"
#include "shm/view.h"

#include "fuzz/seeds.h"

namespace fs = std::filesystem;
using namespace shelf;
using Bytes = std::vector<std::byte>;

namespace {

void write_seed(const fs::path& dir, const std::string& name, const Bytes& bytes) {
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

Bytes text(const std::string& s) {
  Bytes out(s.size());
  for (size_t i = 0; i < s.size(); ++i) out[i] = static_cast<std::byte>(s[i]);
  return out;
}

// A valid descriptor: `schema`, `partitions` partitions of `rows` rows each,
// every buffer laid out one after the other in the partition's own extent.
Bytes descriptor(const Schema& schema, uint64_t partitions, uint64_t rows, bool with_nulls) {
  shm::DescriptorBuilder builder(schema);
  uint64_t extent_offset = shm::kPageSize;
  for (uint64_t p = 0; p < partitions; ++p) {
    uint64_t cursor = extent_offset + shm::kExtentHeaderBytes;
    auto buffer = [&](uint64_t length) {
      shm::BufferLayout b{0, length, 0};
      if (length == 0) return b;
      b.offset = cursor;
      cursor = shelf::align_up(cursor + length, shelf::kBufferAlignment);
      return b;
    };
    std::vector<shm::ChunkLayout> chunks;
    for (const Field& f : schema) {
      shm::ChunkLayout c{};
      const bool nulls = with_nulls && f.type != Type::kBytes && rows > 0;
      c.null_count = nulls ? 1 : 0;
      c.validity = buffer(nulls ? (rows + 7) / 8 : 0);
      if (f.type == Type::kString) {
        c.offsets = buffer((rows + 1) * 8);
        c.data = buffer(rows * 3);
      } else if (f.type == Type::kBytes) {
        c.data = buffer(rows);
      } else {
        c.data = buffer(rows * fixed_width(f.type));
      }
      chunks.push_back(c);
    }
    const uint64_t length = shelf::align_up(cursor - extent_offset, shm::kPageSize);
    builder.add_partition(shm::PartitionLayout{rows, extent_offset, length, 0}, chunks);
    extent_offset += length;
  }
  return builder.finish();
}

protocol::DatasetSummary summary(const std::string& name) {
  protocol::DatasetSummary d;
  d.name = name;
  d.num_columns = 3;
  d.num_partitions = 2;
  d.num_rows = 1000;
  d.data_bytes = 8000;
  d.memory_bytes = 16384;
  d.created_ns = 1700000000000000000;
  d.publisher_uid = 1000;
  d.publisher_pid = 42;
  d.leases = 1;
  return d;
}

// The descriptor seeds; returns them, by name, for the publish seeds.
std::vector<std::pair<std::string, Bytes>> write_descriptor_seeds(const fs::path& root) {
  const Schema mixed = {{"id", Type::kInt64}, {"name", Type::kString}, {"ok", Type::kBool}};
  const std::vector<std::pair<std::string, Bytes>> descriptors = {
      {"int64", descriptor({{"v", Type::kInt64}}, 1, 10, false)},
      {"mixed_nulls", descriptor(mixed, 2, 9, true)},
      {"bytes", descriptor({{"raw", Type::kBytes}}, 1, 100, false)},
      {"every_type", descriptor({{"a", Type::kInt8},
                                 {"b", Type::kUInt16},
                                 {"c", Type::kInt32},
                                 {"d", Type::kFloat32},
                                 {"e", Type::kFloat64},
                                 {"f", Type::kTimestamp},
                                 {"g", Type::kUInt64}},
                                3, 5, true)},
      {"empty_partition", descriptor({{"s", Type::kString}}, 1, 0, false)},
  };
  for (const auto& [name, bytes] : descriptors) write_seed(root / "descriptor", name, bytes);
  // View definitions go through the same target (descriptor_fuzz.cc).
  shm::ViewDefinition filter;
  filter.bases = {"accounts"};
  filter.where = "balance < 0 and name is not null";
  filter.columns = {"name"};
  filter.limit = 10;
  write_seed(root / "descriptor", "view", shm::encode_view(filter));
  shm::ViewDefinition all;
  all.bases = {"a"};
  write_seed(root / "descriptor", "view_all", shm::encode_view(all));
  shm::ViewDefinition graph;
  graph.kind = shm::ViewKind::kGraph;
  graph.bases = {"accounts", "other"};
  graph.graph = "\x80\x05 a pickle";
  write_seed(root / "descriptor", "view_graph", shm::encode_view(graph));
  return descriptors;
}

// `descriptors`: the first two go into the publish request.
void write_protocol_seeds(const fs::path& root,
                          const std::vector<std::pair<std::string, Bytes>>& descriptors) {
  // Requests, then responses; one frame per seed, and one stream of many.
  const fs::path proto = root / "protocol";
  Bytes all;
  auto seed = [&](const std::string& name, const Bytes& frame) {
    write_seed(proto, name, frame);
    all.insert(all.end(), frame.begin(), frame.end());
  };
  auto one = [](auto encode) {
    Bytes out;
    encode(out);
    return out;
  };
  seed("hello", one([](Bytes& o) {
         protocol::encode_request(o, protocol::HelloRequest{1, "cli", "shelf list"});
       }));
  seed("allocate",
       one([](Bytes& o) { protocol::encode_request(o, protocol::AllocateRequest{1 << 20}); }));
  seed("abort", one([](Bytes& o) { protocol::encode_request(o, protocol::AbortRequest{8192}); }));
  seed("publish", one([&](Bytes& o) {
         protocol::PublishRequest p;
         p.override_existing = true;
         p.items.push_back({"a", descriptors[0].second});
         p.items.push_back({"b/c", descriptors[1].second});
         protocol::encode_request(o, p);
       }));
  seed("get", one([](Bytes& o) { protocol::encode_request(o, protocol::GetRequest{"sales"}); }));
  seed("release", one([](Bytes& o) { protocol::encode_request(o, protocol::ReleaseRequest{7}); }));
  seed("unpublish",
       one([](Bytes& o) { protocol::encode_request(o, protocol::UnpublishRequest{"sales"}); }));
  seed("wait_for", one([](Bytes& o) {
         protocol::encode_request(o, protocol::WaitForRequest{{"sales", "nyc-taxi/2024-01"}});
       }));
  seed("subscribe",
       one([](Bytes& o) { protocol::encode_request(o, protocol::SubscribeRequest{3}); }));
  seed("subscribe_response",
       one([](Bytes& o) { protocol::encode_response(o, protocol::SubscribeResponse{4}); }));
  seed("event", one([](Bytes& o) {
         protocol::Event e;
         e.kind = protocol::EventKind::kQuarantine;
         e.name = "nyc-taxi/2024-01";
         e.time_ns = 1796241196132767407;
         e.memory_bytes = 8192;
         e.reason = "checksum mismatch in partition 0 column 'v'";
         protocol::encode_event(o, e);
       }));
  seed("list", one([](Bytes& o) { protocol::encode_list_request(o); }));
  seed("status", one([](Bytes& o) { protocol::encode_status_request(o); }));
  seed("error_response", one([](Bytes& o) {
         protocol::encode_error_response(o, protocol::MessageType::kGet,
                                         Status::not_found("dataset 'x' not found"));
       }));
  seed("empty_response",
       one([](Bytes& o) { protocol::encode_empty_response(o, protocol::MessageType::kRelease); }));
  seed("hello_response", one([](Bytes& o) {
         protocol::encode_response(
             o, protocol::HelloResponse{"/dev/shm", "shelf-0-abc", 1 << 30, 3, 1 << 29, 9});
       }));
  seed("allocate_response", one([](Bytes& o) {
         protocol::encode_response(o, protocol::AllocateResponse{8192, 1 << 20});
       }));
  seed("get_response", one([](Bytes& o) {
         protocol::encode_response(o, protocol::GetResponse{5, 4096, 300});
       }));
  seed("list_response", one([](Bytes& o) {
         protocol::encode_response(o, protocol::ListResponse{{summary("a"), summary("bb")}});
       }));
  seed("status_response", one([](Bytes& o) {
         protocol::StatusResponse s;
         s.shm_dir = "/mnt/shelf";
         s.segment_name = "shelf-0-abc";
         s.page_bytes = 2 << 20;
         s.huge_page_bytes = 64 << 20;
         s.socket_path = "/tmp/shelf-0/shelf.sock";
         s.datasets = {summary("a")};
         s.unpublished = {{"old", 4096, 1, false}};
         s.clients = {{42,
                       0,
                       "python3 job.py",
                       "python",
                       1,
                       2,
                       0,
                       2,
                       2,
                       8192,
                       4096,
                       {{0, 1, false}, {1, 1, true}}}};
         protocol::encode_response(o, s);
       }));
  write_seed(proto, "stream", all);
}

void write_csv_seeds(const fs::path& root) {
  // CSV: the option byte, then the file.
  const fs::path csv = root / "csv";
  auto csv_seed = [&](const std::string& name, uint8_t options, const std::string& body) {
    Bytes b = text(body);
    b.insert(b.begin(), static_cast<std::byte>(options));
    write_seed(csv, name, b);
  };
  csv_seed("types", 0, "name,balance,score,active,note\nAlice,-100,1.5,true,\nBob,200,2,False,x\n");
  csv_seed("quotes", 1, "a,b\n\"x, y\",\"say \"\"hi\"\"\"\n\"two\nlines\", padded \n");
  csv_seed("crlf", 2, "a,b\r\n1,2\r\n\r\n3,4\r\n");
  csv_seed("timestamps", 3 | 4 | (12 << 3), "when,x\n2024-01-31,1\n2024-02-01T12:30:00.5Z,2\n1,\n");
  csv_seed("nulls", 0, "a,b\n1,\n,\n3,\n");
  csv_seed("bad_row", 0, "a,b\n1,2\n3\n");
  csv_seed("unclosed", 0, "a,b\n1,\"open\n2,3\n");
  csv_seed("utf8", 0, "a\nok\n\xc3\xa9t\xc3\xa9\n");
}

void write_store_seeds(const fs::path& root) {
  // Store scripts (fuzz/store_fuzz.cc): each step is [open a session?] (not
  // read while there is none), session, operation, arguments.
  const fs::path store = root / "store";
  auto script = [&](const std::string& name, std::initializer_list<uint8_t> bytes) {
    Bytes b;
    for (uint8_t v : bytes) b.push_back(static_cast<std::byte>(v));
    write_seed(store, name, b);
  };
  // allocate 4 KiB, write it, publish it as "a" (10 rows), get, release,
  // unpublish, give the memory back.
  script("publish_get_release", {0, 0, 64, 0,                  //
                                 1, 0, 2,  0,                  //
                                 1, 0, 3,  0, 0, 0, 0, 10, 0,  //
                                 1, 0, 4,  0,                  //
                                 1, 0, 5,  0,                  //
                                 1, 0, 6,  0,                  //
                                 1, 0, 8});
  // Session 0 allocates and writes; session 1 tries to publish that extent,
  // then session 0 publishes it twice (override), and both close.
  script("two_sessions", {0, 0, 64, 0,                 //
                          1, 0, 2,  0,                 //
                          0, 1, 3,  0, 0, 0, 0, 5, 1,  //
                          1, 0, 3,  0, 0, 0, 0, 5, 1,  //
                          1, 0, 3,  1, 0, 0, 0, 5, 1,  //
                          1, 1, 4,  1,                 //
                          1, 0, 7,                     //
                          1, 0, 7});
}

// Values users type, and values they should not: one per seed.
void write_cli_value_seeds(const fs::path& root) {
  const std::string values[] = {"5",
                                "0",
                                "-1",
                                "007",
                                "18446744073709551615",
                                "99999999999999999999999",
                                "0.01",
                                "1e-9",
                                "86400",
                                "nan",
                                "8GiB",
                                "1.5G",
                                "512MiB",
                                "",
                                "caf\xc3\xa9",
                                "\x1b[2J\xc2\x85"};
  int n = 0;
  for (const std::string& v : values) {
    Bytes b = text(v);
    b.insert(b.begin(), static_cast<std::byte>(n % 8));  // every range in turn
    write_seed(root / "cli_values", "value_" + std::to_string(n++), b);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_seeds DIR\n");
    return 2;
  }
  const fs::path root = argv[1];
  for (const char* target : {"protocol", "descriptor", "csv", "store", "cli_values"}) {
    fs::create_directories(root / target);
  }
  write_protocol_seeds(root, write_descriptor_seeds(root));
  write_csv_seeds(root);
  write_store_seeds(root);
  write_cli_value_seeds(root);
  return 0;
}
