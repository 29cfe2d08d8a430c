"""Grading: is a model's final answer the reference answer?

A cheap exact/numeric comparison settles most answers (nearly all of GSM8K) in-process. Only what it
cannot settle goes to Hugging Face `math-verify`, time-boxed. Its own timeout uses SIGALRM, which only
works in the main thread (Dagster may call us from any thread), so it runs in worker processes that
time themselves with SIGALRM in their own main thread; a worker that still overruns (stuck inside C,
where no signal reaches) is killed and replaced. A timeout counts as a wrong answer.
"""

import atexit
import functools
import json
import logging
import multiprocessing.connection
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from cotgen_assets.core.answers import extract_boxed_answer

# A worker gets this long past its own soft deadline to report before it is killed.
_KILL_GRACE_SECONDS = 0.5
# Starting a worker (importing math-verify) is not part of any answer's time box.
_WORKER_START_SECONDS = 60.0

# --------------------------------------------------------------------------- predicted answers

# A lookahead, so that "Final Answer: The final answer is 7" yields its last phrase, not its first.
# At most 500 characters of it, so that a long line full of "answer" stays linear to search.
_FINAL_PHRASE = re.compile(r"(?=\banswer\b[\s*_]*(?:is\b|:)[\s*_:]*(?P<x>[^\n]{1,500}))", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def extract_predicted_answer(answer_text: str) -> str | None:
    """The model's final answer: last `\\boxed{}`, else an "answer is X" phrase, else the last number."""
    text = answer_text or ""
    boxed = extract_boxed_answer(text)
    if boxed:
        return boxed
    phrases = list(_FINAL_PHRASE.finditer(text))
    if phrases:
        phrase = _clean_phrase(phrases[-1].group("x"))
        if phrase:
            return phrase
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _clean_phrase(phrase: str) -> str:
    """Drop what follows the phrase's sentence, and the markdown, math delimiters and full stop around it."""
    phrase = re.split(r"\.\s", phrase, maxsplit=1)[0].strip().strip("*_").strip()
    for left, right in (("\\(", "\\)"), ("\\[", "\\]"), ("$", "$")):
        if phrase.startswith(left) and phrase.rstrip(".").endswith(right):
            phrase = phrase.rstrip(".")[len(left) : -len(right)].strip()
    return phrase.rstrip(".").strip()


# --------------------------------------------------------------------------- cheap comparison

_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_NOISE = ("\\!", "\\,", "\\;", "\\:", "\\left", "\\right", "\\$", "$")
_UNITS = ("^{\\circ}", "^\\circ", "\\circ", "\\degree", "°", "\\%", "%")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"-?(?:\d+\.?\d*|\.\d+)")
_SLASH_FRACTION = re.compile(r"(-?\d+)/(\d+)")
_LATEX_FRACTION = re.compile(r"(-?)\\frac(?:\{(-?\d+)\}\{(\d+)\}|(\d)(\d))")


def _normalise(answer: str) -> tuple[str, bool]:
    """The answer without spacing, `$`, `\\text{}`, separators and units; and whether a unit went."""
    s = answer.strip().replace("−", "-").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _TEXT.sub(r"\1", s)
    for noise in _NOISE:
        s = s.replace(noise, "")
    had_unit = False
    for unit in _UNITS:
        if unit in s:
            had_unit = True
            s = s.replace(unit, "")
    s = re.sub(r"\\?\s", "", s).replace("{,}", ",").rstrip(".")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s, had_unit


def _as_number(s: str) -> Fraction | None:
    """`s` as an exact number when it is a plain decimal or fraction, else None."""
    if len(s) > 1000:  # not a real answer, and converting it would cost real time: math-verify, time-boxed
        return None
    try:
        if _DECIMAL.fullmatch(s):
            return Fraction(Decimal(s))
        if match := _SLASH_FRACTION.fullmatch(s):
            return Fraction(int(match[1]), int(match[2]))
        if match := _LATEX_FRACTION.fullmatch(s):
            numerator, denominator = (match[2], match[3]) if match[2] else (match[4], match[5])
            value = Fraction(int(numerator), int(denominator))
            return -value if match[1] else value
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None
    return None


def _cheap_match(predicted: str | None, reference: str) -> bool | None:
    """True/False when normalised text or exact numbers settle it; None when math-verify must decide."""
    if predicted is None or not predicted.strip():
        return False
    pred, pred_unit = _normalise(predicted)
    ref, ref_unit = _normalise(reference or "")
    if pred and pred == ref:
        return True
    pred_number, ref_number = _as_number(pred), _as_number(ref)
    if pred_number is None or ref_number is None:
        return None
    if pred_number == ref_number:
        return True
    # "50\%" vs "0.5" differ only once the unit is gone: let math-verify judge percentages.
    return None if pred_unit or ref_unit else False


# --------------------------------------------------------------------------- math-verify, time-boxed


def answers_match(predicted: str | None, reference: str, timeout_seconds: float = 2.0) -> bool:
    """Whether `predicted` is the `reference` answer; a timeout or parse failure counts as wrong."""
    return grade_many([(predicted, reference)], workers=1, timeout_seconds=timeout_seconds)[0]


def grade_many(
    pairs: Iterable[tuple[str | None, str]],
    workers: int | None = None,
    timeout_seconds: float = 2.0,
) -> list[bool]:
    """Grade (predicted, reference) pairs in input order: cheap first, math-verify on the rest in parallel."""
    pairs = list(pairs)
    results = [_cheap_match(predicted, reference) for predicted, reference in pairs]
    undecided = [i for i, result in enumerate(results) if result is None]
    if undecided:
        jobs = [(pairs[i][1], pairs[i][0]) for i in undecided]
        size = min(workers or os.cpu_count() or 1, len(jobs))
        with _POOL_LOCK:
            verdicts = _shared_pool().run(jobs, size, timeout_seconds)
        for i, verdict in zip(undecided, verdicts):
            results[i] = verdict
    return [bool(result) for result in results]


def _math_verify(gold: str, predicted: str) -> bool:
    """math-verify's verdict, its own (signal-based) timeouts off: the worker's deadline replaces them."""
    from math_verify import verify

    gold_parsed = _parse(_as_latex(gold))
    predicted_parsed = _parse(_as_latex(predicted))
    if not any(not isinstance(p, str) for p in predicted_parsed):
        predicted_parsed = _parse(predicted) or predicted_parsed
    if not gold_parsed or not predicted_parsed:
        return False
    return verify(gold_parsed, predicted_parsed, timeout_seconds=None)


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> list:
    """math-verify's parse, remembered: a reference is graded again and again (retries, CoT and CoD)."""
    from math_verify import parse

    return parse(text, parsing_timeout=None)


def _as_latex(answer: str) -> str:
    """A bare answer as inline math, so math-verify parses all of it as LaTeX (a final full stop breaks)."""
    answer = re.sub(r"(?<![.\\])\.\s*$", "", re.sub(r"(?<!\\)\$", "", answer.strip()))
    return "$" + answer + "$"


class _SoftTimeout(BaseException):
    """A worker's own timer ran out; a BaseException so math-verify's `except Exception` lets it by."""


def _raise_soft_timeout(signum, frame):
    raise _SoftTimeout()


def _serve() -> None:
    """A verifier process: reads `[gold, predicted, timeout]` JSON lines, writes `true`/`false` lines.

    It runs in its own main thread, so a SIGALRM timer can interrupt math-verify's Python code.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's; we exit when our input ends
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that its timeout is off
    # Importing and the first comparison (lazy imports, parser set-up: ~0.4 s each) happen before
    # "ready", so they count against no answer's time box.
    _math_verify("x^2+2x", "x(x+2)")
    _math_verify("(1, 2)", "\\left(1,2\\right)")
    signal.signal(signal.SIGALRM, _raise_soft_timeout)
    print("ready", flush=True)
    for line in sys.stdin:
        verdict = False
        try:
            gold, predicted, timeout_seconds = json.loads(line)
            signal.setitimer(signal.ITIMER_REAL, timeout_seconds)
            verdict = bool(_math_verify(gold, predicted))
        except BaseException:  # timeout, parse error, RecursionError, MemoryError: not correct
            verdict = False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        print("true" if verdict else "false", flush=True)


class _Worker:
    """One verifier process (`_serve`), started with the same interpreter, spoken to over its stdin/stdout."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from cotgen_assets.core.grading import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        """Block until the worker has imported math-verify; starting is not part of any time box."""
        if not multiprocessing.connection.wait([self.process.stdout], _WORKER_START_SECONDS) or (
            self.process.stdout.readline().strip() != "ready"
        ):
            self.kill()
            raise RuntimeError(f"a math-verify worker ({sys.executable}) did not start")

    def send(self, gold: str, predicted: str, timeout_seconds: float) -> None:
        self.process.stdin.write(json.dumps([gold, predicted, timeout_seconds]) + "\n")
        self.process.stdin.flush()

    def receive(self) -> bool:
        """The verdict it wrote; raises EOFError if the worker died."""
        line = self.process.stdout.readline()
        if not line:
            raise EOFError("math-verify worker exited")
        return line.strip() == "true"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


class _VerifierPool:
    """Processes running math-verify, one job each at a time, each job under a deadline.

    A worker that misses its deadline (stuck in C code, where no signal reaches) or dies is killed
    and replaced, and its job counts as wrong. Workers stay up between calls: starting one costs
    about half a second (importing sympy), grading one answer a few milliseconds.
    """

    def __init__(self):
        self.workers: list[_Worker] = []
        self.pid = os.getpid()

    def run(self, jobs: list[tuple[str, str]], size: int, timeout_seconds: float) -> list[bool]:
        """Verdicts for (gold, predicted) jobs in order, on up to `size` workers."""
        self._grow(min(size, len(jobs)))
        results = [False] * len(jobs)
        queue = deque(range(len(jobs)))
        idle = self.workers[: max(1, size)]
        busy: dict = {}  # stdout -> (worker, job index, deadline)
        try:
            while queue or busy:
                while queue and idle:
                    worker, i = idle.pop(), queue.popleft()
                    try:
                        worker.send(*jobs[i], timeout_seconds)
                    except OSError:  # it died while idle: try again on a fresh one
                        queue.appendleft(i)
                        idle.append(self._replace(worker))
                        continue
                    deadline = time.monotonic() + timeout_seconds + _KILL_GRACE_SECONDS
                    busy[worker.process.stdout] = (worker, i, deadline)
                wait = max(0.0, min(deadline for _, _, deadline in busy.values()) - time.monotonic())
                for stdout in multiprocessing.connection.wait(list(busy), timeout=wait):
                    worker, i, _ = busy.pop(stdout)
                    try:
                        results[i] = worker.receive()
                        idle.append(worker)
                    except (EOFError, OSError):  # it died (e.g. out of memory): not correct
                        idle.append(self._replace(worker))
                now = time.monotonic()
                for stdout, (worker, _i, deadline) in list(busy.items()):
                    if now >= deadline:
                        del busy[stdout]
                        idle.append(self._replace(worker))
        except (
            BaseException
        ):  # e.g. KeyboardInterrupt: a busy worker's late verdict must not answer a later job
            for worker, _, _ in busy.values():
                self._drop(worker)
            raise
        return results

    def _grow(self, size: int) -> None:
        """Start workers (in parallel) until there are `size`."""
        new = [_Worker() for _ in range(size - len(self.workers))]
        self.workers += new
        try:
            for worker in new:
                worker.wait_ready()
        except BaseException:
            for worker in new:
                self._drop(worker)
            raise

    def _replace(self, worker: _Worker) -> _Worker:
        self._drop(worker)
        self._grow(len(self.workers) + 1)
        return self.workers[-1]

    def _drop(self, worker: _Worker) -> None:
        worker.kill()
        if worker in self.workers:
            self.workers.remove(worker)

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker.process.stdin.close()  # the worker exits at end of input
            except OSError:
                pass
        for worker in self.workers:
            try:
                worker.process.wait(1.0)
            except subprocess.TimeoutExpired:
                worker.kill()
        self.workers = []


_POOL_LOCK = threading.Lock()
_POOL: _VerifierPool | None = None


def _shared_pool() -> _VerifierPool:
    """This process's pool (call with `_POOL_LOCK` held); a forked child starts its own, not its parent's."""
    global _POOL
    if _POOL is None or _POOL.pid != os.getpid():
        _POOL = _VerifierPool()
        atexit.register(_POOL.close)
    return _POOL
