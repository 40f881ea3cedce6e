"""Retrieval quality machinery: the benchmark's metrics (bench/retrieval/metrics.py), time
expressions in queries (engine/query.py) and the session ranking (engine/scoring.py)."""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from retrieval.data import parse_date, split_of
from retrieval.metrics import dcg, ndcg_any, percentile, question_metrics, recall_all, recall_any

from engramdb import Engram, FrozenClock, Settings
from engramdb.embeddings import Embedder
from engramdb.engine import query as query_mod
from engramdb.engine.query import (
    TimeWindow,
    sub_queries,
    time_match,
    time_windows,
    without_scaffolding,
    without_time_expressions,
)
from engramdb.engine.scoring import Weights, combine, with_time

# -- metrics -----------------------------------------------------------------------------


def test_recall_any_and_all() -> None:
    ranked = ["s1", "g1", "s2", "s3", "s4", "g2", "s5"]
    assert recall_any(ranked, ["g1", "g2"], 5) == 1.0
    assert recall_all(ranked, ["g1", "g2"], 5) == 0.0
    assert recall_all(ranked, ["g1", "g2"], 6) == 1.0
    assert recall_any(ranked, ["g9"], 10) == 0.0
    assert recall_all(["g1"], ["g1"], 5) == 1.0  # fewer results than k


def test_dcg_does_not_discount_the_first_two_positions() -> None:
    # the paper's DCG: rel_1 + sum_{i>=2} rel_i / log2(i)
    assert dcg([1, 1, 1], 3) == pytest.approx(1 + 1 + 1 / math.log2(3))
    assert dcg([0, 0, 1], 3) == pytest.approx(1 / math.log2(3))
    assert dcg([0, 0, 0, 1], 3) == 0.0
    assert dcg([], 5) == 0.0


def test_ndcg_by_hand() -> None:
    # one gold session at rank 3: (1/log2 3) / 1
    assert ndcg_any(["a", "b", "g", "c"], ["g"], 5) == pytest.approx(1 / math.log2(3))
    # one gold at rank 2 counts as rank 1 under this DCG
    assert ndcg_any(["a", "g"], ["g"], 5) == 1.0
    # two gold at ranks 1 and 4: (1 + 1/log2 4) / (1 + 1) = 0.75
    assert ndcg_any(["g1", "a", "b", "g2"], ["g1", "g2"], 5) == pytest.approx(0.75)
    # three gold, only one found at rank 5: (1/log2 5) / (1 + 1 + 1/log2 3)
    got = ndcg_any(["a", "b", "c", "d", "g1"], ["g1", "g2", "g3"], 5)
    assert got == pytest.approx((1 / math.log2(5)) / (2 + 1 / math.log2(3)))
    # outside the cut-off: nothing
    assert ndcg_any(["a", "b", "c", "d", "e", "g"], ["g"], 5) == 0.0


def test_question_metrics_keys() -> None:
    m = question_metrics(["g1", "x", "g2"], ["g1", "g2"])
    assert set(m) == {f"{n}@{k}" for n in ("recall_all", "recall_any", "ndcg_any")
                      for k in (5, 10)}
    assert m["recall_all@5"] == m["recall_any@5"] == 1.0
    assert m["ndcg_any@10"] == m["ndcg_any@5"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert question_metrics(["x", "g1"], ["g1", "g2"])["recall_all@10"] == 0.0


ids = st.lists(st.sampled_from("abcdefghij"), min_size=0, max_size=10, unique=True)


@given(ids, st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=4, unique=True),
       st.integers(1, 10))
def test_metric_properties(ranked: list[str], gold: list[str], k: int) -> None:
    r_all, r_any, n = recall_all(ranked, gold, k), recall_any(ranked, gold, k), \
        ndcg_any(ranked, gold, k)
    assert r_all <= r_any
    assert 0.0 <= n <= 1.0 + 1e-12
    assert (n > 0) == (r_any == 1.0)
    if r_all == 1.0 and len(gold) <= k:  # every gold in the top k, and nothing better exists
        assert n <= 1.0 + 1e-12
    # the ideal ranking scores 1
    assert ndcg_any(gold + [x for x in ranked if x not in gold], gold, k) == pytest.approx(1.0)
    # more room never lowers recall
    assert recall_all(ranked, gold, k + 1) >= r_all


def test_percentile() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert math.isnan(percentile([], 50))


def test_dataset_helpers() -> None:
    assert parse_date("2023/04/30 (Sun) 13:59") == datetime(2023, 4, 30, 13, 59, tzinfo=UTC)
    splits = [split_of(f"q{i}") for i in range(300)]
    assert splits == [split_of(f"q{i}") for i in range(300)]  # fixed
    assert 70 < splits.count("holdout") < 130


# -- time expressions --------------------------------------------------------------------

NOW = datetime(2023, 5, 30, 20, 0, tzinfo=UTC)  # a Tuesday


def window(text: str, now: datetime = NOW) -> tuple[str, str]:
    found = time_windows(text, now)
    assert len(found) == 1, found
    return f"{found[0].start:%Y-%m-%d}", f"{found[0].end:%Y-%m-%d}"


@pytest.mark.parametrize(("text", "expected"), [
    ("what did I cook yesterday?", ("2023-05-29", "2023-05-30")),
    ("what did I eat today", ("2023-05-30", "2023-05-31")),
    ("who did I meet the day before yesterday", ("2023-05-28", "2023-05-29")),
    ("What game did I beat last weekend?", ("2023-05-27", "2023-05-29")),
    ("How many hours did I jog last week?", ("2023-05-22", "2023-05-29")),
    ("what did I buy this week", ("2023-05-29", "2023-05-31")),
    ("which bills did I pay last month", ("2023-04-01", "2023-05-01")),
    ("what happened last year", ("2022-01-01", "2023-01-01")),
    ("what did I do last Friday?", ("2023-05-26", "2023-05-27")),
    ("the party on Saturday", ("2023-05-27", "2023-05-28")),
    ("What charity event did I join a month ago?", ("2023-04-22", "2023-05-09")),
    ("two days ago", ("2023-05-27", "2023-05-30")),
    ("3 weeks ago", ("2023-05-04", "2023-05-15")),
    ("a couple of weeks ago", ("2023-05-12", "2023-05-21")),
    ("What trips did I take in the past three months?", ("2023-02-28", "2023-05-31")),
    ("over the past month", ("2023-04-30", "2023-05-31")),
    ("which shows have I watched recently", ("2023-04-30", "2023-05-31")),
    ("Which airline did I fly with most in March and April?", ("2023-03-01", "2023-05-01")),
    ("what did I plant in June", ("2022-06-01", "2022-07-01")),  # the latest June begun
    ("the concert on March 3rd", ("2023-03-03", "2023-03-04")),
    ("my trip in August 2021", ("2021-08-01", "2021-09-01")),
    ("What airline did I fly with on Valentine's day?", ("2023-02-14", "2023-02-15")),
    ("what did I get for christmas", ("2022-12-25", "2022-12-26")),
])
def test_time_expressions(text: str, expected: tuple[str, str]) -> None:
    assert window(text) == expected


@pytest.mark.parametrize("text", [
    "How many days ago did I meet Emma?",  # asks for a number of days: no period named
    "What is the order of airlines I flew with before today?",
    "Can you recommend a movie to watch tonight?",
    "I may go hiking",
    "What did I march for?",
    "I go running on Fridays",
    "where do I keep my sneakers",
])
def test_no_time_expression(text: str) -> None:
    assert time_windows(text, NOW) == []


def test_naive_now_stays_naive() -> None:
    found = time_windows("yesterday", NOW.replace(tzinfo=None))
    assert found[0].start.tzinfo is None


def test_time_match_is_one_inside_and_fades_outside() -> None:
    w = [TimeWindow(datetime(2023, 5, 1, tzinfo=UTC), datetime(2023, 5, 11, tzinfo=UTC), "x")]
    assert time_match(datetime(2023, 5, 5, tzinfo=UTC), w) == 1.0
    assert time_match(datetime(2023, 5, 13, tzinfo=UTC), w) == pytest.approx(1 - 2 / 5)
    assert time_match(datetime(2023, 4, 29, tzinfo=UTC), w) == pytest.approx(1 - 2 / 5)
    assert time_match(datetime(2023, 6, 30, tzinfo=UTC), w) == 0.0
    assert time_match(datetime(2023, 5, 5, tzinfo=UTC), []) == 0.0


@given(st.integers(-400, 400), st.integers(0, 200), st.integers(1, 60))
def test_time_match_properties(offset: int, start: int, length: int) -> None:
    s = datetime(2023, 1, 1, tzinfo=UTC) + timedelta(days=start)
    w = [TimeWindow(s, s + timedelta(days=length), "x")]
    when = s + timedelta(days=offset)
    m = time_match(when, w)
    assert 0.0 <= m <= 1.0
    # closer to the window never matches less
    nearer = s + timedelta(days=offset + (1 if offset < 0 else -1 if offset >= length else 0))
    assert time_match(nearer, w) >= m


def test_time_expressions_leave_the_query() -> None:
    text = "What charity event did I take part in a month ago?"
    assert without_time_expressions(text, time_windows(text, NOW)) == \
        "What charity event did I take part in?"
    text = "What is the order of the trips I took in the past three months, earliest first?"
    assert without_time_expressions(text, time_windows(text, NOW)) == \
        "What is the order of the trips I took, earliest first?"
    assert without_time_expressions("where is my bike", []) == "where is my bike"
    assert without_time_expressions("yesterday", time_windows("yesterday", NOW)) == "yesterday"


# -- query rewriting ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("How many pages of 'Sapiens' have I read so far?", "pages of 'Sapiens' have I read so far?"),
    ("What is my current highest score in Ticket to Ride?",
     "current highest score in Ticket to Ride?"),
    ("Where did I buy my new tennis racket from?", "buy my new tennis racket from?"),
    ("Can you remind me which restaurant I liked?", "which restaurant I liked?"),
    ("Who?", "Who?"),  # nothing would be left
    ("I moved to Lisbon in May", "I moved to Lisbon in May"),  # not a question
])
def test_without_scaffolding(text: str, expected: str) -> None:
    assert without_scaffolding(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Which did I buy first, the blue kettle or the stand mixer?",
     ["Which did I buy first, the blue kettle?", "Which did I buy first, the stand mixer?"]),
    ("Who became a parent first, Rachel or Alex?",
     ["Who became a parent first, Rachel?", "Who became a parent first, Alex?"]),
    ("How many hours of jogging and yoga did I do last week?",
     ["How many hours of jogging did I do last week?",
      "How many hours of yoga did I do last week?"]),
    ("What did I get for Emma, Rachel and Alex?",
     ["What did I get for Emma?", "What did I get for Rachel?", "What did I get for Alex?"]),
    ("How many episodes of 'How I Built This' and 'Serial' have I heard?",
     ["How many episodes of 'How I Built This' have I heard?",
      "How many episodes of 'Serial' have I heard?"]),
    ("What came first, the purchase of the coffee maker or the malfunction of the mixer?",
     ["What came first, the purchase of the coffee maker?",
      "What came first, the malfunction of the mixer?"]),
    ("How many projects have I led or am currently leading?", []),  # a verb phrase: no items
    ("Can you recommend some books and I will read them?", []),
    ("Where do I keep my old sneakers?", []),
])
def test_sub_queries(text: str, expected: list[str]) -> None:
    assert sub_queries(text) == expected


@given(st.text(max_size=200))
def test_query_rewriting_never_fails(text: str) -> None:
    subs = sub_queries(text)
    assert len(subs) <= 4 and text not in subs
    assert isinstance(without_scaffolding(text), str)
    windows = time_windows(text, NOW)
    assert isinstance(without_time_expressions(text, windows), str)


# -- scoring -----------------------------------------------------------------------------

unit = st.floats(0, 1)


@given(unit, unit, unit, unit, st.floats(0, 1), unit)
def test_time_blend_is_bounded_and_explained(sem: float, kw: float, imp: float, rel: float,
                                             w_time: float, match: float) -> None:
    score, explain = combine(Weights().normalised(), sem, kw, imp, rel)
    blended, ex = with_time(score, explain, w_time, match)
    assert 0.0 <= blended <= 1.0 + 1e-9
    total = sum(ex[f"w_{k}"] * ex[k] for k in ("semantic", "keyword", "importance",
                                                 "relevance", "time"))
    assert total == pytest.approx(blended, abs=1e-9) and ex["score"] == blended
    assert explain["w_semantic"] == pytest.approx(0.6)  # the input is left alone
    # a better time match never lowers the score
    assert with_time(score, explain, w_time, min(1.0, match + 0.1))[0] >= blended - 1e-12


# -- through the engine (the real model) ---------------------------------------------------


@pytest.fixture
def clocked(tmp_path: Path, embedder: Embedder) -> tuple[Engram, FrozenClock]:
    clock = FrozenClock(datetime(2023, 6, 1, 12, 0, tzinfo=UTC))
    eng = Engram(path=tmp_path / "r.db", embedder=embedder, clock=clock,
                 settings=Settings(access_flush_seconds=0))
    return eng, clock


def test_a_time_expression_favours_memories_from_then(
        clocked: tuple[Engram, FrozenClock]) -> None:
    eng, clock = clocked
    now = clock.now()
    for days, place in ((7, "Lisbon"), (40, "Porto"), (90, "Madrid")):
        eng.add_conversation(f"s{days}", [{
            "role": "user", "content": f"I went to a wedding in {place} with my cousin.",
            "created_at": (now - timedelta(days=days)).isoformat()}], user_id="u")
    hits = eng.search("Which wedding did I go to a week ago?", user_id="u", limit=3)
    assert hits[0].memory.session_id == "s7"
    assert hits[0].explain["time"] == 1.0 and hits[1].explain["time"] == 0.0
    hits = eng.search("Which wedding did I go to a month ago?", user_id="u", limit=3)
    assert hits[0].memory.session_id == "s40"
    e = hits[0].explain
    assert sum(e[f"w_{k}"] * e[k] for k in ("semantic", "keyword", "importance", "relevance",
                                            "time")) == pytest.approx(hits[0].score)
    # without a time expression, no time component
    assert "time" not in eng.search("weddings", user_id="u", limit=1)[0].explain


def test_weight_time_zero_ignores_time_expressions(tmp_path: Path, embedder: Embedder) -> None:
    eng = Engram(path=tmp_path / "z.db", embedder=embedder, clock=FrozenClock(),
                 settings=Settings(weight_time=0.0, access_flush_seconds=0))
    eng.add("User went to a wedding in Lisbon", user_id="u")
    assert "time" not in eng.search("what did I do a week ago?", user_id="u")[0].explain


def test_a_coordinated_question_finds_both_sessions(clocked: tuple[Engram, FrozenClock]) -> None:
    eng, _ = clocked
    filler = ["Can you suggest a good pasta recipe for dinner?",
              "What are some tips for keeping houseplants alive?",
              "How do I change a flat tire on my bike?",
              "I'm planning a trip to Japan, what should I pack?"]
    for i, text in enumerate(filler):
        eng.add_conversation(f"f{i}", [{"role": "user", "content": text}], user_id="u")
    eng.add_conversation("kettle", [{"role": "user", "content":
                         "I finally bought a new electric kettle at the mall today."}],
                         user_id="u")
    eng.add_conversation("mixer", [{"role": "user", "content":
                         "My stand mixer broke down while I was making bread."}], user_id="u")
    sessions = eng.search_sessions(
        "Which happened first, buying the kettle or the stand mixer breaking?", user_id="u",
        limit=2)
    assert {s.session_id for s in sessions} == {"kettle", "mixer"}
    assert all(s.score == s.hits[0].score for s in sessions)


def test_read_query_is_what_a_search_embeds(clocked: tuple[Engram, FrozenClock]) -> None:
    """`MemoryService.read_query` (which the core benchmark's bare-model reference uses) gives
    the very texts a search hands to the model, time words and scaffolding removed."""
    eng, clock = clocked
    eng.add("User bought an electric kettle", user_id="u")
    svc = eng.service
    given_to_model: list[list[str]] = []
    real = svc.embedder

    class Recording:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def embed(self, texts: list[str]) -> object:
            given_to_model.append(list(texts))
            return real.embed(texts)

    svc.embedder = Recording()  # type: ignore[assignment]
    text = "Can you tell me whether I bought the kettle or the mixer a week ago?"
    eng.search(text, user_id="u")
    windows, variants, dense = svc.read_query(text, clock.now())
    assert given_to_model == [dense]
    assert [w.text for w in windows] == ["a week ago"]
    assert len(variants) == 3 and all("week" not in v for v in variants)
    assert dense[0] == without_scaffolding(variants[0]) != variants[0]
    svc.settings = Settings(search_query_rewriting=False, access_flush_seconds=0)
    assert svc.read_query(text, clock.now())[1:] == ([variants[0]], [variants[0]])


# Pieces of every time expression time_windows reads, mixed with words that are not, and
# with words that only begin like a month or a weekday ("marathon", "sunlight").
_TIME_BITS = [
    "ago", "a", "two", "12", "a couple of", "several", "days", "week", "months", "year",
    "in the past", "over the last", "during the past", "last", "this", "past", "previous",
    "weekend", "this past", "on", "Monday", "sunday", "yesterday", "the day before",
    "today", "before today", "this morning", "this afternoon", "recently", "lately",
    "March", "march 3rd", "Sept.", "dec", "May", "may", "in early", "between", "and", "or",
    "2023", "of 2019", "Valentine's Day", "valentines day", "Christmas", "New Year\u2019s Eve",
    "st. patrick's day", "4th of July", "halloween", "boxing day", "cinco de mayo",
    "marathon", "sunlight", "decide", "junk", "augment", "the", "user", "coffee", "at",
    "3 pm", "10:30", ",", "?", "'s",
    # whole expressions, one of each pattern
    "two days ago", "a couple of weeks ago", "in the past 3 months", "over the last year",
    "last weekend", "this month", "last Friday", "on Monday", "the day before yesterday",
    "march 3rd", "Dec 25", "May 2023", "in early March and April", "during June",
    "valentine's day", "Christmas Eve",
]


@given(st.lists(st.sampled_from(_TIME_BITS), max_size=12),
       st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_the_anchor_check_never_hides_a_time_expression(bits: list[str],
                                                        now: datetime) -> None:
    text = " ".join(bits)
    low = text.lower().replace("\u2019", "'")
    assert time_windows(text, now) == query_mod._scan(low, now)


def test_the_anchor_check_never_hides_a_time_expression_of_one_or_two_pieces() -> None:
    now = datetime(2026, 3, 1, 9, 30)
    for a in _TIME_BITS:
        for b in ["", *_TIME_BITS]:
            text = f"{a} {b}".strip()
            low = text.lower().replace("\u2019", "'")
            assert time_windows(text, now) == query_mod._scan(low, now), text


def test_the_anchor_check_skips_queries_without_time_words() -> None:
    assert query_mod._ANCHOR.search("what does the user like to drink late at night?") is None
    assert query_mod._ANCHOR.search("what did we cook a week ago") is not None
    assert time_windows("what did we cook a week ago", datetime(2026, 5, 10))
