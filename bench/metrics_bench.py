"""What scraping costs the daemon's clients: get_dataset() + release round
trips per second with no scraper (the baseline), then while 100 idle
connections sit on the metrics port and 2 threads of another process scrape
/metrics (as fast as they can, or --rate times a second each), in the same run, against the same shelfd.

    SHELFD=build/plain/server/shelfd PYTHONPATH=build/plain/python \\
        /usr/bin/python3 bench/metrics_bench.py [--seconds 3] [--repeat 3] [--datasets 1000] [--rate N]

Prints one line per repeat and the median ratio (scraped / baseline). The
machine's other load moves both figures: take them from one run.
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

import shelf


def gets_per_second(client, seconds):
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            client.get_dataset("d0")
        done += 50
    return done / seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0,
                        help="scrapes per second per scraper thread (0: as fast as they can)")
    parser.add_argument("--datasets", type=int, default=1000,
                        help="published datasets: what each snapshot walks")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="shelf-mbench-")
    sock = os.path.join(work, "s.sock")
    segment = f"shelf-bench-metrics-{os.getpid()}"
    subprocess.run([os.environ.get("SHELFD", "shelfd"), "--socket", sock, "--segment", segment,
                    "--memory-limit", "1GiB", "--metrics-listen", "127.0.0.1:0",
                    "--remove-segment-on-exit"], check=True, stdout=subprocess.DEVNULL)
    pid = int(open(sock + ".lock").read())
    try:
        port = None
        while port is None:
            found = re.findall(r"metrics http://127\.0\.0\.1:(\d+)/", open(sock + ".log").read())
            port = int(found[-1]) if found else time.sleep(0.01)
        client = shelf.Client(sock)
        for i in range(args.datasets):
            client.publish_dataset(**{f"d{i}": {"v": np.arange(10)}})
        url = f"http://127.0.0.1:{port}/metrics"
        # The scrapers run in a process of their own: threads here would take
        # the GIL from the get loop being measured.
        scraper_code = (
            "import sys, threading, time, urllib.request\n"
            "url, seconds, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]); n = [0]\n"
            "def run():\n"
            "    end = time.monotonic() + seconds\n"
            "    while time.monotonic() < end:\n"
            "        urllib.request.urlopen(url, timeout=10).read(); n[0] += 1\n"
            "        time.sleep(1 / rate if rate else 0)\n"
            "ts = [threading.Thread(target=run) for _ in range(2)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]; print(n[0])\n")
        ratios = []
        for rep in range(args.repeat):
            baseline = gets_per_second(client, args.seconds)
            idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
            scrapers = subprocess.Popen([sys.executable, "-c", scraper_code, url,
                                         str(args.seconds + 0.5), str(args.rate)], stdout=subprocess.PIPE,
                                        text=True)
            time.sleep(0.25)
            scraped = gets_per_second(client, args.seconds)
            scrapes = int(scrapers.communicate()[0])
            for s in idle:
                s.close()
            ratios.append(scraped / baseline)
            print(f"repeat {rep}: {baseline:9.0f} gets/s alone, {scraped:9.0f} gets/s while "
                  f"scraped {scrapes / (args.seconds + 0.5):6.0f} times/s ({args.datasets} datasets)"
                  f" -> {scraped / baseline:.2f}")
        print(f"median ratio scraped/alone: {statistics.median(ratios):.2f}")
    finally:
        subprocess.run(["kill", str(pid)])


if __name__ == "__main__":
    sys.exit(main())
