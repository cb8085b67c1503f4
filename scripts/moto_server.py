"""A local DynamoDB for the tests and the bench: moto's server (installed by scripts/setup-moto in
~/.cache/bkjs/moto) on 127.0.0.1:PORT, with every request handled under one lock. moto's own
server runs requests on parallel threads without making an UpdateItem ADD atomic, which DynamoDB
is; serializing them gives the tests DynamoDB's atomicity. (werkzeug answers every request with
`Connection: close`, so clients connect once per request here.)

Usage: python scripts/moto_server.py HOST PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()


def serialized(environ, start_response):
    with lock:
        return list(app(environ, start_response))


if __name__ == "__main__":
    run_simple(sys.argv[1], int(sys.argv[2]), serialized, threaded=True)
