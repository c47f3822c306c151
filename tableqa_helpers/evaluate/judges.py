"""The judges of the optional LLM jury: configuration, prompts, one call, verdict parsing.

Each judge is an OpenAI-compatible chat endpoint (``POST {base_url}/chat/completions`` with
``{"model", "messages", "temperature": 0}``). ``Judge.api_key_env`` names the environment
variable that holds the key; the key is read at call time, sent only in the
``Authorization: Bearer`` header, and never stored, logged, written or put in an exception
message (replies and error bodies are redacted in case a server echoes it). The vote: `jury`.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path


SYSTEM_PROMPT = (
    "You grade answers to questions about a table. You are given the question, a reference "
    "answer that is correct, and a candidate answer. Decide whether the candidate is logically "
    "consistent with the reference and has the same meaning, in particular the same final "
    "answer. Wording, length and the steps shown do not matter; a different final value, "
    "entity or conclusion is INCORRECT, and so is a candidate that hedges between answers. "
    "Reply with exactly one word: CORRECT or INCORRECT."
)
USER_TEMPLATE = ("Question:\n{question}\n\nReference answer:\n{reference}\n\nCandidate answer:\n{prediction}\n\n"
                 "Is the candidate answer correct? Reply CORRECT or INCORRECT.")
RAW_CHARS = 300  # raw replies kept per judge and item, truncated to this many characters
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class JudgeError(RuntimeError):
    """A judge call failed; the message never contains the API key."""

    def __init__(self, message: str, retryable: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass
class Judge:
    """One judge: an OpenAI-compatible endpoint and model. Holds no secret."""

    name: str  # unique label used in records and summaries
    base_url: str  # e.g. "http://127.0.0.1:8000/v1" (the "/chat/completions" is appended)
    model: str  # the model name the endpoint expects
    api_key_env: str | None = None  # NAME of the environment variable holding the key (never the key)
    timeout: float = 60.0  # seconds per HTTP call
    max_retries: int = 3  # extra attempts after the first failed one
    price_per_1k_tokens: float | None = None  # cost of 1000 tokens (prompt + completion), any currency
    price_per_1k_prompt: float | None = None  # if set, prompt tokens cost this instead
    price_per_1k_completion: float | None = None  # if set, completion tokens cost this instead
    max_tokens: int | None = None  # sent as "max_tokens" when set (reasoning models may need room)

    def __post_init__(self):
        if not self.name or not self.base_url or not self.model:
            raise ValueError("a judge needs a name, a base_url and a model")
        if self.api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            raise ValueError(f"judge {self.name}: api_key_env must be the NAME of an environment variable "
                             "(letters, digits, underscores), not a key")

    @property
    def priced(self) -> bool:
        return any(p is not None for p in (self.price_per_1k_tokens, self.price_per_1k_prompt,
                                           self.price_per_1k_completion))

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Estimated cost of these tokens, None when the judge has no price."""
        if not self.priced:
            return None
        flat = self.price_per_1k_tokens or 0.0
        pp = self.price_per_1k_prompt if self.price_per_1k_prompt is not None else flat
        pc = self.price_per_1k_completion if self.price_per_1k_completion is not None else flat
        return (prompt_tokens * pp + completion_tokens * pc) / 1000.0


_JUDGE_FIELDS = {f.name for f in dataclasses.fields(Judge)}


def load_judges(path: str | Path) -> list[Judge]:
    """Judges from a JSON file: a list of judge objects, or ``{"judges": [...], "tie_breaker": name}``.

    Each object has `Judge`'s fields, e.g. ``{"name": "j1", "base_url": "http://127.0.0.1:8000/v1",
    "model": "qwen2.5-72b", "api_key_env": "JUDGE1_KEY", "timeout": 60, "max_retries": 3,
    "price_per_1k_tokens": 0.0}``. A literal key ("api_key") is refused.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    items = data.get("judges") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a list of judges or {{'judges': [...]}}")
    judges = []
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: judge #{k} is not an object")
        secret_like = sorted(x for x in item if x.lower() in ("api_key", "key", "token", "apikey", "secret",
                                                             "authorization", "password"))
        if secret_like:
            raise ValueError(f"{path}: judge #{k} has field(s) {secret_like}: do not put keys in the config; "
                             "set an environment variable and name it in 'api_key_env'")
        unknown = sorted(set(item) - _JUDGE_FIELDS)
        if unknown:
            raise ValueError(f"{path}: judge #{k} has unknown field(s) {unknown}; known: {sorted(_JUDGE_FIELDS)}")
        judges.append(Judge(**item))
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: judge names must be unique, got {names}")
    return judges


# ----------------------------------------------------------------------------- verdict parsing
_POS = {"correct", "yes", "true", "right", "consistent", "same", "pass", "1", "accept", "accepted", "valid"}
_NEG = {"incorrect", "no", "false", "wrong", "inconsistent", "different", "fail", "0", "reject", "rejected",
        "invalid", "not_correct", "notcorrect"}


def _word_verdict(word: str) -> bool | None:
    w = word.strip().lower().strip(" \t\n\"'`*_.,:;!()[]{}")
    w = re.sub(r"\s+", "_", w)
    if w in ("not_correct", "not_consistent"):
        return False
    if w in _POS:
        return True
    if w in _NEG:
        return False
    return None


def parse_verdict(text: str) -> bool | None:
    """True / False from a judge's reply, or None when no clear verdict is found.

    Accepts "CORRECT" / "INCORRECT" (any case, markdown, punctuation), "yes" / "no", "true" /
    "false", JSON such as {"verdict": "correct"} or {"correct": true} (also inside a code fence),
    "Verdict: X" lines, and replies that explain first and conclude last. `<think>` blocks are
    ignored. A reply that says both CORRECT and INCORRECT without a clear final word is None.
    """
    if not text:
        return None
    t = re.sub(r"<think>.*?(</think>|$)", " ", str(text), flags=re.DOTALL | re.IGNORECASE).strip()
    # JSON anywhere in the reply
    for blob in re.findall(r"\{[^{}]*\}", t):
        try:
            obj = json.loads(blob)
        except ValueError:
            continue
        if isinstance(obj, dict):
            for key in ("verdict", "correct", "is_correct", "answer", "result", "judgment", "judgement",
                        "label", "decision"):
                if key in obj:
                    v = obj[key]
                    if isinstance(v, bool):
                        return v
                    if isinstance(v, (int, float)) and v in (0, 1):
                        return bool(v)
                    if isinstance(v, str):
                        got = _word_verdict(v)
                        if got is not None:
                            return got
    plain = re.sub(r"[*_`#>]", "", t).strip()
    if not plain:
        return None
    # the whole reply, or its first word
    got = _word_verdict(plain)
    if got is not None:
        return got
    words = plain.split()
    if words and words[0].lower() == "not" and len(words) > 1 and _word_verdict(words[1]) is True:
        return False
    first = _word_verdict(words[0]) if words else None
    if first is not None:
        return first
    # "Verdict: X" / "Final verdict - X" / "Answer: X" (the last one wins)
    labelled = re.findall(r"(?:verdict|answer|judg(?:e)?ment|decision|grade)\s*[:=\-]\s*\**\s*(not\s+correct|\w+)",
                          plain, flags=re.IGNORECASE)
    for w in reversed(labelled):
        got = _word_verdict(w)
        if got is not None:
            return got
    # a last line that is a verdict ("... explanation.\nCORRECT")
    got = _word_verdict(plain.splitlines()[-1])
    if got is not None:
        return got
    # free text: CORRECT / INCORRECT words, only when exactly one kind appears
    neg = len(re.findall(r"\b(?:incorrect|not\s+correct)\b", plain, flags=re.IGNORECASE))
    pos = len(re.findall(r"\bcorrect\b", plain, flags=re.IGNORECASE)) - \
        len(re.findall(r"\bnot\s+correct\b", plain, flags=re.IGNORECASE))
    if neg and not pos:
        return False
    if pos and not neg:
        return True
    return None


# ----------------------------------------------------------------------------- HTTP
def _read_key(judge: Judge) -> str | None:
    if not judge.api_key_env:
        return None
    key = os.environ.get(judge.api_key_env)
    if key is None or not key.strip():
        return None
    key = key.strip()
    if not re.fullmatch(r"[\x21-\x7e]+", key):
        raise JudgeError(f"judge {judge.name}: the environment variable {judge.api_key_env} holds a key "
                         "with spaces, control or non-ASCII characters", retryable=False)
    return key


def _redact(text: str, key: str | None) -> str:
    text = str(text)
    if key:
        text = text.replace(key, "***")
    return re.sub(r"(?i)(bearer\s+)[^\s\"',}]+", r"\1***", text)


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reply_text(body: dict) -> str:
    msg = body["choices"][0]["message"]
    content = msg.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    if content is None:
        raise KeyError("content")
    return str(content)


def call_judge(judge: Judge, messages: list[dict]) -> tuple[str, dict | None]:
    """One chat-completions call: (reply text, `usage` or None). Raises `JudgeError` (never showing
    the key) on a network error, an HTTP error or an unreadable body."""
    key = _read_key(judge)
    url = judge.base_url.rstrip("/") + "/chat/completions"
    payload = {"model": judge.model, "messages": messages, "temperature": 0}
    if judge.max_tokens is not None:
        payload["max_tokens"] = judge.max_tokens
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    req = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"), headers=headers, method="POST")
    # loopback endpoints bypass any proxy configured in the environment
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if _is_loopback(url) \
        else urllib.request.build_opener()
    error: JudgeError | None = None
    try:
        with opener.open(req, timeout=judge.timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        try:
            detail = e.read(300).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - the body is only a hint
            detail = ""
        retry_after = None
        ra = e.headers.get("Retry-After") if e.headers else None
        if ra:
            try:
                retry_after = float(ra)
            except ValueError:
                retry_after = None
        error = JudgeError(_redact(f"HTTP {e.code}: {detail.strip()[:200]}", key),
                           retryable=e.code in _RETRY_STATUS or e.code >= 500, retry_after=retry_after)
    except (TimeoutError, OSError) as e:  # URLError, socket.timeout and connection errors are OSErrors
        reason = getattr(e, "reason", e)
        kind = "timeout" if isinstance(reason, TimeoutError) or "timed out" in str(reason) else "network error"
        error = JudgeError(_redact(f"{kind}: {type(reason).__name__}: {reason}", key))
    except Exception as e:  # noqa: BLE001 - anything else from the HTTP stack, redacted
        error = JudgeError(_redact(f"request failed: {type(e).__name__}: {e}", key))
    if error is not None:
        raise error from None
    try:
        body = json.loads(raw.decode("utf-8"))
        text = _reply_text(body)
    except Exception as e:  # noqa: BLE001
        raise JudgeError(_redact(f"unreadable response ({type(e).__name__}): {raw[:200]!r}", key)) from None
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
    return _redact(text, key), usage


# ----------------------------------------------------------------------------- the jury
def _as_int(v) -> int:
    try:
        return max(0, int(v or 0))
    except (TypeError, ValueError):
        return 0
