"""A small app that keeps a SQLite table fresh with flask_ticker.

    python example_app.py               # debug server with the reloader
    flask --app example_app run --debug

A ticker job writes a row every few seconds, the first one at start-up; the
page shows the deployment's job status (the same from every worker), the
latest rows, and a button that starts a slow background task writing to the
same table.  It refreshes itself every few seconds.  Settings can be
overridden from the environment: FLASK_UPDATE_EVERY=1,
FLASK_DATABASE=/tmp/x.sqlite3.
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from flask import Flask, g, redirect, render_template_string, request, url_for

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
        g.db.execute(
            "CREATE TABLE IF NOT EXISTS updates"
            " (at TEXT NOT NULL, source TEXT NOT NULL, pid INTEGER NOT NULL)"
        )
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
        db.execute("INSERT INTO updates VALUES (?, ?, ?)", (now(), source, os.getpid()))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@ticker.every(app.config["UPDATE_EVERY"])
def refresh() -> None:
    record("ticker")


def slow_report() -> None:
    time.sleep(2)  # stands in for a slow API call or a mail server
    record("background task")


PAGE = """<!doctype html>
<meta http-equiv="refresh" content="3">
<title>flask_ticker example</title>
<style>
  body { font-family: sans-serif; margin: 2em; }
  table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; }
  .note { background: #e8f5e9; padding: 6px 10px; display: inline-block; }
  .failed { color: #b00020; }
</style>
<h1>flask_ticker example</h1>
{% if status.error %}<p class="failed">{{ status.error }}</p>{% endif %}
<p>This page was served by process {{ pid }}.
  {% if status.runner %}Process {{ status.runner.pid }} on {{ status.runner.host }}
  runs the jobs, since {{ status.runner.since | when }}.
  {% else %}No process runs the jobs right now.{% endif %}
  The page refreshes every 3 seconds.</p>
{% if queued %}<p class="note">A slow task was queued; its row appears in about 2 seconds.</p>{% endif %}
<form method="post" action="{{ url_for('report') }}">
  <button>Run a slow task in the background</button>
</form>
<h2>Jobs</h2>
<table>
  <tr><th>name</th><th>every</th><th>next run</th><th>last run</th>
      <th>took</th><th>runs</th><th>failures</th><th>skipped</th><th>last error</th></tr>
  {% for job in status.jobs %}
  <tr><td class="name">{{ job.name }}</td><td>{{ job.interval }} s</td>
      <td>{{ job.next_run | when(job.tz) }}</td>
      <td class="last-run">{{ job.last_run | when(job.tz) }}</td>
      <td>{{ job.last_duration | duration }}</td>
      <td class="runs">{{ job.runs }}</td><td>{{ job.failures }}</td><td>{{ job.skipped }}</td>
      <td class="failed">{{ job.last_error or '' }}</td></tr>
  {% endfor %}
</table>
<h2>Latest updates</h2>
<table>
  <tr><th>at</th><th>by</th><th>pid</th></tr>
  {% for at, source, pid in rows %}
  <tr><td>{{ at | when }}</td><td>{{ source }}</td><td>{{ pid }}</td></tr>
  {% endfor %}
</table>
"""


@app.template_filter()
def when(iso: str | None, zone: str | None = None) -> str:
    """Every time on the page in one format, in the job's zone if it has one."""
    if not iso:
        return "-"
    shown = datetime.fromisoformat(iso).astimezone(ZoneInfo(zone) if zone else timezone.utc)
    return f"{shown:%Y-%m-%d %H:%M:%S} {shown.tzname()}"


@app.template_filter()
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 1 else f"{ms:.0f} ms" if ms < 1000 else f"{seconds:.1f} s"


@app.get("/")
def index() -> str:
    rows = (
        get_db()
        .execute("SELECT at, source, pid FROM updates ORDER BY at DESC LIMIT 20")
        .fetchall()
    )
    # The note stays until the task's row is there; the page reloads meanwhile.
    queued = request.args.get("queued")
    done = queued and any(source == "background task" and at >= queued for at, source, _ in rows)
    return render_template_string(
        PAGE, status=ticker.status(), rows=rows, pid=os.getpid(), queued=queued and not done
    )


@app.post("/report")
def report():
    run_in_background(slow_report)
    return redirect(url_for("index", queued=now()))


if __name__ == "__main__":
    app.run(debug=True, port=int(os.environ.get("PORT", 5000)))
