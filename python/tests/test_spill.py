"""Spilling from Python (shelfd --spill-dir): past the memory limit the least
recently used datasets go to disk and come back on get_dataset, in another
process too; pin=True and pin_dataset keep a dataset in memory."""

import os
import shutil
import tempfile

import numpy as np
import pandas as pd
import pytest

from conftest import Daemon

ROWS = 120_000  # one int64 column: ~960 KiB, a quarter of the 4 MiB limit


@pytest.fixture
def spilling():
    parent = tempfile.mkdtemp(prefix="shelf-py-spill-")
    spill_dir = os.path.join(parent, "spill")
    d = Daemon(memory_limit="4MiB", extra_args=("--spill-dir", spill_dir, "--max-datasets", "64"))
    yield d, spill_dir
    d.stop()
    shutil.rmtree(parent, ignore_errors=True)


def frame(seed):
    return pd.DataFrame({"v": np.arange(ROWS, dtype=np.int64) * 3 + seed})


def spilled(client):
    return {d["name"] for d in client._client.list() if d["spilled"]}


def test_past_the_limit_every_dataset_reads_back_and_a_pinned_one_stays(spilling):
    daemon, spill_dir = spilling
    with daemon.client() as client:
        client.publish_dataset(kept=frame(100), pin=True)
        for i in range(8):
            client.publish_dataset(**{f"d{i}": frame(i)})
        assert "kept" not in spilled(client)
        assert "d0" in spilled(client)
        assert len(os.listdir(spill_dir)) == len(spilled(client))
        status = client.status()
        assert status["spill"]["dir"] == spill_dir
        assert status["spill"]["datasets"] == len(spilled(client))
        pinned = {d["name"]: d["pinned"] for d in status["datasets"]}
        assert pinned["kept"] and not pinned["d0"]
    # Another process reads every one back, byte for byte.
    done = daemon.run("""
        import numpy as np, shelf
        c = shelf.Client()
        for name, seed in [("kept", 100)] + [(f"d{i}", i) for i in range(8)]:
            v = c.get_dataset(name).to_pandas()["v"].to_numpy()
            assert np.array_equal(v, np.arange(120_000, dtype=np.int64) * 3 + seed), name
        print("ok")
    """)
    assert done.stdout == "ok\n"
    with daemon.client() as client:
        assert "kept" not in spilled(client)
        client.unpin_dataset("kept")
        client.publish_dataset(more=frame(9))
        assert "kept" in spilled(client), "unpinned, and the least recently used"
        client.pin_dataset("kept")  # read back into memory first
        assert "kept" not in spilled(client)
        with pytest.raises(KeyError, match="'nobody' not found"):
            client.pin_dataset("nobody")
        with pytest.raises(TypeError, match="a dataset name must be a str"):
            client.unpin_dataset(3)
