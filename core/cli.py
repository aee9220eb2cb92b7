"""The ``aiport`` command line (also ``python -m aiport``).

Exit codes: 0 success, 2 a bad config or plugin (one clear line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

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
    log = structlog.get_logger("aiport")
    log.info("serving", url=f"http://{server.host}:{server.port}", version=_version())
    web.run_app(app, host=server.host, port=server.port, access_log=None, print=None,
                handle_signals=True, shutdown_timeout=10)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from .app import create_app

    config = load_config(args.file)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, PluginError) as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        return 130
