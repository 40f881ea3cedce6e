"""PII detection (engramdb.engine.pii): accuracy on the hand-labelled set, the rules per type,
the tricky negatives, redaction, and robustness (unicode, long and adversarial input,
threads)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engramdb.engine.pii import PII_TYPES, PiiResult, Span, detect, luhn_valid, redact

DATA = Path(__file__).parent / "data" / "pii_labelled.jsonl"


def _load() -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line]
    return rows


ROWS = _load()


def _scores(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Sentence-level precision/recall per type: a sentence counts as a true positive for a
    type when it is labelled with it and the detector reports it."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for row in rows:
        expected, got = set(row["types"]), set(detect(row["text"]).fields)
        tp.update(expected & got)
        fp.update(got - expected)
        fn.update(expected - got)
    out = {}
    for t in PII_TYPES:
        p = tp[t] / (tp[t] + fp[t]) if tp[t] + fp[t] else 1.0
        r = tp[t] / (tp[t] + fn[t]) if tp[t] + fn[t] else 1.0
        out[t] = {"precision": p, "recall": r, "tp": tp[t], "fp": fp[t], "fn": fn[t]}
    return out


# --------------------------------------------------------------------------- labelled set
def test_labelled_set_shape() -> None:
    assert len(ROWS) >= 200
    texts = [r["text"] for r in ROWS]
    assert len(set(texts)) == len(texts), "duplicate sentences"
    positives: Counter[str] = Counter()
    for row in ROWS:
        assert set(row["types"]) <= set(PII_TYPES), row
        assert row["types"] == sorted(set(row["types"])), row
        positives.update(row["types"])
    for t in PII_TYPES:
        assert positives[t] >= 15, (t, positives[t])
    assert sum(1 for r in ROWS if not r["types"]) >= 60


# Floors. Precision: every type is at 0.96–1.00 on the whole set; 0.95 leaves room for one
# new hard negative without hiding a real regression. Recall: 0.90, except for names —
# single first names without a trigger ("Meeting with Sarah"), rare names missing from the
# curated list and names that are also everyday words ("Grace Hopper") are missed by
# design (flagging every capitalised word would wreck precision); measured 0.875.
PRECISION_FLOOR = dict.fromkeys(PII_TYPES, 0.95)
RECALL_FLOOR = dict.fromkeys(PII_TYPES, 0.90) | {"name": 0.80}


@pytest.mark.parametrize("pii_type", PII_TYPES)
def test_precision_recall_floors(pii_type: str) -> None:
    s = _scores(ROWS)[pii_type]
    assert s["precision"] >= PRECISION_FLOOR[pii_type], s
    assert s["recall"] >= RECALL_FLOOR[pii_type], s


def test_main_split_is_near_perfect() -> None:
    """The main split (written with the rules) must stay near-perfect; the "hard" split
    (written afterwards to probe the rules) is only held to the overall floors above."""
    scores = _scores([r for r in ROWS if r.get("split", "main") == "main"])
    for t, s in scores.items():
        assert s["precision"] >= 0.95 and s["recall"] >= 0.95, (t, s)


def test_redacted_labelled_set_has_no_pii_left() -> None:
    for row in ROWS:
        redacted = redact(row["text"])
        assert detect(redacted).spans == [], (row["text"], redacted)


# --------------------------------------------------------------------------- API
def test_result_shape() -> None:
    text = "Jane Doe (jane.doe@example.com, +1 212 555 0147) lives at 12 Elm Street"
    r = detect(text)
    assert isinstance(r, PiiResult) and r.found
    assert r.fields == ["address", "email", "name", "phone"]
    assert [s.type for s in r.spans] == ["name", "email", "phone", "address"]
    for s in r.spans:
        assert isinstance(s, Span)
        assert text[s.start : s.end] == s.text
    assert all(a.end <= b.start for a, b in zip(r.spans, r.spans[1:], strict=False))


def test_empty_and_clean_text() -> None:
    assert detect("") == PiiResult([], [])
    r = detect("User prefers dark mode and short answers.")
    assert r.fields == [] and r.spans == [] and not r.found


SPANS = [
    ("User's email is jane.doe@example.com.", [("email", "jane.doe@example.com")]),
    ("see ?email=jdoe@example.org&src=app", [("email", "jdoe@example.org")]),
    ("mailto:sam@example.com", [("email", "sam@example.com")]),
    ("Call me at (555) 123-4567 after 6.", [("phone", "(555) 123-4567")]),
    ("UK office: +44 20 7946 0958", [("phone", "+44 20 7946 0958")]),
    ("Call +1.415.555.0132 now", [("phone", "+1.415.555.0132")]),
    ("link tel:+14155550132", [("phone", "+14155550132")]),
    ("The landline is 020 7946 0321", [("phone", "020 7946 0321")]),
    ("SSN: 123-45-6789", [("ssn", "123-45-6789")]),
    ("social security # 456789012", [("ssn", "456789012")]),
    ("Card on file: 4111 1111 1111 1111", [("credit_card", "4111 1111 1111 1111")]),
    ("Amex 3782 822463 10005", [("credit_card", "3782 822463 10005")]),
    ("Gateway 172.16.0.1/24", [("ip_address", "172.16.0.1")]),
    ("API on 203.0.113.9:8080", [("ip_address", "203.0.113.9")]),
    ("at [2001:db8:85a3::8a2e:370:7334]:8443", [("ip_address", "2001:db8:85a3::8a2e:370:7334")]),
    ("fe80::1ff:fe23:4567:890a%eth0 is link-local",
     [("ip_address", "fe80::1ff:fe23:4567:890a%eth0")]),
    ("Born on 12 March 1985", [("date_of_birth", "12 March 1985")]),
    ("DOB: 1990-07-04", [("date_of_birth", "1990-07-04")]),
    ("My birthday is on the 3rd of May", [("date_of_birth", "3rd of May")]),
    ("12/25/1990 is my birthday", [("date_of_birth", "12/25/1990")]),
    ("She lives at 221B Baker Street, London NW1 6XE",
     [("address", "221B Baker Street, London NW1 6XE")]),
    ("Ship to 1234 Elm Street, Springfield, IL 62704",
     [("address", "1234 Elm Street, Springfield, IL 62704")]),
    ("We met at his house, 9 Maple Drive.", [("address", "9 Maple Drive")]),
    ("Pick me up at 500 Oak Rd.", [("address", "500 Oak Rd.")]),
    ("Meet at 10 Monday Dr. Smith", [("name", "Smith")]),  # "Dr" here is a title
    ("Moved to 88 W 34th St Apt 5B", [("address", "88 W 34th St Apt 5B")]),
    ("Patient: Ms. J. Okoye, 12 Hill Rd, DOB 1961-02-17",
     [("name", "J. Okoye"), ("address", "12 Hill Rd"), ("date_of_birth", "1961-02-17")]),
    ("Send mail to P.O. Box 1234, Austin, TX 78701",
     [("address", "P.O. Box 1234, Austin, TX 78701")]),
    ("My name is Sarah Connor", [("name", "Sarah Connor")]),
    ("Dr. Alvarez prescribed ibuprofen", [("name", "Alvarez")]),
    ("Grace Hopper's colleague Emily Chen's notes", [("name", "Emily Chen")]),
    ("Vincent van Gogh prints", [("name", "Vincent van Gogh")]),
    ("Smith, John is the holder", [("name", "Smith, John")]),
    ("my name is john", [("name", "john")]),
]


@pytest.mark.parametrize(("text", "expected"), SPANS)
def test_exact_spans(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(s.type, s.text) for s in detect(text).spans] == expected


# --------------------------------------------------------------------------- tricky negatives
NEGATIVES = [
    # versions, builds, IP-like version strings
    "Deploy v2.3.1 to prod",
    "Python 3.11.7 is required",
    "Upgrade to 1.2.3.4 before Friday",
    "Release 2.10.1.0 is tagged",
    "Chrome 120.0.6099.109 crashed",
    "semver 10.20.30.40-beta",
    "numpy==1.26.4 and requests>=2.31.0.1",
    "10.5.3.2 is the version we run",
    "Kubernetes 1.29.3 on the cluster",
    # order / tracking / invoice ids
    "Order 4532-1488-0343-6467 shipped",  # fails Luhn
    "order #4111111111111112 is stuck",  # fails Luhn
    "Order #4111111111111111 confirmed",  # passes Luhn, but ungrouped after "order #"
    "Serial 4111111111111111 on the device",
    "Tracking 1Z999AA10123456784 updated",
    "Tracking number 9400111899223344556677 delivered",
    "Invoice #20240315-0042 was paid",
    "Invoice 2023-0415-5501 is overdue",
    "Ticket #4155550132 closed",
    "Reference 2125550199 in the ledger",
    # timestamps, dates, years, times
    "Timestamp 2024-03-15 14:30:05 logged",
    "Kickoff 2024-01-15T09:00:00Z",
    "Unix time 1700000000",
    "Meeting on 3 May 1990 was cancelled",
    "Invoice dated 2023-04-01",
    "The 1990s were great; born in 1990 is not a date of birth",
    "Her birthday party is on 5 June",
    "Newborn care class on 12 March 2025",
    "Meet at 5 pm in the lobby",
    "Standup at 9:15 every weekday",
    # ISBN, prices, percentages, room numbers, codes
    "ISBN 978-3-16-148410-0 for the citation",
    "ISBN 9780306406157 arrived",
    "Price is $4,111.11 after tax",
    "Budget grew from 1,250,000 to 1,900,000",
    "Conversion rose 12.5% in June",
    "Room 204 is booked; Room 1204 on the 12th floor",
    "SKU 800-555-1212-B ships next week",
    "Part number 555-123-4567 is out of stock",
    "Library code is CAL-555-123-4567",
    # SSN-shaped but not SSNs
    "Invalid SSN 000-12-3456 rejected",
    "666-12-3456 is not a valid SSN",
    "Test value 900-12-3456 is in the ITIN range",
    "SSN-like 123-00-4567 has an invalid group",
    "Part 123-45-6789 shipped",
    "Case number 234-56-7890 is with legal",
    "Lottery numbers were 123 45 6789",
    # email-like
    "Connect to user@localhost for the local DB",
    "Clone git@github.com:acme/engram.git",
    "postgres://app:secret@db.example.com:5432/engram",
    "eslint@8.57.0 and @types/node",
    "logo@2x.png is the retina asset",
    # IP-like but not personal
    "Netmask 255.255.255.0",
    "Listen on 0.0.0.0 and 127.0.0.1 and ::1",
    "MAC 00:1A:2B:3C:4D:5E",
    "Meeting at 10:30:00 UTC; std::vector; a::b",
    # names that are places/products
    "Bought a Dr Pepper at the store",
    "Visited Victoria Station yesterday",
    "Jordan River tours",
    "Uses Ruby on Rails",
    "I'm Happy with the results",
    "Grace Period ends Monday",
    # addresses that are not
    "I walked 5 miles down the road",
    "Top 10 Ways to Save Money",
    "The parade is on Main Street",
    "Gate 12 Terminal 5",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_tricky_negatives(text: str) -> None:
    r = detect(text)
    assert r.spans == [], [(s.type, s.text) for s in r.spans]


# --------------------------------------------------------------------------- per-type rules
@pytest.mark.parametrize(
    "digits",
    ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117",
     "3530111333300000", "30569309025904", "4012888888881881", "79927398713", "0"],
)
def test_luhn_valid(digits: str) -> None:
    assert luhn_valid(digits)


@pytest.mark.parametrize(
    "digits", ["4111111111111112", "4532148803436467", "79927398710", "", "4111 1111",
               "abc", "٤١١١١١١١١١١١١١١١"],
)
def test_luhn_invalid(digits: str) -> None:
    assert not luhn_valid(digits)


def test_card_needs_known_iin_and_length() -> None:
    assert luhn_valid("1234567812345670")
    assert detect("card 1234567812345670").spans == []  # Luhn-valid, no issuer starts with 1
    assert luhn_valid("3782822463100052")
    assert detect("card 3782822463100052").spans == []  # Amex prefix, but 16 digits
    assert detect("Visa 4222222222222").fields == ["credit_card"]  # 13-digit Visa


def test_order_rule_for_luhn_valid_numbers() -> None:
    # Ungrouped after an identifier word: the identifier, unless card words are near.
    assert detect("Order #4111111111111111 confirmed").fields == []
    assert detect("Order #4111111111111111 paid by card").fields == ["credit_card"]
    # Grouped like a card: a card whatever precedes it.
    assert detect("Order 4111-1111-1111-1111 was paid").fields == ["credit_card"]


def test_ssn_context_rules() -> None:
    assert detect("Stored 123-45-6789 in the form").fields == ["ssn"]  # dashed: no context
    assert detect("Stored 123456789 in the form").fields == []  # bare: needs an SSN word
    assert detect("SSN 123456789").fields == ["ssn"]
    assert detect("gave 234 56 7890 as her social").fields == ["ssn"]


def test_phone_context_rules() -> None:
    assert detect("Support: 212-555-0199").fields == ["phone"]  # valid NANP, formatted
    assert detect("Stored 2125550199 somewhere").fields == []  # bare digits need a phone word
    assert detect("phone 2125550199").fields == ["phone"]
    assert detect("555-123-4567 is the code").fields == []  # fictional 555 without context
    assert detect("Call 555-123-4567").fields == ["phone"]
    assert detect("Order 212-555-0199").fields == []  # after an identifier word
    assert detect("Call 555-0142 to book").fields == ["phone"]  # 7-digit local with context


@pytest.mark.parametrize("region", ["US", "CA", "GB", "DE", "FR", "AU", "IE", "NL", "IT", "IN",
                                    "NZ", "ZA", "JP", "ES", "BR", "CN", "SG", "JM"])
def test_phone_rules_agree_with_libphonenumber(region: str) -> None:
    """pii._nsn_ok re-implements phonenumbers.is_valid_number_for_region on precompiled
    patterns (for speed): it must give the same answers."""
    import random

    import phonenumbers

    from engramdb.engine import pii

    rng = random.Random(region)
    cc = phonenumbers.country_code_for_region(region)
    samples = [phonenumbers.national_significant_number(phonenumbers.example_number(region))]
    for _ in range(1500):
        length = rng.randint(5, 12)
        samples.append(str(rng.randint(1, 9)) + "".join(rng.choice("0123456789")
                                                        for _ in range(length - 1)))
    if region == "IT":  # Italian numbers keep their leading 0
        samples += ["0" + n[1:] for n in samples[1:500]]
    for nsn in samples:
        zeros = len(nsn) - len(nsn.lstrip("0"))
        number = phonenumbers.PhoneNumber(country_code=cc, national_number=int(nsn),
                                          italian_leading_zero=zeros > 0 or None,
                                          number_of_leading_zeros=zeros if zeros > 1 else None)
        expected = phonenumbers.is_valid_number_for_region(number, region)
        assert pii._nsn_ok(nsn, region, possible=False) == expected, (region, nsn)


def test_ip_version_rules() -> None:
    assert detect("Deploy 1.2.3.4 now").fields == []
    assert detect("Server IP 1.2.3.4").fields == ["ip_address"]
    assert detect("Blocked 203.0.113.45").fields == ["ip_address"]
    assert detect("version 203.0.113.45").fields == []
    assert detect("999.1.1.1 and 01.02.03.04").fields == []


def test_dob_needs_birth_context() -> None:
    assert detect("On 3 May 1990 we met").fields == []
    assert detect("She was born in Leeds on 3 May 1990").fields == ["date_of_birth"]
    assert detect("born 1990").fields == []  # a year alone
    assert detect("DOB 31/02/1990 typo").fields == ["date_of_birth"]  # shape, not calendar
    assert detect("DOB 45/13/1990").fields == []  # impossible day/month


# --------------------------------------------------------------------------- redaction
def test_redact_basic() -> None:
    text = "Email jane@example.com or call 415-555-0132."
    assert redact(text) == "Email [REDACTED:email] or call [REDACTED:phone]."


def test_redact_reuses_result_and_filters_fields() -> None:
    text = "Jane Doe, jane@example.com, SSN 123-45-6789"
    result = detect(text)
    assert redact(text, result) == "[REDACTED:name], [REDACTED:email], SSN [REDACTED:ssn]"
    assert redact(text, result, fields=["ssn"]) == "Jane Doe, jane@example.com, SSN [REDACTED:ssn]"
    assert redact(text, fields=("email", "name")) == \
        "[REDACTED:name], [REDACTED:email], SSN 123-45-6789"
    assert redact(text, fields="ssn") == "Jane Doe, jane@example.com, SSN [REDACTED:ssn]"
    assert redact(text, fields=[]) == text
    with pytest.raises(ValueError, match="unknown PII field"):
        redact(text, fields=["ssn", "passport"])


def test_redact_overlaps_longest_first() -> None:
    text = "abcdefghij"
    result = PiiResult(
        ["email", "name", "phone"],
        [Span("name", 0, 3, "abc"), Span("email", 2, 8, "cdefgh"), Span("phone", 8, 10, "ij"),
         Span("phone", 50, 60, "out of range")],
    )
    assert redact(text, result) == "ab[REDACTED:email][REDACTED:phone]"


def test_redact_is_stable() -> None:
    text = "Call me at +44 20 7946 0958, I'm Priya Patel."
    once = redact(text)
    assert once == "Call me at [REDACTED:phone], I'm [REDACTED:name]."
    assert redact(once) == once


# --------------------------------------------------------------------------- unicode
def test_unicode_offsets_and_names() -> None:
    text = ("🎉🎉 Zoë Müller — josé.garcía@example.com — 電話 +81 3-1234-5678 — "
            "Léa née le 3 mars 1992")
    r = detect(text)
    assert [(s.type, s.text) for s in r.spans] == [
        ("name", "Zoë Müller"),
        ("email", "josé.garcía@example.com"),
        ("phone", "+81 3-1234-5678"),
        ("date_of_birth", "3 mars 1992"),
    ]
    for s in r.spans:
        assert text[s.start : s.end] == s.text


def test_unicode_addresses_and_spaces() -> None:
    assert detect("Address: Hauptstraße 5, 10115 Berlin").spans[0].text == \
        "Hauptstraße 5, 10115 Berlin"
    # A no-break space inside a phone number (common in pasted text).
    assert detect("Tel. +33\u00a01\u00a042\u00a068\u00a053\u00a000").fields == ["phone"]


def test_non_ascii_digits_are_not_numbers() -> None:
    assert detect("SSN ١٢٣-٤٥-٦٧٨٩ and card ４１１１１１１１１１１１１１１１").spans == []


def test_rtl_and_cjk_text_without_pii() -> None:
    assert detect("مرحبا بالعالم، هذا نص عادي. 这是普通的文字，没有个人信息。").spans == []


# --------------------------------------------------------------------------- robustness
def _cpu(fn, *args) -> float:  # type: ignore[no-untyped-def]
    start = time.thread_time()
    fn(*args)
    return time.thread_time() - start


ADVERSARIAL = [
    "a@" * 5000,
    "1." * 5000,
    "1" * 10000,
    "1 " * 5000,
    "1-" * 5000,
    "a:" * 5000,
    "::" * 5000,
    "A " * 5000,
    "x" * 10000,
    "Born " * 2000,
    "12 Main " * 1250,
    "Sarah " * 1666,
    "aa.aa@" * 1666,
    ("a" * 63 + ".") * 156 + "@",
    "((((1))))" * 1111,
    "+1 " * 3333,
    "1.1 " * 2500,
    "Dr. " * 2500,
    "born 1/" * 1428,
    "@example.com " * 769,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda t: repr(t[:12]))
def test_adversarial_input_is_fast(text: str) -> None:
    assert len(text) >= 9_000
    assert _cpu(detect, text) < 0.5
    assert _cpu(redact, text) < 0.5


def test_long_realistic_input() -> None:
    parts = [
        "Notes from the call. Jane Doe (jane.doe@example.com) asked us to ship to "
        "1234 Elm Street, Springfield, IL 62704 and to call +1 212 555 0147. ",
        "Deploy v2.3.1 to prod after the 10:30 standup; order #4532148803436467 shipped. ",
        "Her DOB is 1990-07-04 and her card is 4111 1111 1111 1111. ",
        "Nothing personal in this sentence, just some filler about tea and the weather. ",
    ]
    text = "".join(parts * 40)[:10_000]
    assert len(text) == 10_000
    elapsed = _cpu(detect, text)
    r = detect(text)
    assert elapsed < 0.5
    assert set(r.fields) >= {"name", "email", "address", "phone", "date_of_birth",
                             "credit_card"}
    assert "ip_address" not in r.fields and "ssn" not in r.fields
    for s in r.spans:
        assert text[s.start : s.end] == s.text


def test_typical_sentence_speed() -> None:
    """Budget: < 0.2 ms CPU per typical ~100-character sentence (bench/bench_pii.py has the
    measured figures; this only guards against an order-of-magnitude regression)."""
    texts = [r["text"] for r in ROWS]
    for t in texts:
        detect(t)
    start = time.thread_time()
    for _ in range(3):
        for t in texts:
            detect(t)
    per_call = (time.thread_time() - start) / (3 * len(texts))
    assert per_call < 0.0005


def test_thread_safety() -> None:
    texts = [r["text"] for r in ROWS]
    expected = [detect(t) for t in texts]
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def worker(offset: int) -> None:
        barrier.wait()
        for k in range(len(texts) * 2):
            i = (k + offset * 37) % len(texts)
            if detect(texts[i]) != expected[i]:
                errors.append(texts[i])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aZé1 0.-@:+()#/,\n5Ss")) | st.characters(),
               max_size=300))
def test_random_text_invariants(text: str) -> None:
    r = detect(text)
    assert r.fields == sorted({s.type for s in r.spans})
    prev_end = 0
    for s in r.spans:
        assert s.type in PII_TYPES
        assert 0 <= prev_end <= s.start < s.end <= len(text)
        assert text[s.start : s.end] == s.text
        prev_end = s.end
    assert isinstance(redact(text, r), str)


def test_an_email_at_the_very_start_is_found() -> None:
    # "" is in every string: the URL user-info check once skipped addresses at offset 0
    assert detect("jane.doe@example.com").fields == ["email"]
    assert detect("jane.doe@example.com is the address").fields == ["email"]
