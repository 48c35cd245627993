"""Jobs run only where the app is served, and never at the site's expense.

Real processes again: a maintenance script, a pytest suite, the common
run.py layout, an unknown WSGI server, and gunicorn with an instance folder
it cannot write.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import BIN, HERE, ROOT, assert_once_per_tick, wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX servers and signals")
PY = sys.executable


def run_python(tmp_path: Path, code: str, *args: str, timeout: float = 60, **env: str):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    environ = {
        **os.environ,
        "RUNS_FILE": str(tmp_path / "runs.txt"),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "JOB_INTERVAL": "0.05",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}",
        **env,
    }
    for inherited in ("WERKZEUG_RUN_MAIN", "FLASK_RUN_FROM_CLI", "CI"):
        environ.pop(inherited, None)
    return subprocess.run(
        [PY, *args, str(script)],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_script_that_builds_the_app_runs_no_job_and_holds_no_lock(tmp_path):
    result = run_python(
        tmp_path,
        """
        import time
        from factory_app import create_app, ticker

        app = create_app()
        with app.app_context():   # a query, as a maintenance script makes one
            count = len(ticker.jobs)
        time.sleep(0.5)           # long enough for a 0.05 s job to run often
        status = ticker.status()
        print(count, ticker.started, status["runner"], status["is_runner"])
    """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "False", "None", "False"]
    assert not (tmp_path / "runs.txt").exists()
    assert not list((tmp_path / "instance").glob("*.runner"))


def test_a_pytest_suite_runs_no_job_unless_it_asks(tmp_path):
    result = run_python(
        tmp_path,
        """
        import os
        import pytest
        from factory_app import create_app, ticker

        @pytest.fixture
        def app():
            return create_app({"TESTING": True})

        def test_testing_runs_no_job_and_job_run_works(app):
            app.test_client().get("/")
            assert not ticker.started
            ticker.get("hourly").run()  # its short name, as flask ticker list shows it
            assert open(os.environ["RUNS_FILE"]).read().split()[2:] == ["hourly"]

        def test_enabled_runs_the_jobs_at_once_without_a_request(tmp_path):
            os.remove(os.environ["RUNS_FILE"])
            create_app({"TESTING": True, "TICKER_ENABLED": True})
            assert ticker.started
            import time
            deadline = time.monotonic() + 10
            while not os.path.exists(os.environ["RUNS_FILE"]):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert ticker.stop(10)
    """,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_run_py_with_a_factory_and_the_reloader_runs_each_tick_once_in_the_child(serve):
    server = serve([PY, "run_factory.py"])
    runs = server.wait_for_runs(5)
    assert {run.pid for run in runs} != {server.pid} and len({r.pid for r in runs}) == 1
    assert_once_per_tick(runs, 0.5)
    hourly = server.runs("hourly")
    assert len(hourly) == 1 and hourly[0].pid != server.pid  # never in the watcher


def test_an_unknown_server_gets_the_jobs_at_its_first_request(serve):
    server = serve(
        [
            PY,
            "-c",
            textwrap.dedent("""
        import os
        from wsgiref.simple_server import make_server
        from launch_app import app
        make_server("127.0.0.1", int(os.environ["PORT"]), app).serve_forever()
    """),
        ]
    )
    time.sleep(1.5)  # wsgiref is up long before this; jobs wait for a request
    assert server.runs("") == []
    assert int(server.get()) == server.pid
    server.wait_for_runs(3)
    server.get()
    assert len(server.runs("hourly")) == 1


def test_gunicorn_with_an_unusable_lock_file_serves_says_why_and_runs_no_job(serve, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    instance = blocked / "instance"  # under a regular file: even root cannot create it
    server = serve(
        [BIN / "gunicorn", "-w", "2", "-b", "127.0.0.1:{port}", "launch_app:app"],
        INSTANCE_PATH=str(instance),
    )
    server.wait_until_serving()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=10) as response:
        assert response.status == 200
    wait_until(lambda: server.output().count("no job runs in process") == 2, 20, "2 errors")
    errors = [line for line in server.output().splitlines() if "ERROR" in line]
    assert len(errors) == 2, errors  # one per worker, not one per retry
    assert all(str(instance) in line and "TICKER_LOCK" in line for line in errors)
    time.sleep(1)
    assert server.runs("") == []


def test_a_failing_job_under_gunicorn_logs_with_a_time_and_a_level(serve):
    server = serve(
        [BIN / "gunicorn", "-w", "2", "-b", "127.0.0.1:{port}", "launch_app:app"], JOB_FAILS="1"
    )
    server.wait_for_runs(2)
    line = re.compile(
        r"^\[\d{4}-\d\d-\d\d [\d:,.]+\] ERROR in flask_ticker: job 'tick' failed", re.M
    )
    wait_until(lambda: line.search(server.output()), 20, "a formatted error line")


def test_the_example_page_shows_a_lock_it_cannot_use_and_clears_its_note(tmp_path):
    (tmp_path / "plain").write_text("not a folder")
    result = run_python(
        tmp_path,
        """
        import time
        from example_app import app

        client = app.test_client()
        page = client.get("/")
        assert page.status_code == 200, page.status_code
        assert "TICKER_LOCK" in page.text and "NotADirectoryError" in page.text
        queued = client.post("/report").headers["Location"]
        assert "A slow task was queued" in client.get(queued).text
        deadline = time.monotonic() + 20
        while "<td>background task</td>" not in client.get(queued).text:
            assert time.monotonic() < deadline, "the task's row never came"
            time.sleep(0.1)
        assert "A slow task was queued" not in client.get(queued).text
        print("ok")
    """,
        FLASK_DATABASE=str(tmp_path / "example.sqlite3"),
        FLASK_TICKER_ENABLED="false",
        FLASK_TICKER_LOCK=str(tmp_path / "plain" / "x.lock"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["ok"]
