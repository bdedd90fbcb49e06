"""Command line: ``wanflash serve | generate | keys create|list|revoke | doctor``.

Each subcommand reads the settings once and hands them to the package that does the work;
heavy imports (uvicorn, torch) happen inside the subcommand, so ``wanflash --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wanflash", description="Self-hosted Runware-compatible video generation")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="API + job store + worker in one process (the embedded default)")
    s.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 8000)")
    s.add_argument("--data-dir", default=None, help="data directory (default ./.wanflash)")
    s.add_argument("--executor", choices=["subprocess", "inprocess"], default=None)
    s.add_argument("--profile", default=None, help="engine profile: tiny | wan2.2-ti2v-5b | wan2.2-i2v-a14b")
    s.add_argument("--print-key", action="store_true", help="create an API key on first start and print it once")

    g = sub.add_parser("generate", help="run validation and the engine on one request, no server")
    g.add_argument("--image", default=None, help="input image: path or URL")
    g.add_argument("--prompt", required=True)
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--duration", type=int, default=None)
    g.add_argument("--resolution", choices=["720p", "1080p"], default=None)
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--format", choices=["MP4", "WEBM", "MOV", "mp4", "webm", "mov"], default=None)
    g.add_argument("--quality", type=int, default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--number-results", type=int, default=None)
    g.add_argument("--no-audio", action="store_true")
    g.add_argument("--data-dir", default=None)
    g.add_argument("--profile", default=None)
    g.add_argument("-o", "--output", required=True, help="output file; with several results, -1, -2 ... are added")

    k = sub.add_parser("keys", help="manage API keys (stored hashed): create, list, revoke")
    actions = k.add_subparsers(dest="action", required=True, metavar="{create,list,revoke}")
    for name, text in (("create", "make a key and print it once"), ("list", "list key ids and their state"),
                       ("revoke", "revoke a key by id")):
        a = actions.add_parser(name, help=text)
        if name == "revoke":
            a.add_argument("key_id", help="key id to revoke (from `wanflash keys list`)")
        a.add_argument("--data-dir", default=None)

    d = sub.add_parser("doctor", help="check torch, CUDA, weights, codecs and the database; say how to fix gaps")
    d.add_argument("--data-dir", default=None)
    d.add_argument("--profile", default=None, help="check this profile instead of the configured one")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from wanflash.config import load_settings

    overrides = {k: getattr(args, k, None) for k in ("host", "port", "data_dir", "executor", "profile")}
    settings = load_settings(**overrides)
    if args.command == "serve":
        from wanflash.api.server import serve

        return serve(settings, print_key=args.print_key)
    if args.command == "generate":
        from wanflash.worker.generate import generate_cli

        return generate_cli(settings, args)
    if args.command == "keys":
        from wanflash.api.auth import keys_cli

        return keys_cli(settings, args)
    if args.command == "doctor":
        from wanflash.doctor import doctor_cli

        return doctor_cli(settings, args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
