"""Decode task messages the way a Celery worker does, without a broker.

Used by tests/prop_celery_message.rs. Each line of stdin is one Redis list item as
LPUSHed (a kombu envelope, ASCII JSON on one line). Each line of stdout is what the
worker makes of it, in JSON: the task's id, name, args, kwargs, priority and delivery
info as `celery.worker.request.Request` sees them, the `argsrepr`/`kwargsrepr` headers
beside Celery's own `saferepr` of the decoded values, or `{"error": ...}` when kombu or
Celery refuses the message.

The path is the worker's: `kombu.utils.json.loads` of the item (as the Redis transport's
`_brpop_read`), kombu's virtual `Message` (base64 body decoding), `Message.payload`
(kombu's serializer registry, accepting JSON only, as a worker does), then Celery's
`Request`. Stdlib, kombu and Celery only.
"""

import json
import sys

from celery import Celery
from celery.utils.saferepr import saferepr
from celery.worker.request import Request
from kombu.transport.virtual.base import Channel, Message
from kombu.utils.json import loads


class OfflineChannel:
    """What kombu's virtual Message needs of a channel: its body codecs."""

    codecs = Channel.codecs
    decode_body = Channel.decode_body


def anything(*args, **kwargs):
    """The body of every task the decoder is asked about: never run."""


def decode(app, item):
    payload = loads(item)
    message = Message(payload, channel=OfflineChannel(), accept={"application/json"})
    name = message.headers["task"]
    if name not in app.tasks:
        app.task(name=name, shared=False)(anything)
    request = Request(message, app=app, hostname="decode@offline")
    maxlevels = app.conf.task_repr_maxlevels
    return {
        "id": request.id,
        "task": request.name,
        "args": request.args,
        "kwargs": request.kwargs,
        "kwargs_order": list(request.kwargs),
        "priority": message.properties.get("priority"),
        "delivery_info": request.delivery_info,
        "argsrepr": message.headers.get("argsrepr"),
        "argsrepr_celery": saferepr(tuple(request.args), 1024, maxlevels=maxlevels),
        "kwargsrepr": message.headers.get("kwargsrepr"),
        "kwargsrepr_celery": saferepr(request.kwargs, 1024, maxlevels=maxlevels),
    }


def main():
    app = Celery("decode", set_as_current=False)
    for line in sys.stdin:
        try:
            out = decode(app, line.rstrip("\n"))
        except Exception as exc:  # the message is refused: say why
            out = {"error": f"{type(exc).__name__}: {exc}"}
        # Values kombu turned into Python types JSON lacks (bytes, datetime...) are shown
        # as their repr, so that the test reports them as a difference.
        sys.stdout.write(json.dumps(out, default=lambda o: {"python": repr(o)}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
