"""explain.py against a fake OpenAI-compatible LLM on 127.0.0.1 (no internet): prompts, scoring,
retries, cache, request cap, malformed answers, key errors; a hung server (timeouts, the run stops),
a lone surrogate in an answer, and missing explanations as a non-zero exit."""
import json
import os
import re
import sys

import helpers
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402
import explain  # noqa: E402

EXPLANATION = "the word foo"


def fake_answer(messages, mode):
    """A tiny LLM: a fixed phrase for the explanation request; for the simulation request, 10 for
    each token "foo" and 0 otherwise, read from the numbered token lines of the prompt."""
    if "predict" not in messages[0]["content"]:
        return f'Explanation: "{EXPLANATION}".\nIt fires on foo.'
    if mode == "garbage" or (mode == "garbage_once" and len(messages) == 2):
        return "I think this neuron likes foo a lot."
    toks = re.findall(r"^(\d+)\t(.*)$", messages[1]["content"], flags=re.M)
    return "\n".join(f"{i}\t{10 if t == 'foo' else 0}" for i, t in toks)


@pytest.fixture
def llm():
    """state: script = [(status, headers, body)] answered first, then fake_answer; requests = log."""
    state = {"script": [], "requests": [], "mode": "ok"}

    def respond(path, headers, body):
        state["requests"].append({"path": path, "headers": headers, "body": body})
        if state["script"]:
            code, extra, raw = state["script"].pop(0)
            return code, extra, raw.encode()                                  # scripted bodies go out verbatim
        return 200, {}, fake_answer(body["messages"], state["mode"])

    srv, state["base"] = helpers.chat_server(respond)
    yield state
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def make_feature(key="lua/7", perfect=False):
    """20 top contexts ctx00..ctx19 (foo activates 20 - i, or 6 everywhere when perfect; bar 1.0 unless
    perfect) and 10 random ones rnd0..rnd9 (foo in every third, activating 3 or 6)."""
    top = []
    for i in range(20):
        foo = 6.0 if perfect else 20.0 - i
        top.append({"tokens": [f"ctx{i:02d}", " the", "foo", "bar", f" end{key}"],  # prompts differ per key
                    "acts": [0.0, 0.0, foo, 0.0 if perfect else 1.0, 0.0]})
    rnd = []
    for j in range(10):
        toks = [f"rnd{j}", " a", "foo" if j % 3 == 0 else "baz", " b"]
        rnd.append({"tokens": toks, "acts": [0.0, 0.0, (6.0 if perfect else 3.0) if j % 3 == 0 else 0.0, 0.0]})
    return {"key": key, "model": key.split("/")[0], "feature": int(key.split("/")[1]), "top": top, "random": rnd}


def make_cfg(llm, tmp_path, **kw):
    cfg = {"api_base": llm["base"], "llm_model": "fake-llm", "max_requests": 100,
           "cache_dir": str(tmp_path / "cache"), "connect_timeout": 10.0, "read_timeout": 10.0, "retries": 3, "temperature": 0.0,
           "backoff": 0.001, "backoff_max": 0.01}
    cfg.update(kw)
    return cfg


def prompt_lines(text, pattern):
    return re.findall(pattern, text, flags=re.M)


# -----------------------------------------------------------------------------
# pure functions

def test_score_simulation_known_answers():
    assert explain.score_simulation([0, 1, 0, 2], [0, 5, 0, 10]) == pytest.approx(1.0)
    assert explain.score_simulation([0, 1, 0, 2], [10, 5, 10, 0]) == pytest.approx(-1.0)
    t, s = [0.0, 3.0, 1.0, 0.0, 7.0, 2.0], [0, 10, 0, 0, 10, 5]
    assert explain.score_simulation(t, s) == pytest.approx(np.corrcoef(t, s)[0, 1], abs=1e-12)
    assert explain.score_simulation([1, 2, 3], [4, 4, 4]) is None  # constant simulation
    assert explain.score_simulation([0, 0, 0], [0, 10, 0]) is None  # constant truth
    assert explain.score_simulation([1.0], [3.0]) is None
    with pytest.raises(ValueError):
        explain.score_simulation([1, 2], [1, 2, 3])


def test_normalize_and_parsers():
    assert explain.normalize_acts([0.0, 2.0, 4.0, -1.0, 3.99], 4.0) == [0, 5, 10, 0, 9]
    assert explain.normalize_acts([0.0, 0.001], 8.0) == [0, 0]
    assert explain.normalize_acts([1.0, 2.0], 0.0) == [0, 0]
    assert explain.parse_explanation('Explanation: "the word foo".\nmore text') == "the word foo"
    assert explain.parse_explanation("**Explanation:** Lua `end` keywords") == "Lua `end` keywords"
    assert explain.parse_explanation("\n\n  'closing brackets'  ") == "closing brackets"
    assert len(explain.parse_explanation("word " * 200)) <= explain.MAX_EXPLANATION_CHARS
    assert explain.parse_simulation("0\t3\n1\t10\n2\t0", 3) == [3.0, 10.0, 0.0]
    assert explain.parse_simulation("Sure:\n0: foo 12\n1 -> 0", 2) == [10.0, 0.0]  # echoed token, clipped
    assert explain.parse_simulation("```json\n[1, 0, 7]\n```", 3) == [1.0, 0.0, 7.0]
    assert explain.parse_simulation("0\t3\n2\t1", 3) is None  # token 1 missing
    assert explain.parse_simulation("no numbers here", 2) is None
    # an index past the tokens is no token's; a token given twice keeps its first value; the value is the line's
    # last number (a token echoed with digits in it); a JSON list of another length is not the answer
    assert explain.parse_simulation("0\t1\n1\t2\n2\t3", 2) == [1.0, 2.0]
    assert explain.parse_simulation("0\t1\n0\t5\n1\t2", 2) == [1.0, 2.0]
    assert explain.parse_simulation("0\tfoo3\t7\n1\tx 2 4", 2) == [7.0, 4.0]
    assert explain.parse_simulation("[1, 2]\n0\t4\n1\t5\n2\t6", 3) == [4.0, 5.0, 6.0]
    # a long explanation is cut at a word boundary, not inside a word
    assert explain.parse_explanation("abcdefghijk " * 30) == " ".join(["abcdefghijk"] * 16)


def test_sparse_activations_are_shown_again_without_their_zeros():
    """Bills et al. repeat the examples with only their non-zero tokens when under a fifth of the tokens are
    non-zero (after normalising to 0-10); a fifth or more: once."""
    sparse = [{"tokens": ["a", "b", "c", "d", "e", "f"], "acts": [0.0, 0.0, 5.0, 0.0, 0.0, 0.0]}]
    user = explain.explanation_messages(sparse)[1]["content"]
    assert user.count("c\t10") == 2
    assert "Same activations, but with all zeros filtered out:\n<start>\nc\t10\n<end>" in user
    fifth = [{"tokens": ["a", "b", "c", "d", "e"], "acts": [0.0, 0.0, 5.0, 0.0, 0.0]}]
    assert "filtered out" not in explain.explanation_messages(fifth)[1]["content"]


# -----------------------------------------------------------------------------
# against the fake endpoint

def test_prompts_split_and_score(llm, tmp_path):
    feat = make_feature()
    res = explain.explain_features([feat], make_cfg(llm, tmp_path))["lua/7"]
    assert res["error"] is None and res["explanation"] == EXPLANATION
    assert (res["n_explain_examples"], res["n_sim_examples"]) == (5 + 3 + 2, 10 + 5)
    assert len(llm["requests"]) == 2
    assert all(r["path"] == "/v1/chat/completions" and "Authorization" not in r["headers"] for r in llm["requests"])
    body = llm["requests"][0]["body"]
    assert body["model"] == "fake-llm" and body["temperature"] == 0.0 and body["max_tokens"] > 0

    # explanation prompt: shown contexts with activations normalised by the shown max (20 -> 10)
    ex = llm["requests"][0]["body"]["messages"][1]["content"]
    pairs = prompt_lines(ex, r"^(.*)\t(\d+)$")
    assert ("foo", "10") in pairs and ("foo", "9") in pairs  # ctx00 (20), ctx02 (18)
    assert ("foo", "3") in pairs  # ctx14 (6/20) from a lower quantile
    assert ("bar", "0") in pairs  # 1/20 floors to 0
    shown = {t for t, _ in pairs if t.startswith(("ctx", "rnd"))}
    assert shown == {"ctx00", "ctx02", "ctx04", "ctx06", "ctx08", "ctx10", "ctx14", "ctx18", "rnd0", "rnd2"}

    # simulation prompt: the explanation and only the held-out contexts (odd-ranked top, odd random)
    sim = llm["requests"][1]["body"]["messages"][1]["content"]
    assert EXPLANATION in sim
    held = {t for _, t in prompt_lines(sim, r"^(\d+)\t(.*)$") if t.startswith(("ctx", "rnd"))}
    assert held == {f"ctx{i:02d}" for i in range(1, 20, 2)} | {"rnd1", "rnd3", "rnd5", "rnd7", "rnd9"}
    assert not held & shown

    # score: Pearson over all held-out tokens pooled, simulation = 10 on foo
    ctxs = feat["top"][1::2] + feat["random"][1::2]
    true = [a for c in ctxs for a in c["acts"]]
    simulated = [10.0 if t == "foo" else 0.0 for c in ctxs for t in c["tokens"]]
    assert res["score"] == pytest.approx(np.corrcoef(true, simulated)[0, 1], abs=1e-9)
    assert 0.3 < res["score"] < 0.99

    # answer caps: a short phrase; one line of a few tokens for each of the 70 held-out tokens
    assert [r["body"]["max_tokens"] for r in llm["requests"]] == [100, 8 * 70 + 64]

    perfect = explain.explain_features([make_feature("base/3", perfect=True)], make_cfg(llm, tmp_path))
    assert perfect["base/3"]["score"] == pytest.approx(1.0)


def test_compact_format_lists_only_nonzero_tokens(llm, tmp_path):
    explain.explain_features([make_feature()], make_cfg(llm, tmp_path, explain_format="compact"))
    ex = llm["requests"][0]["body"]["messages"][1]["content"]
    assert "foo (10)" in ex and "foo (3)" in ex and "bar (" not in ex and "\t" not in ex


def test_retries_and_backoff(llm, tmp_path, monkeypatch):
    delays = []
    monkeypatch.setattr(explain, "_sleep", delays.append)
    llm["script"] = [(503, {}, "busy"), (503, {}, "busy")]
    res = explain.explain_features([make_feature()], make_cfg(llm, tmp_path, backoff=0.001))
    assert res["lua/7"]["error"] is None and res["lua/7"]["score"] is not None
    assert len(llm["requests"]) == 4 and delays == pytest.approx([0.001, 0.002])  # exponential

    delays.clear()
    llm["script"] = [(429, {"Retry-After": "0"}, "slow down"), (429, {"Retry-After": "1000"}, "slow down")]
    res = explain.explain_features([make_feature("lua/8")], make_cfg(llm, tmp_path, backoff_max=0.05))
    assert res["lua/8"]["error"] is None and delays == [0.0, 0.05]  # Retry-After honoured, capped

    llm["script"] = [(500, {}, "down")] * 3
    with pytest.raises(explain.Incomplete, match="1 of 2 features have no explanation") as e:
        explain.explain_features([make_feature("lua/9"), make_feature("lua/10")], make_cfg(llm, tmp_path, retries=2))
    res = e.value.results
    assert res["lua/9"]["score"] is None and "HTTP 500 after 3 attempts" in res["lua/9"]["error"]
    assert res["lua/10"]["error"] is None  # the run goes on, and says at the end that one is missing


def test_cache_resume_and_changed_prompt(llm, tmp_path):
    feats = [make_feature("lua/1"), make_feature("lua/2")]
    first = explain.explain_features(feats, make_cfg(llm, tmp_path))
    assert len(llm["requests"]) == 4
    again = explain.explain_features(feats, make_cfg(llm, tmp_path))
    assert len(llm["requests"]) == 4 and again == first  # zero requests on a rerun
    feats[0]["top"][0]["tokens"][1] = " a"  # a shown context changed: a new explanation request; the
    explain.explain_features(feats, make_cfg(llm, tmp_path))  # same explanation -> simulation cached
    assert len(llm["requests"]) == 5 and "ctx00\t0\n a\t0" in llm["requests"][4]["body"]["messages"][1]["content"]
    feats[1]["top"][1]["tokens"][1] = " a"  # a held-out context changed: only a new simulation request
    explain.explain_features(feats, make_cfg(llm, tmp_path))
    assert len(llm["requests"]) == 6 and "predict" in llm["requests"][5]["body"]["messages"][0]["content"]
    explain.explain_features(feats, make_cfg(llm, tmp_path, llm_model="other"))  # model is part of the key
    assert len(llm["requests"]) == 10


def test_a_damaged_cache_entry_is_asked_again_and_a_killed_runs_temp_files_go(llm, tmp_path):
    feats = [make_feature("lua/1")]
    first = explain.explain_features(feats, make_cfg(llm, tmp_path))
    cache = tmp_path / "cache"
    entries = sorted(cache.glob("*.json"))
    assert len(llm["requests"]) == 2 and len(entries) == 2
    entries[0].write_text("[1, 2]")                                      # another shape
    entries[1].write_bytes(b"\xff\xfe not json")                          # garbage
    (cache / ".abc.json.x1.tmp").write_text("half an answer")            # an atomic write a kill interrupted
    again = explain.explain_features(feats, make_cfg(llm, tmp_path))
    assert again == first and len(llm["requests"]) == 4                 # both asked again, and rewritten
    assert explain.cached(str(entries[0])) is not None and explain.cached(str(entries[1])) is not None
    assert not list(cache.glob(".*.tmp")) and not (cache / ".lock").exists()
    a, b = (e.read_bytes() for e in entries)                             # two answers swapped: each asked again
    entries[0].write_bytes(b), entries[1].write_bytes(a)
    assert explain.explain_features(feats, make_cfg(llm, tmp_path)) == first and len(llm["requests"]) == 6


def test_one_explanation_run_at_a_time_per_cache(llm, tmp_path):
    import socket
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / ".lock").write_text(json.dumps({"pid": os.getpid(), "start": common.proc_start(os.getpid()),
                                                          "host": socket.gethostname(), "command": "explain.py"}))
    with pytest.raises(common.UserError, match=r"cache is in use by an explanation run"):
        explain.explain_features([make_feature("lua/1")], make_cfg(llm, tmp_path))
    assert not llm["requests"]


def test_request_cap_and_resume(llm, tmp_path, capsys):
    feats = [make_feature("lua/1"), make_feature("lua/2"), make_feature("lua/3")]
    with pytest.raises(explain.Incomplete, match="2 of 3 features .*request cap reached") as e:
        explain.explain_features(feats, make_cfg(llm, tmp_path, max_requests=3))
    res = e.value.results
    assert "~6 requests" in capsys.readouterr().out
    assert len(llm["requests"]) == 3
    assert res["lua/1"]["error"] is None
    assert res["lua/2"]["explanation"] == EXPLANATION and res["lua/2"]["error"] == "request cap reached"
    assert res["lua/3"]["error"] == "request cap reached" and res["lua/3"]["score"] is None
    res = explain.explain_features(feats, make_cfg(llm, tmp_path, max_requests=3))
    assert "~3 requests (3 cached)" in capsys.readouterr().out
    assert len(llm["requests"]) == 6 and all(r["error"] is None for r in res.values())


def test_the_request_cap_is_no_failure_streak_and_every_feature_is_tried(llm, tmp_path):
    """Features left unexplained by the request cap do not count as failed requests in a row (the server is
    fine): every feature is tried and says so, none is 'not attempted: the run stopped'."""
    feats = [make_feature(f"lua/{i}") for i in range(5)]
    with pytest.raises(explain.Incomplete, match=r"5 of 5 features .*\(the first: request cap reached\)") as e:
        explain.explain_features(feats, make_cfg(llm, tmp_path, max_requests=0, max_failures=3))
    assert [r["error"] for r in e.value.results.values()] == ["request cap reached"] * 5 and not llm["requests"]


def test_a_negative_retry_after_waits_nothing(llm, tmp_path, monkeypatch):
    delays = []
    monkeypatch.setattr(explain, "_sleep", delays.append)
    llm["script"] = [(503, {"Retry-After": "-5"}, "busy")]
    res = explain.explain_features([make_feature()], make_cfg(llm, tmp_path))
    assert res["lua/7"]["error"] is None and delays == [0.0]             # (time.sleep(-5) raises ValueError)


def test_an_empty_cached_explanation_plans_no_simulation_request(llm, tmp_path, capsys):
    """An explanation answered empty is the feature's result (no simulation follows): run again from the cache,
    the plan counts no request for it."""
    llm["script"] = [(200, {}, json.dumps({"choices": [{"message": {"content": ""}}]}))]
    res = explain.explain_features([make_feature()], make_cfg(llm, tmp_path))
    assert res["lua/7"]["error"] == "empty explanation" and len(llm["requests"]) == 1
    capsys.readouterr()
    assert explain.explain_features([make_feature()], make_cfg(llm, tmp_path)) == res
    assert "~0 requests (2 cached)" in capsys.readouterr().out and len(llm["requests"]) == 1


def test_malformed_simulation(llm, tmp_path):
    llm["mode"] = "garbage"
    res = explain.explain_features([make_feature()], make_cfg(llm, tmp_path))["lua/7"]
    assert res["score"] is None and "malformed" in res["error"] and res["explanation"] == EXPLANATION
    assert len(llm["requests"]) == 3  # explanation, simulation, one corrective retry
    assert llm["requests"][2]["body"]["messages"][-1]["role"] == "user"

    llm["mode"] = "garbage_once"  # the corrective retry succeeds
    res = explain.explain_features([make_feature("base/3", perfect=True)], make_cfg(llm, tmp_path))["base/3"]
    assert res["error"] is None and res["score"] == pytest.approx(1.0)


def test_key_handling(llm, tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit, match="set OPENAI_API_KEY .* --api_base"):
        explain.explain_features([make_feature()], make_cfg(llm, tmp_path, api_base="https://api.openai.com/v1"))

    secret = "sk-test-secret-123"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    explain.explain_features([make_feature()], make_cfg(llm, tmp_path))
    assert llm["requests"][0]["headers"]["Authorization"] == f"Bearer {secret}"

    llm["script"] = [(401, {}, json.dumps({"error": f"Incorrect API key provided: {secret}"}))]
    with pytest.raises(SystemExit, match="401.*OPENAI_API_KEY") as e:
        explain.explain_features([make_feature("lua/8")], make_cfg(llm, tmp_path))
    out = capsys.readouterr()
    assert secret not in str(e.value) and secret not in out.out + out.err


def test_unreachable_and_wrong_path(llm, tmp_path, capsys):
    import socket
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SystemExit, match="cannot reach .* after 2 attempts"):
        explain.explain_features([make_feature()], make_cfg(llm, tmp_path, retries=1,
                                                            api_base=f"http://127.0.0.1:{port}/v1"))
    # analyze.py --explain asks before its long pass: a note (the cached answers may be all it needs)
    explain.check_reachable({"api_base": f"http://127.0.0.1:{port}/v1"})
    assert re.search(rf"note: cannot reach http://127\.0\.0\.1:{port}/v1 now \(Connection refused\); going on",
                     capsys.readouterr().out)
    explain.check_reachable({"api_base": llm["base"]})               # a server there: nothing said
    assert "cannot reach" not in capsys.readouterr().out
    llm["script"] = [(404, {}, "not found")]
    with pytest.raises(SystemExit, match="404.*--api_base"):
        explain.explain_features([make_feature()], make_cfg(llm, tmp_path))


def test_cli(llm, tmp_path, capsys):
    path = tmp_path / "features.json"
    path.write_text(json.dumps([make_feature("base/3", perfect=True)]))
    out = tmp_path / "explained.json"
    explain.main(["--features_json", str(path), "--api_base", llm["base"], "--llm_model", "fake",
                  "--cache_dir", str(tmp_path / "c"), "--out_json", str(out)])
    assert f"base/3\t1.000\t{EXPLANATION}" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["results"]["base/3"]["score"] == pytest.approx(1.0) and "provenance" in saved
    with pytest.raises(SystemExit, match="--features_json"):
        explain.main([])


@pytest.mark.parametrize("feature, why", [
    ({"key": "base/1", "top": "x", "random": []}, r'its "top" is not a list of contexts'),
    ({"key": "base/1", "top": [1, 2]}, r'a context in "top" is not'),
    ({"key": "base/1", "top": [{"tokens": ["a"], "acts": ["x"]}]}, r"activations are not all finite numbers"),
    ({"key": "base/1", "top": [{"tokens": [7], "acts": [1.0]}]}, r"tokens are not all strings"),
    ({"key": "base/1", "top": [], "random": [{"tokens": ["a"], "acts": [1, 2]}]}, r"1 tokens but 2 activations"),
    ({"key": ["a"], "top": []}, r'not an object with a string "key"'),
    ({"key": "base/1", "top": [{"tokens": ["a"], "acts": [float("nan")]}]}, r"activations are not all finite numbers"),
])
def test_a_hand_edited_features_file_is_one_line(tmp_path, feature, why):
    """Every value of --features_json is checked before use: a traceback (TypeError) before, for a "top" that
    was a string or a context's activations given as text."""
    path = tmp_path / "features.json"
    path.write_text(json.dumps([feature]))
    with pytest.raises(SystemExit, match=why):
        explain.main(["--features_json", str(path), "--api_base", "http://127.0.0.1:9/v1",
                      "--cache_dir", str(tmp_path / "c")])


# -----------------------------------------------------------------------------
# issue 12: a hung server, a lone surrogate, missing explanations are an error

def test_default_timeouts_bound_each_request_under_a_minute(tmp_path, monkeypatch):
    seen = []

    def post(url, **kw):  # no network: record the timeout the request would get, then fail it
        seen.append(kw["timeout"])
        raise explain.requests.ConnectionError("refused")
    monkeypatch.setattr(explain.requests, "post", post)
    monkeypatch.setattr(explain, "_sleep", lambda s: None)
    cfg = {"api_base": "http://127.0.0.1:9/v1", "cache_dir": str(tmp_path / "c")}     # every other key: the default
    with pytest.raises(explain.Incomplete):
        explain.explain_features([make_feature()], cfg)
    connect, read = seen[0]  # (connect, read): requests' timeout=None would wait forever
    assert 0 < connect and 0 < read and connect + read < 60


def test_a_server_that_never_answers_times_out_and_stops_the_run(tmp_path):
    close, base, accepted = helpers.silent_server()
    try:
        feats = [make_feature(f"lua/{i}") for i in range(6)]
        cfg = {"api_base": base, "llm_model": "fake", "cache_dir": str(tmp_path / "c"), "read_timeout": 0.2,
               "connect_timeout": 2.0, "max_failures": 3, "backoff": 0.001}
        with pytest.raises(explain.Incomplete, match=r"6 of 6 features .*stopped after 3 failed requests in a row"
                                                     r" \(the last: no answer from .* within 0.2 s") as e:
            explain.explain_features(feats, cfg)
    finally:
        close()
    assert len(accepted) == 3          # a timed-out request is not retried, and the fourth feature is never asked
    res = e.value.results
    assert [r["error"] for r in res.values()][3:] == ["not attempted: the run stopped"] * 3
    assert all(r["explanation"] == "" and r["score"] is None for r in res.values())


def test_lone_surrogate_in_an_answer(llm, tmp_path):
    # a JSON answer may escape a lone surrogate (\ud800), which has no UTF-8 encoding: printing it, the next
    # prompt or the report used to fail with UnicodeEncodeError
    bad = json.dumps({"choices": [{"message": {"content": "the word \\ud800 foo"}}]}).replace("\\\\", "\\")
    assert "\\ud800" in bad
    llm["script"] = [(200, {}, bad)]
    feats = tmp_path / "features.json"
    feats.write_text(json.dumps([make_feature("base/3", perfect=True)]))
    out = tmp_path / "explained.json"
    proc = helpers.run_script("explain.py", "--features_json", feats, "--api_base", llm["base"], "--llm_model",
                              "fake", "--cache_dir", tmp_path / "c", "--out_json", out,
                              env={"NO_PROXY": "127.0.0.1,localhost", "OPENAI_API_KEY": ""})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    res = json.loads(out.read_text())["results"]["base/3"]
    assert res["explanation"] == "the word \ufffd foo" and res["error"] is None
    assert "the word \ufffd foo" in proc.stdout
    assert llm["requests"][1]["body"]["messages"][1]["content"].count("the word \ufffd foo") == 1
    again = explain.explain_features([make_feature("base/3", perfect=True)],   # from the cache, no new request
                                     make_cfg(llm, tmp_path, cache_dir=str(tmp_path / "c"), llm_model="fake"))
    assert again["base/3"] == res and len(llm["requests"]) == 2


def test_missing_explanations_exit_non_zero_and_keep_what_there_is(llm, tmp_path):
    feats = tmp_path / "features.json"
    feats.write_text(json.dumps([make_feature("base/3", perfect=True)]))
    out = tmp_path / "explained.json"
    args = ["--features_json", feats, "--llm_model", "fake", "--cache_dir", tmp_path / "c", "--out_json", out,
            "--backoff", "0.001", "--retries", "1"]
    env = {"NO_PROXY": "127.0.0.1,localhost", "OPENAI_API_KEY": ""}
    proc = helpers.run_script("explain.py", *args, "--api_base", f"http://127.0.0.1:{helpers.free_port()}/v1", env=env)
    helpers.assert_one_line_error(proc, r"1 of 1 features have no explanation .*cannot reach .* after 2 attempts")
    saved = json.loads(out.read_text())
    assert saved["complete"] is False and "cannot reach" in saved["results"]["base/3"]["error"]

    llm["script"] = [(500, {}, "down")] * 2                     # the explanation fails, the rerun works
    proc = helpers.run_script("explain.py", *args, "--api_base", llm["base"], env=env)
    helpers.assert_one_line_error(proc, r"1 of 1 features .*HTTP 500 after 2 attempts.*re-run to continue")
    proc = helpers.run_script("explain.py", *args, "--api_base", llm["base"], env=env)
    assert proc.returncode == 0 and json.loads(out.read_text())["complete"] is True, proc.stderr
