"""``python -m trainer``: the training process.

- ``python -m trainer`` waits until the database is migrated, then loops (claim, train, publish) until SIGTERM or
  SIGINT; a fit in progress is then abandoned cleanly (its job goes back to the queue) and the process exits 0.
- ``python -m trainer --once`` processes every due job, including those it schedules itself, and exits 0.
  ``--model NAME`` (repeatable) first requests a training of that model.
- ``python -m trainer evaluate --dataset online-retail --model NAME [--json] [--path P]`` runs the offline
  evaluation of EVALUATION.md (protocol A for user-item models, protocol B for gru4rec).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from recommender_system.container import Container
from recommender_system.logs import configure_logging
from recommender_system.prediction.models.registry import TRAINABLE_MODEL_NAMES
from recommender_system.storage import migrate
from recommender_system.storage.database import Database
from recommender_system.storage.training import RetryPolicy
from trainer.jobs import ModelFactory
from trainer.loop import Trainer, TrainerOptions

logger = logging.getLogger("trainer")

SESSION_MODELS = frozenset({"gru4rec"})
WAIT_LOG_SECONDS = 60.0


def build_trainer(
    container: Container, options: TrainerOptions | None = None, model_factory: ModelFactory | None = None
) -> Trainer:
    """A ``Trainer`` wired from the container (``model_factory`` overrides how model classes are found)."""
    extra = {} if model_factory is None else {"model_factory": model_factory}
    return Trainer(
        database=container.database(),
        training_store=container.training_store(),
        config_store=container.config_store(),
        artefact_store=container.artefact_store(),
        version_manager=container.version_manager(),
        options=options,
        **extra,
    )


def wait_until_migrated(database: Database, stop: threading.Event, poll_seconds: float = 2.0) -> bool:
    """Block until the database is reachable and at the migrations' head; False when stopped first."""
    url = make_url(database.url).render_as_string(hide_password=True)
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)  # one line per poll otherwise
    last_log = -WAIT_LOG_SECONDS
    waited = 0.0
    while not stop.is_set():
        try:
            if migrate.is_migrated(database.engine, database.url):
                if waited:
                    logger.info("database at %s is migrated; starting", url)
                return True
            state = "not migrated yet (run `python -m recommender_system migrate`)"
        except SQLAlchemyError as error:
            state = f"not reachable ({type(error).__name__})"
        if waited - last_log >= WAIT_LOG_SECONDS:
            logger.info("waiting for the database at %s: %s", url, state)
            last_log = waited
        stop.wait(poll_seconds)
        waited += poll_seconds
    return False


def run(
    container: Container,
    once: bool = False,
    models: Sequence[str] = (),
    options: TrainerOptions | None = None,
    model_factory: ModelFactory | None = None,
    install_signals: bool = True,
) -> int:
    """Run the trainer (``once``: drain the queue and return). Returns the exit status."""
    trainer = build_trainer(container, options, model_factory)
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()
        trainer.handle_signal(signum, frame)

    if install_signals:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    if not wait_until_migrated(trainer.database, stopped):
        return 0
    if models:
        with trainer.database.write_session() as session:
            for name in models:
                job_id = trainer.training_store.request_job(session, name, reason="requested on the command line")
                logger.info("requested %s (job %d)", name, job_id)
    if once:
        results = trainer.run_once()
        failed = [r for r in results if not r.succeeded]
        logger.info(
            "processed %d job(s): %d succeeded, %d failed%s",
            len(results),
            len(results) - len(failed),
            len(failed),
            "".join(f"; {r.model_name}: {r.error}" for r in failed),
        )
        return 0
    monitoring = container.monitoring_manager()
    monitoring.start_background(aggregation_interval(container.settings().refresh_seconds))
    try:
        trainer.run_forever()
    finally:
        monitoring.stop_background()
    return 0


def aggregation_interval(refresh_seconds: float) -> float:
    """How often the trainer folds new predictions and views into the dashboard's rollups (in its own thread, so
    that a fit in progress does not hold it up and the web workers never spend CPU on it)."""
    return max(5.0, 5 * refresh_seconds)


def _options(args: argparse.Namespace, poll_seconds: float) -> TrainerOptions:
    return TrainerOptions(
        poll_seconds=args.poll_seconds or poll_seconds,
        schedule_seconds=args.schedule_seconds,
        lease_seconds=args.lease_seconds,
        heartbeat_seconds=min(30.0, args.lease_seconds / 4),
        retry=RetryPolicy(max_attempts=args.max_attempts, base_seconds=args.retry_seconds),
        auto_schedule=not args.no_schedule,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="process every due job (and scheduled ones), then exit")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        choices=TRAINABLE_MODEL_NAMES,
        help="request a training of this model first (repeatable)",
    )
    parser.add_argument("--no-schedule", action="store_true", help="only run queued jobs; never schedule by itself")
    parser.add_argument("--poll-seconds", type=float, default=None, help="idle sleep (default RS_TRAINER_POLL_SECONDS)")
    parser.add_argument("--schedule-seconds", type=float, default=60.0, help="how often to schedule models")
    parser.add_argument(
        "--lease-seconds", type=float, default=600.0, help="re-queue a running job after this long without heartbeat"
    )
    parser.add_argument("--max-attempts", type=int, default=4, help="tries of a failing job before it stays failed")
    parser.add_argument("--retry-seconds", type=float, default=60.0, help="first retry delay (doubles each time)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "evaluate":
        return evaluate(args_list[1:])
    args = build_parser().parse_args(args_list)
    container = Container()
    settings = container.settings()
    configure_logging(settings.log_level)
    return run(container, once=args.once, models=args.model, options=_options(args, settings.trainer_poll_seconds))


def evaluate(argv: Sequence[str]) -> int:
    """Dispatch ``evaluate`` to the session protocol (gru4rec) or the user-item protocol (the others)."""
    configure_logging("INFO")
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", default=None)
    known, _ = parser.parse_known_args(argv)
    from trainer import online_retail

    if known.model in SESSION_MODELS or (known.model is not None and known.model not in online_retail.MODELS):
        from trainer import session_evaluation

        if known.model in SESSION_MODELS or known.model in session_evaluation.MODELS:
            return int(session_evaluation.main(list(argv)))
    return int(online_retail.main(list(argv)))


if __name__ == "__main__":
    sys.exit(main())
