"""PII detection and redaction for memory text.

`detect(text)` finds personal data of eight types (`PII_TYPES`) and returns a `PiiResult`
with the sorted, unique `fields` found and the character `spans`; `redact(text)` replaces
spans by ``[REDACTED:<type>]``. The rules per type, their known limits and the measured
precision/recall are in docs/pii.md; in short:

* email: RFC-5322-style local part @ a dotted domain with an alphabetic TLD. Not: hosts
  without a TLD (``user@localhost``), URL user-info (``postgres://u:p@host``), SSH/scp
  remotes (``git@host.com:org/repo``), package pins (``pkg@1.2.3``), asset names
  (``logo@2x.png``).
* phone: a candidate number (international with ``+``/``00``, national with a trunk ``0``,
  NANP ``(212) 555-0199`` / ``212-555-0199`` / ``212.555.0199``, or plain digits) checked
  against Google's libphonenumber metadata (`phonenumbers`). A valid, formatted number
  needs no context; a merely *possible* one (``555`` numbers, Ofcom drama ranges), a run
  of bare digits or a 7-digit local number needs a phone word nearby ("call", "cell",
  "tel" …). Never right after an identifier word ("order", "invoice", "SKU", "ticket",
  "#" …), never date-, time- or version-shaped.
* ssn: ``AAA-GG-SSSS`` with a valid area (not 000, 666, 9xx), group (not 00) and serial
  (not 0000); spaced or unseparated forms only with an SSN word nearby; never right after
  an identifier word.
* credit_card: 13–19 digits, contiguous or in card grouping (4-4-4-4[-3], 4-6-5, 4-6-4),
  Luhn-valid, with a known IIN prefix and a length that brand issues. An *ungrouped*
  number right after an identifier word ("order #4111111111111111") is taken as that
  identifier unless card words are near; a grouped one is a card whatever precedes it.
* ip_address: IPv4 with every octet ≤ 255 and no leading zeros, not followed by a fifth
  dotted part, not after a version word ("v", "version", "release", "Python", "upgrade
  to" …); without an IP word nearby, an address whose four octets are all single digits
  ("1.2.3.4") is taken as a version. IPv6 candidates are validated by `ipaddress`.
  Loopback, unspecified, broadcast and netmask values are not personal and not flagged.
* address: house number + street name + street suffix (Street, St, Ave, Road, Blvd,
  Lane, Dr …) with optional direction, unit, city, state + ZIP or UK postcode; the
  capitalised form anywhere, any case after "lives at", "address is", "ship to" …;
  P.O. boxes; German (``Hauptstraße 5``) and French/Spanish/Italian (``12 rue de la
  Paix``, ``Calle Mayor 5``) street forms.
* name: after "my name is" / "name:" (any capitalised words); after "I'm", "call me",
  "this is" or a relation word ("my wife", "her manager") when the word is a known first
  name; after a title (Mr, Mrs, Ms, Dr, Prof …); a known first name followed by a
  capitalised surname that is not a place/organisation/product word (for first names that
  are also everyday words — Grace, Amber, Hunter — the surname must be a known one);
  "Smith, John" and "Li Wei" orders. Word lists are curated at the end of this module.
* date_of_birth: a date (ISO, numeric d/m/y or m/d/y, "3 May 1990", "May 3rd, 1990",
  "March 1985", "May 5th", "24/12"; English, French, Spanish, German month names) within
  a short clause after "born", "DOB", "date of birth", "birthday", "turns 40 on" …, or
  right before "(DOB)" / "is my birthday". A bare date is not a DOB, nor is a year alone
  ("born in 1990").

Everything here is pure and thread-safe: compiled patterns and frozen tables at module
level, no state shared between calls. Each pattern can only start a match at a token
boundary and every repetition is bounded, so the work stays linear in the input length
(adversarial inputs are covered by tests/test_pii.py). Cheap gates (is there an "@", are
there 7+ digits, is a trigger word present …) skip the detectors that cannot match.
Only ASCII digits are recognised in numbers.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from threading import Lock
from typing import NamedTuple

import phonenumbers

__all__ = [
    "PII_TYPES",
    "PiiResult",
    "Span",
    "detect",
    "luhn_valid",
    "redact",
]

PII_TYPES: tuple[str, ...] = (
    "address",
    "credit_card",
    "date_of_birth",
    "email",
    "ip_address",
    "name",
    "phone",
    "ssn",
)


@dataclass(frozen=True, slots=True)
class Span:
    """One detected piece of PII: `text == source[start:end]`."""

    type: str
    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class PiiResult:
    """`fields`: the sorted, unique PII types found; `spans`: non-overlapping, by start."""

    fields: list[str]
    spans: list[Span]

    @property
    def found(self) -> bool:
        return bool(self.spans)


# Overlap tie-break (after length): lower wins.
_PRIORITY = {
    "email": 0,
    "credit_card": 1,
    "ssn": 2,
    "ip_address": 3,
    "phone": 4,
    "date_of_birth": 5,
    "address": 6,
    "name": 7,
}


# --------------------------------------------------------------------------- the document
class _Tok(NamedTuple):
    start: int
    end: int
    text: str
    low: str
    possessive: bool


# Words: letters, with inner apostrophes/hyphens ("O'Brien", "Jean-Luc", "I'm").
_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")


def _tokens(text: str) -> list[_Tok]:
    out = []
    for m in _WORD.finditer(text):
        word = m.group()
        end = m.end()
        poss = False
        if len(word) > 2 and word[-2] in "'’" and word[-1] in "sS":
            word, end, poss = word[:-2], end - 2, True
        out.append(_Tok(m.start(), end, word, word.lower(), poss))
    return out


class _Doc:
    """What every detector needs about one input, computed once per `detect` call."""

    __slots__ = ("lower", "n_digits", "starts", "text", "toks", "words")

    def __init__(self, text: str) -> None:
        self.text = text
        self.lower = text.lower()
        self.toks = _tokens(text)
        self.starts = [t.start for t in self.toks]
        self.words = {t.low for t in self.toks}
        self.n_digits = sum(map(text.count, "0123456789"))

    def last_tok(self, pos: int) -> int:
        """Index of the last token ending at or before `pos` (-1 if none)."""
        i = bisect_left(self.starts, pos) - 1
        while i >= 0 and self.toks[i].end > pos:
            i -= 1
        return i

    def words_before(self, pos: int, width: int) -> set[str]:
        lo = bisect_left(self.starts, pos - width)
        hi = bisect_left(self.starts, pos)
        return {t.low for t in self.toks[lo:hi]}

    def words_after(self, pos: int, width: int) -> set[str]:
        lo = bisect_left(self.starts, pos)
        hi = bisect_left(self.starts, pos + width)
        return {t.low for t in self.toks[lo:hi]}

    def gap(self, i: int, pos: int) -> str:
        """Text between token i (or the start) and `pos`."""
        return self.text[self.toks[i].end if i >= 0 else 0 : pos]


# --------------------------------------------------------------------------- context
_ID_GAP = re.compile(r"[\s:#=.()\-–/]{0,4}")
_FILLER_GAP = re.compile(r"[\s:=.\-–]{1,3}")


def _words_before(doc: _Doc, pos: int, fillers: frozenset[str], gap: re.Pattern[str],
                  steps: int = 2) -> tuple[list[str], str]:
    """The last word before `pos` and, through up to `steps` filler words ("is", "number",
    "no" …), the words before it — as long as only `gap`-type characters separate them;
    and the raw text between the last token and `pos`."""
    i = doc.last_tok(pos)
    tail = doc.gap(i, pos)
    if i < 0 or not gap.fullmatch(tail):
        return [], tail
    words = [doc.toks[i].low]
    while words[-1] in fillers and steps and i > 0:
        if not gap.fullmatch(doc.text[doc.toks[i - 1].end : doc.toks[i].start]):
            break
        i -= 1
        steps -= 1
        words.append(doc.toks[i].low)
    return words, tail


def _id_before(doc: _Doc, pos: int) -> bool:
    """True when the digits at `pos` follow an identifier word: "order #", "SKU",
    "account number is", "Patient ID", "No." …"""
    words, tail = _words_before(doc, pos, _ID_FILLERS, _ID_GAP)
    if not _ID_WORDS.isdisjoint(words):
        return True
    stripped = tail.strip()
    if stripped.endswith("#"):
        return True
    return words[:1] == ["no"] and stripped.startswith(".")


def _ssn_word_before(doc: _Doc, pos: int) -> bool:
    """"SSN #", "Social Security No." — the SSN word owns the "#"/"No." after it."""
    words, _ = _words_before(doc, pos, _SSN_FILLERS, _ID_GAP, steps=3)
    return not _SSN_WORDS.isdisjoint(words)


_VERSION_SYMBOLS = ("==", ">=", "<=", "~=", "!=", "^", "~")


def _version_before(doc: _Doc, pos: int) -> bool:
    words, tail = _words_before(doc, pos, _VERSION_FILLERS, _FILLER_GAP, steps=1)
    return not _VERSION_WORDS.isdisjoint(words) or tail.rstrip().endswith(_VERSION_SYMBOLS)


_VERSION_AFTER = re.compile(
    r"[-+](?:alpha|beta|rc|dev|pre|post|snapshot|final|release|build|b\d|a\d)"
    r"|\s+(?:(?:is|was)\s+(?:the|our|a|an)\s+)?(?:release|build|version|firmware|update"
    r"|patch)\b",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------- email
_LOCAL_PUNCT = frozenset("!#$%&'*+/=?^_`{|}~-.")
_LOCAL = re.compile(r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*")
_DOMAIN = re.compile(
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.){1,8}(?P<tld>[^\W\d_]{2,63})(?![\w-]|\.[^\W_])"
)


def _emails(doc: _Doc) -> Iterator[Span]:
    """Anchored on each "@": the local part is scanned backwards (at most 64 characters),
    the domain matched forwards."""
    text = doc.text
    at = text.find("@")
    while at != -1:
        start = at
        while start > 0 and at - start <= 64 and (
            text[start - 1].isalnum() or text[start - 1] in _LOCAL_PUNCT
        ):
            start -= 1
        local = text[start:at]
        # "?email=jdoe@example.org&…": the query key is not part of the address.
        cut = max(local.rfind(ch) for ch in "=&?/")
        if cut >= 0:
            start += cut + 1
            local = local[cut + 1 :]
        dm = _DOMAIN.match(text, at + 1)
        at = text.find("@", at + 1)
        if not dm or not local or len(local) > 64 or not _LOCAL.fullmatch(local):
            continue
        end = dm.end()
        if dm.group("tld").lower() in _FILE_TLDS:
            continue
        prev = text[start - 1] if start else ""
        # URL user-info ("https://user@host", "postgres://u:pass@db") — "mailto:" is fine.
        if prev and prev in ":/" and not doc.lower[max(0, start - 7) : start].endswith("mailto:"):
            continue
        # SSH/scp remote "git@github.com:org/repo.git".
        if text[end : end + 1] == ":" and (text[end + 1 : end + 2].isalnum()
                                          or text[end + 1 : end + 2] in ("/", "~", "_", ".")):
            continue
        yield Span("email", start, end, text[start:end])


# --------------------------------------------------------------------------- phone
_DASH = "-\u2010\u2011\u2012\u2013"
_SP = " \t\u00a0\u202f"
_PHONE_GROUP = r"(?:\(\d{1,5}\)|\d{1,6})"
_PHONE_SEP = rf"(?:[{_SP}]?[{_DASH}.][{_SP}]?|[{_SP}]|(?<=\)))"
_PHONE = re.compile(
    rf"(?=[+(\d])(?:(?<=tel:)|(?<=sms:)|(?<![\w+$€£¥.,/:@{_DASH}]))"
    rf"(?P<num>(?:\+|\b00)?[{_SP}]?(?:\d{{7,15}}(?!\d)|{_PHONE_GROUP}(?:{_PHONE_SEP}"
    rf"{_PHONE_GROUP}){{1,6}}))"
    rf"(?![\w@]|[{_DASH}./:]\w)"
)
_NANP_DOTS = re.compile(r"(?:\+?1\.)?\d{3}\.\d{3}\.\d{4}")
_DATE_SHAPE = re.compile(
    rf"\d{{4}}[{_DASH}./]\d{{1,2}}[{_DASH}./]\d{{1,2}}(?!\d)"
    rf"|\d{{1,2}}[{_DASH}./]\d{{1,2}}[{_DASH}./](?:\d{{4}}|\d{{2}})(?!\d)"
    rf"|(?:19|20)\d\d\s*[{_DASH}]\s*(?:19|20)\d\d(?!\d)"
)
_CC_REGIONS = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
# Regions tried for a national number with a trunk "0", most likely first, and whether the
# 0 stays part of the number (Italy).
_TRUNK_REGIONS: tuple[tuple[str, bool], ...] = (
    ("GB", False),
    ("DE", False),
    ("FR", False),
    ("AU", False),
    ("IE", False),
    ("NL", False),
    ("IT", True),
    ("IN", False),
    ("NZ", False),
    ("ZA", False),
    ("JP", False),
)
_NANP_REGIONS = ("US", "CA")
_DESC_FIELDS = (
    "premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan",
    "voicemail", "fixed_line", "mobile",
)
_Desc = tuple[frozenset[int], re.Pattern[str]]
_RULES: dict[str, tuple[_Desc, tuple[_Desc, ...]] | None] = {}
_RULES_LOCK = Lock()


def _compile_desc(desc: object) -> _Desc | None:
    pattern = getattr(desc, "national_number_pattern", None)
    if not pattern:
        return None
    return frozenset(getattr(desc, "possible_length", ()) or ()), re.compile(pattern)


def _rules(region: str) -> tuple[_Desc, tuple[_Desc, ...]] | None:
    """libphonenumber's validation patterns for `region`, compiled once. Same logic as
    `phonenumbers.is_valid_number_for_region` (general description, then any number
    type), without its per-call pattern-cache lookups, which cost ~40 µs a number."""
    try:
        return _RULES[region]
    except KeyError:
        pass
    with _RULES_LOCK:
        if region not in _RULES:
            md = phonenumbers.PhoneMetadata.metadata_for_region(region)
            general = _compile_desc(md.general_desc) if md is not None else None
            if md is None or general is None:
                _RULES[region] = None
            else:
                types = (_compile_desc(getattr(md, f, None)) for f in _DESC_FIELDS)
                _RULES[region] = (general, tuple(t for t in types if t is not None))
        return _RULES[region]


def _desc_match(nsn: str, desc: _Desc) -> bool:
    lengths, pattern = desc
    return (not lengths or len(nsn) in lengths) and pattern.fullmatch(nsn) is not None


def _nsn_ok(nsn: str, region: str, possible: bool) -> bool:
    """Is the national significant number valid in `region` (or, with `possible`, at
    least of a possible length there)?"""
    rules = _rules(region)
    if rules is None or not nsn:
        return False
    general, types = rules
    if possible and (not general[0] or len(nsn) in general[0]):
        return True
    return _desc_match(nsn, general) and any(_desc_match(nsn, d) for d in types)


def _intl_ok(raw: str, digits: str, ctx: bool) -> bool:
    for k in (1, 2, 3):
        cc = int(digits[:k])
        if cc in _CC_REGIONS:
            break
    else:
        return False
    nsn = digits[k:]
    regions = _CC_REGIONS[cc]
    if nsn[:1] != "0" or cc == 39:
        if any(_nsn_ok(nsn, r, False) for r in regions if r != "001"):
            return True
        if ctx and any(_nsn_ok(nsn, r, True) for r in regions if r != "001"):
            return True
        if "001" not in regions:
            return False
    # Rare layouts the shortcut above does not cover ("+44 (0)20 …" with its trunk 0,
    # non-geographic codes): the library's own parser decides.
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return False
    if phonenumbers.is_valid_number(parsed):
        return True
    return ctx and phonenumbers.is_possible_number(parsed)


def _phones(doc: _Doc) -> Iterator[Span]:
    text = doc.text
    for m in _PHONE.finditer(text):
        raw = m.group("num")
        start = m.start("num")
        lead = len(raw) - len(raw.lstrip())
        raw = raw.strip()
        start += lead
        end = start + len(raw)
        digits = "".join(ch for ch in raw if ch.isdigit())
        n = len(digits)
        if n < 7 or n > 15 or not digits.isascii() or _DATE_SHAPE.match(raw):
            continue
        after = text[end : end + 2]
        if after[:1] == "%" or (after[:1] == ":" and after[1:].isdigit()):  # 12%, 14:30
            continue
        if _id_before(doc, start):
            continue
        ctx = not _PHONE_WORDS.isdisjoint(doc.words_before(start, 40))
        intl = raw.startswith("+") or raw.startswith("00")
        grouped = not raw.lstrip("+").isdigit()
        if "." in raw and not intl and not _NANP_DOTS.fullmatch(raw):
            continue
        if intl:
            ok = _intl_ok("+" + raw[2:] if raw.startswith("00") else raw,
                          digits[2:] if raw.startswith("00") else digits, ctx)
        elif digits[0] == "0":
            ok = (grouped or ctx) and (
                any(_nsn_ok(digits if keep else digits[1:], r, False)
                    for r, keep in _TRUNK_REGIONS)
                or (ctx and any(_nsn_ok(digits if keep else digits[1:], r, True)
                                for r, keep in _TRUNK_REGIONS))
            )
        elif n == 10 or (n == 11 and digits[0] == "1"):
            core = digits[-10:]
            if not (grouped or ctx):
                ok = False
            elif any(_nsn_ok(core, r, False) for r in _NANP_REGIONS):
                ok = True
            else:
                # Fictional/unassigned but well-formed NANP ("(555) 123-4567"): needs a
                # phone word or the parenthesised area code.
                ok = core[0] in "23456789" and (ctx or raw.lstrip("+1 ").startswith("("))
        elif n == 7:
            ok = ctx and grouped and digits[0] in "23456789"
        else:
            ok = ctx and any(_nsn_ok(digits, r, False) for r in _NANP_REGIONS)
        if ok:
            yield Span("phone", start, end, raw)


# --------------------------------------------------------------------------- ssn
_SSN = re.compile(
    rf"(?=\d)(?<![\w$€£.,/:@{_DASH}])(?P<a>\d{{3}})(?P<sep>[{_DASH} ]?)(?P<g>\d{{2}})"
    rf"(?P=sep)(?P<s>\d{{4}})(?![\w@]|[{_DASH}./:]\w)"
)


def _ssns(doc: _Doc) -> Iterator[Span]:
    for m in _SSN.finditer(doc.text):
        area, group, serial = m.group("a"), m.group("g"), m.group("s")
        if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
            continue
        if not (area + group + serial).isascii():
            continue
        start, end = m.span()
        if _id_before(doc, start) and not _ssn_word_before(doc, start):
            continue
        if not m.group("sep") or m.group("sep") == " ":
            near = doc.words_before(start, 40) | doc.words_after(end, 30)
            if _SSN_WORDS.isdisjoint(near):
                continue
        yield Span("ssn", start, end, m.group())


# --------------------------------------------------------------------------- credit card
_CARD = re.compile(
    r"(?=\d)(?<![\w$€£.,/:@-])"
    r"(?:\d{13,19}"
    r"|\d{4}(?P<s1>[ -])\d{4}(?P=s1)\d{4}(?P=s1)\d{1,4}(?:(?P=s1)\d{1,3})?"
    r"|\d{4}(?P<s2>[ -])\d{6}(?P=s2)\d{4,5})"
    r"(?![\w@]|[-./:]\d)"
)
# (first prefix, last prefix, allowed lengths) — prefixes compared on equal digit counts.
_IIN_TABLE: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("4", "4", frozenset({13, 16, 19})),  # Visa
    ("51", "55", frozenset({16})),  # Mastercard
    ("2221", "2720", frozenset({16})),  # Mastercard 2-series
    ("34", "34", frozenset({15})),  # American Express
    ("37", "37", frozenset({15})),
    ("6011", "6011", frozenset(range(16, 20))),  # Discover
    ("644", "649", frozenset(range(16, 20))),
    ("65", "65", frozenset(range(16, 20))),
    ("300", "305", frozenset(range(14, 20))),  # Diners Club
    ("309", "309", frozenset(range(14, 20))),
    ("36", "36", frozenset(range(14, 20))),
    ("38", "39", frozenset(range(14, 20))),
    ("3528", "3589", frozenset(range(16, 20))),  # JCB
    ("62", "62", frozenset(range(16, 20))),  # UnionPay
    ("2200", "2204", frozenset(range(16, 20))),  # Mir
    ("5018", "5018", frozenset(range(13, 20))),  # Maestro
    ("5020", "5020", frozenset(range(13, 20))),
    ("5038", "5038", frozenset(range(13, 20))),
    ("5893", "5893", frozenset(range(13, 20))),
    ("6304", "6304", frozenset(range(13, 20))),
    ("6759", "6759", frozenset(range(13, 20))),
    ("6761", "6763", frozenset(range(13, 20))),
    ("60", "60", frozenset({16})),  # RuPay
    ("506099", "506198", frozenset({16, 18, 19})),  # Verve
    ("9792", "9792", frozenset({16})),  # Troy
)


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of ASCII digits; False for anything else."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _known_iin(digits: str) -> bool:
    n = len(digits)
    return any(
        n in lengths and lo <= digits[: len(lo)] <= hi for lo, hi, lengths in _IIN_TABLE
    )


def _cards(doc: _Doc) -> Iterator[Span]:
    for m in _CARD.finditer(doc.text):
        raw = m.group()
        digits = raw.replace(" ", "").replace("-", "")
        if not luhn_valid(digits) or not _known_iin(digits):
            continue
        start, end = m.span()
        if digits == raw and _id_before(doc, start):
            near = doc.words_before(start, 40) | doc.words_after(end, 25)
            if _CARD_WORDS.isdisjoint(near):
                continue
        yield Span("credit_card", start, end, raw)


# --------------------------------------------------------------------------- ip address
_IPV4 = re.compile(
    r"(?=\d)(?<![\w.-])(?P<ip>(?:\d{1,3}\.){3}\d{1,3})(?![\w@-]|\.\d|\.[^\W\d_])"
)
_HEX = "[0-9A-Fa-f]"
_IPV6 = re.compile(
    rf"(?=[0-9A-Fa-f:\[])(?<![\w:.@-])\[?(?P<ip>(?:{_HEX}{{0,4}}:){{2,6}}(?:\d{{1,3}}\.){{3}}"
    rf"\d{{1,3}}|{_HEX}{{0,4}}(?::{_HEX}{{0,4}}){{2,7}})(?P<zone>%[\w.-]{{1,16}})?\]?"
    rf"(?![\w:]|\.\d)"
)
_NETMASK_OCTETS = frozenset({0, 128, 192, 224, 240, 248, 252, 254, 255})


def _ipv4_ok(doc: _Doc, m: re.Match[str]) -> bool:
    ip = m.group("ip")
    parts = ip.split(".")
    if any(len(p) > 1 and p[0] == "0" for p in parts) or not ip.isascii():
        return False
    octets = [int(p) for p in parts]
    if any(o > 255 for o in octets):
        return False
    if octets[0] in (0, 127) or octets == [255, 255, 255, 255]:
        return False
    if octets[0] == 255 and all(o in _NETMASK_OCTETS for o in octets):
        return False
    start, end = m.span("ip")
    if _version_before(doc, start) or _VERSION_AFTER.match(doc.text, end):
        return False
    if doc.text[end : end + 1] in (":", "/"):  # port or CIDR suffix
        return True
    if not _IP_WORDS.isdisjoint(doc.words_before(start, 30)):
        return True
    # No IP word: "1.2.3.4" reads as a version/section number, "10.0.0.12" as an address.
    return any(o >= 10 for o in octets)


def _ips(doc: _Doc) -> Iterator[Span]:
    text = doc.text
    if doc.n_digits >= 4 and text.count(".") >= 3:
        for m in _IPV4.finditer(text):
            if _ipv4_ok(doc, m):
                start, end = m.span("ip")
                yield Span("ip_address", start, end, m.group("ip"))
    if text.count(":") >= 2:
        for m in _IPV6.finditer(text):
            ip = m.group("ip")
            if ip.endswith(":") and not ip.endswith("::"):
                ip = ip[:-1]
            try:
                addr = ipaddress.IPv6Address(ip)
            except ValueError:
                continue
            if addr.is_loopback or addr.is_unspecified:
                continue
            first = ip.split(":", 1)[0]
            if ip.count(":") < 3 and len(first) < 3:  # "a::b", "ab::cd": code, not addresses
                continue
            start = m.start("ip")
            end = start + len(ip)
            if m.group("zone") and len(ip) == len(m.group("ip")):
                end = m.end("zone")
            yield Span("ip_address", start, end, text[start:end])


# --------------------------------------------------------------------------- date of birth
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
    # French, Spanish, German (the forms that differ from the English ones above).
    r"|janvier|f[ée]vrier|mars|avril|mai|juin|juillet|ao[uû]t|septembre|octobre|novembre"
    r"|d[ée]cembre|enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|octubre"
    r"|noviembre|diciembre|januar|j[äa]nner|februar|m[äa]rz|maerz|juni|juli|oktober|dezember)"
    r"(?![^\W\d_])\.?"
)
_ORD = r"(?:st|nd|rd|th|er|\.)?"
_DATE = (
    rf"(?<![\w.])(?:(?P<iso>(?P<iy>\d{{4}})[-/.](?P<im>\d{{1,2}})[-/.](?P<id>\d{{1,2}}))"
    rf"(?![\d.]\d)"
    rf"|(?P<num>(?P<n1>\d{{1,2}})[-/.](?P<n2>\d{{1,2}})[-/.](?P<ny>\d{{4}}|\d{{2}}))(?![\d.]\d)"
    rf"|(?P<dmy>(?P<dd>\d{{1,2}}){_ORD}(?:\s+(?:of|de))?\s+{_MONTH}"
    rf"(?:,?\s+(?:de\s+)?(?P<dy>\d{{4}}))?)(?!\d)"
    rf"|(?P<mdy>{_MONTH}\s+(?:the\s+)?(?P<md>\d{{1,2}}){_ORD}(?:,?\s+(?P<mdyy>\d{{4}}))?)(?!\d)"
    rf"|(?P<my>{_MONTH},?\s+(?:de\s+)?(?P<my_y>\d{{4}}))(?!\d)"
    # Day and month only ("24/12", "24.12.") — only ever looked for next to a birth word.
    rf"|(?P<dm>(?P<dm1>\d{{1,2}})(?:/(?P<dm2>\d{{1,2}})(?![/\d])|\.(?P<dm3>\d{{1,2}})\.(?!\d))))"
)
_BIRTH = re.compile(
    r"\b(?:born|d\.?o\.?b\b\.?|date\s+of\s+birth|birth\s*date|birthdate|birth\s+day"
    r"|birthday(?!\s+(?:party|parties|card|cards|present|presents|gift|gifts|cake|dinner"
    r"|lunch|celebration|bash|trip|plans?|message|wishes|list|drinks))|b-?day"
    r"|turn(?:s|ed|ing)?\s+\d{1,3}(?:\s+years?\s+old)?"
    r"|née?|nee|nacid[oa]|naci[óo]|geboren|geb\.|date\s+de\s+naissance"
    r"|fecha\s+de\s+nacimiento|geburtsdatum|geburtstag|cumpleaños|anniversaire)"
    r"(?![^\W\d_])",
    re.IGNORECASE,
)
# After a birth word: a short clause without digits or sentence breaks, then the date.
_DATE_AFTER = re.compile(
    r"(?:'s|’s)?[^\d\n.;!?]{0,40}?(?P<date>" + _DATE + ")", re.IGNORECASE
)
# Before a birth word: "12/25/1990 is my birthday", "1985-03-12 (DOB)".
_DATE_BEFORE = re.compile(
    r"(?P<date>" + _DATE + r")\s*(?:\(\s*|,\s*|[-–]\s*|(?:is|was)\s+(?:my|his|her|their"
    r"|the\s+user'?s|the\s+user’s|your|our)\s+)$",
    re.IGNORECASE,
)


def _date_valid(m: re.Match[str]) -> bool:
    g = m.group
    if g("iso"):
        y, mo, d = int(g("iy")), int(g("im")), int(g("id"))
        return 1800 <= y <= 2199 and 1 <= mo <= 12 and 1 <= d <= 31
    if g("num"):
        a, b = int(g("n1")), int(g("n2"))
        year = g("ny")
        if len(year) == 4 and not 1800 <= int(year) <= 2199:
            return False
        return 1 <= a <= 31 and 1 <= b <= 31 and (a <= 12 or b <= 12)
    if g("dmy"):
        return 1 <= int(g("dd")) <= 31
    if g("mdy"):
        return 1 <= int(g("md")) <= 31
    if g("dm"):
        day, month = int(g("dm1")), int(g("dm2") or g("dm3"))
        return 1 <= day <= 31 and 1 <= month <= 12
    return bool(g("my"))


def _dobs(doc: _Doc) -> Iterator[Span]:
    if _BIRTH_GATE.isdisjoint(doc.words) and "d.o.b" not in doc.lower:
        return
    text = doc.text
    for kw in _BIRTH.finditer(text):
        after = _DATE_AFTER.match(text, kw.end())
        before = _DATE_BEFORE.search(text, max(0, kw.start() - 60), kw.start())
        for m in (after, before):
            if m and _date_valid(m):
                yield Span("date_of_birth", m.start("date"), m.end("date"), m.group("date"))


# --------------------------------------------------------------------------- address
_SUFFIXES = (
    "Street|St|Str|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl"
    "|Terrace|Terr|Ter|Way|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Crescent|Cres"
    "|Close|Grove|Gardens|Gdns|Mews|Row|Walk|Alley|Trail|Trl|Plaza|Loop|Pike|Broadway"
    "|Causeway|Embankment|Quay|Wharf|Parade|Esplanade|Promenade|Hill|Rise"
)
_SUFFIX_WORDS = frozenset(_SUFFIXES.lower().split("|"))
_DIRECTION = r"(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?"
_UNIT = (
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Rm|Room|Bldg|Building|#)\.?\s*#?"
    r"[A-Za-z0-9-]{1,6}\b)"
)
_CITY = r"(?:,\s*[A-Z][a-z][A-Za-z'’.-]*(?:\s+[A-Z][a-z][A-Za-z'’.-]*){0,2})"
_ZIP = (
    r"(?:,?\s+(?:[A-Z]{2}\s+)?\d{5}(?:-\d{4})?\b"  # US state + ZIP, or a bare 5-digit code
    r"|,?\s+(?:NSW|VIC|QLD|WA|SA|TAS|ACT|NT)\s+\d{4}\b"  # Australian state + postcode
    r"|,?\s+[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b)"  # UK postcode
)
# Suffix abbreviations that may carry a period ("Oak Rd."); after a full word ("Drive.")
# the period ends the sentence and is not part of the address.
_SUFFIX_ABBREVIATIONS = frozenset(
    ("st", "str", "ave", "av", "rd", "blvd", "ln", "dr", "ct", "pl", "terr", "ter", "pkwy",
     "hwy", "cir", "sq", "cres", "gdns", "trl")
)


def _address_span(text: str, start: int, end: int) -> Span:
    if text[end - 1] == "." and end >= 2:
        word_start = end - 1
        while word_start > start and text[word_start - 1].isalpha():
            word_start -= 1
        if text[word_start : end - 1].lower() not in _SUFFIX_ABBREVIATIONS:
            end -= 1
    return Span("address", start, end, text[start:end])
_HOUSE_NO = r"\d{1,5}[A-Za-z]?(?:[-–/]\d{1,5}[A-Za-z]?)?"
_ADDRESS_TAIL = rf"(?:\s+{_DIRECTION}(?![\w]))?{_UNIT}?{_CITY}?{_ZIP}?"
# Capitalised form, anywhere. "Dr"/"St" followed by a capitalised word is a title or a
# saint ("10 Monday Dr. Smith", "St. Louis"), not a street suffix — unless that word is a
# unit or a direction ("34th St Apt 5B").
_NOT_AFTER_DR_ST = (
    r"(?!(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Rm|Room|Bldg|Building|North|South"
    r"|East|West)\b)"
)
_ADDRESS_STRICT = re.compile(
    rf"(?=[\dFAUS])(?<![\w#$€£.,/:@-])"
    rf"(?:(?:Flat|Apt|Apartment|Unit|Suite)\s+[A-Za-z0-9-]{{1,5}},?\s+)?"
    rf"{_HOUSE_NO}\s+(?:{_DIRECTION}\s+)?"
    rf"(?:(?:[A-ZÀ-Þ][\w'’.-]*|\d{{1,3}}(?:st|nd|rd|th))\s+){{1,4}}?"
    rf"(?:(?:{_SUFFIXES})\b(?<!Dr)(?<!St)|(?:Dr|St)\b(?!\.?\s+{_NOT_AFTER_DR_ST}[A-Z][a-z]))"
    rf"(?:\.(?!\s*[A-Z][a-z]))?{_ADDRESS_TAIL}"
)
# Any case, right after a residence/delivery word (_ADDRESS_CTX_WORDS: "lives", "ship",
# "address" …) and an optional "at/to/is/in/on" or ":".
_ADDRESS_CTX = re.compile(
    rf"(?i:(?:\s+(?:at|to|is|in|on))?\s*:?\s*)"
    rf"(?P<addr>(?:(?i:flat|apt|apartment|unit|suite)\s+[A-Za-z0-9-]{{1,5}},?\s+)?"
    rf"{_HOUSE_NO}\s+(?:[^\W\d_][\w'’.-]*\s+|\d{{1,3}}(?:st|nd|rd|th)\s+){{1,4}}?"
    rf"(?i:{_SUFFIXES})\b\.?{_ADDRESS_TAIL})"
)
_PO_BOX = re.compile(rf"(?i:\bp\.?\s?o\.?\s*box\s+\d{{1,6}}\b){_CITY}?{_ZIP}?")
_DE_SUFFIXES = ("straße", "strasse", "str.", "weg", "gasse", "platz", "allee", "damm", "ufer")
_ADDRESS_DE = re.compile(
    r"(?<![\w-])[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|damm|ufer)"
    r"\s+\d{1,4}[a-z]?\b(?:,\s*\d{5}\s+[A-ZÄÖÜ][\wäöüß-]+)?"
)
_ADDRESS_ROMANCE = re.compile(
    r"(?<![\w-])(?:\d{1,4}(?:\s?(?:bis|ter))?,?\s+)?"
    r"(?i:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai|calle|avenida|paseo|plaza"
    r"|carrer|via|viale|piazza|corso)"
    r"\s+(?:(?:de|du|des|la|le|del|della|di|dei|l['’]|d['’])\s*){0,2}[A-ZÀ-Þ][\w'’-]*"
    r"(?:\s+[A-ZÀ-Þ][\w'’-]*){0,3}(?:,?\s+\d{1,4}\b)?(?:,\s*\d{5}\s+[A-ZÀ-Þ][\w-]+)?"
)


def _addresses(doc: _Doc) -> Iterator[Span]:
    text, words = doc.text, doc.words
    if not _SUFFIX_WORDS.isdisjoint(words):
        for m in _ADDRESS_STRICT.finditer(text):
            yield _address_span(text, m.start(), m.end())
        for tok in doc.toks:
            if tok.low in _ADDRESS_CTX_WORDS:
                cm = _ADDRESS_CTX.match(text, tok.end)
                if cm:
                    yield _address_span(text, *cm.span("addr"))
    if "box" in words:
        for m in _PO_BOX.finditer(text):
            yield Span("address", m.start(), m.end(), m.group())
    if any(s in doc.lower for s in _DE_SUFFIXES):
        for m in _ADDRESS_DE.finditer(text):
            yield Span("address", m.start(), m.end(), m.group())
    if not _ROMANCE_WORDS.isdisjoint(words):
        for m in _ADDRESS_ROMANCE.finditer(text):
            # Needs a house number on one side: "12 rue de la Paix", "Calle Mayor 5".
            if any(ch.isdigit() for ch in m.group()):
                yield Span("address", m.start(), m.end(), m.group())


# --------------------------------------------------------------------------- name
_STRONG_NAME_TRIGGER = re.compile(
    r"(?i:\b(?:(?:my|his|her|their|your|our|(?:the\s+)?(?:user|customer|client|patient|"
    r"caller|contact|guest|tenant|member)(?:'s|’s))\s+(?:(?:full|first|last|given|legal|real"
    r"|maiden|middle|preferred|sur)\s*)?name\s*(?:is|was|'s|’s|:|=|-)"
    r"|(?:full|first|last|given|legal|maiden|middle|sur)\s*name\s*(?:is|was|:|=)"
    r"|\bi(?:'m|’m|\s+am)\s+called|\bi\s+go\s+by|\bgoes\s+by|\bsigned,?)"
    r"|(?:^|[\n;|(])\s*(?i:full\s+)?(?i:name)\s*[:=])\s*"
)


def _is_cap(word: str) -> bool:
    return word[0].isupper() and not (len(word) > 1 and word.isupper())


def _adjacent(text: str, left: _Tok, right: _Tok) -> bool:
    """Only plain spaces (or the ". " after an initial) between two tokens."""
    if left.possessive:
        return False
    gap = text[left.end : right.start]
    if gap in (" ", "  ", "\u00a0"):
        return True
    return len(left.text) == 1 and gap in (". ", ".")


def _surname_like(tok: _Tok) -> bool:
    return len(tok.text) > 1 and _is_cap(tok.text) and tok.text not in _NOT_SURNAME


def _initial(tok: _Tok) -> bool:
    return len(tok.text) == 1 and tok.text.isupper()


def _extend_name(text: str, toks: list[_Tok], i: int, limit: int = 3) -> int:
    """Index of the last token of a name starting at toks[i] (inclusive)."""
    j = i
    taken = 1
    while j + 1 < len(toks) and taken < limit and _adjacent(text, toks[j], toks[j + 1]):
        nxt = toks[j + 1]
        if nxt.text in _PARTICLES and j + 2 < len(toks) and _adjacent(text, nxt, toks[j + 2]):
            if _surname_like(toks[j + 2]):
                j += 2
                taken += 1
                continue
            break
        if _initial(nxt) or _surname_like(nxt):
            j += 1
            taken += 1
            continue
        break
    while j > i and _initial(toks[j]):  # a trailing initial ("John F") is not part of it
        j -= 1
    return j


def _weak_trigger(doc: _Doc, i: int) -> bool:
    """A known first name at toks[i] right after "I'm", "call me", "this is", "my sister",
    "her manager is", "son named", "Regards," …"""
    if i == 0:
        return False
    toks, text = doc.toks, doc.text
    prev = toks[i - 1]
    gap = text[prev.end : toks[i].start]
    p = prev.low
    if prev.possessive:
        return False
    if gap == " " and p in ("i'm", "i’m", "im"):
        return True
    if p in _RELATION_WORDS and gap in (" ", ", ", ": "):
        return True
    if p in ("regards", "cheers", "thanks", "best", "sincerely") and gap.strip() in (",", ""):
        return "\n" in gap or gap.startswith(",")
    if i >= 2 and gap == " ":
        pp = toks[i - 2].low
        if p == "is" and (pp == "this" or pp in _RELATION_WORDS):
            return True
        if p in ("named", "called") and pp in _RELATION_WORDS:
            return True
        if (p == "me" and pp == "call") or (p == "am" and pp == "i"):
            return True
    return False


def _names(doc: _Doc) -> Iterator[Span]:
    toks, text = doc.toks, doc.text
    if not toks:
        return
    used: set[int] = set()

    def emit(i: int, j: int) -> Span:
        used.update(range(i, j + 1))
        start, end = toks[i].start, toks[j].end
        return Span("name", start, end, text[start:end])

    # 1. Strong triggers: "my name is X Y", "Name: X" — any capitalised word.
    if not _STRONG_GATE.isdisjoint(doc.words):
        for m in _STRONG_NAME_TRIGGER.finditer(text):
            i = bisect_left(doc.starts, m.end())
            if i >= len(toks) or toks[i].start != m.end():
                continue
            tok = toks[i]
            if _is_cap(tok.text) and tok.low not in _STOPWORDS_LOWER:
                yield emit(i, _extend_name(text, toks, i))
            elif tok.low in _FIRST_NAMES_LOWER:
                j = i
                if (i + 1 < len(toks) and _adjacent(text, tok, toks[i + 1])
                        and toks[i + 1].text.islower()
                        and toks[i + 1].low not in _STOPWORDS_LOWER):
                    j = i + 1
                yield emit(i, j)
    n = len(toks)
    for i, tok in enumerate(toks):
        if i in used:
            continue
        word = tok.text
        # 2. Titles: "Dr. Alvarez", "Ms J. Okoye".
        if tok.low in _TITLES and word[0].isupper() and i + 1 < n:
            nxt = toks[i + 1]
            gap = text[tok.end : nxt.start]
            named = _surname_like(nxt) or (
                _initial(nxt) and i + 2 < n and _adjacent(text, nxt, toks[i + 2])
                and _surname_like(toks[i + 2])
            )
            if gap in (" ", ". ", ".") and named and nxt.text not in _TITLE_BRANDS:
                j = _extend_name(text, toks, i + 1)
                if j == i + 1 and _initial(nxt):
                    j = i + 2
                yield emit(i + 1, j)
                continue
        if word in _FIRST_NAMES:
            # 3. Weak triggers: "I'm Priya", "my son Liam".
            if _weak_trigger(doc, i):
                yield emit(i, _extend_name(text, toks, i))
                continue
            # 4. First name + surname: "Emily Chen", "Vincent van Gogh".
            if i + 1 < n and _adjacent(text, tok, toks[i + 1]):
                if tok.start and text[tok.start - 1] in "@./\\_#-":
                    continue
                nxt = toks[i + 1]
                k = i + 1
                while k < n - 1 and (toks[k].text in _PARTICLES or _initial(toks[k])) and \
                        _adjacent(text, toks[k], toks[k + 1]):
                    k += 1
                ok = _surname_like(toks[k]) and (k == i + 1 or nxt.text in _PARTICLES
                                                  or _initial(nxt))
                if ok and word in _AMBIGUOUS_FIRST:
                    ok = toks[k].text in _SURNAMES
                if ok:
                    j = _extend_name(text, toks, i)
                    if j > i:
                        yield emit(i, j)
                        continue
        # 5. Family name first: "Smith, John" (records) and "Li Wei" (East Asian order).
        if word in _SURNAMES and i + 1 < n and not tok.possessive:
            nxt = toks[i + 1]
            gap = text[tok.end : nxt.start]
            if (nxt.text in _FIRST_NAMES and nxt.text not in _AMBIGUOUS_FIRST
                    and (gap == ", " or (gap == " " and word in _EAST_ASIAN_SURNAMES))
                    and not (tok.start and text[tok.start - 1] in "@./\\_#-")):
                yield emit(i, i + 1)


# --------------------------------------------------------------------------- API
def _resolve(spans: Iterable[Span]) -> list[Span]:
    """Longest first (then by type priority, then earliest); drop anything overlapping."""
    kept: list[Span] = []
    for span in sorted(
        spans, key=lambda s: (s.start - s.end, _PRIORITY.get(s.type, 99), s.start)
    ):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    kept.sort(key=lambda s: s.start)
    return kept


def detect(text: str) -> PiiResult:
    """Find PII in `text`. Spans are non-overlapping and ordered by start offset."""
    if not text:
        return PiiResult([], [])
    doc = _Doc(text)
    found: list[Span] = []
    if "@" in text:
        found.extend(_emails(doc))
    nd = doc.n_digits
    if nd >= 7:
        found.extend(_phones(doc))
    if nd >= 9:
        found.extend(_ssns(doc))
    if nd >= 13:
        found.extend(_cards(doc))
    found.extend(_ips(doc))
    if nd:
        found.extend(_dobs(doc))
        found.extend(_addresses(doc))
    found.extend(_names(doc))
    if not found:
        return PiiResult([], [])
    spans = _resolve(found)
    return PiiResult(sorted({s.type for s in spans}), spans)


def redact(
    text: str, result: PiiResult | None = None, fields: Iterable[str] | None = None
) -> str:
    """Replace detected spans by ``[REDACTED:<type>]``.

    `result` defaults to `detect(text)` (pass one to avoid detecting twice); `fields`
    restricts redaction to those types (unknown names raise ValueError). Spans outside the
    text are ignored; overlapping spans (possible only in a hand-built result) are
    resolved longest first.
    """
    if result is None:
        result = detect(text)
    spans: Iterable[Span] = result.spans
    if fields is not None:
        wanted = {fields} if isinstance(fields, str) else set(fields)
        unknown = wanted.difference(PII_TYPES)
        if unknown:
            raise ValueError(f"unknown PII field(s): {', '.join(sorted(unknown))}")
        spans = [s for s in spans if s.type in wanted]
    out: list[str] = []
    pos = 0
    for span in _resolve(s for s in spans if 0 <= s.start < s.end <= len(text)):
        out.append(text[pos : span.start])
        out.append(f"[REDACTED:{span.type}]")
        pos = span.end
    out.append(text[pos:])
    return "".join(out)


# =========================================================================== word lists
def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Context words are matched against lower-cased tokens (letters only: "SS#" → "ss").
_ID_WORDS = _wordset(
    """
    order orders invoice inv receipt tracking shipment parcel package ticket case incident ref
    reference sku part model serial isbn issn asin upc ean gtin po account acct transaction
    txn confirmation booking reservation customer member membership policy claim build
    version ver release rev revision patch job batch lot item product license licence key
    code pin otp id uuid hash checksum bug issue pr commit employee badge passport flight
    train room seat table row tax vat iban bic routing swift sort zip postcode postal route
    request req session trace span
    """
)
_ID_FILLERS = _wordset("is was no nr num number numbers code ref id the")
_SSN_WORDS = _wordset("ssn ssns social taxpayer tin itin ss")
_SSN_FILLERS = _wordset("is was no nr num number security")
_PHONE_WORDS = _wordset(
    """
    call calls called calling phone phones telephone tel cell cellphone mobile mob text texts
    texting sms whatsapp signal fax reach reached ring dial landline number numbers voicemail
    contact hotline helpline ph line
    """
)
_CARD_WORDS = _wordset(
    """
    card cards cc credit debit visa mastercard amex discover diners jcb unionpay maestro cvv
    cvc expiry exp pan payment pay paid charge charged billing billed
    """
)
_IP_WORDS = _wordset(
    """
    ip ips ipv ipv4 ipv6 address addr host hostname server servers ssh ping connect connected
    connecting gateway dns resolver subnet cidr proxy router vpn nat firewall allowlist
    whitelist blocklist blacklist login logged peer endpoint listen listens listening bind
    bound machine vm box static dhcp lease node origin egress ingress forwarded
    """
)
_VERSION_WORDS = _wordset(
    """
    v ver version versions release releases released rel build builds deploy deployed
    deploying upgrade upgraded upgrading update updated updating bump bumped downgrade
    downgraded install installed pin pinned tag tagged ship shipped rollout python py node
    nodejs java jdk go golang rust ruby php perl npm pip pypi firmware fw kernel linux ubuntu
    debian macos osx ios ipados android windows chrome chromium firefox safari edge patch
    sdk api schema protocol section sec chapter clause step figure fig table rule item
    paragraph para appendix semver changelog
    """
)
_VERSION_FILLERS = _wordset("to from is was of")
_BIRTH_GATE = _wordset(
    """
    born dob birth birthday birthdays birthdate bday b-day turn turns turned turning née né
    nee nacido nacida nació nacio geboren geb naissance nacimiento geburtsdatum
    geburtstag cumpleaños anniversaire
    """
)
_ADDRESS_CTX_WORDS = _wordset(
    """
    live lives living reside resides resided residing located staying moved moving relocated
    relocating ship shipping send sent deliver delivery delivered mail post home house
    address addr
    """
)
_ROMANCE_WORDS = _wordset(
    """
    rue avenue boulevard bd place chemin allée impasse quai calle avenida paseo plaza carrer
    via viale piazza corso
    """
)
_STRONG_GATE = _wordset("name called go goes signed")
_RELATION_WORDS = _wordset(
    """
    wife husband partner spouse son daughter brother sister mother mom mum father dad boss
    manager colleague coworker co-worker friend girlfriend boyfriend fiancé fiancée fiance
    fiancee nephew niece cousin aunt uncle grandmother grandfather grandma grandpa granny
    doctor dentist therapist assistant landlord landlady neighbour neighbor roommate flatmate
    teacher tutor nanny babysitter lawyer accountant coach mentor ceo cto cfo founder
    recruiter kid child baby stepson stepdaughter
    """
)
# Not delegated TLDs, but common file extensions: "logo@2x.png", "icon@3x.webp".
_FILE_TLDS = _wordset(
    """
    png jpg jpeg gif svg webp ico bmp tif tiff heic avif pdf txt md json yaml yml toml lock
    log tmp bak js mjs cjs ts tsx jsx css scss html htm xml csv rb java kt cpp hpp tgz gz
    bz2 xz whl jar
    """
)

# Curated common given names (English-speaking countries, Western/Eastern Europe, Latin
# America, South Asia, East Asia, the Arab world, Africa). Words that are far more often
# something else when capitalised (May, June, April, August, Chase, Sunny, Will at a
# sentence start is kept — see docs/pii.md) are left out.
_FIRST_NAMES_TEXT = """
Aaliyah Aaron Abby Abdul Abdullah Abena Abigail Abraham Ada Adaeze Adam Adebayo Adedayo
Aditi Aditya Adriana Adrian Adrienne Agnes Agnieszka Ahmad Ahmed Aidan Aiden Aiko Aileen
Aisha Akira Akiko Akosua Al Alan Albert Alberto Alec Alejandra Alejandro Alessandro Alessia
Alex Alexander Alexandra Alexei Alexey Alexis Alfie Alfred Ali Alice Alicia Alina Alison
Alistair Allison Alma Alonso Alvaro Álvaro Ama Amanda Amara Amber Amelia Amélie Amina Amir
Amira Amit Amy Ana Anaïs Ananya Anastasia Anders Andre André Andrea Andreas Andrei Andrés
Andrew Andy Angela Angelica Angus Anil Anita Anja Anjali Ankit Ann Anna Anne Annika Annie
Anthony Antoine Antonio Anya Archie Arjun Arthur Arturo Arun Asher Ashley Ashok Astrid
Audrey Aurélie Aurora Austin Ava Avery Axel Ayana Ayesha Babajide Baptiste Barbara Barry
Beatrice Beatriz Bella Ben Benjamin Bernard Beth Bethany Betty Beverly Bianca Bilal Bill
Billy Birgit Björn Bjorn Blake Blessing Bo Bob Bobby Boris Brad Bradley Brandon Brenda
Brendan Brett Brian Bridget Brittany Bruce Bruna Bruno Bryan Burak Caitlin Caleb Callum
Cameron Camila Camille Can Carl Carla Carlos Carmen Carol Caroline Carolina Carolyn Carter
Casey Catherine Cecilia Céline Chad Charles Charlie Charlotte Chelsea Chen Cheryl Chiamaka
Chiara Chidi Chidinma Chinedu Chloe Chloé Chris Christian Christina Christine Christopher
Chukwuemeka Cian Ciara Ciaran Claire Clara Claudia Clive Cody Colin Colleen Colton Connor
Conor Cooper Courtney Craig Cristina Cynthia Dafydd Daiki Daisy Dale Dan Dana Daniel Daniela
Danielle Daniela Danny Daria Darius Darren Dave David Davide Dawn Dean Debbie Deborah Debra
Declan Deepak Deepika Denise Dennis Derek Dermot DeShawn Dev Diana Diane Diego Dieter Dimitri
Divya Dmitri Dmitry Dominic Donald Donna Doris Dorothy Douglas Dylan Ebony Ed Eddie Edith
Edward Edwin Eileen Ekaterina Elaine Eleanor Elena Eli Elias Elif Elijah Elisa Elizabeth Ella
Ellen Ellie Élodie Emeka Emilia Emilio Emily Emma Emmanuel Emre Enrique Eoin Eric Erica Erik
Erin Ernesto Esperanza Esther Étienne Ethan Euan Eugene Eva Evan Evelyn Ezra Faisal Farah
Fatima Federica Federico Felix Fergus Fernanda Fernando Finn Fiona Florence Florian Folake
Frances Francesca Francesco Francis Francisco Frank Frankie Freddie Frederick Freya Funmilayo
Gabriel Gabriela Gabriella Gareth Gary Gavin Gemma George Georgia Gerald Gerardo Gianni Gina
Giovanna Giovanni Giulia Giuseppe Gloria Gordon Grace Graham Grayson Greg Gregory Greta
Guadalupe Guillaume Gustavo Hamza Hamish Hana Hanna Hannah Hans Hao Harold Harper Harriet
Harrison Harry Haruka Haruto Hassan Hazel Heather Héctor Hector Heidi Heike Heinz Helen Helena
Henrik Henry Hina Hiroshi Holly Horst Howard Hugh Hugo Hui Hunter Hussein Hyun-woo Iain Ian
Ibrahim Igor Imani Imogen Inês Ines Inés Ingrid Irene Irina Isaac Isabel Isabella Isabelle
Ishaan Isla Ivan Ivy Jabari Jace Jack Jackie Jackson Jacob Jacqueline Jacques Jade Jae-won
Jake Jakub Jamal James Jamie Jan Jane Janet Janice Jasmine Jason Javier Jaxon Jay Jayden Jean
Jean-Luc Jean-Pierre Jeff Jeffrey Jennifer Jenny Jeremy Jerry Jess Jesse Jessica Jesús Jian
Jiayi Ji-hoon Jill Jim Jimmy Jing Ji-woo Ji-yeon Jo Joan Joanna Joanne Joaquín Joaquin Jodie
Joe Joel Johan Johanna John Johnny Jon Jonas Jonathan Jordan Jorge José Jose Joseph Josephine
Josh Joshua Joyce Juan Judith Judy Julia Julian Juliana Julie Julien Juma Jun Jürgen Justin
Kabir Kai Kaito Kamal Kamau Karen Karim Karina Karl Karthik Kasia Kate Katarzyna Katherine
Kathleen Kathryn Katie Katja Kavya Kayla Kazuki Keisha Keiko Keith Kelly Ken Kenji Kenneth
Kevin Khalid Kieran Kim Kimberly Kirsty Klaus Kofi Kojo Krisztina Kristen Kristin Krzysztof
Ksenia Kumar Kwame Kyle Kylie Lakshmi Lance Landon Lara Larissa Larry Lars Latoya Laura
Lauren Lawrence Layla Lea Léa Leah Lee Lei Leila Lena Leo Leon Leonardo Leonie Leticia Levi
Liam Lily Lina Lincoln Linda Lindsay Lisa Liz Logan Lorenzo Lori Louis Louise Luc Luca Lucas
Lucia Lucía Lucy Luis Luka Lukas Łukasz Luke Luz Lydia Lynn Madeleine Madison Maeve Magdalena
Magnus Malcolm Malik Małgorzata Mandla Manish Manon Manuel Marc Marco Marcus Margaret Margaux
Maria María Mariam Mariana Marie Marina Mario Marisol Mark Markus Marlene Marta Martha Martin
Martina Mary Maryam Mason Mateo Matilda Matt Matteo Matthew Matthias Maureen Max Maxim
Maximilian Maya Meera Megan Mehmet Mei Melanie Melissa Mia Michael Michał Michel Michelle
Miguel Mihai Mikael Mike Mikhail Milan Miles Min-ji Min-jun Ming Miriam Mohamed Mohammad
Mohammed Molly Monica Monika Moritz Muhammad Murat Mustafa Nadia Nadine Naledi Nancy Naoko
Naomi Natalia Natalie Natasha Nathan Nathaniel Neha Neil Nia Niall Niamh Nick Nicola Nicolas
Nicole Nigel Nikhil Nikita Nikolai Niklas Nils Nina Nisha Noah Nolan Noor Nora Norah Nuno
Obinna Océane Olaf Oleg Olga Oliver Olivia Olivier Oluwaseun Omar Ondřej Orla Oscar Owen
Pablo Padraig Paige Pamela Paola Paolo Patricia Patrick Paul Paula Pauline Paweł Pedro
Penelope Peter Petra Philip Philippe Phoebe Pierre Pietro Pilar Piotr Pooja Poppy Pranav
Precious Priya Rachel Rafael Rahul Raj Rajesh Ramón Ramon Rashid Raúl Raul Ravi Ray Raymond
Rebecca Reggie Rémi Ren Renee Rhys Ricardo Riccardo Richard Rick Riku Riley Rita Riya Rob
Robert Roberto Robin Rocío Rodrigo Rohan Roger Roland Ronald Rory Rosa Rosemary Ross Roy
Ruby Rudy Russell Ruth Ryan Sabine Sachin Sakura Salma Sam Samantha Samir Samuel Sandra
Sanjay Santiago Sara Sarah Satoshi Savannah Scarlett Scott Seamus Sean Sebastian Sebastián
Seo-jun Seo-yeon Sergei Sergey Sergio Shane Shanice Shannon Sharon Shaun Shawn Sheila Shirley
Shreya Siddharth Sidney Sigrid Silas Silvia Simon Simone Sinead Siobhan Sipho Sneha Sofia
Sofía Sophia Sophie Soo-jin Sota Stacy Stefan Stefano Stella Stephanie Stephen Steve Steven
Stuart Sunil Sunita Suresh Susan Suzanne Sven Svetlana Sydney Sylvia Tafadzwa Takeshi Tamara
Tanisha Tanya Tao Tara Tariq Tatiana Teresa Terrence Terry Thabo Thandiwe Themba Theo Théo
Theodore Theresa Thibault Thomas Thorsten Tiffany Tim Timothy Tina Tobias Toby Todd Tom
Tomás Tomasz Tomáš Tommaso Tony Tracy Travis Trevor Troy Tunde Tyler Tyrone Uwe Ursula Valentina
Valerie Vanessa Varun Vera Veronica Victor Victoria Vijay Vikram Vincent Violet Virginia
Vivian Vladimir Walter Wanjiru Wayne Wei Wendy Will William Willie Wolfgang Wyatt Xavier Ximena
Xin Xiu Yan Yang Yasmin Yaw Yetunde Yolanda Youssef Yui Yuki Yulia Yumi Yuri Yusuf Yuto Yvonne
Zach Zachary Zainab Zanele Zara Zeynep Zoe Zoë Zuzana
"""
_FIRST_NAMES = frozenset(_FIRST_NAMES_TEXT.split())
_FIRST_NAMES_LOWER = frozenset(n.lower() for n in _FIRST_NAMES)

# First names that are also everyday words, brands or places ("Grace Period", "Amber
# Alert", "Hunter Boots", "Jordan River"): a pair starting with one of these counts only when
# the second word is a known surname (or a trigger phrase comes before it).
_AMBIGUOUS_FIRST = _wordset(
    """
    Al Amber Austin Bill Bo Can Carter Charlotte Chelsea Cooper Daisy Dawn Dean Florence
    Frank Georgia Grace Hazel Heather Holly Hunter Ivy Jack Jade Jo Jordan Lily Lincoln
    Madison Mark Mason Max Miles Penny Poppy Ray Rob Ruby Savannah Sydney Victoria Violet
    Virginia Will Casey Dale Lance Rudy Rick Sam Tim Bruno Milan Luz Lynn Sidney
    """
)
# Common surnames, for the rules above and for "Smith, John" / "Li Wei" word orders.
_SURNAMES = _wordset(
    """
    Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez
    Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White
    Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres
    Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts
    Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales
    Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos
    Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes
    Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez Powell Jenkins Perry
    Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez Simmons
    Romero Jordan Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West
    Cole Hayes Bryant Herrera Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro
    Marshall Owens Harrison Fernandez McDonald Woods Washington Kennedy Wells Vargas Henry
    Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter Hunter Gordon Mendez
    Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner Black Robertson Boyd
    Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson Nichols
    Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins Arnold Pierce
    Vazquez Hansen Peters Santos Hart Bradley Knight Elliott Cunningham Duncan Armstrong
    Hudson Carroll Lane Riley Andrews Alvarado Ray Delgado Berry Perkins Hoffman Johnston
    Matthews Pena Richards Contreras Willis Carpenter Lawrence Sandoval Guerrero George
    Chapman Rios Estrada Ortega Watkins Greene Nunez Wheeler Valdez Harper Burke Larson Santiago
    Maldonado Morrison Franklin Carlson Austin Dominguez Carr Lawson Jacobs Obrien Lynch
    Singh Vega Bishop Montgomery Oliver Jensen Harvey Williamson Gilbert Dean Sims Espinoza
    Howell Li Wang Zhang Liu Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo He Lin Luo Gao
    Zheng Liang Xie Song Tang Han Feng Deng Cao Peng Zeng Xiao Tian Dong Pan Yuan Cai Jiang
    Yu Du Ye Cheng Wei Su Lu Ding Ren Shen Yao Jiang Tanaka Suzuki Sato Takahashi Watanabe
    Ito Yamamoto Nakamura Kobayashi Kato Yoshida Yamada Sasaki Yamaguchi Matsumoto Inoue
    Kimura Hayashi Shimizu Yamazaki Mori Abe Ikeda Hashimoto Ishikawa Ogawa Okada Goto
    Park Choi Jung Kang Cho Yoon Jang Lim Han Shin Seo Kwon Hwang Ahn Song Hong Yoo Ko Moon
    Pham Hoang Phan Vu Vo Dang Bui Do Ho Ngo Duong Ly Muller Müller Schmidt Schneider
    Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch Bauer Richter Klein Wolf
    Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann Lange Schmitt Werner
    Krause Meier Lehmann Bernard Dubois Durand Leroy Moreau Simon Laurent Lefebvre Michel
    Garnier Rousseau Fournier Girard Bonnet Dupont Lambert Fontaine Chevalier Rossi Russo
    Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo Conti Costa
    Giordano Mancini Rizzo Lombardi Moretti Barbieri Fontana Santoro Ferreira Pereira
    Oliveira Rodrigues Almeida Carvalho Gomes Martins Sousa Ribeiro Lima Nowak Kowalski
    Wiśniewski Wójcik Kowalczyk Kamiński Lewandowski Zieliński Szymański Woźniak Dąbrowski
    Ivanov Smirnov Kuznetsov Popov Vasiliev Petrov Sokolov Mikhailov Novikov Fedorov Morozov
    Volkov Kozlov Lebedev Khan Ahmed Ali Hassan Hussein Ibrahim Mohamed Abdullah Rahman
    Hossain Haddad Khoury Nasser Saleh Mansour Aziz Malik Qureshi Siddiqui Chaudhry Sharma
    Gupta Kumar Shah Mehta Joshi Reddy Rao Iyer Nair Menon Pillai Das Bose Banerjee
    Chatterjee Mukherjee Verma Agarwal Jain Desai Kapoor Malhotra Bhatt Chopra Okafor Okonkwo
    Adeyemi Okoye Eze Nwosu Adebayo Ogunleye Balogun Mensah Owusu Boateng Asante Kamau
    Mwangi Otieno Ndlovu Dlamini Nkosi Mokoena Murphy Kelly Byrne Walsh Brennan Doyle
    Gallagher Doherty Kennedy Lynch Quinn Fitzgerald Connolly McCarthy O'Brien O'Connor
    O'Sullivan O'Neill McLaughlin MacDonald Fraser Stewart Campbell Anderson Reid Ross
    Hughes Davies Jones Evans Thomas Roberts Lewis Morgan Griffiths Owen Price Jenkins
    Nielsen Hansen Jensen Pedersen Andersen Larsen Johansson Karlsson Nilsson Eriksson
    Larsson Olsson Persson Svensson Berg Haugen Virtanen Korhonen Nieminen Mäkinen Yilmaz
    Kaya Demir Şahin Çelik Öztürk Aydın Cohen Levi Mizrahi Friedman Katz Goldberg Schwartz
    Shapiro Kaplan Rosen Gómez Fernández González Rodríguez Martínez Sánchez Pérez Hernández
    López Díaz Álvarez Jiménez Ruiz Moreno Muñoz Romero Navarro Torres Domínguez Vázquez
    Ramos Gil Serrano Blanco Molina Morales Suárez Ortega Delgado Castro Rubio Marín Sanz
    """
)

# A capitalised word after a first name that makes the pair a place, organisation,
# product or phrase rather than a person ("Victoria Station", "Georgia Tech").
_NOT_SURNAME = _wordset(
    """
    Street St Road Rd Avenue Ave Lane Drive Way Boulevard Place Square Station Line Lines
    Airport Beach River Lake Mountain Mountains Park Bridge Hospital Clinic University College
    School Academy Church Cathedral Chapel Hotel Inn Tower Towers Hall Museum Center Centre
    Mall Market Cafe Café Restaurant Bar Pub Bank Group Inc LLC Ltd Corp Corporation Company
    Co Foundation Institute Labs Lab Studio Studios Records Pictures Motor Motors Speedway
    Airlines Airways Systems Technologies Tech Software Games Pro Max Plus Mini Air Ultra
    Edition Series Model Version Day Days Eve Night County City Town Village Valley Island
    Islands Bay Harbour Harbor Falls Springs Heights Hills Hill Point Port Coast Gardens Garden
    Zoo Stadium Arena Theatre Theater Opera Gallery Library Club Fund Trust Capital Partners
    Holdings Ventures Network Networks Media News Times Post Journal Magazine Press Books Cup
    League Award Awards Prize Festival Conference Summit Show Tour Memorial Monument Terminal
    Pipeline Reports Skills Shortcuts Cloud App Apps Store Shop Kitchen Grill Diner Burger
    Pizza Coffee Tea Secret Collection Rail Railway Express Square Forest Canyon Desert Peak
    Complete Done New Open Close Save Delete Edit Read Update Review Team Project Support
    Sales Marketing Engineering Product Design Account Accounts Admin Service Services Mode
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May
    June July August September October November December Christmas Easter Thanksgiving
    Halloween Texas California Florida Georgia Virginia Carolina Dakota York Jersey Washington
    Oregon Nevada Arizona Utah Colorado Ohio Michigan Illinois Indiana Kentucky Tennessee
    Alabama Mississippi Louisiana Arkansas Missouri Iowa Minnesota Wisconsin Kansas Nebraska
    Oklahoma Montana Idaho Wyoming Alaska Hawaii Maine Vermont Massachusetts Connecticut
    Maryland Delaware Pennsylvania England Scotland Wales Ireland France Germany Spain Italy
    Portugal Canada Mexico Brazil India China Japan Australia Zealand Africa America Europe
    Asia London Paris Berlin Madrid Rome Tokyo Sydney Melbourne Toronto Boston Chicago Seattle
    Dallas Houston Austin Denver Atlanta Miami The And Or But Is Was Are Were Has Have Had
    Will Would Can Could Should May Might Must Shall Did Does Do Not No Yes Thanks Thank Hi
    Hello Dear Please Also Then So If When Where What Why How Who This That These Those It
    Its He She They We You I My Your His Her Our Their From To In On At By For With Of As
    """
)
_EAST_ASIAN_SURNAMES = _wordset(
    """
    Li Wang Zhang Liu Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo He Lin Luo Gao Zheng Liang
    Xie Song Tang Han Feng Deng Cao Peng Zeng Xiao Tian Dong Pan Yuan Cai Jiang Yu Du Ye Cheng
    Su Lu Ding Ren Shen Yao Park Choi Jung Kang Cho Yoon Jang Lim Shin Seo Kwon Hwang Ahn
    Hong Yoo Ko Moon Pham Hoang Phan Vu Vo Dang Bui Ngo Duong
    """
)
_PARTICLES = _wordset(
    "van von de da di del della der den le la du dos das bin ibn al el ter ten")
_TITLES = _wordset(
    "mr mrs ms miss mx dr prof professor sir dame lord lady rev reverend fr capt captain"
    " sgt judge")
# Brands and characters written like "<title> <Name>".
_TITLE_BRANDS = _wordset(
    "Pepper Clean Bean Robot Freeze Potato Martens Oetker Scholl Who Dre Seuss Strange"
    " Hyde Jekyll Evil Octopus Frankenstein Burns Sandman Brightside")
_STOPWORDS_LOWER = frozenset(w.lower() for w in _NOT_SURNAME) | _wordset(
    "a an the and or but is was are not no on in at to of for from with by as it its i im"
    " me my we our you your he she they them his her their here there just very so too also"
    " going gonna been being happy sure fine good glad sorry back home done ready new")


def _warm_up() -> None:
    """Compile the phone rules of the regions the national-number rules use at import, so
    that no detect() call pays for them (other regions are compiled on first use, under a
    lock)."""
    for region in (*_NANP_REGIONS, *(r for r, _ in _TRUNK_REGIONS)):
        _rules(region)


_warm_up()
