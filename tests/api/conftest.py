from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.support import FAKE, make_settings
from wanflash.testing import LiveServer, live_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path / "data"), pipeline_factory=FAKE) as s:
        yield s
