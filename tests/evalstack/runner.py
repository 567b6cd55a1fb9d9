"""Run one evaluation's code in a subprocess and describe the outcome.

This is the single execution path shared by the legacy stand-in
(``legacy_service.py``) and the Celery worker (``celery_app.py``), so both
systems produce identical outcomes unless a divergence switch says otherwise.

An outcome is a dict with exactly these keys:

``eval_id``      the evaluation id, echoed back
``status``       "completed" (exit code 0), "failed" (non-zero exit code),
                 "timeout" (killed after ``timeout_s``) or "error"
                 (unsupported language)
``stdout``       captured standard output (text, undecodable bytes replaced)
``stderr``       captured standard error
``exit_code``    the process exit code, or None for "timeout" and "error"
``duration_ms``  wall-clock run time in whole milliseconds

Standard library only.
"""

import os
import signal
import subprocess
import sys
import time

_COMMANDS = {
    "python": lambda code: [sys.executable, "-c", code],
    "bash": lambda code: ["bash", "-c", code],
    "sh": lambda code: ["bash", "-c", code],
}


def run_evaluation(eval_id, code, language, timeout_s=5.0):
    """Run ``code`` written in ``language`` and return its outcome dict."""
    command = _COMMANDS.get(language)
    if command is None:
        return _outcome(eval_id, "error", "", f"unsupported language: {language}", None, 0)
    started = time.monotonic()
    stdout, stderr, exit_code = _run(command(code), timeout_s)
    duration_ms = int((time.monotonic() - started) * 1000)
    if exit_code is None:
        status = "timeout"
    else:
        status = "completed" if exit_code == 0 else "failed"
    return _outcome(eval_id, status, stdout, stderr, exit_code, duration_ms)


def _run(argv, timeout_s):
    """Run ``argv``; return (stdout, stderr, exit code or None on timeout).

    The child gets its own session so that, on timeout or on any exception
    raised while waiting (e.g. Celery's SoftTimeLimitExceeded), the whole
    process group is killed, grandchildren included, and no pipe stays open.
    """
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
        exit_code = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        exit_code = None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    return _text(out), _text(err), exit_code


def _kill_group(proc):
    """SIGKILL the process group led by ``proc`` (ignore if already gone)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _text(data):
    """Decode captured bytes as UTF-8, replacing what does not decode."""
    return data.decode("utf-8", errors="replace")


def _outcome(eval_id, status, stdout, stderr, exit_code, duration_ms):
    """Build an outcome dict with the fixed key set."""
    return {
        "eval_id": eval_id,
        "status": status,
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": exit_code,
        "duration_ms": duration_ms,
    }
