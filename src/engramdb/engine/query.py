"""Query understanding without a language model: time expressions.

`time_windows("what did I cook a week ago?", now)` finds the periods a query refers to,
relative to `now` (the question's "today"), so that the read path can favour memories from
then. English only, rule-based and fast (a few regular expressions, no dependency): the
expressions people use when they ask an assistant about their own past —

* "today", "this morning", "yesterday", "the day before yesterday";
* "N days/weeks/months/years ago" (N a number, a word up to twelve, "a", "a few", "a couple
  of", "several");
* "last week/month/year/weekend", "the past weekend", "this week/month/year",
  "last Monday", "on Friday";
* "in the past/last N days/weeks/months", "over the past month", "recently", "lately";
* month names ("in March", "March and April", "March 3rd", "March 2023");
* fixed-date holidays ("Valentine's Day", "Christmas", "New Year's Eve", "Halloween", ...).

A window is a soft hint, not a filter: people misremember dates and a conversation about an
event may come days after it, so `time_match` also gives partial credit near a window.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

_DAY = timedelta(days=1)

_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "a couple of": 2, "a couple": 2, "couple of": 2, "a few": 3, "few": 3, "several": 4,
}
_UNIT_DAYS = {"day": 1.0, "week": 7.0, "month": 30.44, "year": 365.25}
_WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr)
                if name and name.lower() != "may"})
_HOLIDAYS = {  # fixed dates only: (month, day)
    "new year's day": (1, 1), "new years day": (1, 1), "valentine's day": (2, 14),
    "valentines day": (2, 14), "valentine's": (2, 14), "st. patrick's day": (3, 17),
    "st patrick's day": (3, 17), "saint patrick's day": (3, 17), "april fools": (4, 1),
    "april fool's day": (4, 1), "cinco de mayo": (5, 5), "independence day": (7, 4),
    "fourth of july": (7, 4), "4th of july": (7, 4), "halloween": (10, 31),
    "christmas eve": (12, 24), "christmas day": (12, 25), "christmas": (12, 25),
    "boxing day": (12, 26), "new year's eve": (12, 31), "new years eve": (12, 31),
}

_NUM = r"(\d{1,3}|" + "|".join(sorted((re.escape(k) for k in _NUMBERS), key=len,
                                      reverse=True)) + ")"
_UNIT = r"(day|week|month|year)s?"
_WEEKDAY = "(" + "|".join(_WEEKDAYS) + ")"
_MONTH = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"

_AGO = re.compile(rf"\b{_NUM}\s+{_UNIT}\s+ago\b")
_PAST_N = re.compile(rf"\b(?:in|over|during|within|for)\s+the\s+(?:past|last)\s+"
                     rf"(?:{_NUM}\s+)?{_UNIT}\b")
_LAST_UNIT = re.compile(r"\b(last|this|past|previous)\s+(weekend|week|month|year)\b")
_LAST_WEEKDAY = re.compile(rf"\b(?:last|this past|past|on)\s+{_WEEKDAY}\b")
# "tonight" and "this evening" are left out: asked about, they are plans, not memories;
# "before today" or "so far" bound nothing.
_SIMPLE = re.compile(r"\b(the day before yesterday|yesterday|(?<!before )(?<!until )today|"
                     r"this morning|this afternoon|recently|lately)\b")
_MONTH_DAY = re.compile(rf"\b{_MONTH}\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?!\s*(?:am|pm|:))")
_MONTH_YEAR = re.compile(rf"\b{_MONTH}\s+(?:of\s+)?((?:19|20)\d\d)\b")
# "in March", "between March and April", "during May, June or July"
_IN_MONTHS = re.compile(rf"\b(?:in|during|since|through|until|between|from)\s+"
                        rf"(?:early\s+|late\s+|mid-?\s*)?{_MONTH}"
                        rf"(?:\s*(?:,|and|or|to|through|-)\s*{_MONTH})*\b")
_MONTH_WORD = re.compile(rf"\b{_MONTH}")
_HOLIDAY = re.compile(r"\b(" + "|".join(sorted((re.escape(h) for h in _HOLIDAYS), key=len,
                                               reverse=True)) + r")")


# A word every expression above begins with or holds: a query without one has no window,
# and is not run through the dozen patterns (~50 of ~60 µs after the model, measured; 78 %
# of the bench's queries). Built from the same vocabularies, so it cannot fall behind them;
# tests/test_retrieval.py checks it against the full scan.
_ANCHOR = re.compile(
    r"\b(?:ago|past|last|this|previous|yesterday|today|recently|lately|"
    + "|".join(sorted(_WEEKDAYS)) + "|"
    + "|".join(sorted(_MONTHS, key=len, reverse=True)) + "|"
    + "|".join(sorted((re.escape(h) for h in _HOLIDAYS), key=len, reverse=True))
    + ")")


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A period a query refers to: [start, end), and the words that named it."""

    start: datetime
    end: datetime
    text: str
    #: where the expression is in the query (character offsets)
    span: tuple[int, int] = (0, 0)

    @property
    def days(self) -> float:
        return (self.end - self.start) / _DAY


def _number(word: str | None) -> int:
    if word is None:
        return 1
    return int(word) if word.isdigit() else _NUMBERS[word]


def _back(day: datetime, n: int, unit: str) -> datetime:
    """`n` units before `day`, by the calendar (a month back from March 31 is February 28)."""
    if unit in ("day", "week"):
        return day - timedelta(days=n * int(_UNIT_DAYS[unit]))
    months = n * (12 if unit == "year" else 1)
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    return day.replace(year=year, month=month + 1,
                       day=min(day.day, calendar.monthrange(year, month + 1)[1]))


def _day_start(dt: datetime) -> datetime:
    return dt.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_window(year: int, month: int) -> tuple[datetime, datetime]:
    last = calendar.monthrange(year, month)[1]
    return (datetime(year, month, 1), datetime(year, month, last) + _DAY)


def _latest_month(month: int, now: datetime) -> tuple[datetime, datetime]:
    """The most recent `month` that has begun by `now`."""
    year = now.year if month <= now.month else now.year - 1
    start, end = _month_window(year, month)
    tz = now.tzinfo
    return start.replace(tzinfo=tz), end.replace(tzinfo=tz)


def _latest_date(month: int, day: int, now: datetime) -> datetime | None:
    for year in (now.year, now.year - 1):
        try:
            d = datetime(year, month, day, tzinfo=now.tzinfo)
        except ValueError:
            return None
        if d <= now:
            return d
    return None


def time_windows(text: str, now: datetime) -> list[TimeWindow]:
    """The periods `text` refers to, relative to `now` (aware or naive, kept as given)."""
    low = text.lower().replace("\u2019", "'")
    if _ANCHOR.search(low) is None:
        return []
    return _scan(low, now)


def _scan(low: str, now: datetime) -> list[TimeWindow]:
    """time_windows of a lowercased text, every pattern tried."""
    today = _day_start(now)
    out: list[TimeWindow] = []
    taken: list[tuple[int, int]] = []

    def add(m: re.Match[str], start: datetime, end: datetime) -> None:
        if any(m.start() < b and a < m.end() for a, b in taken):
            return  # part of an expression already read
        taken.append(m.span())
        out.append(TimeWindow(start, end, m.group(0), m.span()))

    for m in _AGO.finditer(low):
        n, unit = _number(m.group(1)), m.group(2)
        centre = _back(today, n, unit)
        # "a month ago" is rarely exact: a quarter of the span either side, at least a day
        half = timedelta(days=max(1, round(n * _UNIT_DAYS[unit] / 4)))
        add(m, centre - half, centre + half + _DAY)
    for m in _PAST_N.finditer(low):
        n, unit = _number(m.group(1)), m.group(2)
        add(m, _back(today, n, unit), today + _DAY)
    for m in _LAST_UNIT.finditer(low):
        which, unit = m.group(1), m.group(2)
        if unit == "weekend":
            # the Saturday and Sunday before today (today's, if today is a Sunday)
            sat = today - timedelta(days=(today.weekday() - 5) % 7 or 7)
            if which == "this" and today.weekday() >= 5:
                sat = today - timedelta(days=today.weekday() - 5)
            add(m, sat, sat + 2 * _DAY)
        elif unit == "week":
            monday = today - timedelta(days=today.weekday())
            if which == "this":
                add(m, monday, today + _DAY)
            else:
                add(m, monday - 7 * _DAY, monday)
        elif unit == "month":
            first = today.replace(day=1)
            if which == "this":
                add(m, first, today + _DAY)
            else:
                prev = (first - _DAY).replace(day=1)
                add(m, prev, first)
        else:  # year
            jan1 = today.replace(month=1, day=1)
            if which == "this":
                add(m, jan1, today + _DAY)
            else:
                add(m, jan1.replace(year=jan1.year - 1), jan1)
    for m in _LAST_WEEKDAY.finditer(low):
        back = (today.weekday() - _WEEKDAYS[m.group(1)]) % 7 or 7
        day = today - timedelta(days=back)
        add(m, day, day + _DAY)
    for m in _SIMPLE.finditer(low):
        word = m.group(1)
        if word == "yesterday":
            add(m, today - _DAY, today)
        elif word == "the day before yesterday":
            add(m, today - 2 * _DAY, today - _DAY)
        elif word in ("recently", "lately"):
            add(m, today - 30 * _DAY, today + _DAY)
        else:
            add(m, today, today + _DAY)
    for m in _HOLIDAY.finditer(low):
        when = _latest_date(*_HOLIDAYS[m.group(1)], now)
        if when is not None:
            start = _day_start(when)
            add(m, start, start + _DAY)
    for m in _MONTH_YEAR.finditer(low):
        month, year = _MONTHS[m.group(1)], int(m.group(2))
        s, e = _month_window(year, month)
        add(m, s.replace(tzinfo=now.tzinfo), e.replace(tzinfo=now.tzinfo))
    for m in _MONTH_DAY.finditer(low):
        when = _latest_date(_MONTHS[m.group(1)], int(m.group(2)), now)
        if when is not None:
            start = _day_start(when)
            add(m, start, start + _DAY)
    for m in _IN_MONTHS.finditer(low):
        months = [_MONTHS[w.group(1)] for w in _MONTH_WORD.finditer(m.group(0))]
        spans = [_latest_month(month, now) for month in months]
        add(m, min(s for s, _ in spans), max(e for _, e in spans))
    return out


def time_match(when: datetime, windows: Sequence[TimeWindow], min_slack: float = 2.0) -> float:
    """How well a moment fits the windows, in [0, 1]: 1 inside one, falling linearly to 0 at
    half the window's length (at least `min_slack` days) outside it; the best window counts."""
    best = 0.0
    for w in windows:
        if w.start <= when < w.end:
            return 1.0
        slack = max(min_slack, w.days / 2)
        gap = ((w.start - when) if when < w.start else (when - w.end)) / _DAY
        best = max(best, 1.0 - gap / slack)
    return best


def without_time_expressions(text: str, windows: Sequence[TimeWindow]) -> str:
    """The query without the words that named its time windows: they say when, not what,
    and as keywords they match memories that merely mention "three months"."""
    if not windows:
        return text
    out, last = [], 0
    for a, b in sorted(w.span for w in windows):
        out.append(text[last:a])
        last = b
    out.append(text[last:])
    rest = " ".join("".join(out).split())
    rest = re.sub(r"\s+([?.!,])", r"\1", rest)
    return rest if len(rest) >= 3 else text


def describe(windows: Iterable[TimeWindow]) -> list[str]:
    """Windows as short strings, for logs and explain output."""
    return [f"{w.text!r}: {w.start:%Y-%m-%d} .. {w.end:%Y-%m-%d}" for w in windows]


# -- question scaffolding -------------------------------------------------------------------

_SCAFFOLD = re.compile(
    r"^\s*(?:"
    r"(?:can|could|would|will) you (?:please )?(?:tell me |remind me |help me )?"
    r"|(?:how (?:many|much|long|often|far|old)|what|which|who|whom|whose|where|when|why|how)"
    r"(?: (?:is|are|was|were|do|does|did|have|has|had|am|will|would|can|should))?"
    r"(?: (?:i|my|we|you|the))?\b"
    r")",
    re.IGNORECASE,
)


def without_scaffolding(text: str) -> str:
    """The question without its opening words ("How many ... did I", "Can you tell me"), which
    say what kind of answer is wanted, not what it is about: memories are statements, and
    the embedding of the rest is closer to the statement that answers. Unchanged if nothing
    would be left."""
    rest = _SCAFFOLD.sub("", text, count=1).strip()
    return rest if len(rest) >= 3 else text


# -- coordinated questions --------------------------------------------------------------------

def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# A quoted title or a parenthesis is one unit; otherwise words and single punctuation marks.
_TOKEN = re.compile(r"'[^']{1,80}'(?=\W|$)|\"[^\"]{1,80}\"|\([^()]{1,40}\)|[#@]?[\w'’.-]+|[^\w\s]")
_COORD = frozenset({"and", "or"})
_DET = frozenset({"the", "a", "an", "my", "our", "his", "her", "their", "your", "its", "this",
                  "that", "these", "those"})
# Words a noun phrase does not run across: auxiliaries, pronouns, prepositions (except "of",
# which is crossed after a determiner: "the purchase of the coffee maker"), wh-words.
_STOP = _words("""
i me you he she we they it am is are was were be been being do does did have has had will of
would can could should may might must to at in on from for with about among amongst during
after before since by into onto over than until as between via per versus vs what which who
whom whose where when why how if whether while because so not no also both either neither
first then
""")
_MAX_SUBQUERIES = 4


def _tokens(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _is_word(tok: str) -> bool:
    return tok[0].isalnum() or tok[0] in "'\"("


def _left_item(toks: list[tuple[str, int, int]], i: int) -> int | None:
    """The index of the first token of the conjunct that ends just before token i."""
    j = i - 1
    start = None
    while j >= 0:
        word = toks[j][0].lower()
        if not _is_word(toks[j][0]) or word in _STOP or word in _COORD:
            break
        start = j
        if word in _DET:
            if j >= 2 and toks[j - 1][0].lower() == "of" and _is_word(toks[j - 2][0]):
                j -= 2  # "the purchase of the coffee maker": keep going
                continue
            break
        j -= 1
    return start


def _right_item(toks: list[tuple[str, int, int]], i: int) -> int | None:
    """The index of the last token of the conjunct that starts just after token i."""
    j = i + 1
    end = None
    while j < len(toks):
        word = toks[j][0].lower()
        if not _is_word(toks[j][0]) or word in _COORD:
            break
        if end is not None and word in ("that", "which", "who"):
            break  # a relative clause: "conferences that I might like"
        if word in _STOP:
            if word == "of" and end is not None and j + 1 < len(toks) \
                    and toks[j + 1][0].lower() in _DET:
                j += 1
                continue
            break
        end = j
        j += 1
    return end


def sub_queries(text: str) -> list[str]:
    """One query per item of a coordination ("X or Y", "between X and Y", "X, Y and Z"):
    the question with the other items left out. A question about two things is usually
    answered by two memories, each about one of them, and each closer to its own
    single-item question than to the whole. Empty when the question coordinates nothing.

    >>> sub_queries("Which did I buy first, the blue kettle or the stand mixer?")
    ['Which did I buy first, the blue kettle?', 'Which did I buy first, the stand mixer?']
    """
    toks = _tokens(text)
    out: list[str] = []
    for i, (tok, _, _) in enumerate(toks):
        if tok.lower() not in _COORD or len(out) >= _MAX_SUBQUERIES:
            continue
        a, b = _left_item(toks, i), _right_item(toks, i)
        if a is None or b is None:
            continue
        items = [(a, i - 1), (i + 1, b)]
        # a list: "Emma, Rachel and Alex"
        j = a - 1
        while j >= 1 and toks[j][0] == ",":
            k = _left_item(toks, j)
            if k is None or j - k > 3:
                break
            items.insert(0, (k, j - 1))
            j = k - 1
        start, end = toks[items[0][0]][1], toks[items[-1][1]][2]
        for s, e in items:
            piece = text[toks[s][1]:toks[e][2]]
            sub = " ".join((text[:start] + piece + text[end:]).split())
            if sub not in out and sub != text:
                out.append(sub)
    return out[:_MAX_SUBQUERIES]
