"""Supersession rules (engramdb.engine.supersession): the labelled set, the single rules,
determinism, and the optional LLM judge against a fake OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engramdb.embeddings import Embedder
from engramdb.engine.supersession import (
    RELATIONS,
    Decision,
    LLMJudge,
    Thresholds,
    analyse,
    decide,
    decide_against,
    parse_llm_answer,
    stem,
)

PAIRS_FILE = Path(__file__).parent / "data" / "supersession_pairs.jsonl"


def load_pairs() -> list[dict[str, Any]]:
    return [json.loads(line) for line in PAIRS_FILE.read_text(encoding="utf-8").splitlines()
            if line.strip()]


# -- the labelled set ----------------------------------------------------------------------


def test_labelled_set_is_balanced_and_has_a_holdout() -> None:
    pairs = load_pairs()
    assert len(pairs) >= 120
    assert len({p["id"] for p in pairs}) == len(pairs)
    for p in pairs:
        assert set(p) == {"id", "new", "old", "label", "holdout"}, p  # no stored cosine
        assert p["label"] in RELATIONS
        assert p["new"].strip() and p["old"].strip() and p["new"] != p["old"]
    for label in RELATIONS:
        assert sum(p["label"] == label for p in pairs) >= 35
        held = sum(p["label"] == label and p["holdout"] for p in pairs)
        assert held >= 10, label
    share = sum(p["holdout"] for p in pairs) / len(pairs)
    assert 0.25 <= share <= 0.35


@pytest.fixture(scope="module")
def labelled(embedder: Embedder) -> list[tuple[dict[str, Any], float, Decision]]:
    """Each pair with its cosine from the real model and the rules' decision."""
    pairs = load_pairs()
    new = embedder.embed([p["new"] for p in pairs]).vectors
    old = embedder.embed([p["old"] for p in pairs]).vectors
    out = []
    for p, a, b in zip(pairs, new, old, strict=True):
        sim = float(np.dot(a, b))
        out.append((p, sim, decide(p["new"], p["old"], sim)))
    return out


def _metrics(rows: list[tuple[dict[str, Any], float, Decision]]) -> dict[str, Any]:
    per_class = {}
    for c in RELATIONS:
        tp = sum(p["label"] == c and d.relation == c for p, _, d in rows)
        predicted = sum(d.relation == c for _, _, d in rows)
        actual = sum(p["label"] == c for p, _, _ in rows)
        per_class[c] = (tp / predicted if predicted else 0.0, tp / actual if actual else 0.0)
    accuracy = sum(p["label"] == d.relation for p, _, d in rows) / len(rows)
    return {"accuracy": accuracy, "per_class": per_class}


# Floors a little under what the rules reach (docs/supersession.md has the figures: all
# 0.964, development 0.974, holdout 0.941), so that a change that costs two or three pairs
# shows up here.
FLOORS = {"all": 0.93, "dev": 0.94, "holdout": 0.88}
PER_CLASS_FLOOR = 0.88  # precision and recall of each class over the whole set


@pytest.mark.parametrize("part", ["all", "dev", "holdout"])
def test_accuracy_on_the_labelled_set(labelled: list[Any], part: str) -> None:
    rows = [r for r in labelled
            if part == "all" or r[0]["holdout"] == (part == "holdout")]
    m = _metrics(rows)
    misses = [f"{p['id']} [{sim:.2f}] expected {p['label']}, got {d.relation}: {d.reason}"
              for p, sim, d in rows if d.relation != p["label"]]
    print(f"\n{part}: accuracy {m['accuracy']:.3f} over {len(rows)} pairs")
    for c, (prec, rec) in m["per_class"].items():
        print(f"  {c:<9} precision {prec:.3f} recall {rec:.3f}")
    print("\n".join(misses))
    assert m["accuracy"] >= FLOORS[part], misses


def test_per_class_precision_and_recall(labelled: list[Any]) -> None:
    m = _metrics(labelled)
    for c, (prec, rec) in m["per_class"].items():
        assert prec >= PER_CLASS_FLOOR, (c, prec)
        assert rec >= PER_CLASS_FLOOR, (c, rec)


def test_every_decision_explains_itself(labelled: list[Any]) -> None:
    for _, sim, d in labelled:
        assert d.source == "rules"
        assert d.reason.startswith(d.rule + ":")
        assert d.similarity == pytest.approx(sim)
        json.dumps(d.as_dict())  # features are JSON-serialisable


# -- analysis --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "root", "head", "names"), [
    ("User's dog Rex is afraid of thunderstorms", "user", "dog", {"rex"}),
    ("My sister lives in Paris", "user", "sister", set()),
    ("I live in Leeds", "user", None, set()),
    ("The user's GitHub username changed", "user", "usernam", {"github"}),
    ("Alice lives in Toronto", "alice", None, set()),
    ("Alice's husband is an architect", "alice", "husband", set()),
    ("The Orion project uses MongoDB", None, "project", {"orion"}),
    ("Since March the user works at Globex", "user", None, set()),
    ("Prefers dark mode", "user", None, set()),
    ("User's work email is dana@example.com", "user", "email", set()),
    ("User's favourite drink is espresso", "user", "drink", set()),
])
def test_subject_extraction(text: str, root: str | None, head: str | None,
                            names: set[str]) -> None:
    s = analyse(text).subject
    assert (s.root, s.head, set(s.names)) == (root, head, names)


def test_subject_modifiers_and_attachments() -> None:
    work = analyse("User's work email is dana@example.com").subject
    assert work.modifiers == {"work"}
    meeting = analyse("The weekly sync with the design team on Tuesdays is in room 4B").subject
    assert meeting.head == "sync" and meeting.attachments == {"design", "team"}


def test_stemmer_matches_inflections() -> None:
    assert len({stem(w) for w in ("lives", "live", "living", "lived")}) == 1
    assert stem("runs") == stem("running") == "run"
    assert stem("address") == "address"
    assert stem("studies") == stem("study")


def test_markers() -> None:
    f = analyse("User no longer drinks tea and switched to coffee")
    assert "no longer" in f.strong_change and "switched" in f.strong_change and f.negated
    assert analyse("User has a cat too").additive == ("too",)
    assert analyse("User finds it too spicy").additive == ()
    assert analyse("I don't eat fish either").additive == ("either",)
    assert not analyse("User drinks coffee black, no sugar").negated
    assert not analyse("User drinks tea without sugar").negated
    assert analyse("User hates mushrooms").negated  # polarity of the sentiment verb
    assert analyse("User isn't a student").negated
    assert analyse("User is in Rome until Friday").non_current
    assert analyse("User now works at Initech").weak_change == ("now",)
    assert analyse("User left Initech in May").strong_change == ("left Initech",)


def test_values_and_families() -> None:
    f = analyse("User's rent went up to 1400 euros a month")
    assert "1400" in f.numbers and "amount" in f.families
    g = analyse("User now runs five times a week")
    assert "5" in g.numbers and "frequency" in g.families
    assert analyse("User is 41").families == {"age"}
    assert analyse("User has a dog named Rex").possessed is not None


# -- the rules, one by one (sentences not in the labelled set) ---------------------------------


@pytest.mark.parametrize(("new", "old", "sim", "relation", "rule"), [
    # 0. below the candidate floor: not compared
    ("User moved to Oslo", "User lives in Stockholm", 0.2, "saved", "below_floor"),
    # 1. different subjects
    ("User's brother lives in Oslo", "User lives in Stockholm", 0.7, "saved",
     "different_subject"),
    ("Bob lives in Paris", "Alice lives in Rome", 0.7, "saved", "different_subject"),
    ("User's son is called Tom", "User's daughter is called Eve", 0.7, "saved",
     "different_subject"),
    ("User's work email is dana@acme.test", "User's personal email is dk@mail.test", 0.8,
     "saved", "different_subject"),
    # 2. additive markers
    ("User also likes chess", "User likes jazz", 0.6, "extended", "additive"),
    ("I have a rabbit as well", "I have a cat", 0.6, "extended", "additive"),
    ("User also visited Rome last year", "User lives in Berlin", 0.5, "saved", "not_current"),
    # 3. change markers
    ("User switched from Firefox to Chrome", "User uses Firefox", 0.7, "updated",
     "change_marker"),
    ("User quit playing chess", "User plays chess every Sunday", 0.7, "updated",
     "change_marker"),
    ("User left Initech last spring", "User works at Initech", 0.7, "updated",
     "change_marker"),
    # 4. negation / polarity
    ("User hates mushrooms", "User loves mushrooms", 0.8, "updated", "negation"),
    ("User used to play chess", "User plays chess every Sunday", 0.7, "updated", "negation"),
    # 5. past, temporary or planned facts
    ("User will be in Rome next week", "User lives in Milan", 0.6, "saved", "not_current"),
    ("User used to live in Cairo", "User lives in Oslo", 0.6, "saved", "not_current"),
    # 6. containment
    ("User works at Initech as a QA lead in the Austin office", "User works at Initech",
     0.8, "extended", "containment"),
    # 7. the same entity
    ("User's dentist is now Dr. Osei", "User's dentist is Dr. Lim", 0.9, "updated",
     "value_changed"),
    ("User's favourite drink is now matcha", "User's favourite drink is espresso", 0.8,
     "updated", "value_changed"),
    ("User's cat Luna is a Maine Coon", "User has a cat named Luna", 0.7, "extended",
     "adds_detail"),
    ("User's dog Rex is scared of fireworks", "User's dog Rex is a beagle", 0.7,
     "extended", "adds_detail"),
    # 8. possessions
    ("User has a meeting with Dana on Monday", "User has a meeting with Dana on Friday", 0.9,
     "updated", "value_changed"),
    ("User has a meeting with Bob on Monday", "User has a meeting with Alice on Monday", 0.9,
     "saved", "other_value"),
    ("User has two cats now", "User has one cat", 0.8, "updated", "value_changed"),
    # 9. attributes of the person
    ("User lives in Oslo", "User lives in Stockholm", 0.8, "updated", "value_changed"),
    ("User is 41", "User is 40", 0.9, "updated", "value_changed"),
    ("User is a vegetarian", "User is vegan", 0.8, "updated", "state_changed"),
    ("User prefers window seats on flights", "User prefers aisle seats on flights", 0.8,
     "updated", "value_changed"),
    ("User prefers concise answers", "User prefers dark mode", 0.45, "saved", "other_value"),
    ("User prefers coffee", "User prefers tea", 0.75, "updated", "value_changed"),
    ("User speaks German", "User speaks Italian", 0.7, "saved", "other_value"),
    ("User likes red wine, mostly Rioja", "User likes red wine", 0.8, "extended",
     "containment"),
    ("User drinks coffee black", "User drinks coffee every morning", 0.7, "extended",
     "adds_detail"),
    ("User speaks Portuguese", "User lives in Lisbon", 0.5, "saved", "other_attribute"),
    ("User goes to bed around 11pm", "User wakes up at 6am", 0.7, "saved",
     "other_attribute"),
])
def test_rule(new: str, old: str, sim: float, relation: str, rule: str) -> None:
    d = decide(new, old, sim)
    assert (d.relation, d.rule) == (relation, rule), d.reason


def test_same_attribute_cosine_is_a_setting() -> None:
    new, old = "User prefers concise answers", "User prefers dark mode"
    assert decide(new, old, 0.45).relation == "saved"
    assert decide(new, old, 0.45, Thresholds(same_attribute_cosine=0.4)).relation == "updated"


def test_candidate_floor_is_a_setting() -> None:
    new, old = "User moved to Oslo", "User lives in Stockholm"
    assert decide(new, old, 0.45).relation == "updated"
    d = decide(new, old, 0.45, Thresholds(candidate_floor=0.5))
    assert (d.relation, d.rule) == ("saved", "below_floor")


def test_unparsable_text_is_saved() -> None:
    assert decide("(((", ")))", 0.9).relation == "saved"
    assert decide("", "", 0.9).relation == "saved"
    assert decide("(((", "User lives in Oslo", 0.5).rule == "different_subject"


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match="candidate_floor"):
        Thresholds(candidate_floor=1.5)
    with pytest.raises(ValueError, match="finite"):
        decide("User lives in Oslo", "User lives in Rome", float("nan"))


def test_decide_against_several_neighbours() -> None:
    new = "User moved to Oslo"
    cands = [("b", "User lives in Stockholm", 0.7),
             ("a", "User's sister lives in Bergen", 0.72),
             ("c", "User likes jazz", 0.2),
             ("d", "User lives in Stockholm", 0.7)]
    out = decide_against(new, cands)
    assert out.relation == "updated"
    assert out.superseded == ("b", "d")  # ties by id; "c" is under the floor
    assert [mid for mid, _ in out.decisions] == ["a", "b", "d"]
    assert decide_against(new, list(reversed(cands))) == out  # order-independent
    assert decide_against(new, cands, max_candidates=1).relation == "saved"
    assert decide_against(new, []).relation == "saved"
    with pytest.raises(ValueError):
        decide_against(new, cands, max_candidates=0)


# -- determinism -----------------------------------------------------------------------------


def test_decisions_are_deterministic() -> None:
    pairs = load_pairs()
    first = [decide(p["new"], p["old"], 0.7).as_dict() for p in pairs]
    analyse.cache_clear()
    second = [decide(p["new"], p["old"], 0.7).as_dict() for p in pairs]
    assert first == second


def test_decisions_do_not_depend_on_hash_seed() -> None:
    """Sets are everywhere in the rules; nothing may depend on their iteration order."""
    code = ("import json,sys; from engramdb.engine.supersession import decide; "
            "rows=[json.loads(l) for l in open(sys.argv[1])]; "
            "print(json.dumps([decide(r['new'], r['old'], 0.7).as_dict() for r in rows]))")
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, "-c", code, str(PAIRS_FILE)], env=env,
                             capture_output=True, text=True, check=True, timeout=120)
        outs.append(res.stdout)
    assert outs[0] == outs[1]


# -- the LLM judge -----------------------------------------------------------------------------
# A fake OpenAI-compatible /chat/completions server on 127.0.0.1: a stand-in for a network
# LLM service nobody can run here (no network, no model weights). It answers what the test
# tells it to, and records the requests.


class _FakeLLM(ThreadingHTTPServer):
    daemon_threads = True
    mode = "label"
    label = "extended"
    delay = 0.0

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FakeHandler)
        self.requests: list[dict[str, Any]] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client gave up (timeout test): nothing to report

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _FakeHandler(BaseHTTPRequestHandler):
    server: _FakeLLM

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body,
                                     "auth": self.headers.get("Authorization")})
        if self.server.delay:
            time.sleep(self.server.delay)
        mode = self.server.mode
        if mode == "500":
            self.send_response(500)
            self.end_headers()
            return
        content = {
            "label": json.dumps({"relation": self.server.label, "reason": "fake says so"}),
            "fenced": "```json\n" + json.dumps({"relation": self.server.label}) + "\n```",
            "garbage": "Hmm, I think the user probably changed their mind?",
            "badlabel": json.dumps({"relation": "merged"}),
        }[mode]
        payload = {"id": "fake", "object": "chat.completion", "model": body.get("model"),
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": content}}]}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_llm() -> Iterator[_FakeLLM]:
    server = _FakeLLM()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


NEW, OLD = "User moved to Munich", "User lives in Berlin"  # the rules say "updated"


def test_llm_judge_happy_path(fake_llm: _FakeLLM) -> None:
    with LLMJudge(fake_llm.base_url, "fake-model", api_key="k-123") as judge:
        d = decide(NEW, OLD, 0.6, judge=judge)
    assert (d.relation, d.source, d.rule) == ("extended", "llm", "llm")
    assert d.reason == "llm: fake says so"
    assert d.similarity == 0.6 and d.features == {"model": "fake-model"}
    (req,) = fake_llm.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == "Bearer k-123"
    assert req["body"]["model"] == "fake-model" and req["body"]["temperature"] == 0
    user_msg = req["body"]["messages"][-1]["content"]
    assert NEW in user_msg and OLD in user_msg


def test_llm_judge_fenced_json_and_no_key(fake_llm: _FakeLLM) -> None:
    fake_llm.mode, fake_llm.label = "fenced", "saved"
    judge = LLMJudge(fake_llm.base_url + "/", "m")
    try:
        d = decide(NEW, OLD, 0.6, judge=judge)
    finally:
        judge.close()
    assert (d.relation, d.source) == ("saved", "llm")
    assert fake_llm.requests[0]["auth"] is None
    assert fake_llm.requests[0]["path"] == "/v1/chat/completions"


def test_llm_judge_not_asked_below_the_floor(fake_llm: _FakeLLM) -> None:
    with LLMJudge(fake_llm.base_url, "m") as judge:
        d = decide(NEW, OLD, 0.1, judge=judge)
    assert (d.relation, d.rule) == ("saved", "below_floor")
    assert fake_llm.requests == []


@pytest.mark.parametrize(("mode", "error"), [
    ("garbage", "unusable answer"),
    ("badlabel", "unusable answer"),
    ("500", "HTTP 500"),
])
def test_llm_judge_failure_falls_back_to_rules(fake_llm: _FakeLLM, mode: str,
                                               error: str) -> None:
    fake_llm.mode = mode
    rules = decide(NEW, OLD, 0.6)
    with LLMJudge(fake_llm.base_url, "m") as judge:
        d = decide(NEW, OLD, 0.6, judge=judge)
    assert (d.relation, d.rule, d.source) == (rules.relation, rules.rule, "rules")
    assert "LLM judge failed" in d.reason
    assert d.features["llm_error"].startswith(error)
    assert len(fake_llm.requests) == 1


def test_llm_judge_timeout_falls_back_to_rules(fake_llm: _FakeLLM) -> None:
    fake_llm.delay = 2.0
    t0 = time.perf_counter()
    with LLMJudge(fake_llm.base_url, "m", timeout=0.3) as judge:
        d = decide(NEW, OLD, 0.6, judge=judge)
    assert time.perf_counter() - t0 < 1.5
    assert (d.relation, d.source) == ("updated", "rules")
    assert d.features["llm_error"] == "timeout"


def test_llm_judge_unreachable_falls_back_to_rules(fake_llm: _FakeLLM) -> None:
    url = fake_llm.base_url
    fake_llm.shutdown()
    fake_llm.server_close()  # nothing listens on that port any more
    with LLMJudge(url, "m", timeout=2) as judge:
        d = decide(NEW, OLD, 0.6, judge=judge)
    assert (d.relation, d.source) == ("updated", "rules")
    assert d.features["llm_error"] == "ConnectError"


def test_parse_llm_answer() -> None:
    assert parse_llm_answer('{"relation": "UPDATED", "reason": " moved "}') == (
        "updated", "moved")
    assert parse_llm_answer('Sure! {"label": "extended"}') == ("extended", "")
    for bad in ("", "updated", '{"relation": "merged"}', "[1, 2]", None, '{"relation": 1}'):
        with pytest.raises(ValueError):
            parse_llm_answer(bad)


def test_thresholds_replace_keeps_validation() -> None:
    th = replace(Thresholds(), containment=0.9)
    assert th.containment == 0.9
    with pytest.raises(ValueError):
        replace(th, containment=-0.1)


# -- the cue prefilters ------------------------------------------------------------------


def _cue_texts() -> list[str]:
    texts = [t for pair in load_pairs() for t in (pair["new"], pair["old"])]
    texts += ["no longer vegan, now eats fish", "she moved to Berlin last year",
              "used to smoke but quit", "not anymore", "", "   ", "NOW", "x" * 300]
    return texts


def test_cue_prefilters_change_no_result() -> None:
    """One alternation search stands in front of each cue list and the family patterns;
    what they find must equal searching every pattern on its own."""
    from engramdb.engine import supersession as s

    lists = [s._STRONG, s._WEAK, s._ADDITIVE, s._NEGATION, s._NON_CURRENT]
    found_any = 0
    for text in _cue_texts():
        low = text.lower()
        for cues in lists:
            brute = tuple(dict.fromkeys(
                m.group(0).strip(" ,") for p in cues.patterns for m in [p.search(low)] if m))
            assert s._find(cues, low) == brute, (text, cues.patterns[:2])
            found_any += bool(brute)
        families = {name for name, rx in s._FAMILY_RES.items() if rx.search(low)}
        assert s._families(low) == families
        stems: set[str] = set()
        for rx in s._FAMILY_RES.values():
            for m in rx.finditer(low):
                stems.update(stem(w) for w in m.group(0).split())
        assert s._trigger_stems(low) == stems
    assert found_any > 20  # the texts do exercise the cues
