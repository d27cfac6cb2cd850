"""A small Flask app for the role's tests and demo: one fast and one slow endpoint."""

import importlib.metadata
import os
import sys
import time

from flask import Flask, jsonify, request

# A large project's import takes seconds (IMPORT_SECONDS); a release directory
# names its build in a BUILD file beside this module.
time.sleep(float(os.environ.get("IMPORT_SECONDS", "0")))
try:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "BUILD"), encoding="utf-8") as _handle:
        BUILD = _handle.read().strip()
except OSError:
    BUILD = "none"

app = Flask(__name__)
NAME = os.environ.get("APP_NAME", "flaskapp")


@app.route("/build")
def build():
    """The build this worker imported: where its module was loaded from."""
    return f"{BUILD}\n"


@app.route("/")
def index():
    return f"hello from {NAME}\n"


@app.route("/slow")
def slow():
    seconds = min(float(request.args.get("t", "0.5")), 30.0)
    time.sleep(seconds)
    return f"slept {seconds} in {NAME}\n"


@app.route("/about")
def about():
    """Which Python prefix and which Flask serve this app (its venv's or the system's)."""
    return jsonify(name=NAME, prefix=sys.prefix, flask=importlib.metadata.version("flask"))


@app.route("/env")
def env():
    """The environment values named by ?k=NAME (repeatable), as JSON: what the app really received."""
    return jsonify({key: os.environ.get(key) for key in request.args.getlist("k")})
