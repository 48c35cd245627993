"""An app built the way most real apps are: a module-level ticker, and an
app factory that binds it and declares the jobs.  Runs are written to
$RUNS_FILE as in launch_app.py."""

from __future__ import annotations

import os
import time

from flask import Flask

from flask_ticker import Ticker

ticker = Ticker()


def note(event: str) -> None:
    with open(os.environ["RUNS_FILE"], "a") as runs:
        runs.write(f"{os.getpid()} {time.time():.4f} {event}\n")


def create_app(config: dict | None = None) -> Flask:
    app = Flask("factory_app", instance_path=os.environ.get("INSTANCE_PATH"))
    app.config["TICKER_LOCK_RETRY"] = 0.2
    app.config.from_prefixed_env()
    app.config.update(config or {})
    ticker.init_app(app)

    @ticker.every(float(os.environ.get("JOB_INTERVAL", "0.5")))
    def tick() -> None:
        note("tick")

    @ticker.every(3600)
    def hourly() -> None:
        note("hourly")

    @app.get("/")
    def index() -> str:
        return str(os.getpid())

    return app
