"""The common run.py: build the app with the factory, then serve it with the
reloader."""

import os
import time

from factory_app import create_app

app = create_app()
time.sleep(0.3)  # the setup a run.py does before serving, such as creating tables

if __name__ == "__main__":
    app.run(debug=True, port=int(os.environ["PORT"]))
