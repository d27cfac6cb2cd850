"""A small Flask app for the role's tests and demo: one fast and one slow endpoint."""

import importlib.metadata
import os
import sys
import time

from flask import Flask, jsonify, request

app = Flask(__name__)
NAME = os.environ.get("APP_NAME", "flaskapp")


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
