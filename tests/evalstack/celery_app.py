"""Celery side of the evalstack: the app ``evalstack`` and its tasks.

Broker and result backend come from ``SHADOWDIFF_BROKER_URL`` and
``SHADOWDIFF_RESULT_URL`` (default ``redis://127.0.0.1:6379/0``). For production
Redis shapes, ``SHADOWDIFF_USE_SSL`` (a JSON object with Celery's keys
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` as
``none``/``optional``/``required``) sets ``broker_use_ssl`` and
``redis_backend_use_ssl``, and ``SHADOWDIFF_TRANSPORT_OPTIONS`` (a JSON object,
e.g. ``{"master_name": "mymaster"}`` for ``sentinel://`` URLs) sets
``broker_transport_options`` and ``result_backend_transport_options``. Run a worker
from this directory (or with ``--workdir`` pointing here)::

    celery -A celery_app worker -Q <queue> -P prefork -c 2 \
        --without-mingle --without-gossip -l info

Tasks:

``evaluate(eval_id, code, language, shadow=False)``
    Runs the code through ``runner.run_evaluation``, the same function the
    legacy stand-in uses, and returns its outcome dict. ``shadow`` is accepted
    so shadowdiff can mark mirrored runs; this stand-in has no side effects to
    suppress, so it changes nothing.
``trivial(eval_id, code, language, shadow=False)``
    Returns a fixed "completed" outcome at once, without a subprocess (for
    throughput runs).

Switches for ``evaluate``, read from the worker's environment at each call,
make it diverge from the legacy service in known ways:

``EVALSTACK_TIMEOUT_S`` (default 5)
    Run time limit passed to the runner (match the legacy ``--timeout-s``).
``EVALSTACK_SLEEP_WHEN=<substring>`` with ``EVALSTACK_SLEEP_S`` (default 5)
    When the code contains the substring, sleep that many seconds before
    running it. A soft time limit (message header ``timelimit: [hard, soft]``)
    that fires meanwhile raises ``SoftTimeLimitExceeded``, which is not caught:
    the result is a FAILURE.
``EVALSTACK_RAISE_WHEN=<substring>``
    When the code contains the substring, raise
    ``RuntimeError("evalstack: forced failure")`` instead of running it.
``EVALSTACK_STDOUT_SUFFIX_WHEN=<substring>`` with ``EVALSTACK_STDOUT_SUFFIX``
(default ``"shadow-diverged\\n"``)
    When the code contains the substring, append the suffix to the outcome's
    stdout.

``EVALSTACK_NOISE_FIELD=<name>``
    Put a fresh random value (32 hex digits) at key ``<name>`` of every outcome,
    as a worker that stamps each run with its own id would: two runs of the same
    evaluation differ there, which shadowdiff's double runs learn as noise.

``EVALSTACK_RESULT_SERIALIZER`` (default ``json``)
    The worker's ``result_serializer``; ``pickle`` writes results shadowdiff
    cannot read.

An unset or empty ``*_WHEN`` variable disables its switch. Switches apply in
the order sleep, raise, run, suffix, noise.
"""

import json
import os
import ssl
import time
import uuid

from celery import Celery

from runner import run_evaluation

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

app = Celery(
    "evalstack",
    broker=os.environ.get("SHADOWDIFF_BROKER_URL", DEFAULT_REDIS_URL),
    backend=os.environ.get("SHADOWDIFF_RESULT_URL", DEFAULT_REDIS_URL),
)
app.conf.update(
    task_serializer="json",
    # EVALSTACK_RESULT_SERIALIZER=pickle plays a worker misconfigured for shadowdiff,
    # which reads JSON results only.
    result_serializer=os.environ.get("EVALSTACK_RESULT_SERIALIZER", "json"),
    accept_content=["json"],
    task_acks_late=False,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
if os.environ.get("SHADOWDIFF_USE_SSL"):
    use_ssl = json.loads(os.environ["SHADOWDIFF_USE_SSL"])
    use_ssl["ssl_cert_reqs"] = _CERT_REQS[use_ssl.get("ssl_cert_reqs", "required")]
    app.conf.update(broker_use_ssl=use_ssl, redis_backend_use_ssl=use_ssl)
if os.environ.get("SHADOWDIFF_TRANSPORT_OPTIONS"):
    options = json.loads(os.environ["SHADOWDIFF_TRANSPORT_OPTIONS"])
    app.conf.update(broker_transport_options=options, result_backend_transport_options=options)


def _switch_matches(name, code):
    """True when env var ``name`` is set, non-empty and occurs in ``code``."""
    needle = os.environ.get(name, "")
    return bool(needle) and needle in code


@app.task(name="evaluate")
def evaluate(eval_id, code, language, shadow=False):
    """Run one evaluation like the legacy service, subject to the switches."""
    if _switch_matches("EVALSTACK_SLEEP_WHEN", code):
        time.sleep(float(os.environ.get("EVALSTACK_SLEEP_S", "5")))
    if _switch_matches("EVALSTACK_RAISE_WHEN", code):
        raise RuntimeError("evalstack: forced failure")
    timeout_s = float(os.environ.get("EVALSTACK_TIMEOUT_S", "5"))
    outcome = run_evaluation(eval_id, code, language, timeout_s)
    if _switch_matches("EVALSTACK_STDOUT_SUFFIX_WHEN", code):
        outcome["stdout"] += os.environ.get("EVALSTACK_STDOUT_SUFFIX", "shadow-diverged\n")
    noise_field = os.environ.get("EVALSTACK_NOISE_FIELD", "")
    if noise_field:
        outcome[noise_field] = uuid.uuid4().hex
    return outcome


@app.task(name="trivial")
def trivial(eval_id, code, language, shadow=False):
    """Return a fixed completed outcome without running anything."""
    return {
        "eval_id": eval_id,
        "status": "completed",
        "stdout": "",
        "stderr": "",
        "exit_code": 0,
        "duration_ms": 0,
    }
