"""``python -m recommender_system <command>``: migrate, serve, load-demo, rollback."""

from __future__ import annotations

import argparse
import logging
import sys

from recommender_system.logs import configure_logging
from recommender_system.settings import Settings

logger = logging.getLogger("recommender_system")


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from recommender_system.storage import migrate

    migrate.upgrade(settings.database_url)
    logger.info("database at %s is migrated to head", _safe_url(settings.database_url))
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from recommender_system.server import serve

    serve(settings, workers=args.workers, threads=args.threads)
    return 0


def _load_demo(args: argparse.Namespace, settings: Settings) -> int:
    from recommender_system.container import Container
    from recommender_system.demo.loader import load_demo

    container = Container()
    loaded = load_demo(container, args.path, if_empty=args.if_empty, progress=not args.quiet)
    return 0 if loaded is not None else 0


def _rollback(args: argparse.Namespace, settings: Settings) -> int:
    from recommender_system.container import Container
    from recommender_system.managers.versions import rollback

    version = rollback(Container(), args.model, args.version)
    logger.info("%s now serves version %s", args.model, version)
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recommender_system", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="apply the database migrations (idempotent)").set_defaults(run=_migrate)

    serve = commands.add_parser("serve", help="run the web service under gunicorn")
    serve.add_argument("--workers", type=int, default=None, help="gunicorn workers (default RS_WEB_WORKERS)")
    serve.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per worker with RS_WEB_WORKER_CLASS=gthread (default RS_WEB_THREADS)",
    )
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("load-demo", help="import the ecoseller demo data through the ingest path")
    demo.add_argument(
        "path", nargs="?", default=None, help="directory with the demo .sql(.gz) files (default: bundled)"
    )
    demo.add_argument("--if-empty", action="store_true", help="do nothing when the catalogue already has variants")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_load_demo)

    rollback = commands.add_parser("rollback", help="serve an older version of a trained model")
    rollback.add_argument("model", help="model name, e.g. ease")
    rollback.add_argument("version", nargs="?", default=None, help="version to serve (default: the previous one)")
    rollback.set_defaults(run=_rollback)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level)
    try:
        return int(args.run(args, settings))
    except (LookupError, ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
