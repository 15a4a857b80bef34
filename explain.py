"""
Automated interpretability (optional, off by default): an LLM explains each tracked feature from
its top-activating contexts, then simulates the feature's activations on held-out contexts from
the explanation alone, and the simulation is scored against the real activations
(Bills et al. 2023, "Language models can explain neurons in language models"; the study used
GPT-4 Turbo at temperature 0).

Any OpenAI-compatible chat-completions endpoint works (POST {api_base}/chat/completions): OpenAI
with OPENAI_API_KEY, or a local llama.cpp / vLLM / Ollama server (no key needed). Every answer is
cached on disk by the SHA-256 of (api_base, model, messages, temperature), so a rerun costs nothing
and an interrupted run resumes. analyze.py calls explain_features() under `--explain`; this file
also runs alone:
    python explain.py --features_json FILE [--api_base http://127.0.0.1:8080/v1 --llm_model NAME]
FILE is a JSON list of {"key": "<model>/<feature>", "model", "feature", "top": [ctx, ...]
(sorted by max activation, descending), "random": [ctx, ...]}, ctx = {"tokens": [str], "acts": [float]}.
"""
import hashlib
import json
import math
import os
import re
import socket
import time
from urllib.parse import urlparse

# common first: its hook turns a missing package (numpy, torch, ...) into one line naming the install
import common

import numpy as np
import requests


# -----------------------------------------------------------------------------
# default config; explain_features() fills any key its cfg lacks from here
config = {
    "features_json": "",              # CLI only: the features to explain (a JSON list; format in explain.py's docstring)
    "out_json": "",                   # CLI only: also write the results here ("" = print only)
    "api_base": "https://api.openai.com/v1",  # or a local server, e.g. http://127.0.0.1:8080/v1
    "llm_model": "gpt-4-turbo",       # the study's explainer and simulator
    "temperature": 0.0,               # the study's setting: deterministic answers, cacheable
    "max_requests": 500,              # cap on non-cached requests per run (2 per feature)
    "cache_dir": "out/explain_cache",  # every answer, by the hash of its request (analyze.py: <out_dir>/explain_cache)
    "connect_timeout": 10.0,          # seconds to open a connection (per attempt)
    "read_timeout": 45.0,             # seconds of server silence before a request gives up (a slow local server may need more)
    "answer_timeout": 300.0,          # seconds for a whole answer, however the server sends it (a byte at a time, chunks for ever)
    "retries": 5,                     # extra attempts on 429 / 5xx / refused connections (a timed-out request is not retried)
    "max_failures": 3,                # stop the run after this many failed requests in a row (the answers so far stay cached)
    "backoff": 1.0,                   # first retry delay (s), doubling per attempt
    "backoff_max": 60.0,              # cap on one delay, Retry-After included
    "n_top": 5,                       # explanation examples: the top-activating ones ...
    "n_quantiles": 3,                 # ... plus one from each of this many lower quantiles ...
    "n_random": 2,                    # ... plus a few random contexts
    "explain_format": "tab",          # tab: token<TAB>act lines (Bills et al.) | compact: text + "token (act)" for non-zero tokens
    "max_tokens_explain": 100,        # answer length cap of the explanation request
    "max_tokens_sim": 4096,           # the simulation answers one line per held-out token
}
# the rule each setting must meet (common.parse_config checks them, also when analyze.py calls in)
CHECKS = {"temperature": ">=0", "max_requests": ">=0", "connect_timeout": ">0", "read_timeout": ">0", "answer_timeout": ">0",
          "retries": ">=0", "max_failures": ">=1", "backoff": ">=0", "backoff_max": ">=0", "n_top": ">=1",
          "n_quantiles": ">=0", "n_random": ">=0", "explain_format": ("tab", "compact"),
          "max_tokens_explain": ">=1", "max_tokens_sim": ">=1"}
OPENAI_HOST = "api.openai.com"
MAX_EXPLANATION_CHARS = 200
_sleep = time.sleep  # tests replace it to see the backoff delays without waiting


class RequestFailed(Exception):
    """One request gave up: network, timeout, HTTP error (recorded as the feature's error; the run goes on
    until max_failures requests in a row have failed)."""


class CapReached(RequestFailed):
    """The max_requests cap: the feature is left unexplained, but the server is fine (no failure streak)."""


class Unusable(Exception):
    """The LLM answered, but nothing usable came of it (recorded as the feature's result; rerunning gives
    the same cached answer, so it does not make the run incomplete)."""


class Incomplete(common.UserError):
    """Explanations were asked for and some are missing (failed requests, the cap, a stopped run).
    `results` holds every feature's result, the missing ones with their error; callers keep what
    there is and exit non-zero (analyze.py writes its analysis first)."""

    def __init__(self, msg, results):
        super().__init__(msg)
        self.results = results


def clean_text(text):
    """`text` with every lone UTF-16 surrogate (which JSON escapes such as \\ud800 can produce, but which
    cannot be encoded as UTF-8) replaced by U+FFFD; a valid surrogate pair becomes its character."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# -----------------------------------------------------------------------------
# pure parts: example choice, prompts, parsing, scoring

def split_contexts(feature, cfg):
    """(shown, held_out): the contexts the explainer sees, and those kept for simulation.

    Deterministic interleaved split (Bills et al. interleave their splits the same way): even-ranked
    top contexts and even random ones may be shown, odd-ranked top and odd random ones are held out.
    Shown: the n_top top-activating ones, the middle of each of n_quantiles equal-count bins of the
    rest (lower quantiles of max activation), and n_random random ones."""
    top = sorted(feature["top"], key=lambda c: -max(c["acts"], default=0.0))  # stable: keeps given order on ties
    rnd = list(feature.get("random", []))
    held = top[1::2] + rnd[1::2]
    pool = top[0::2]
    shown, rest = pool[:cfg["n_top"]], pool[cfg["n_top"]:]
    nq = min(cfg["n_quantiles"], len(rest))
    shown += [rest[(2 * q + 1) * len(rest) // (2 * nq)] for q in range(nq)]
    shown += rnd[0::2][:cfg["n_random"]]
    return shown, held


def normalize_acts(acts, max_act):
    """Integers 0-10: floor(10 * relu(a) / max_act), as neuron-explainer's normalize_activations (0 stays 0)."""
    if max_act <= 0:
        return [0 for _ in acts]
    return [min(10, math.floor(10 * max(a, 0.0) / max_act)) for a in acts]


def _tok(t):
    # keep one token per line: show whitespace escapes literally
    return t.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def explanation_messages(shown, fmt="tab"):
    max_act = max((max(c["acts"], default=0.0) for c in shown), default=0.0)
    norm = [normalize_acts(c["acts"], max_act) for c in shown]
    if fmt == "tab":
        how = ("The activation format is token<tab>activation, one token per line, each text between "
               "<start> and <end>.")
        blocks = ["<start>\n" + "".join(f"{_tok(t)}\t{a}\n" for t, a in zip(c["tokens"], n)) + "<end>"
                  for c, n in zip(shown, norm)]
        n_all = sum(len(n) for n in norm)
        if n_all and sum(a > 0 for n in norm for a in n) / n_all < 0.2:  # Bills et al. repeat sparse ones
            blocks.append("Same activations, but with all zeros filtered out:\n" + "\n".join(
                "<start>\n" + "".join(f"{_tok(t)}\t{a}\n" for t, a in zip(c["tokens"], n) if a > 0) + "<end>"
                for c, n in zip(shown, norm)))
    elif fmt == "compact":
        how = ("Each text is shown in full, then only its tokens with a non-zero activation, "
               "as token (activation).")
        blocks = [f"Text {i + 1}: {_tok(''.join(c['tokens']))}\nActive: " + (", ".join(
            f"{_tok(t)} ({a})" for t, a in zip(c["tokens"], n) if a > 0) or "none")
            for i, (c, n) in enumerate(zip(shown, norm))]
    else:
        common.die(f"--explain_format takes tab or compact, got {fmt!r}")
    system = ("We're studying neurons in a neural network. Each neuron looks for some particular thing "
              "in a short document. Look at the parts of the document the neuron activates for and "
              "summarize in a short phrase what the neuron is looking for. Don't list examples of words.\n\n"
              f"{how} Activation values range from 0 to 10. A neuron finding what it's looking for is "
              "represented by a non-zero activation value. The higher the activation value, the stronger the match.")
    user = ("Neuron 1\nActivations:\n" + "\n".join(blocks) +
            "\n\nWhat is neuron 1 looking for? Answer with one short phrase on a single line, nothing else.")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def simulation_messages(explanation, held):
    n = sum(len(c["tokens"]) for c in held)
    lines, i = [], 0
    for k, c in enumerate(held):
        lines.append(f"Text {k + 1}:")
        for t in c["tokens"]:
            lines.append(f"{i}\t{_tok(t)}")
            i += 1
    system = ("We're studying neurons in a neural network. Each neuron looks for some particular thing in a "
              "short document. Given an explanation of what a neuron looks for, predict how strongly it "
              "activates on each token, as an integer from 0 (not at all) to 10 (strongest). "
              "Most tokens are usually 0.")
    user = (f"Explanation: the neuron looks for {explanation}\n\n"
            f"The {n} tokens below come from {len(held)} texts; each line is index<TAB>token, numbered "
            f"from 0 to {n - 1} across all texts.\n\n" + "\n".join(lines) +
            f"\n\nReply with exactly {n} lines, one per token in order, each index<TAB>value with an "
            f"integer value from 0 to 10 (for example `0\t0`), and nothing else.")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_explanation(text):
    """A short phrase from the answer: first non-empty line, no "Explanation:", quotes or final period, capped."""
    lines = [s.strip() for s in (text or "").replace("```", "\n").splitlines() if s.strip()]
    s = lines[0] if lines else ""
    s = re.sub(r"^[\W_]*explanation( of neuron \d+( behavior)?)?\s*[:\-]\s*", "", s, flags=re.I)
    s = re.sub(r"^the main thing this neuron does is find\s*", "", s, flags=re.I)
    s = s.strip(" \t\"'`*\u201c\u201d\u2018\u2019").rstrip(".").strip(" \"'`*\u201c\u201d")
    if len(s) > MAX_EXPLANATION_CHARS:
        s = s[:MAX_EXPLANATION_CHARS].rsplit(" ", 1)[0]
    return s


def parse_simulation(text, n):
    """n predicted values in [0, 10] from `index<TAB>value` lines (or a JSON list of n numbers); None
    when some token has no value."""
    for m in re.finditer(r"\[[^\[\]]*\]", text or ""):  # a JSON list of exactly n numbers
        try:
            vals = json.loads(m.group(0))
        except ValueError:
            continue
        if len(vals) == n and all(isinstance(v, (int, float)) for v in vals):
            return [min(10.0, max(0.0, float(v))) for v in vals]
    got = {}
    for line in (text or "").splitlines():
        m = re.match(r"\s*[`*(]*(\d+)\b(.*)", line)
        nums = re.findall(r"-?\d+(?:\.\d+)?", m.group(2)) if m else []
        if nums and int(m.group(1)) < n:  # the value is the last number (a token may be echoed between)
            got.setdefault(int(m.group(1)), min(10.0, max(0.0, float(nums[-1]))))
    return [got[i] for i in range(n)] if len(got) == n else None


def score_simulation(true_acts, simulated):
    """Pearson correlation of simulated vs true activations over all held-out tokens pooled
    (Bills et al.'s correlation scoring, 'all at once'); None when either side is constant."""
    t = np.asarray(true_acts, dtype=np.float64).ravel()
    s = np.asarray(simulated, dtype=np.float64).ravel()
    if t.shape != s.shape:
        raise ValueError(f"{t.size} true activations but {s.size} simulated")
    if t.size < 2 or np.ptp(t) == 0 or np.ptp(s) == 0:
        return None
    t, s = t - t.mean(), s - s.mean()
    return float(np.clip(t @ s / math.sqrt((t @ t) * (s @ s)), -1.0, 1.0))


# -----------------------------------------------------------------------------
# the network: cache, cap, retries

def clean_messages(messages):
    return [{**m, "content": clean_text(m["content"])} for m in messages]


def cache_path(cfg, messages):
    blob = json.dumps([cfg["api_base"], cfg["llm_model"], messages, cfg["temperature"]], sort_keys=True)
    return os.path.join(cfg["cache_dir"], hashlib.sha256(blob.encode("utf-8")).hexdigest() + ".json")


def cached(path):
    """The answer cached at path, or None when there is none or the file is not one of ours (damaged,
    another shape, or another request's answer: its key is not the file's name): the request is then made
    again and its answer replaces the file. (Files written before the key was kept have none.)"""
    try:
        rec = common.read_json(path)
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return None
    if not isinstance(rec, dict) or rec.get("key", cache_key(path)) != cache_key(path):
        return None
    return clean_text(rec["response"]) if isinstance(rec.get("response"), str) else None


def cache_key(path):
    return os.path.basename(path).removesuffix(".json")


def chat(messages, cfg, state, max_tokens):
    """The answer text for `messages`, from the cache or one request (retried on 429/5xx/refused
    connections; a timeout gives up at once: a server that accepts and never answers would otherwise
    hold every attempt for the whole read timeout)."""
    messages = clean_messages(messages)  # encodable as UTF-8 (the body, the cache file)
    path = cache_path(cfg, messages)
    text = cached(path)
    if text is not None:
        state["cached"] += 1
        return text
    if state["requests"] >= cfg["max_requests"]:
        raise CapReached("request cap reached")
    state["requests"] += 1
    url = cfg["api_base"].rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {state['key']}"} if state["key"] else {}
    body = {"model": cfg["llm_model"], "messages": messages, "temperature": cfg["temperature"],
            "max_tokens": max_tokens}
    attempts = cfg["retries"] + 1
    for attempt in range(attempts):
        retry_after, unreachable = None, False
        try:
            r = post(url, body, headers, cfg)
        except requests.Timeout as e:  # before ConnectionError: a connect timeout is both
            phase = "connect to" if isinstance(e, requests.ConnectTimeout) else "answer from"
            limit = cfg["connect_timeout"] if isinstance(e, requests.ConnectTimeout) else cfg["read_timeout"]
            raise RequestFailed(f"no {phase} {url} within {limit:g} s (a slow server may need a larger "
                                f"--{'connect' if phase == 'connect to' else 'read'}_timeout)")
        except requests.ConnectionError:
            why, unreachable = f"cannot connect to {url}", True
        except requests.RequestException as e:  # broken answers
            why = f"{type(e).__name__} from {url}"
        else:
            if r.status_code == 200:
                try:
                    text = clean_text(r.json()["choices"][0]["message"]["content"] or "")
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    raise RequestFailed(f"unexpected answer from {url}: {clean_text(r.text[:200])!r}")
                common.atomic_write_json(path, {"key": cache_key(path), "api_base": cfg["api_base"],
                                                "model": cfg["llm_model"], "temperature": cfg["temperature"],
                                                "response": text})
                return text
            if r.status_code in (401, 403):  # never echo the body: it may quote the key
                common.die(f"{url} refused the API key (HTTP {r.status_code}); check OPENAI_API_KEY "
                           "(or unset it for a local server that needs none)")
            if r.status_code == 404:
                common.die(f"{url} answered 404 ({r.text[:150].strip()}); check --api_base (it usually "
                           f"ends in /v1) and --llm_model {cfg['llm_model']}")
            if r.status_code != 429 and r.status_code < 500:
                raise RequestFailed(f"HTTP {r.status_code} from {url}: {r.text[:200].strip()}")
            why, retry_after = f"HTTP {r.status_code}", r.headers.get("Retry-After")
        if attempt + 1 == attempts:
            break
        delay = cfg["backoff"] * 2 ** attempt
        try:
            delay = float(retry_after) if retry_after is not None else delay
        except ValueError:
            pass  # an HTTP-date: keep the exponential delay
        delay = min(max(delay, 0.0), cfg["backoff_max"])
        print(f"explain: {why}; retry {attempt + 1}/{cfg['retries']} in {delay:.1f} s")
        _sleep(delay)
    if unreachable:
        common.die(f"cannot reach {url} after {attempts} attempts; is the server running? (check --api_base)")
    raise RequestFailed(f"{why} after {attempts} attempts")


MAX_ANSWER_BYTES = 4 << 20  # an answer of max_tokens_sim tokens is ~100 KB; more is a server gone wrong


def post(url, body, headers, cfg):
    """requests.post with a deadline for the whole answer (--answer_timeout): the read timeout bounds each
    wait for a byte only, so a server that sends a byte every few seconds, or chunks for ever, would hold the
    run for ever. The request runs in a daemon thread that reads the body (at most MAX_ANSWER_BYTES); past
    the deadline it is abandoned (its socket closed when it next reads, or at exit) and the request fails."""
    import threading
    box = {}

    def work():
        try:
            r = requests.post(url, json=body, headers=headers, stream=True,
                              timeout=(cfg["connect_timeout"], cfg["read_timeout"]))
            data = bytearray()
            for chunk in r.iter_content(1 << 14):
                data += chunk
                if len(data) > MAX_ANSWER_BYTES or "late" in box:
                    r.close()
                    raise RequestFailed(f"the answer from {url} ran past {MAX_ANSWER_BYTES >> 20} MB; not an answer")
            r._content = bytes(data)  # what r.text and r.json() read
            box["r"] = r
        except BaseException as e:  # handed to the caller's thread
            box["e"] = e
    t = threading.Thread(target=work, daemon=True, name="explain-request")
    t.start()
    t.join(cfg["answer_timeout"])
    if t.is_alive():
        box["late"] = True
        raise RequestFailed(f"the answer from {url} did not end within {cfg['answer_timeout']:g} s (a slow server "
                            f"may need a larger --answer_timeout)")
    if "e" in box:
        raise box["e"]
    return box["r"]


# -----------------------------------------------------------------------------

def check_key(cfg):
    """The API key (or None for a local server); a one-line error when OpenAI's endpoint has none.
    analyze.py calls it before its long pass, so a missing key costs nothing."""
    base = cfg.get("api_base") or config["api_base"]
    key = cfg.get("api_key") or os.environ.get("OPENAI_API_KEY") or None
    if OPENAI_HOST in base and not key:
        common.die("set OPENAI_API_KEY (an OpenAI API key) or use --api_base for a local server")
    return key


def check_reachable(cfg):
    """analyze.py's early word on a server that is not there (a note, not an error: the cached answers may be
    all the run needs), so it is said before the long pass, not after it."""
    base = cfg.get("api_base") or config["api_base"]
    url = urlparse(base)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=5).close()
    except (OSError, ValueError, TypeError) as e:
        print(f"note: cannot reach {base} now ({getattr(e, 'strerror', None) or e}); going on: features whose "
              f"explanation is not cached will have none (start the server, or fix --api_base)")


def feature_problem(f):
    """Why f is not a feature as the docstring's format has it (None when it is): read from a file that may have
    been edited, every value is checked before use (a list of strings in place of a list of contexts, or a
    context's activations as text, were a traceback)."""
    if not isinstance(f, dict) or not isinstance(f.get("key"), str):
        return "not an object with a string \"key\""
    for part in ("top", "random"):
        if not isinstance(f.get(part, []), list):
            return f"its \"{part}\" is not a list of contexts"
        for c in f.get(part, []):
            if not isinstance(c, dict) or not isinstance(c.get("tokens"), list) or not isinstance(c.get("acts"), list):
                return f"a context in \"{part}\" is not {{\"tokens\": [...], \"acts\": [...]}}"
            if not all(isinstance(t, str) for t in c["tokens"]):
                return "a context's tokens are not all strings"
            if not all(type(a) in (int, float) and math.isfinite(a) for a in c["acts"]):
                return "a context's activations are not all finite numbers"
            if len(c["tokens"]) != len(c["acts"]):
                return f"a context has {len(c['tokens'])} tokens but {len(c['acts'])} activations"
    return None


def explain_features(features, cfg):
    """{key: {"explanation", "score", "n_explain_examples", "n_sim_examples", "error"}} for each feature.
    Raises Incomplete (a one-line UserError carrying these results) when explanations are missing:
    failed requests, the request cap, or a run stopped by an unreachable server, a refused key or
    max_failures failed requests in a row. An unusable answer is the feature's result, not a failure."""
    cfg = common.parse_config({**config, **{k: v for k, v in cfg.items() if v is not None}}, [], checks=CHECKS)
    for f in features:
        why = feature_problem(f)
        if why:
            key = f["key"] if isinstance(f, dict) and isinstance(f.get("key"), str) else repr(f)[:60]
            common.die(f"feature {key}: {why}")
    # the cache is written here: one run at a time, and temp files of a killed run are removed
    with common.lock_dir(cfg["cache_dir"], "an explanation run (explain.py or analyze.py)"):
        return explain_locked(features, cfg)


def explain_locked(features, cfg):
    # plan: 2 requests per feature, minus the cached ones (a cached explanation tells the simulation prompt)
    plans, need = [], 0
    for f in features:
        shown, held = split_contexts(f, cfg)
        msgs = explanation_messages(shown, cfg["explain_format"])
        plans.append((f, shown, held, msgs))
        answer = cached(cache_path(cfg, clean_messages(msgs)))
        if answer is None:
            need += 2
        else:
            expl = parse_explanation(answer)
            need += int(bool(expl) and bool(held) and cached(
                cache_path(cfg, clean_messages(simulation_messages(expl, held)))) is None)
    key = check_key(cfg) if need else None
    print(f"explain: {len(features)} features with {cfg['llm_model']} at {cfg['api_base']}: ~{need} requests "
          f"({2 * len(features) - need} cached), cap {cfg['max_requests']}, cache {cfg['cache_dir']}")

    state = {"requests": 0, "cached": 0, "key": key}
    results, scores, failed, streak, stopped = {}, [], [], 0, None
    for i, (f, shown, held, msgs) in enumerate(plans):
        res = {"explanation": "", "score": None, "n_explain_examples": len(shown),
               "n_sim_examples": len(held), "error": None}
        results[f["key"]] = res
        if stopped:
            res["error"] = "not attempted: the run stopped"
            failed.append(f["key"])
            continue
        try:
            explain_one(res, shown, held, msgs, cfg, state)
            streak = 0
        except Unusable as e:
            res["error"], streak = str(e), 0
        except RequestFailed as e:
            res["error"] = str(e)
            failed.append(f["key"])
            streak = 0 if isinstance(e, CapReached) else streak + 1
            if streak >= cfg["max_failures"]:
                stopped = f"stopped after {streak} failed requests in a row (the last: {e})"
        except common.UserError as e:  # unreachable server, refused key, wrong path: no point going on
            res["error"], stopped = e.msg, e.msg
            failed.append(f["key"])
        if res["score"] is not None:
            scores.append(res["score"])
        score = "  n/a" if res["score"] is None else f"{res['score']:+.2f}"
        print(f"explain [{i + 1}/{len(plans)}] {f['key']} score {score}: "
              f"{res['explanation'] or ''}{' (' + res['error'] + ')' if res['error'] else ''}")
    mean = f"{np.mean(scores):.3f}" if scores else "n/a"
    print(f"explain: done; {state['requests']} requests, {state['cached']} answers from the cache, "
          f"{len(scores)} scored, mean score {mean}")
    if failed:
        why = stopped or f"the first: {results[failed[0]]['error']}"
        raise Incomplete(f"{len(failed)} of {len(plans)} features have no explanation or score ({why}); the answers "
                         f"so far are cached, re-run to continue", results)
    return results


def explain_one(res, shown, held, msgs, cfg, state):
    """Fill res (explanation, score) for one feature: the explanation request, then the simulation."""
    if not shown or not held:
        raise Unusable("too few contexts to explain and hold out")
    res["explanation"] = parse_explanation(chat(msgs, cfg, state, cfg["max_tokens_explain"]))
    if not res["explanation"]:
        raise Unusable("empty explanation")
    true = [a for c in held for a in c["acts"]]
    sim_msgs = simulation_messages(res["explanation"], held)
    max_tok = min(cfg["max_tokens_sim"], 8 * len(true) + 64)
    answer = chat(sim_msgs, cfg, state, max_tok)
    sim = parse_simulation(answer, len(true))
    if sim is None:  # ask once more, showing the model its answer and the format again
        sim_msgs = sim_msgs + [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": f"That answer did not give a value for every token. Reply with "
                                        f"exactly {len(true)} lines index<TAB>value, for indices 0 to "
                                        f"{len(true) - 1}, and nothing else."}]
        sim = parse_simulation(chat(sim_msgs, cfg, state, max_tok), len(true))
    if sim is None:
        raise Unusable(f"malformed simulation answer (no value for every one of {len(true)} tokens)")
    res["score"] = score_simulation(true, sim)


def main(argv=None):
    cfg = common.parse_config(dict(config), argv, checks=CHECKS)
    if not cfg["features_json"]:
        common.die("give --features_json FILE (a JSON list of features; python explain.py --help)")
    if not os.path.exists(cfg["features_json"]):
        common.die(f"no file {cfg['features_json']}; check --features_json")
    try:
        features = common.read_json(cfg["features_json"])
    except (ValueError, UnicodeDecodeError) as e:
        common.die(f"{cfg['features_json']} is not valid JSON ({e}); check --features_json")
    except OSError as e:  # a folder, a pipe or a device in its place, or unreadable
        common.die(f"cannot read {cfg['features_json']} ({e.strerror}); give --features_json a JSON file")
    if not isinstance(features, list) or not all(isinstance(f, dict) and "key" in f and "top" in f for f in features):
        common.die(f"{cfg['features_json']} must be a JSON list of {{\"key\", \"top\", \"random\"}} objects")
    try:
        results, missing = explain_features(features, cfg), None
    except Incomplete as e:  # keep (and write) what there is, then exit non-zero
        results, missing = e.results, e
    for k, r in results.items():
        score = "n/a" if r["score"] is None else f"{r['score']:.3f}"
        print(f"{k}\t{score}\t{r['explanation']}" + (f"\t[{r['error']}]" if r["error"] else ""))
    if cfg["out_json"]:
        common.atomic_write_json(cfg["out_json"], {"results": results, "complete": missing is None,
                                                   "provenance": common.provenance(
            cfg, features_json=common.sha256_file(cfg["features_json"]))})
        print(f"wrote {cfg['out_json']}")
    if missing is not None:
        raise missing
    return results


if __name__ == "__main__":
    common.cli(main)
