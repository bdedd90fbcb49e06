"""Run a live server in this process until killed (used by test_restart: the test SIGKILLs it).

argv: data_dir. Prints the port on stdout once the server is up.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.api.support import make_settings
from wanflash.testing import live_server

if __name__ == "__main__":
    settings = make_settings(Path(sys.argv[1]), executor="inprocess")
    with live_server(settings, pipeline_factory="tests.worker.fixture_pipelines:slow") as server:
        print(server.port, flush=True)
        time.sleep(600)
