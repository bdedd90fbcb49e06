"""Client run by the tests with the real `runware-sdk` 1.8.0: one REST POST of a task array through
the SDK's own transport (its status handling and retry policy), printing what the SDK returned.

argv[1]: {"http_url", "key", "tasks": [...]}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from runware import Runware
from runware.errors import RunwareError


async def main(job: dict[str, Any]) -> dict[str, Any]:
    async with Runware(api_key=job["key"], transport="rest", http_base_url=job["http_url"], max_retries=2,
                       retry_delay=50) as rw:
        transport = rw._rest_transport  # the SDK's REST transport: what every rw.run() goes through
        try:
            frame = await transport.send_request(job["tasks"])
        except RunwareError as exc:
            return {"raised": f"{exc.code}|{exc.status_code}|{exc.message[:120]}"}
    return {"frame": frame}


if __name__ == "__main__":
    result = asyncio.run(main(json.loads(sys.argv[1])))
    print("RESULT " + json.dumps(result))
