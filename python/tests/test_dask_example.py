"""The example of Dask's "Publish Datasets" page, run against shelf across
two separate Python processes: only the import and the client line differ."""

import pytest

# Dask's page, verbatim but for the import and the client line (and a local
# CSV instead of S3).
PUBLISHER = """
import shelf
client = shelf.Client()

import dask.dataframe as dd
df = dd.read_csv({csv!r})
df2 = df[df.balance < 0]
df2 = client.persist(df2)

print(df2.head())

client.publish_dataset(negative_accounts=df2)
"""

READER = """
import shelf
client = shelf.Client()

print(client.list_datasets())

df = client.get_dataset('negative_accounts')
print(df.head())
"""

ACCOUNTS = """name,balance
Alice,-100
Bob,-200
Charlie,-300
Dennis,-400
Edith,-500
Frank,600
Grace,700
Heidi,-800
Ivan,900
"""

EXPECTED_HEAD = """\
      name  balance
0    Alice     -100
1      Bob     -200
2  Charlie     -300
3   Dennis     -400
4    Edith     -500"""


@pytest.fixture
def accounts_csv(tmp_path):
    for i, chunk in enumerate((ACCOUNTS, "name,balance\nJudy,-1000\nKen,1100\n")):
        (tmp_path / f"accounts-{i}.csv").write_text(chunk)
    return str(tmp_path / "accounts-*.csv")


def test_publish_in_one_process_then_list_and_head_in_another(daemon, accounts_csv):
    published = daemon.run(PUBLISHER.format(csv=accounts_csv))
    assert published.stdout.rstrip() == EXPECTED_HEAD
    # The publisher has exited; the dataset stays.
    read = daemon.run(READER)
    lines = read.stdout.rstrip().split("\n")
    assert lines[0] == "['negative_accounts']"
    assert "\n".join(lines[1:]) == EXPECTED_HEAD


def test_every_partition_comes_back_with_its_index(daemon, accounts_csv):
    daemon.run(PUBLISHER.format(csv=accounts_csv))
    read = daemon.run("""
        import shelf
        ds = shelf.Client().get_dataset('negative_accounts')
        df = ds.to_pandas()
        print(ds.npartitions, list(df.index), list(df.balance), list(df.name))
    """)
    assert read.stdout.strip() == (
        "2 [0, 1, 2, 3, 4, 7, 0] [-100, -200, -300, -400, -500, -800, -1000] "
        "['Alice', 'Bob', 'Charlie', 'Dennis', 'Edith', 'Heidi', 'Judy']")


def test_dictionary_interface_across_processes(daemon, accounts_csv):
    daemon.run(PUBLISHER.format(csv=accounts_csv).replace("negative_accounts=", "accounts="))
    daemon.run("""
        import shelf
        client = shelf.Client()
        df = client.get_dataset('accounts')
        client.datasets['negative_accounts'] = df
    """)
    read = daemon.run("""
        import shelf
        client = shelf.Client()
        print(list(client.datasets))
        df = client.datasets['negative_accounts']
        print(df.head())
        try:
            client.datasets['negative_accounts'] = df
        except KeyError as e:
            print('KeyError', e)
    """)
    lines = read.stdout.rstrip().split("\n")
    assert lines[0] == "['accounts', 'negative_accounts']"
    assert "\n".join(lines[1:7]) == EXPECTED_HEAD
    assert lines[7].startswith("KeyError \"dataset 'negative_accounts' already exists")


def test_any_client_may_unpublish(daemon):
    daemon.run("import shelf; shelf.Client().datasets['x'] = 'value'")
    daemon.run("import shelf; shelf.Client().unpublish_dataset('x')")
    assert daemon.client().list_datasets() == []
