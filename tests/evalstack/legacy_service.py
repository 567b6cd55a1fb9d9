#!/usr/bin/env python3
"""Stand-in for the legacy ``api-service``: an in-memory queue, one worker.

Endpoints:

``POST /evaluations``
    JSON ``{"eval_id": str (optional), "code": str, "language": str}``.
    Answers 202 ``{"eval_id": ..., "status": "queued"}``; without ``eval_id``
    the service assigns ``ev-<n>``. Bad JSON or a missing/ill-typed field
    answers 400 ``{"error": ...}``. Resubmitting a known id queues it again.
``GET /evaluations/{id}``
    200 with the outcome document (see ``runner.py``) once done, or
    ``{"eval_id": ..., "status": "queued" | "running"}`` before; 404 if unknown.
``GET /healthz``
    200 ``{"status": "ok"}``.
``GET /queue``
    200 ``{"queue_length": n}``: evaluations waiting for the worker (not the
    one it is running), for shadowdiff's ``[legacy] queue_length_url``.

A single worker thread runs evaluations one at a time, in submission order,
through ``runner.run_evaluation`` (the same code the Celery worker runs).

Run::

    python3 tests/evalstack/legacy_service.py --host 127.0.0.1 --port 0

Once bound it prints exactly one line, ``LISTENING <host>:<port>``, to stdout.
SIGTERM or SIGINT stops it: the evaluation in progress finishes (bounded by
``--timeout-s``), queued ones are dropped. Standard library only.
"""

import argparse
import itertools
import json
import queue
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from runner import run_evaluation


class EvaluationStore:
    """Thread-safe map of eval_id to its current document."""

    def __init__(self):
        self._lock = threading.Lock()
        self._docs = {}
        self._counter = itertools.count(1)

    def new_id(self):
        """Return an unused ``ev-<n>`` id."""
        with self._lock:
            while True:
                eval_id = f"ev-{next(self._counter)}"
                if eval_id not in self._docs:
                    return eval_id

    def set_state(self, eval_id, status):
        """Record a pre-outcome state ("queued" or "running")."""
        self.set_document(eval_id, {"eval_id": eval_id, "status": status})

    def set_document(self, eval_id, document):
        """Record the full document for ``eval_id``."""
        with self._lock:
            self._docs[eval_id] = document

    def get(self, eval_id):
        """Return the document for ``eval_id``, or None if unknown."""
        with self._lock:
            return self._docs.get(eval_id)


class Worker(threading.Thread):
    """The single worker: pops jobs from the queue and runs them in order."""

    def __init__(self, store, jobs, timeout_s):
        super().__init__(name="evaluation-worker")
        self._store = store
        self._jobs = jobs
        self._timeout_s = timeout_s
        self._stopping = threading.Event()

    def run(self):
        while True:
            job = self._jobs.get()
            if job is None or self._stopping.is_set():
                return
            eval_id, code, language = job
            self._store.set_state(eval_id, "running")
            outcome = run_evaluation(eval_id, code, language, self._timeout_s)
            self._store.set_document(eval_id, outcome)

    def stop(self):
        """Ask the worker to exit after the job it is running, if any."""
        self._stopping.set()
        self._jobs.put(None)


def parse_submission(raw):
    """Validate a POST body; return (eval_id or None, code, language).

    Raises ValueError with a client-facing message when the body is invalid.
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    for field in ("code", "language"):
        if not isinstance(body.get(field), str):
            raise ValueError(f"missing or non-string field: {field}")
    eval_id = body.get("eval_id")
    if eval_id is not None and (not isinstance(eval_id, str) or not eval_id):
        raise ValueError("eval_id must be a non-empty string")
    return eval_id, body["code"], body["language"]


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler; ``store``, ``jobs`` and ``verbose`` are set on a subclass."""

    protocol_version = "HTTP/1.1"
    store = None
    jobs = None
    verbose = False

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._send_json(200, {"status": "ok"})
            return
        if path == "/queue":
            self._send_json(200, {"queue_length": self.jobs.qsize()})
            return
        prefix = "/evaluations/"
        document = None
        if path.startswith(prefix) and len(path) > len(prefix):
            document = self.store.get(unquote(path[len(prefix):]))
        if document is None:
            self._send_json(404, {"error": "not found"})
        else:
            self._send_json(200, document)

    def do_POST(self):
        body = self._read_body()
        if urlsplit(self.path).path != "/evaluations":
            self._send_json(404, {"error": "not found"})
            return
        try:
            eval_id, code, language = parse_submission(body)
        except ValueError as exc:
            self._send_json(400, {"error": str(exc)})
            return
        eval_id = eval_id or self.store.new_id()
        self.store.set_state(eval_id, "queued")
        self.jobs.put((eval_id, code, language))
        self._send_json(202, {"eval_id": eval_id, "status": "queued"})

    def _read_body(self):
        """Read the request body (Content-Length or chunked)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length)

    def _read_chunked(self):
        """Decode a chunked request body, discarding any trailers."""
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():
            pass
        return b"".join(chunks)

    def _send_json(self, status, document):
        payload = json.dumps(document).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        if self.verbose:
            super().log_message(format, *args)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 = ephemeral port")
    parser.add_argument("--timeout-s", type=float, default=5.0,
                        help="per-evaluation run time limit (seconds)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    store, jobs = EvaluationStore(), queue.Queue()
    handler = type("BoundHandler", (Handler,),
                   {"store": store, "jobs": jobs, "verbose": args.verbose})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    worker = Worker(store, jobs, args.timeout_s)
    worker.start()

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    host, port = server.server_address[:2]
    print(f"LISTENING {host}:{port}", flush=True)

    stop.wait()
    server.shutdown()
    server.server_close()
    worker.stop()
    worker.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
