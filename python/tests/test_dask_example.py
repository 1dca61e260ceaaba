"""The example of Dask's "Publish Datasets" page, run against shelf across
two separate Python processes: only the import and the client line differ."""

PUBLISHER = """
import pandas as pd
import shelf
client = shelf.Client()

names = ["Alice", "Bob", "Charlie", "Dennis", "Edith", "Frank", "Grace"]
df = pd.DataFrame({"name": names * 2,
                   "balance": [-100, -200, -300, -400, -500, 600, 700,
                               800, 900, -1000, -1100, 1200, 1300, -1400]})
df2 = df[df.balance < 0]
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

EXPECTED_HEAD = """\
      name  balance
0    Alice     -100
1      Bob     -200
2  Charlie     -300
3   Dennis     -400
4    Edith     -500"""


def test_publish_in_one_process_then_list_and_head_in_another(daemon):
    published = daemon.run(PUBLISHER)
    assert published.stdout.rstrip() == EXPECTED_HEAD
    # The publisher has exited; the dataset stays.
    read = daemon.run(READER)
    lines = read.stdout.rstrip().split("\n")
    assert lines[0] == "['negative_accounts']"
    assert "\n".join(lines[1:]) == EXPECTED_HEAD


def test_the_whole_filtered_frame_comes_back_with_its_index(daemon):
    daemon.run(PUBLISHER)
    read = daemon.run("""
        import shelf
        df = shelf.Client().get_dataset('negative_accounts').to_pandas()
        print(list(df.index), list(df.balance), list(df.name))
    """)
    assert read.stdout.strip() == (
        "[0, 1, 2, 3, 4, 9, 10, 13] [-100, -200, -300, -400, -500, -1000, -1100, -1400] "
        "['Alice', 'Bob', 'Charlie', 'Dennis', 'Edith', 'Charlie', 'Dennis', 'Grace']")


def test_dictionary_interface_across_processes(daemon):
    daemon.run("""
        import pandas as pd, shelf
        client = shelf.Client()
        client.datasets['negative_accounts'] = pd.DataFrame({'balance': [-1, -2]})
    """)
    read = daemon.run("""
        import shelf
        client = shelf.Client()
        print(list(client.datasets))
        df = client.datasets['negative_accounts']
        print(df['balance'].tolist())
    """)
    assert read.stdout.split("\n")[:2] == ["['negative_accounts']", "[-1, -2]"]


def test_any_client_may_unpublish(daemon):
    daemon.run("import shelf; shelf.Client().datasets['x'] = 'value'")
    daemon.run("import shelf; shelf.Client().unpublish_dataset('x')")
    assert daemon.client().list_datasets() == []
