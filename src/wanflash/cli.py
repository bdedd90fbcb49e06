"""Command line: ``wanflash serve | api | worker | migrate | generate | keys create|list|revoke | doctor``.

``serve`` is the embedded all-in-one default. Distributed mode (``WANFLASH_DATABASE_URL`` set):
``migrate`` once, then ``api`` replicas and ``worker`` processes (see docs/deploy.md).

Each subcommand reads the settings once and hands them to the package that does the work;
heavy imports (uvicorn, torch) happen inside the subcommand, so ``wanflash --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wanflash.formats import OUTPUT_FORMATS

if TYPE_CHECKING:
    from wanflash.config import Settings


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

    a = sub.add_parser("api", help="the API only, stateless, over PostgreSQL (WANFLASH_DATABASE_URL)")
    a.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    a.add_argument("--port", type=int, default=None, help="port (default 8000)")
    a.add_argument("--data-dir", default=None, help="data directory (media with the local store, secrets)")

    w = sub.add_parser("worker", help="worker processes claiming tasks from PostgreSQL (WANFLASH_DATABASE_URL)")
    w.add_argument("--gpus", default="cpu", help="GPUs to use, e.g. 0,1 or 0-3; 'cpu' (default) for one CPU slot")
    w.add_argument("--group-size", type=int, default=1,
                   help="GPUs per job (default 1: one worker per GPU, CUDA_VISIBLE_DEVICES set for each)")
    w.add_argument("--data-dir", default=None)
    w.add_argument("--executor", choices=["subprocess", "inprocess"], default=None)
    w.add_argument("--profile", default=None, help="engine profile: tiny | wan2.2-ti2v-5b | wan2.2-i2v-a14b")
    w.add_argument("--pipeline-factory", default=None,
                   help="'module:attr' building the pipeline instead of the profile's (dry runs, tests), e.g. "
                        "wanflash.worker.executor:fake_pipeline")

    m = sub.add_parser("migrate", help="create the schema (PostgreSQL: ours and procrastinate's); idempotent")
    m.add_argument("--data-dir", default=None)

    g = sub.add_parser("generate", help="run validation and the engine on one request, no server")
    g.add_argument("--image", default=None, help="input image: path or URL")
    g.add_argument("--prompt", required=True)
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--duration", type=int, default=None)
    g.add_argument("--resolution", choices=["720p", "1080p"], default=None)
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--format", choices=[*OUTPUT_FORMATS, *(f.lower() for f in OUTPUT_FORMATS)], default=None)
    g.add_argument("--quality", type=int, default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--number-results", type=int, default=None)
    g.add_argument("--no-audio", action="store_true")
    g.add_argument("--no-prompt-extend", action="store_true",
                   help="generate from the prompt as given (providerSettings.alibaba.promptExtend false)")
    g.add_argument("--shot-type", choices=["single", "multi"], default=None,
                   help="providerSettings.alibaba.shotType; multi renders promptExtend's shot plan")
    g.add_argument("--safety", choices=["fast", "full"], default=None,
                   help="check the input and output for NSFW content (needs WANFLASH_SAFETY_DETECTOR)")
    g.add_argument("--pipeline-factory", default=None,
                   help="'module:attr' building the pipeline instead of the profile's (dry runs, tests)")
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
    if args.command == "api":
        from wanflash.api.server import serve

        return serve(settings, worker=False)
    if args.command == "worker":
        from wanflash.worker.distributed import parse_gpus, run_worker

        try:
            gpus = parse_gpus(args.gpus)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        return run_worker(settings, gpus=gpus, group_size=args.group_size, pipeline_factory=args.pipeline_factory)
    if args.command == "migrate":
        return migrate(settings)
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


def migrate(settings: Settings) -> int:
    if settings.jobs.database_url:
        from wanflash.jobs.postgres import PostgresJobSource
        from wanflash.jobs.source import refuse_terminal_writes

        source = PostgresJobSource(settings.jobs.database_url, outbox=refuse_terminal_writes,
                                   max_attempts=settings.jobs.max_attempts, pool_size=1)
        try:
            source.migrate()
        finally:
            source.close()
        print("PostgreSQL schema is up to date (wanflash tables and procrastinate's).")
        return 0
    from wanflash.jobs.source import db_path, refuse_terminal_writes
    from wanflash.jobs.store import SqliteJobSource

    # Opening creates and upgrades it.
    path = db_path(settings.data_dir)
    SqliteJobSource(path, outbox=refuse_terminal_writes, max_attempts=settings.jobs.max_attempts).close()
    print(f"SQLite schema is up to date: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
