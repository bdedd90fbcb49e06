"""The base URL written into links the API returns (``videoURL``, ``imageURL``).

``WANFLASH_PUBLIC_URL`` wins whenever it is set (operators should set it). Without it the
request's ``Host`` header is used only when its host name is trusted: one of
``WANFLASH_ALLOWED_HOSTS``, or by default the loopback names and the bound host (unless that is a
wildcard such as ``0.0.0.0``). Any other ``Host`` falls back to the bound address
(``http://host:port``), so a forged header never becomes the host of a returned link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wanflash.config import ServerConfig

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")


def trusted_hosts(config: ServerConfig) -> frozenset[str]:
    names = {h.lower() for h in LOOPBACK_NAMES}
    if config.host not in WILDCARDS:
        names.add(config.host.lower().strip("[]"))
    names.update(h.strip().lower().strip("[]") for h in config.allowed_hosts.split(",") if h.strip())
    return frozenset(names)


def _host_name(host_header: str) -> str:
    h = host_header.strip().lower()
    if h.startswith("["):  # [v6]:port
        return h[1:].split("]", 1)[0]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def link_base(config: ServerConfig, trusted: frozenset[str], scheme: str, host_header: str | None) -> str:
    """``scheme://host`` for links in a reply to a request that came with ``host_header``."""
    if config.public_url:
        return config.public_url.rstrip("/")
    if host_header and _host_name(host_header) in trusted and all(c not in host_header for c in "/?#@ \\"):
        return f"{scheme}://{host_header.strip()}"
    return config.base_url
