"""moto server, as `moto_server` runs it, with one difference: DynamoDB requests are
handled one at a time.

moto's DynamoDB checks a write's condition and applies the write without a lock, so
two concurrent conditional writes to one item can both pass: two workers both claim a
job, and `attempts = attempts + 1` loses one increment. DynamoDB itself applies the
writes to an item one after another, which the worker's claim relies on. SQS requests,
long polls among them, stay concurrent.

Usage: python infra/moto/server.py HOST PORT (infra/moto/start.sh runs it).
"""

import os
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    # moto builds queue URLs from it, as moto_server sets it.
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    dynamodb = threading.Lock()

    def serialised(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with dynamodb:
                # The whole response is made inside the lock.
                return list(app(environ, start_response))
        return app(environ, start_response)

    run_simple(host, port, serialised, threaded=True)


if __name__ == "__main__":
    main()
