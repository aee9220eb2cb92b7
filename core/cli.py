"""The ``aiport`` command line (also ``python -m aiport``).

Exit codes: 0 success, 2 a bad config or plugin (one clear line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import structlog

from .config import Config, load_config
from .errors import ConfigError, PluginError
from .version import __version__

EXIT_CONFIG = 2


def _version() -> str:
    return __version__


def _load(path: str | None) -> Config:
    path = path or os.environ.get("AIPORT_CONFIG")
    return load_config(path) if path else Config()


def _fail(exc: ConfigError | PluginError) -> int:
    if isinstance(exc, ConfigError):
        for problem in exc.problems:
            print(f"aiport: config error: {problem}", file=sys.stderr)
    else:
        print(f"aiport: plugin error: {exc}", file=sys.stderr)
    return EXIT_CONFIG


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .app import create_app
    from .logging import configure_logging

    config = _load(args.config)
    server = config.server
    if args.host or args.port is not None:
        server = attrs.evolve(server, host=args.host or server.host,
                              port=server.port if args.port is None else args.port)
        config = attrs.evolve(config, server=server)
    configure_logging(config.logging.level, config.logging.format, config.secrets())
    app = create_app(config)
    app.on_startup.append(_tune_gc)  # last: after every resource of the app is set up
    log = structlog.get_logger("aiport")
    log.info("serving", url=f"http://{server.host}:{server.port}", version=_version())
    web.run_app(app, host=server.host, port=server.port, access_log=None, print=None,
                handle_signals=True, shutdown_timeout=10)
    return 0


#: Net new container objects before a young-generation collection (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


async def _tune_gc(app: object) -> None:
    """Garbage collection for a long-running server process (``aiport serve`` only: an app that
    mounts aiport owns its process's collector).

    A request's objects are freed by reference counting (the request path makes no reference
    cycles, which a test checks), but the few thousand objects of the requests in flight make
    CPython's default threshold run a young collection every few dozen requests, each scanning
    them for nothing; with 10,000 it runs a few times a minute under load. ``gc.freeze()`` moves
    what start-up built (modules, config, plugins) out of the collector's sight for good, so
    full collections do not rescan it.
    """
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def cmd_check_config(args: argparse.Namespace) -> int:
    from .app import create_app
    from .logging import configure_logging

    config = load_config(args.file)
    configure_logging(config.logging.level, config.logging.format, config.secrets())
    # Building the app (without running it) also checks provider types and plugin options.
    create_app(config)
    print(f"{args.file}: OK ({len(config.providers)} providers, "
          f"{len(config.plugins.load)} extra plugins)")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import build_plugin_manager, describe_plugins

    config = _load(args.config)
    infos = describe_plugins(build_plugin_manager(config.plugins))
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
        return 0
    for info in infos:
        version = f" {info.version}" if info.version else ""
        print(f"{info.name}{version}  [{info.source}]")
        for hook in info.hooks:
            print(f"    {hook}")
    return 0


def _keys_run(config: Config, work: Callable[[Any], Awaitable[int]]) -> int:
    """Open the key store of the config's database, run ``work(store)``, close it."""
    import asyncio

    from .http.keys import key_store_for

    async def run() -> int:
        store = key_store_for(config)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _key_line(key: Any, now: Any) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "visibleKey": key.visible_key, "scopes": list(key.scopes),
            "restrictTo": list(key.restrict_to), "active": key.active(now),
            "createdDate": key.created_at.isoformat(),
            "expiryDate": key.expires_at.isoformat() if key.expires_at else None,
            "cancelledDate": key.revoked_at.isoformat() if key.revoked_at else None, "requestsPerMinute": key.rpm,
            "concurrentRequests": key.concurrency, "tokensPerMinute": key.tpm, "notes": key.notes}


def cmd_keys_create(args: argparse.Namespace) -> int:
    import datetime as dt

    config = _load(args.config)
    now = dt.datetime.now(dt.UTC)
    expires = now + dt.timedelta(days=args.expires) if args.expires else None

    async def work(store: Any) -> int:
        key, secret = await store.create(args.name, now=now, scopes=args.scope or [],
                                         restrict_to=args.restrict_to or [], notes=args.notes, expires_at=expires,
                                         rpm=args.rpm, concurrency=args.concurrency, tpm=args.tpm)
        if args.json:
            print(json.dumps({**_key_line(key, now), "key": secret}, indent=2))
        else:
            print(f"Created API key {key.id} ({key.name}). Its secret is shown only this once:", file=sys.stderr)
            print(secret)
        return 0

    return _keys_run(config, work)


def cmd_keys_list(args: argparse.Namespace) -> int:
    import datetime as dt

    config = _load(args.config)
    now = dt.datetime.now(dt.UTC)

    async def work(store: Any) -> int:
        keys, _ = await store.list(limit=100_000)
        lines = [_key_line(k, now) for k in keys]
        if args.json:
            print(json.dumps(lines, indent=2))
            return 0
        print(f"{'ID':>5}  {'NAME':<24} {'KEY':<12} {'STATE':<8} {'SCOPES':<12} {'LIMITS':<22} RESTRICT-TO")
        for k, line in zip(keys, lines, strict=True):
            state = "active" if line["active"] else ("revoked" if k.revoked_at else "expired")
            limits = "/".join(str(v) if v else "-" for v in (k.rpm, k.concurrency, k.tpm))
            print(f"{k.id:>5}  {k.name[:24]:<24} {k.visible_key:<12} {state:<8} {','.join(k.scopes)[:12]:<12} "
                  f"{'rpm/conc/tpm ' + limits:<22} {','.join(k.restrict_to) or '*'}")
        return 0

    return _keys_run(config, work)


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    import datetime as dt

    config = _load(args.config)

    async def work(store: Any) -> int:
        key = await store.revoke(args.id, dt.datetime.now(dt.UTC))
        if key is None:
            print(f"aiport: no API key with id {args.id}", file=sys.stderr)
            return 1
        print(f"Revoked API key {key.id} ({key.name}); a running server refuses it within seconds.")
        return 0

    return _keys_run(config, work)


def _add_keys_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke API keys (in the config's database)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    config_help = "YAML config file (its storage.database_path holds the keys)"

    create = keys_sub.add_parser("create", help="create a key and print its secret (shown only once)")
    create.add_argument("--config", "-c", help=config_help)
    create.add_argument("--name", required=True, help="a name for the key")
    create.add_argument("--scope", action="append", help="a scope ('Admin' gives full access); repeatable")
    create.add_argument("--restrict-to", nargs="+", metavar="API", help="the only APIs it may call (DTO names)")
    create.add_argument("--expires", type=float, metavar="DAYS", help="expire after this many days")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--concurrency", type=int, help="requests at once")
    create.add_argument("--tpm", type=int, help="chat tokens per minute")
    create.add_argument("--notes", help="free text")
    create.add_argument("--json", action="store_true", help="print JSON (with the secret as 'key')")
    create.set_defaults(func=cmd_keys_create)

    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--config", "-c", help=config_help)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_keys_list)

    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    revoke.add_argument("--config", "-c", help=config_help)
    revoke.set_defaults(func=cmd_keys_revoke)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiport", description="Self-hosted AI gateway.")
    parser.add_argument("--version", action="version", version=f"aiport {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", "-c", help="YAML config file (default: $AIPORT_CONFIG, else built-in defaults)")
    serve.add_argument("--host", help="address to listen on (overrides server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file without serving")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    plugins = sub.add_parser("plugins", help="list loaded plugins and the hooks each implements")
    plugins.add_argument("--config", "-c", help="YAML config file (plugins.load / plugins.disable apply)")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(func=cmd_plugins)
    _add_keys_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, PluginError) as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        return 130
