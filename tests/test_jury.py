"""LLM jury against a scripted OpenAI-compatible server on 127.0.0.1 (offline, loopback only)."""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tableqa_helpers.evaluate import jury as jury_mod
from tableqa_helpers.evaluate.jury import (Judge, JudgeError, Jury, call_judge, judge_file, load_judges, load_jury,
                                  parse_verdict)

SECRET = "sk-planted-SECRET-4f1d9c"
KEY_ENV = "TQA_TEST_JUDGE_KEY"
USAGE = {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}


# ----------------------------------------------------------------------------- the scripted server
class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status, payload, headers=None):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (timeout test)
            pass

    def _reply(self, text, usage=True):
        body = {"id": "x", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
        if usage:
            body["usage"] = USAGE
        self._send(200, body)

    def do_POST(self):
        st = self.server.state
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        model = body.get("model")
        auth = self.headers.get("Authorization")
        with st["lock"]:
            st["requests"].append({"path": self.path, "model": model, "auth": auth, "body": body})
            n = st["counts"][model] = st["counts"].get(model, 0) + 1
        candidate = body["messages"][-1]["content"].split("Candidate answer:")[-1]
        if model == "correct":
            self._reply("CORRECT")
        elif model == "incorrect":
            self._reply("INCORRECT")
        elif model == "yes":
            self._reply("Yes.")
        elif model == "json-incorrect":
            self._reply('```json\n{"verdict": "incorrect"}\n```')
        elif model == "smart":  # judges the candidate's number
            self._reply("The candidate matches.\nCORRECT" if "1,250" in candidate else "**INCORRECT**")
        elif model == "nousage":
            self._reply("CORRECT", usage=False)
        elif model == "slow":
            time.sleep(0.6)
            self._reply("CORRECT")
        elif model == "flaky":  # 500, then success, for every item
            if n % 2:
                self._send(500, {"error": {"message": "internal error"}})
            else:
                self._reply("CORRECT")
        elif model == "ratelimit":  # 429 with Retry-After, then success
            if n % 2:
                self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "2"})
            else:
                self._reply("CORRECT")
        elif model == "always429":
            self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
        elif model == "malformed":
            self._reply("Hmm, hard to say; it depends on the table.")
        elif model == "unauthorized":
            self._send(401, {"error": {"message": "bad key"}})
        elif model == "echo500":  # a careless server that echoes the key in its error body
            self._send(500, {"error": {"message": f"invalid request, header was {auth}"}})
        elif model == "echo-ok":  # ... and in a reply
            self._reply(f"CORRECT (received {auth})")
        elif model == "garbage":
            self._send(200, b"<html>not json</html>")
        else:
            self._send(404, {"error": {"message": f"unknown model {model}"}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that timed out is not an error here
        pass


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.state = {"lock": threading.Lock(), "requests": [], "counts": {}}
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def sleeps():
    return []


def J(server, name, model=None, **kw):
    kw.setdefault("timeout", 3.0)
    kw.setdefault("max_retries", 2)
    return Judge(name=name, base_url=server.url, model=model or name, **kw)


def make_jury(judges, sleeps, **kw):
    kw.setdefault("backoff", 0.01)
    kw.setdefault("max_backoff", 5.0)
    return Jury(judges, sleep=sleeps.append, **kw)


def write_predictions(path, n, prediction="Therefore, the final answer is 1,250."):
    rows = [{"index": i, "table_id": f"t{i}", "question": f"What is the total of table {i}?",
             "reference": "500 + 750 = 1,250. Therefore, the final answer is 1,250.",
             "prediction": prediction if i % 2 == 0 else "Therefore, the final answer is 1,350.",
             "stage": "b", "tokens": 12, "seconds": 0.5, "question_type": "aggregation" if i < 2 else "lookup"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- verdict parsing
@pytest.mark.parametrize("text, expected", [
    ("CORRECT", True), ("INCORRECT", False), ("correct.", True), ("**Incorrect**", False),
    ("Yes", True), ("no.", False), ("True", True), ("false", False), ("Not correct.", False),
    ('{"verdict": "CORRECT"}', True), ('{"verdict": "incorrect", "reason": "different total"}', False),
    ('```json\n{"correct": true}\n```', True), ('{"is_correct": false}', False),
    ("Verdict: INCORRECT", False), ("Final verdict - correct", True),
    ("The candidate gives 1,250 like the reference.\nCORRECT", True),
    ("The candidate's total differs from the reference, so it is incorrect.", False),
    ("<think>maybe correct? or incorrect?</think>INCORRECT", False),
    ("Hmm, hard to say.", None), ("", None), ("It could be correct or incorrect.", None),
])
def test_parse_verdict(text, expected):
    assert parse_verdict(text) is expected


# ----------------------------------------------------------------------------- voting
def test_request_format_and_majority_vote(server, sleeps):
    jury = make_jury([J(server, "c1", "correct"), J(server, "c2", "correct"), J(server, "i1", "incorrect")], sleeps)
    r = jury.judge("What is the total?", "The total is 1,250.", "It is 1,250.")
    assert r["verdict"] is True and (r["votes_correct"], r["votes_incorrect"]) == (2, 1) and not r["tie"]
    assert r["judges"]["i1"]["verdict"] is False and r["judges"]["c1"]["raw"] == "CORRECT"
    req = server.state["requests"][0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] is None  # no key configured
    assert req["body"]["temperature"] == 0 and set(req["body"]) == {"model", "messages", "temperature"}
    user = req["body"]["messages"][-1]["content"]
    assert "What is the total?" in user and "The total is 1,250." in user and "It is 1,250." in user
    assert req["body"]["messages"][0]["role"] == "system"

    jury = make_jury([J(server, "y", "yes"), J(server, "j", "json-incorrect"), J(server, "i", "incorrect")], sleeps)
    r = jury.judge("q", "ref", "pred")
    assert r["verdict"] is False and (r["votes_correct"], r["votes_incorrect"]) == (1, 2)


def test_smart_judges_separate_right_and_wrong_answers(server, sleeps):
    jury = make_jury([J(server, f"s{k}", "smart") for k in range(3)], sleeps, parallel=False)
    assert jury.judge("q", "1,250", "the total is 1,250")["verdict"] is True
    assert jury.judge("q", "1,250", "the total is 1,350")["verdict"] is False


def test_tie_broken_by_designated_judge(server, sleeps):
    judges = [J(server, "pro", "correct"), J(server, "con", "incorrect")]
    r = make_jury(judges, sleeps, tie_breaker="con").judge("q", "ref", "pred")
    assert r["tie"] and r["verdict"] is False and r["tie_broken_by"] == "con"
    r = make_jury(judges, sleeps).judge("q", "ref", "pred")  # default: the first judge
    assert r["tie"] and r["verdict"] is True and r["tie_broken_by"] == "pro"
    with pytest.raises(ValueError):
        Jury(judges, tie_breaker="nobody")


def test_tie_breaker_without_verdict_falls_back_to_first_voting_judge(server, sleeps):
    judges = [J(server, "m", "malformed", max_retries=1), J(server, "con", "incorrect"), J(server, "pro", "correct")]
    r = make_jury(judges, sleeps, tie_breaker="m").judge("q", "ref", "pred")
    assert r["judges"]["m"]["verdict"] is None and "malformed verdict" in r["judges"]["m"]["error"]
    assert r["judges"]["m"]["calls"] == 2 and r["judges"]["m"]["retries"] == 1
    assert r["tie"] and r["tie_broken_by"] == "con" and r["verdict"] is False


def test_no_verdict_at_all(server, sleeps):
    r = make_jury([J(server, "m", "malformed", max_retries=0)], sleeps).judge("q", "ref", "pred")
    assert r["verdict"] is None and r["votes_correct"] == r["votes_incorrect"] == 0


# ----------------------------------------------------------------------------- retries and failures
def test_retries_on_5xx_and_429_are_counted(server, sleeps):
    jury = make_jury([J(server, "f", "flaky"), J(server, "r", "ratelimit")], sleeps, parallel=False)
    r = jury.judge("q", "ref", "pred")
    for name in ("f", "r"):
        assert r["judges"][name]["verdict"] is True
        assert (r["judges"][name]["calls"], r["judges"][name]["retries"]) == (2, 1)
    assert r["calls"] == 4 and r["retries"] == 2
    assert sleeps == [0.01, 2.0]  # exponential backoff; Retry-After: 2 honoured (within max_backoff)
    assert server.state["counts"] == {"flaky": 2, "ratelimit": 2}


def test_persistent_429_fails_after_max_retries(server, sleeps):
    r = make_jury([J(server, "r", "always429", max_retries=3)], sleeps).judge("q", "ref", "pred")
    rec = r["judges"]["r"]
    assert rec["verdict"] is None and rec["calls"] == 4 and rec["retries"] == 3 and "HTTP 429" in rec["error"]
    assert sleeps == [0.01, 0.02, 0.04]


def test_timeout_is_retried_then_the_judge_is_left_out(server, sleeps):
    jury = make_jury([J(server, "slow", "slow", timeout=0.2, max_retries=1), J(server, "c", "correct"),
                      J(server, "i", "incorrect"), J(server, "c2", "correct")], sleeps)
    t0 = time.monotonic()
    r = jury.judge("q", "ref", "pred")
    assert time.monotonic() - t0 < 3
    slow = r["judges"]["slow"]
    assert slow["verdict"] is None and slow["calls"] == 2 and "timeout" in slow["error"]
    assert r["verdict"] is True and (r["votes_correct"], r["votes_incorrect"]) == (2, 1)


def test_client_errors_are_not_retried(server, sleeps):
    jury = make_jury([J(server, "u", "unauthorized"), J(server, "g", "garbage", max_retries=1)], sleeps)
    r = jury.judge("q", "r", "p")
    assert r["judges"]["u"]["calls"] == 1 and "HTTP 401" in r["judges"]["u"]["error"]
    assert r["judges"]["g"]["calls"] == 2 and "unreadable response" in r["judges"]["g"]["error"]


def test_failing_judges_dropped_for_the_rest_of_the_run(server, sleeps, tmp_path):
    preds = write_predictions(tmp_path / "b.jsonl", 4)
    jury = make_jury([J(server, "c", "correct"), J(server, "m", "malformed", max_retries=0),
                      J(server, "r", "always429", max_retries=1)], sleeps, drop_after=2)
    summary = judge_file(preds, jury, tmp_path / "jury.jsonl")
    assert server.state["counts"]["malformed"] == 2 and server.state["counts"]["always429"] == 4
    assert set(summary["dropped_judges"]) == {"m", "r"}
    assert "2 consecutive items" in summary["dropped_judges"]["m"] and "malformed" in summary["dropped_judges"]["m"]
    assert "HTTP 429" in summary["dropped_judges"]["r"]
    assert summary["failures"] == {"c": 0, "m": 2, "r": 2}
    assert summary["per_judge"]["m"]["skipped_dropped"] == 2
    recs = [json.loads(x) for x in (tmp_path / "jury.jsonl").read_text().splitlines()]
    last = recs[-1]["judges"]["m"]
    assert last["dropped"] and last["calls"] == 0 and last["error"].startswith("dropped from the jury")
    assert [r["verdict"] for r in recs] == [True] * 4 and summary["accuracy"] == 1.0


# ----------------------------------------------------------------------------- files, resume, cost
def test_judge_file_resumes_without_repeating_calls(server, sleeps, tmp_path):
    preds = write_predictions(tmp_path / "b.jsonl", 5)
    out = tmp_path / "jury" / "b.jsonl"
    judges = [J(server, "s1", "smart"), J(server, "s2", "smart"), J(server, "c", "correct")]
    s1 = judge_file(preds, make_jury(judges, sleeps), out, limit=2)  # an interrupted run
    assert s1["new_items"] == 2 and len(server.state["requests"]) == 6
    first_lines = out.read_text().splitlines()
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"key": "b/2", "verdict": tr')  # killed while writing item 2

    s2 = judge_file(preds, make_jury(judges, sleeps), out)
    assert s2["new_items"] == 3 and s2["skipped_items"] == 2 and len(server.state["requests"]) == 15
    lines = out.read_text().splitlines()
    assert lines[:2] == first_lines  # verdicts already obtained are kept as they were
    recs = [json.loads(x) for x in lines]
    assert [r["key"] for r in recs] == [f"b/{i}" for i in range(5)]
    assert [r["correct"] for r in recs] == [True, False, True, False, True]
    assert s2["items"] == 5 and s2["accuracy"] == pytest.approx(3 / 5)
    assert s2["accuracy_by_question_type"] == {"aggregation": 0.5, "lookup": pytest.approx(2 / 3)}
    assert recs[0]["table_id"] == "t0" and recs[0]["question_type"] == "aggregation"

    s3 = judge_file(preds, make_jury(judges, sleeps), out)  # nothing left to do
    assert s3["new_items"] == 0 and len(server.state["requests"]) == 15 and s3["items"] == 5


def test_undecided_items_are_judged_again_on_resume(server, sleeps, tmp_path):
    preds = write_predictions(tmp_path / "b.jsonl", 2)
    out = tmp_path / "v.jsonl"
    s1 = judge_file(preds, make_jury([J(server, "j", "malformed", max_retries=0)], sleeps, drop_after=None), out)
    assert s1["undecided"] == 2 and s1["accuracy"] is None
    s2 = judge_file(preds, make_jury([J(server, "j", "correct")], sleeps), out)
    assert s2["new_items"] == 2 and s2["decided"] == 2 and s2["accuracy"] == 1.0
    assert len(out.read_text().splitlines()) == 4  # the undecided records stay, newer ones win


def test_cost_tokens_and_calls_reported(server, sleeps, tmp_path):
    preds = write_predictions(tmp_path / "b.jsonl", 2)
    judges = [J(server, "c", "correct", price_per_1k_tokens=2.0),
              J(server, "f", "flaky", price_per_1k_prompt=1.0, price_per_1k_completion=10.0),
              J(server, "n", "nousage")]
    s = judge_file(preds, make_jury(judges, sleeps), tmp_path / "v.jsonl")
    assert s["calls"] == 2 * (1 + 2 + 1) and s["retries"] == 2
    pj = s["per_judge"]
    assert pj["c"]["calls"] == 2 and pj["c"]["prompt_tokens"] == 200 and pj["c"]["completion_tokens"] == 10
    assert pj["c"]["cost"] == pytest.approx(2 * 105 * 2.0 / 1000)
    assert pj["f"]["calls"] == 4 and pj["f"]["retries"] == 2
    assert pj["f"]["cost"] == pytest.approx(2 * (100 * 1.0 + 5 * 10.0) / 1000)  # the 500s had no usage
    assert pj["n"]["cost"] is None and pj["n"]["prompt_tokens"] > 0  # estimated from characters
    assert s["cost"] == pytest.approx(pj["c"]["cost"] + pj["f"]["cost"])
    rec = json.loads((tmp_path / "v.jsonl").read_text().splitlines()[0])
    assert rec["judges"]["n"]["tokens_estimated"] is True and rec["judges"]["c"]["tokens_estimated"] is False
    assert rec["calls"] == 4 and rec["cost"] == pytest.approx(0.21 + 0.15)


# ----------------------------------------------------------------------------- the API key
def test_api_key_is_sent_but_never_stored_logged_or_raised(server, sleeps, tmp_path, monkeypatch, caplog, capfd):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    preds = write_predictions(tmp_path / "b.jsonl", 3)
    judges = [J(server, "c", "correct", api_key_env=KEY_ENV),
              J(server, "e", "echo500", api_key_env=KEY_ENV, max_retries=1),
              J(server, "o", "echo-ok", api_key_env=KEY_ENV)]
    jury = make_jury(judges, sleeps, drop_after=2)
    summary = judge_file(preds, jury, tmp_path / "out" / "verdicts.jsonl")

    auths = {r["auth"] for r in server.state["requests"]}
    assert auths == {f"Bearer {SECRET}"}  # the server did receive the key

    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(encoding="utf-8", errors="replace"), path
    out_text = (tmp_path / "out" / "verdicts.jsonl").read_text()
    assert "***" in out_text  # the echoed key was redacted
    assert "HTTP 500" in out_text and summary["dropped_judges"]["e"]
    assert any("retrying" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert SECRET not in record.getMessage() and SECRET not in caplog.text
    assert SECRET not in json.dumps(summary) and SECRET not in repr(jury) and SECRET not in repr(judges)

    with pytest.raises(JudgeError) as exc:
        call_judge(judges[1], jury.messages("q", "r", "p"))
    assert SECRET not in str(exc.value) and SECRET not in repr(exc.value) and "HTTP 500" in str(exc.value)
    assert exc.value.__cause__ is None

    # a malformed key (trailing garbage, newline inside) is refused without showing it
    monkeypatch.setenv(KEY_ENV, SECRET + "\nx")
    with pytest.raises(JudgeError) as exc:
        call_judge(judges[0], jury.messages("q", "r", "p"))
    assert SECRET not in str(exc.value) and KEY_ENV in str(exc.value)

    out, err = capfd.readouterr()
    assert SECRET not in out and SECRET not in err


def test_missing_key_variable_warns_without_failing(server, sleeps, monkeypatch, caplog):
    monkeypatch.delenv(KEY_ENV, raising=False)
    r = make_jury([J(server, "c", "correct", api_key_env=KEY_ENV)], sleeps).judge("q", "r", "p")
    assert r["verdict"] is True and server.state["requests"][0]["auth"] is None
    assert any(KEY_ENV in rec.getMessage() for rec in caplog.records)


# ----------------------------------------------------------------------------- configuration
def test_load_judges_and_jury(tmp_path):
    cfg = {"tie_breaker": "b", "judges": [
        {"name": "a", "base_url": "http://127.0.0.1:8000/v1", "model": "m1", "api_key_env": "JUDGE_A_KEY"},
        {"name": "b", "base_url": "http://127.0.0.1:8001/v1", "model": "m2", "timeout": 5, "max_retries": 1,
         "price_per_1k_tokens": 0.5}]}
    p = tmp_path / "judges.json"
    p.write_text(json.dumps(cfg))
    judges = load_judges(p)
    assert [j.name for j in judges] == ["a", "b"] and judges[1].timeout == 5 and judges[0].api_key_env == "JUDGE_A_KEY"
    assert load_jury(p).tie_breaker == "b"
    p.write_text(json.dumps(cfg["judges"]))  # a bare list works too
    assert len(load_judges(p)) == 2 and load_jury(p).tie_breaker == "a"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{**cfg["judges"][0], "api_key": SECRET}]))
    with pytest.raises(ValueError) as exc:
        load_judges(bad)
    assert SECRET not in str(exc.value) and "api_key_env" in str(exc.value)
    bad.write_text(json.dumps([{**cfg["judges"][0], "colour": "red"}]))
    with pytest.raises(ValueError, match="unknown"):
        load_judges(bad)
    with pytest.raises(ValueError):  # a key pasted where the variable NAME belongs
        Judge(name="x", base_url="http://127.0.0.1:1/v1", model="m", api_key_env=SECRET)


def test_module_documents_the_rules():
    doc = jury_mod.__doc__.lower()
    assert "majority" in doc and "tie" in doc and "dropped" in doc and "retry" in doc.replace("retries", "retry")
