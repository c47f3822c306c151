"""Optional LLM jury: the Visual-TableQA paper's grading protocol against endpoints you configure.

Each judge is an OpenAI-compatible chat endpoint (``POST {base_url}/chat/completions`` with
``{"model", "messages", "temperature": 0}``). For every (question, reference, prediction) each
judge gives a binary verdict: is the prediction logically consistent with, and does it have the
same meaning as, the reference? The item's verdict is the majority vote of the judges that
answered; a tie is broken by the designated judge.

Rules (documented choices where the paper leaves room):

* Retries: a call that times out, cannot connect, gets HTTP 408/429/5xx, an unreadable body, or
  a reply with no recognisable verdict is retried up to ``Judge.max_retries`` times with
  exponential backoff (``Jury.backoff * 2**attempt``, capped by ``Jury.max_backoff``; a 429's
  ``Retry-After`` is honoured within that cap). Other HTTP errors (400, 401, 403, 404, ...) are
  not retried. A judge that still has no verdict is left out of that item's vote and its reason
  is kept in the item record.
* Dropping: a judge that fails on ``Jury.drop_after`` consecutive items (default 3) is dropped
  from the jury for the rest of the run (the object's life); the reason is kept in
  ``Jury.dropped`` and the summary. A new `Jury` (e.g. a resumed `judge_file`) starts with every
  judge again.
* Ties: broken by ``tie_breaker`` (default: the first judge). When that judge gave no verdict on
  the item (failed or dropped), the first judge in configuration order that voted breaks it;
  ``tie_broken_by`` records who did. With no verdict at all the item's verdict is None.
* Secrets: ``Judge.api_key_env`` names the environment variable that holds the key; the key is
  read at call time, sent only in the ``Authorization: Bearer`` header, and is never stored,
  logged, written to a file or put in an exception message (replies and error bodies are
  redacted in case a server echoes it).
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Mapping

from ..io import append_jsonl, read_jsonl
from .judges import (RAW_CHARS, SYSTEM_PROMPT, USER_TEMPLATE, Judge, JudgeError, _as_int,
                     call_judge, load_judges, parse_verdict)

log = logging.getLogger(__name__)


def load_jury(path: str | Path, **kwargs) -> "Jury":
    """A `Jury` from a config file (see `load_judges`); its "tie_breaker" is used unless given."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and data.get("tie_breaker") is not None:
        kwargs.setdefault("tie_breaker", data["tie_breaker"])
    return Jury(load_judges(path), **kwargs)


class Jury:
    """Judges that vote on each answer (see the module docstring for the rules)."""

    def __init__(self, judges: Iterable[Judge], tie_breaker: str | None = None,
                 drop_after: int | None = 3,  # consecutive failed items before a judge leaves the run; None: never
                 backoff: float = 1.0,  # first retry delay in seconds, doubled each retry
                 max_backoff: float = 30.0,  # longest delay between retries (Retry-After included)
                 parallel: bool = True,  # ask the judges of an item concurrently (one thread per judge)
                 sleep: Callable[[float], None] = time.sleep,  # injectable for tests
                 system_prompt: str = SYSTEM_PROMPT, user_template: str = USER_TEMPLATE):
        self.judges = list(judges)
        if not self.judges:
            raise ValueError("a jury needs at least one judge")
        names = [j.name for j in self.judges]
        if len(set(names)) != len(names):
            raise ValueError(f"judge names must be unique, got {names}")
        if tie_breaker is not None and tie_breaker not in names:
            raise ValueError(f"tie_breaker {tie_breaker!r} is not one of the judges {names}")
        self.tie_breaker = tie_breaker or names[0]
        self.drop_after, self.backoff, self.max_backoff = drop_after, backoff, max_backoff
        self.parallel, self.sleep = parallel, sleep
        self.system_prompt, self.user_template = system_prompt, user_template
        self.dropped: dict[str, str] = {}  # judge -> reason, for the rest of this run
        self._consecutive_failures = {n: 0 for n in names}
        self._warned_no_key: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Jury(judges={[j.name for j in self.judges]}, tie_breaker={self.tie_breaker!r}, dropped={self.dropped})"

    @property
    def active(self) -> list[Judge]:
        return [j for j in self.judges if j.name not in self.dropped]

    def messages(self, question: str, reference: str, prediction: str) -> list[dict]:
        return [{"role": "system", "content": self.system_prompt},
                {"role": "user", "content": self.user_template.format(
                    question=question, reference=reference, prediction=prediction)}]

    def _ask(self, judge: Judge, messages: list[dict]) -> dict:
        """One judge's verdict on one item, with retries: a per-judge record."""
        rec = {"verdict": None, "raw": None, "calls": 0, "retries": 0, "prompt_tokens": 0,
               "completion_tokens": 0, "tokens_estimated": False, "cost": None, "error": None, "dropped": False}
        if judge.api_key_env and not os.environ.get(judge.api_key_env) and judge.name not in self._warned_no_key:
            with self._lock:
                self._warned_no_key.add(judge.name)
            log.warning("judge %s: environment variable %s is not set; calling without a key",
                        judge.name, judge.api_key_env)
        attempts = 1 + max(0, int(judge.max_retries))
        for attempt in range(attempts):
            rec["calls"] += 1
            retry_after = None
            try:
                text, usage = call_judge(judge, messages)
                if usage:
                    rec["prompt_tokens"] += _as_int(usage.get("prompt_tokens"))
                    rec["completion_tokens"] += _as_int(usage.get("completion_tokens"))
                else:  # estimate: about 4 characters a token
                    rec["tokens_estimated"] = True
                    rec["prompt_tokens"] += math.ceil(sum(len(m["content"]) for m in messages) / 4)
                    rec["completion_tokens"] += math.ceil(len(text) / 4)
                rec["raw"] = text[:RAW_CHARS]
                verdict = parse_verdict(text)
                if verdict is not None:
                    rec["verdict"], rec["error"] = verdict, None
                    break
                rec["error"] = f"malformed verdict: {text[:80]!r}"
                retryable = True
            except JudgeError as e:
                rec["error"] = str(e)
                retryable, retry_after = e.retryable, e.retry_after
            if not retryable or attempt == attempts - 1:
                break
            delay = min(self.max_backoff, self.backoff * (2 ** attempt))
            if retry_after is not None:
                delay = min(self.max_backoff, max(delay, retry_after))
            log.warning("judge %s: attempt %d/%d failed (%s); retrying in %.2fs",
                        judge.name, attempt + 1, attempts, rec["error"], delay)
            rec["retries"] += 1
            self.sleep(delay)
        rec["cost"] = judge.cost(rec["prompt_tokens"], rec["completion_tokens"])
        return rec

    def judge(self, question: str, reference: str, prediction: str) -> dict:
        """The jury's verdict on one answer.

        Returns ``{"verdict": bool | None, "votes_correct": int, "votes_incorrect": int, "tie": bool,
        "tie_broken_by": str | None, "judges": {name: {"verdict", "raw", "calls", "retries",
        "prompt_tokens", "completion_tokens", "tokens_estimated", "cost", "error", "dropped"}},
        "calls", "retries", "prompt_tokens", "completion_tokens", "cost", "seconds"}``.
        A judge dropped from the run has ``"dropped": true``, no calls and the drop reason as error.
        """
        t0 = time.monotonic()
        msgs = self.messages(question, reference, prediction)
        active = self.active
        if self.parallel and len(active) > 1:
            with ThreadPoolExecutor(max_workers=len(active)) as pool:
                results = dict(zip([j.name for j in active], pool.map(lambda j: self._ask(j, msgs), active)))
        else:
            results = {j.name: self._ask(j, msgs) for j in active}
        per_judge = {}
        for j in self.judges:
            if j.name in results:
                per_judge[j.name] = results[j.name]
            else:
                per_judge[j.name] = {"verdict": None, "raw": None, "calls": 0, "retries": 0, "prompt_tokens": 0,
                                     "completion_tokens": 0, "tokens_estimated": False, "cost": None,
                                     "error": f"dropped from the jury: {self.dropped[j.name]}", "dropped": True}
        # failure bookkeeping and dropping
        for name, rec in results.items():
            if rec["verdict"] is None:
                self._consecutive_failures[name] += 1
                n = self._consecutive_failures[name]
                if self.drop_after is not None and n >= self.drop_after:
                    self.dropped[name] = f"failed on {n} consecutive items (last: {rec['error']})"
                    log.warning("judge %s dropped from the jury for the rest of the run: %s",
                                name, self.dropped[name])
            else:
                self._consecutive_failures[name] = 0
        votes = {n: r["verdict"] for n, r in per_judge.items() if r["verdict"] is not None}
        yes = sum(1 for v in votes.values() if v)
        no = len(votes) - yes
        tie, broken_by = False, None
        if not votes:
            verdict = None
        elif yes != no:
            verdict = yes > no
        else:
            tie = True
            order = [self.tie_breaker] + [j.name for j in self.judges if j.name != self.tie_breaker]
            broken_by = next(n for n in order if n in votes)
            verdict = votes[broken_by]
        costs = [r["cost"] for r in per_judge.values() if r["cost"] is not None]
        return {"verdict": verdict, "votes_correct": yes, "votes_incorrect": no, "tie": tie,
                "tie_broken_by": broken_by, "judges": per_judge,
                "calls": sum(r["calls"] for r in per_judge.values()),
                "retries": sum(r["retries"] for r in per_judge.values()),
                "prompt_tokens": sum(r["prompt_tokens"] for r in per_judge.values()),
                "completion_tokens": sum(r["completion_tokens"] for r in per_judge.values()),
                "cost": sum(costs) if costs else None, "seconds": round(time.monotonic() - t0, 3)}


# ----------------------------------------------------------------------------- files
def _item_key(row: Mapping, position: int) -> str:
    stage = row.get("stage") or ""
    idx = row.get("index")
    return f"{stage}/{idx if idx is not None else f'#{position}'}"


def _repair_torn_tail(path: Path) -> None:
    """Cut a torn last line (a kill mid-write) so that the next append starts on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        log.warning("%s: removing a torn last line (%d bytes) left by an interrupted run", path, len(data) - cut)
        f.truncate(cut)


def summarize_verdicts(records: Iterable[Mapping], judges: Iterable[str] | None = None) -> dict:
    """Summary of verdict records (see `judge_file`)."""
    records = list(records)
    names = list(judges) if judges is not None else []
    for r in records:
        for n in r.get("judges", {}):
            if n not in names:
                names.append(n)
    decided = [r for r in records if r.get("verdict") is not None]
    n_correct = sum(1 for r in decided if r["verdict"])
    per_judge = {}
    for n in names:
        recs = [r["judges"][n] for r in records if n in r.get("judges", {})]
        voted = [(x["verdict"], r["verdict"]) for x, r in
                 ((r["judges"][n], r) for r in records if n in r.get("judges", {}))
                 if x["verdict"] is not None and r.get("verdict") is not None]
        costs = [x["cost"] for x in recs if x.get("cost") is not None]
        per_judge[n] = {
            "calls": sum(x["calls"] for x in recs), "retries": sum(x["retries"] for x in recs),
            "failures": sum(1 for x in recs if x["verdict"] is None and not x.get("dropped")),
            "skipped_dropped": sum(1 for x in recs if x.get("dropped")),
            "votes": len(voted), "agreement_with_jury": (sum(a == b for a, b in voted) / len(voted)) if voted else None,
            "prompt_tokens": sum(x["prompt_tokens"] for x in recs),
            "completion_tokens": sum(x["completion_tokens"] for x in recs),
            "cost": sum(costs) if costs else None}
    by_type: dict[str, list] = {}
    for r in decided:
        if r.get("question_type") is not None:
            by_type.setdefault(str(r["question_type"]), []).append(bool(r["verdict"]))
    costs = [p["cost"] for p in per_judge.values() if p["cost"] is not None]
    return {"items": len(records), "decided": len(decided), "undecided": len(records) - len(decided),
            "correct": n_correct, "accuracy": n_correct / len(decided) if decided else None,
            "accuracy_by_question_type": {k: sum(v) / len(v) for k, v in sorted(by_type.items())},
            "ties": sum(1 for r in records if r.get("tie")),
            "calls": sum(p["calls"] for p in per_judge.values()),
            "retries": sum(p["retries"] for p in per_judge.values()),
            "failures": {n: p["failures"] for n, p in per_judge.items()},
            "prompt_tokens": sum(p["prompt_tokens"] for p in per_judge.values()),
            "completion_tokens": sum(p["completion_tokens"] for p in per_judge.values()),
            "cost": sum(costs) if costs else None, "per_judge": per_judge}


def judge_file(predictions_jsonl: str | Path, jury: Jury, out_jsonl: str | Path,
               limit: int | None = None,  # judge at most this many new items (None: all)
               retry_undecided: bool = True,  # re-judge items whose record has no verdict (all judges failed)
               ) -> dict:
    """Judge every prediction of a predictions JSONL; resumable.

    Appends one record per item to `out_jsonl` (flushed and fsynced per item), so a kill loses at
    most the item being judged. Items already in `out_jsonl` are skipped; an item whose record has
    verdict null is judged again when `retry_undecided` (a newer record for a key wins). Record:
    ``{"key": "<stage>/<index>", "stage", "index", "table_id", "question_type" (when present),
    "correct": bool | None, **Jury.judge(...)}``.

    Returns the summary over all records in `out_jsonl` (this run's and earlier ones):
    ``{"items", "decided", "undecided", "correct", "accuracy", "accuracy_by_question_type", "ties",
    "calls", "retries", "failures": {judge: n}, "prompt_tokens", "completion_tokens", "cost",
    "per_judge": {judge: {...}}, "dropped_judges": {judge: reason} (this run), "new_items",
    "skipped_items", "out"}``.
    """
    from .compare import read_predictions

    out = Path(out_jsonl)
    out.parent.mkdir(parents=True, exist_ok=True)
    _repair_torn_tail(out)
    done: dict[str, dict] = {}
    for rec in read_jsonl(out):
        done[rec["key"]] = rec
    new = skipped = 0
    for pos, row in enumerate(read_predictions(predictions_jsonl)):
        key = _item_key(row, pos)
        prev = done.get(key)
        if prev is not None and (prev.get("verdict") is not None or not retry_undecided):
            skipped += 1
            continue
        if limit is not None and new >= limit:
            break
        result = jury.judge(str(row.get("question") or ""), str(row.get("reference") or ""),
                            str(row.get("prediction") or ""))
        rec = {"key": key, "stage": row.get("stage"), "index": row.get("index"), "table_id": row.get("table_id")}
        if row.get("question_type") is not None:
            rec["question_type"] = row["question_type"]
        rec["correct"] = result["verdict"]
        rec.update(result)
        append_jsonl(out, rec)
        done[key] = rec
        new += 1
    summary = summarize_verdicts(done.values(), [j.name for j in jury.judges])
    summary.update({"dropped_judges": dict(jury.dropped), "new_items": new, "skipped_items": skipped,
                    "out": str(out)})
    log.info("jury: %d new items, %d skipped, accuracy %s", new, skipped, summary["accuracy"])
    return summary
