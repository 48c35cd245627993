"""A small app that keeps a SQLite table fresh with flask_ticker.

    python example_app.py               # debug server with the reloader
    flask --app example_app run --debug

A ticker job writes a row every few seconds, the first one at start-up; the
page lists the rows and the job's stats, and its button starts a slow
background task that writes to the same table.  Settings can be overridden
from the environment: FLASK_UPDATE_EVERY=1, FLASK_DATABASE=/tmp/x.sqlite3.
"""
from __future__ import annotations

import os
import sqlite3
import time
from datetime import datetime, timezone

from flask import Flask, g, redirect, render_template_string, url_for

from flask_ticker import Ticker, run_in_background

app = Flask(__name__)
app.config.from_mapping(
    DATABASE=os.path.join(app.instance_path, "example.sqlite3"),
    UPDATE_EVERY=5,
)
app.config.from_prefixed_env()
ticker = Ticker(app)


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        os.makedirs(os.path.dirname(app.config["DATABASE"]), exist_ok=True)
        g.db = sqlite3.connect(app.config["DATABASE"], timeout=10)
        g.db.execute("CREATE TABLE IF NOT EXISTS updates"
                     " (at TEXT NOT NULL, source TEXT NOT NULL, pid INTEGER NOT NULL)")
    return g.db


@app.teardown_appcontext
def close_db(exc: BaseException | None) -> None:
    # Runs after every request and, thanks to the ticker, after every job run.
    db = g.pop("db", None)
    if db is not None:
        db.close()


def record(source: str) -> None:
    db = get_db()
    with db:
        db.execute("INSERT INTO updates VALUES (?, ?, ?)",
                   (datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    source, os.getpid()))


@ticker.every(app.config["UPDATE_EVERY"])
def refresh() -> None:
    record("ticker")


def slow_report() -> None:
    time.sleep(2)  # stands in for a slow API call or a mail server
    record("background task")


PAGE = """<!doctype html>
<title>flask_ticker example</title>
<h1>flask_ticker example</h1>
<form method="post" action="{{ url_for('report') }}">
  <button>Run a slow task in the background</button>
</form>
<h2>Jobs</h2>
<table border="1" cellpadding="4">
  <tr><th>name</th><th>every</th><th>next run (UTC)</th><th>runs</th>
      <th>failures</th><th>skipped</th><th>last error</th></tr>
  {% for job in jobs %}
  <tr><td>{{ job.name }}</td><td>{{ job.interval }} s</td>
      <td>{{ job.next_run.strftime('%H:%M:%S') if job.next_run else '-' }}</td>
      <td>{{ job.runs }}</td><td>{{ job.failures }}</td><td>{{ job.skipped }}</td>
      <td>{{ job.last_error or '' }}</td></tr>
  {% endfor %}
</table>
<h2>Latest updates</h2>
<table border="1" cellpadding="4">
  <tr><th>at (UTC)</th><th>by</th><th>pid</th></tr>
  {% for at, source, pid in rows %}
  <tr><td>{{ at }}</td><td>{{ source }}</td><td>{{ pid }}</td></tr>
  {% endfor %}
</table>
"""


@app.get("/")
def index() -> str:
    rows = get_db().execute(
        "SELECT at, source, pid FROM updates ORDER BY at DESC LIMIT 20").fetchall()
    return render_template_string(PAGE, jobs=ticker.jobs, rows=rows)


@app.post("/report")
def report():
    run_in_background(slow_report)
    return redirect(url_for("index"))


if __name__ == "__main__":
    app.run(debug=True, port=int(os.environ.get("PORT", 5000)))
