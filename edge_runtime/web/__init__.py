"""The clinic web page served on the device (Flask app served by waitress).

Importing this package is cheap: Flask is imported only when an app is made, so ``python -m edge_runtime``
can list the ``serve`` command without loading the web stack.
"""
from __future__ import annotations


def create_app(classifier, data_dir, config=None):
    """See ``edge_runtime.web.app.create_app``."""
    from edge_runtime.web.app import create_app as _create

    return _create(classifier, data_dir, config)
