"""Secrets and URL signing: signed-link verdicts and the persisted keys (URL and webhook)."""

from __future__ import annotations

import stat
from pathlib import Path

from wanflash.signing import UrlSigner, load_or_create_secret, load_or_create_webhook_secret


def test_signer_verdicts() -> None:
    signer = UrlSigner(b"secret")
    url = signer.sign("outputs/t/0.mp4", expires_at=1000)
    path, _, query = url.partition("?")
    q = dict(p.split("=", 1) for p in query.split("&"))
    assert signer.verify(path, q["exp"], q["sig"], now=999) == "ok"
    assert signer.verify(path, q["exp"], q["sig"], now=1001) == "expired"
    assert signer.verify(path, str(int(q["exp"]) + 1), q["sig"], now=999) == "invalid"
    assert signer.verify("/media/outputs/t/1.mp4", q["exp"], q["sig"], now=999) == "invalid"
    assert signer.verify(path, None, q["sig"]) == "invalid"
    assert signer.verify(path, "soon", q["sig"]) == "invalid"
    assert UrlSigner(b"other").verify(path, q["exp"], q["sig"], now=999) == "invalid"


def test_secret_persisted(tmp_path: Path) -> None:
    a = load_or_create_secret(tmp_path, None)
    assert a == load_or_create_secret(tmp_path, None) and len(a) >= 32
    assert load_or_create_secret(tmp_path, "configured") == b"configured"


def test_webhook_secret_persisted_apart_from_the_url_key(tmp_path: Path) -> None:
    a = load_or_create_webhook_secret(tmp_path, None)
    assert a.startswith("whsec_") and a == load_or_create_webhook_secret(tmp_path, None)
    assert stat.S_IMODE((tmp_path / "webhook_secret").stat().st_mode) == 0o600
    assert load_or_create_webhook_secret(tmp_path, "whsec_configured") == "whsec_configured"
    assert load_or_create_secret(tmp_path, None).decode() != a  # two keys, two files
