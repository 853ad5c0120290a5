"""The moderators' web workbench: static HTML, CSS and ES modules (``static/``), served by
:mod:`serve.routes_workbench`. No build step: the files are shipped as package data as they are."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
