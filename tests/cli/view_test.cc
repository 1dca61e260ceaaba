// Views against a real shelfd: published and read by separate client
// processes, through the C++ API and the CLI. A view's rows are compared
// with the materialised filter (write_filtered) and with a reference the
// test computes itself from the rows it generated.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <shelf/filter.h>
#include <shelf/limits.h>

#include "tests/cli/accounts.h"
#include "tests/support/test_daemon.h"

namespace shelf::test {
namespace {

class ViewTest : public AccountsTest {
 protected:
  // Publishes view `name` from a child process of its own.
  void publish_view_elsewhere(const std::string& name, const ViewDefinition& view) {
    const int code = run_in_child([&] {
      Client other = daemon_->connect();
      Status s = other.publish_view(name, view);
      ASSERT_TRUE(s.ok()) << s.to_string();
    });
    ASSERT_EQ(code, 0) << name;
  }
};

DatasetInfo info_of(Client& client, const std::string& name) {
  const std::vector<DatasetInfo> list = client.list_datasets().value();
  for (const DatasetInfo& d : list) {
    if (d.name == name) return d;
  }
  ADD_FAILURE() << name << " is not listed";
  return {};
}

TEST_F(ViewTest, AViewEqualsTheMaterialisedFilterAndTheReference) {
  // Several partitions, one of a single row, others across the 4096-row chunks.
  const Accounts a = make_accounts(11, {1000, 1, 4103, 64, 2500});
  Client client = daemon_->connect();
  publish_accounts(client, "accounts", a);
  const uint64_t used_before = client.status().value().used_bytes;
  const std::vector<Case> all = cases();
  for (size_t k = 0; k < all.size(); ++k) {
    const Case& c = all[k];
    const std::string view = "view" + std::to_string(k);
    publish_view_elsewhere(view, {"accounts", c.where, c.columns, c.limit});
    const std::vector<Row> expected = reference(
        a, [&](size_t r) { return c.keep(a, r); }, c.column_indices, c.limit.value_or(UINT64_MAX));
    // Read in this process, which did not publish it.
    Dataset d = client.get_dataset(view).value();
    ASSERT_TRUE(d.view_definition().has_value());
    EXPECT_EQ(d.view_definition()->base, "accounts");
    EXPECT_EQ(d.view_definition()->where, c.where);
    EXPECT_EQ(read_rows(d), expected) << c.where;
    EXPECT_EQ(d.num_rows(), expected.size()) << c.where;
    EXPECT_EQ(d.num_partitions(), 5u);
    // The materialised filter gives the same rows.
    Dataset base = client.get_dataset("accounts").value();
    Filter filter = Filter::parse(base.schema(), c.where, c.columns, c.limit).value();
    TableBuilder table = client.create_table(filter.output_schema()).value();
    ASSERT_TRUE(write_filtered(base, filter, table).ok());
    ASSERT_TRUE(client.publish_dataset("materialised", table, {.override_existing = true}).ok());
    EXPECT_EQ(read_rows(client.get_dataset("materialised").value()), expected) << c.where;
    // A view takes a page for its definition and no data.
    const DatasetInfo info = info_of(client, view);
    EXPECT_TRUE(info.view);
    EXPECT_EQ(info.view_base, "accounts");
    EXPECT_EQ(info.data_bytes, 0u);
    EXPECT_EQ(info.num_rows, 0u);
    EXPECT_EQ(info.memory_bytes, 4096u);
  }
  ASSERT_TRUE(client.unpublish_dataset("materialised").ok());
  EXPECT_EQ(client.status().value().used_bytes, used_before + 4096 * all.size());
}

TEST_F(ViewTest, ViewsOfViewsAreEvaluatedThroughAndCyclesAreRefused) {
  const Accounts a = make_accounts(12, {300, 5000});
  Client client = daemon_->connect();
  publish_accounts(client, "accounts", a);
  publish_view_elsewhere("negative", {"accounts", "balance < 0", {}, std::nullopt});
  publish_view_elsewhere("names", {"negative", "name is not null", {"name", "balance"}, 7});
  const std::vector<Row> expected = reference(
      a, [&](size_t r) { return a.balance[r] && *a.balance[r] < 0 && a.name[r]; }, {2, 0}, 7);
  EXPECT_EQ(read_rows(client.get_dataset("names").value()), expected);
  // A view that would read itself, directly or through others.
  Status s =
      client.publish_view("negative", {"names", "", {}, std::nullopt}, {.override_existing = true});
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("would read itself (negative -> names -> negative)"),
            std::string::npos)
      << s.message();
  s = client.publish_view("self", {"self", "", {}, std::nullopt});
  EXPECT_EQ(s.code(), Status::Code::kNotFound) << s.to_string();  // no base of that name yet
  // At most kMaxViewDepth views deep.
  std::string base = "accounts";
  for (uint32_t i = 0; i < kMaxViewDepth; ++i) {
    const std::string name = "deep" + std::to_string(i);
    ASSERT_TRUE(client.publish_view(name, {base, "", {}, std::nullopt}).ok()) << name;
    base = name;
  }
  s = client.publish_view("too_deep", {base, "", {}, std::nullopt});
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("views nest at most 16 deep"), std::string::npos) << s.message();
  EXPECT_EQ(client.get_dataset(base).value().num_rows(), a.balance.size());
  // A bad filter fails at publish, where the publisher can mend it.
  s = client.publish_view("bad", {"accounts", "owner < 0", {}, std::nullopt});
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("unknown column 'owner'"), std::string::npos) << s.message();
  EXPECT_TRUE(client.get_dataset("bad").status().is_not_found());
}

TEST_F(ViewTest, UnpublishingABaseNeedsCascadeAndCascadeRemovesEveryViewOfIt) {
  const Accounts a = make_accounts(13, {100});
  Client client = daemon_->connect();
  const uint64_t used_empty = client.status().value().used_bytes;
  publish_accounts(client, "accounts", a);
  publish_accounts(client, "other", a);
  publish_view_elsewhere("v1", {"accounts", "balance < 0", {}, std::nullopt});
  publish_view_elsewhere("v2", {"v1", "", {"name"}, std::nullopt});
  publish_view_elsewhere("w", {"other", "", {}, 3});
  Status s = client.unpublish_dataset("accounts");
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("is read by views: 'v1', 'v2'"), std::string::npos) << s.message();
  EXPECT_EQ(client.list_datasets().value().size(), 5u);  // nothing removed
  s = client.unpublish_dataset("v1");
  EXPECT_NE(s.message().find("is read by views: 'v2'"), std::string::npos) << s.message();
  // A view no view reads goes alone; then cascade takes the rest.
  ASSERT_TRUE(client.unpublish_dataset("w").ok());
  const int code = run_in_child([&] {
    Client other = daemon_->connect();
    ASSERT_TRUE(other.unpublish_dataset("accounts", {.cascade = true}).ok());
  });
  ASSERT_EQ(code, 0);
  std::vector<DatasetInfo> left = client.list_datasets().value();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].name, "other");
  ASSERT_TRUE(client.unpublish_dataset("other").ok());
  EXPECT_EQ(client.status().value().used_bytes, used_empty);
}

TEST_F(ViewTest, OverridingTheBaseKeepsItsViewsWhichReadTheNewData) {
  const Accounts first = make_accounts(14, {200});
  Client client = daemon_->connect();
  publish_accounts(client, "accounts", first);
  publish_view_elsewhere("negative", {"accounts", "balance < 0", {"balance"}, std::nullopt});
  auto negative_of = [](const Accounts& a) {
    return reference(
        a, [&](size_t r) { return a.balance[r] && *a.balance[r] < 0; }, {0}, UINT64_MAX);
  };
  Dataset before = client.get_dataset("negative").value();
  EXPECT_EQ(read_rows(before), negative_of(first));
  // Another process replaces the base while `before` is held.
  const int code = run_in_child([&] {
    Client other = daemon_->connect();
    TableBuilder table = other.create_table({{"balance", Type::kInt64}}).value();
    PartitionBuilder part = table.add_partition(3).value();
    part.values<int64_t>(0)[0] = -5;
    part.values<int64_t>(0)[1] = 6;
    part.values<int64_t>(0)[2] = -7;
    ASSERT_TRUE(other.publish_dataset("accounts", table, {.override_existing = true}).ok());
  });
  ASSERT_EQ(code, 0);
  EXPECT_EQ(read_rows(client.get_dataset("negative").value()), (std::vector<Row>{{"-5"}, {"-7"}}));
  // The reader from before still reads the old base: its lease holds it.
  EXPECT_EQ(read_rows(before), negative_of(first));
  // A base replaced by one the view does not fit: a clear error naming both.
  {
    TableBuilder table = client.create_table({{"amount", Type::kInt64}}).value();
    ASSERT_TRUE(table.add_partition(1).ok());
    ASSERT_TRUE(client.publish_dataset("accounts", table, {.override_existing = true}).ok());
  }
  Result<Dataset> broken = client.get_dataset("negative");
  EXPECT_EQ(broken.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(broken.status().message().find("view 'negative' no longer fits its base 'accounts'"),
            std::string::npos)
      << broken.status().message();
  EXPECT_NE(broken.status().message().find("unknown column 'balance'"), std::string::npos);
  // Its definition is still there to read, for mending it.
  Result<ViewDefinition> definition = client.view_definition("negative");
  ASSERT_TRUE(definition.ok()) << definition.status().to_string();
  EXPECT_EQ(definition->where, "balance < 0");
  EXPECT_EQ(client.view_definition("accounts").status().code(), Status::Code::kInvalidArgument);
  CommandResult r = shelf({"info", "negative"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.out, "where:       balance < 0")) << r.out;
  EXPECT_TRUE(contains(r.err, "no longer fits its base 'accounts'")) << r.err;
}

TEST_F(ViewTest, AReaderKeepsItsBaseWhileAnotherProcessUnpublishesIt) {
  const Accounts a = make_accounts(16, {3000, 3000});
  Client client = daemon_->connect();
  publish_accounts(client, "accounts", a);
  publish_view_elsewhere("negative", {"accounts", "balance < 0", {}, std::nullopt});
  Dataset held = client.get_dataset("negative").value();  // evaluated lazily, below
  const int code = run_in_child([&] {
    Client other = daemon_->connect();
    ASSERT_TRUE(other.unpublish_dataset("accounts", {.cascade = true}).ok());
  });
  ASSERT_EQ(code, 0);
  // Gone for new readers, NotFound naming it; whole for the one holding it.
  EXPECT_TRUE(client.get_dataset("negative").status().is_not_found());
  EXPECT_EQ(read_rows(held), reference(
                                 a, [&](size_t r) { return a.balance[r] && *a.balance[r] < 0; },
                                 {0, 1, 2, 3}, UINT64_MAX));
  EXPECT_GT(client.status().value().pending_free_bytes, 0u);
  held.release();
}

TEST_F(ViewTest, AGetOfAViewWithMaxRowsEvaluatesOnlyWhatItNeeds) {
  const Accounts a = make_accounts(17, {5000, 5000, 5000});
  Client client = daemon_->connect();
  publish_accounts(client, "accounts", a);
  ASSERT_TRUE(client.publish_view("negative", {"accounts", "balance < 0", {}, std::nullopt}).ok());
  Dataset head = client.get_dataset("negative", {.max_rows = 10}).value();
  EXPECT_EQ(head.num_rows(), 10u);
  EXPECT_EQ(head.num_rows(1), 0u);
  EXPECT_EQ(read_rows(head),
            reference(
                a, [&](size_t r) { return a.balance[r] && *a.balance[r] < 0; }, {0, 1, 2, 3}, 10));
  // A stored dataset is returned whole.
  EXPECT_EQ(client.get_dataset("accounts", {.max_rows = 10}).value().num_rows(), 15000u);
}

TEST_F(ViewTest, ARestartKeepsViewsAndTheirRules) {
  const Accounts a = make_accounts(18, {400});
  Client client = daemon_->connect();
  publish_accounts(client, "accounts", a);
  ASSERT_TRUE(client.publish_view("negative", {"accounts", "balance < 0", {"name"}, 5}).ok());
  daemon_->kill9();
  CommandResult r = daemon_->restart();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Client again = daemon_->connect();
  const DatasetInfo info = info_of(again, "negative");
  EXPECT_TRUE(info.view);
  EXPECT_EQ(info.view_base, "accounts");
  EXPECT_EQ(read_rows(again.get_dataset("negative").value()),
            reference(
                a, [&](size_t i) { return a.balance[i] && *a.balance[i] < 0; }, {2}, 5));
  EXPECT_EQ(again.unpublish_dataset("accounts").code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(again.status().value().quarantined.empty());
}

// A view of a Dask graph, as Python publishes an un-persisted collection:
// opaque bytes the C++ side hands back as one raw-bytes partition, and
// bases that the cascade rule covers (python.test_views computes one).
TEST_F(ViewTest, AViewOfAGraphGivesItsBytesAndItsBasesFollowTheRules) {
  const Accounts a = make_accounts(20, {10});
  Client client = daemon_->connect();
  publish_accounts(client, "accounts", a);
  publish_accounts(client, "other", a);
  ViewDefinition graph;
  graph.graph = std::string("\x80\x05pickled graph\0with a NUL", 25);
  graph.graph_bases = {"accounts", "other"};
  publish_view_elsewhere("lazy", graph);
  Dataset d = client.get_dataset("lazy").value();
  ASSERT_TRUE(d.view_definition().has_value());
  EXPECT_EQ(d.view_definition()->graph, graph.graph);
  EXPECT_EQ(d.view_definition()->graph_bases, graph.graph_bases);
  ASSERT_TRUE(d.is_bytes());
  ASSERT_EQ(d.num_partitions(), 1u);
  const std::span<const std::byte> bytes = d.bytes(0);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), graph.graph);
  const DatasetInfo info = info_of(client, "lazy");
  EXPECT_TRUE(info.view);
  EXPECT_TRUE(info.view_of_graph);
  EXPECT_EQ(info.view_base, "");
  EXPECT_EQ(info.data_bytes, 0u);
  // Either base is held by it; a filter view of it is refused at its get.
  EXPECT_NE(client.unpublish_dataset("other").message().find("is read by views: 'lazy'"),
            std::string::npos);
  Status s = client.publish_view("bad", {"nosuch_base", "", {}, std::nullopt});
  EXPECT_TRUE(s.is_not_found());
  graph.graph_bases = {"nosuch"};
  EXPECT_TRUE(client.publish_view("lazy2", graph).is_not_found());
  EXPECT_EQ(client.persist_view("lazy", "copy").code(), Status::Code::kInvalidArgument);
  CommandResult r = shelf({"list"});
  EXPECT_TRUE(contains(r.out, "Dask view (4.00 KiB)")) << r.out;
  r = shelf({"info", "lazy"});
  EXPECT_TRUE(contains(r.out, "reads:       'accounts', 'other'")) << r.out;
  // A graph that reads the base and a view of it is reached twice by a
  // cascade from the base: removed once, after nothing else needs it.
  ASSERT_TRUE(client.publish_view("negative", {"accounts", "balance < 0", {}, std::nullopt}).ok());
  graph.graph_bases = {"accounts", "negative"};
  ASSERT_TRUE(client.publish_view("both", graph).ok());
  ASSERT_TRUE(client.unpublish_dataset("accounts", {.cascade = true}).ok());
  for (const char* gone : {"lazy", "negative", "both", "accounts"}) {
    EXPECT_TRUE(client.get_dataset(gone).status().is_not_found()) << gone;
  }
  ASSERT_TRUE(client.unpublish_dataset("other").ok());
  EXPECT_TRUE(client.list_datasets().value().empty());
}

TEST_F(ViewTest, CliPublishViewListInfoHeadStatusPersistAndCascade) {
  const Accounts a = make_accounts(19, {300, 200});
  Client client = daemon_->connect();
  publish_accounts(client, "accounts", a);
  CommandResult r = shelf({"publish-view", "negative", "--from", "accounts", "--where",
                           "balance < 0", "--columns", "name,balance"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "published view 'negative' of 'accounts' where balance < 0"))
      << r.out;
  r = shelf({"list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "view of 'accounts' (4.00 KiB)")) << r.out;
  r = shelf({"list", "--json"});
  EXPECT_TRUE(contains(r.out, "\"view\":true,\"view_of_graph\":false,\"view_base\":\"accounts\""))
      << r.out;
  r = shelf({"info", "negative"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "view of:     'accounts'")) << r.out;
  EXPECT_TRUE(contains(r.out, "where:       balance < 0")) << r.out;
  EXPECT_TRUE(contains(r.out, "columns:     name,balance")) << r.out;
  r = shelf({"info", "negative", "--json"});
  EXPECT_TRUE(contains(r.out,
                       "\"definition\":{\"base\":\"accounts\",\"where\":\"balance < 0\","
                       "\"columns\":[\"name\",\"balance\"],\"limit\":null},\"schema\":[{"))
      << r.out;
  r = shelf({"head", "negative", "-n", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "... more rows (a view: not counted)")) << r.out;
  const std::vector<Row> negative = reference(
      a, [&](size_t i) { return a.balance[i] && *a.balance[i] < 0; }, {2, 0}, UINT64_MAX);
  EXPECT_TRUE(contains(r.out, negative[0][1])) << r.out;
  r = shelf({"status"});
  EXPECT_TRUE(contains(r.out, "view of 'accounts'")) << r.out;
  // persist: the view's rows as a dataset of their own.
  r = shelf({"persist", "negative", "negative_copy"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "persisted view 'negative' as 'negative_copy'")) << r.out;
  Dataset copy = client.get_dataset("negative_copy").value();
  EXPECT_FALSE(copy.view_definition().has_value());
  EXPECT_EQ(read_rows(copy), negative);
  EXPECT_TRUE(copy.verify().ok());
  r = shelf({"persist", "accounts", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "'accounts' is a dataset, not a view")) << r.err;
  // Errors: exit 2 for a wrong command line, 1 for what shelfd refuses.
  r = shelf({"publish-view", "bad", "--from", "accounts", "--where", "balance < "});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "expected a value after '<' at column 10")) << r.err;
  r = shelf({"publish-view", "bad", "--from", "nosuch"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "'nosuch' not found")) << r.err;
  r = shelf({"publish-view", "negative", "--from", "accounts"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "already exists")) << r.err;
  r = shelf({"save", daemon_->dir(), "negative"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "'negative' is a view")) << r.err;
  // unpublish: refused while the view reads it, then with --cascade.
  r = shelf({"unpublish", "accounts"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "is read by views: 'negative'")) << r.err;
  EXPECT_TRUE(contains(r.err, "--cascade")) << r.err;
  r = shelf({"unpublish", "accounts", "--cascade"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "unpublished 'accounts' and the views that read it: 'negative'"))
      << r.out;
  std::vector<DatasetInfo> left = client.list_datasets().value();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].name, "negative_copy");
}

}  // namespace
}  // namespace shelf::test
