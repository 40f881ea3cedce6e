# ruff: noqa: SIM905  (word lists are kept as readable strings)
"""Supersession: is a new memory an update of, an extension of, or unrelated to an old one?

When a new memory lands close to an existing memory of the same scope (same tenant, user,
agent and namespace) but is not a near-duplicate, the write path asks `decide` which
relation holds, as MemContext's API reports it:

* ``updated``  - the new memory supersedes the old: same subject and attribute, changed
  value ("User lives in Berlin" -> "User moved to Munich");
* ``extended`` - the new memory adds detail about the old one's subject without
  contradicting it ("User has a dog" -> "User's dog is a beagle named Rex"); both stay;
* ``saved``    - merely related or unrelated (different subject, different attribute,
  another value of a many-valued attribute, a past or temporary fact).

No model is involved: a small, ordered rule set over shallow linguistic features (the
subject noun phrase and its possessor, predicate families, change/negation/additive/time
markers, values such as numbers and names, content-word overlap). The first rule that
fires decides, and its name and an English reason come back with every decision, with the
features it looked at. Thresholds are plain numbers in `Thresholds`. Optionally an
OpenAI-compatible chat endpoint (`LLMJudge`) decides instead; on any error the rules do.

See docs/supersession.md for the rules, the thresholds and the measured accuracy.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import httpx

Relation = Literal["updated", "extended", "saved"]
RELATIONS: tuple[Relation, ...] = ("updated", "extended", "saved")

__all__ = [
    "RELATIONS",
    "Decision",
    "LLMJudge",
    "Outcome",
    "Relation",
    "Subject",
    "TextFeatures",
    "Thresholds",
    "analyse",
    "compare_subjects",
    "decide",
    "decide_against",
    "parse_llm_answer",
    "same_entity",
    "stem",
]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The numbers the rules use. Defaults were tuned on the development part of
    tests/data/supersession_pairs.jsonl (never on its holdout part) with all-MiniLM-L6-v2
    cosines; see docs/supersession.md."""

    #: Pairs below this cosine are not compared at all: ``saved``. It is also the floor of
    #: the nearest-neighbour query the write path makes for candidates. MiniLM puts many
    #: genuine updates ("User works for Initech" / "User works for Globex": 0.42) between
    #: 0.4 and 0.6, so a floor much above 0.5 loses them; the rules, not the floor, reject
    #: the merely related pairs above it.
    candidate_floor: float = 0.40
    #: When the subject of one side cannot be parsed (no "User", "I", name or noun phrase
    #: found), the two sides count as having the same subject from this cosine on.
    same_subject_cosine: float = 0.80
    #: For open-ended attributes ("prefers X", "wants Y"), a new value with no word in
    #: common with the old one replaces it only from this cosine on: "prefers tea" /
    #: "prefers coffee" are alternatives (~0.75), "prefers dark mode" / "prefers concise
    #: answers" are two preferences (~0.4).
    same_attribute_cosine: float = 0.50
    #: Share of the old memory's content words (stemmed, subject words excluded) that the
    #: new one must repeat for "restates the old memory and adds to it" (``extended``).
    containment: float = 0.75
    #: Last resort, when no rule about subjects and predicates applies: ``extended`` if the
    #: content-word Jaccard overlap reaches this (and the cosine reaches
    #: same_subject_cosine), ``saved`` otherwise.
    fallback_jaccard: float = 0.5

    def __post_init__(self) -> None:
        for name in ("candidate_floor", "same_subject_cosine", "same_attribute_cosine",
                     "containment", "fallback_jaccard"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Thresholds.{name} must be within [0, 1] (got {value})")


@dataclass(frozen=True, slots=True)
class Decision:
    """One verdict. `rule` names the rule that fired (stable identifiers, listed in
    docs/supersession.md), `reason` explains it in English, `source` is "rules" or "llm"
    and `features` holds what the rules extracted (JSON-serialisable)."""

    relation: Relation
    reason: str
    rule: str
    similarity: float
    source: Literal["rules", "llm"] = "rules"
    features: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"relation": self.relation, "reason": self.reason, "rule": self.rule,
                "similarity": self.similarity, "source": self.source,
                "features": self.features}


# -- lexicons ------------------------------------------------------------------------------
# Small closed-class word lists and predicate families. They are English and general; none
# names an entity of the labelled set.

STOPWORDS = frozenset("""
a an the this that these those some any each every all both of to for with at in on from
by about as into onto over under than then there here it its it's is are was were be been
being am do does did done has have had having will would shall should can could may might
must and or but so if because while when where which who whom whose what how why whether
his her hers their theirs them they he she him i me my mine we us our ours you your yours
user users user's very really quite just also too still yet already again even only
mostly mainly usually often always sometimes ever much many more most less least
one's someone something somebody per via like
""".split())

# verbs/auxiliaries that end a subject noun phrase
AUX_VERBS = frozenset("""
is are was were be been being am do does did has have had having will would shall should
can could may might must got gets get goes go went going gone lives live lived living
works work worked working likes like liked loves love loved enjoys enjoy enjoyed prefers
prefer preferred hates hate dislikes dislike drinks drink drank eats eat ate uses use used
owns own owned speaks speak spoke plays play played wants want wanted needs need needed
keeps keep kept runs run ran makes make made takes take took becomes become became grew
grows grow left leaves leave sold sells sell bought buys buy began begins begin came
comes come holds hold held studies study studied says say said knows know knew thinks
think thought feels feel felt sees see saw met meets meet moved moves move joined joins
join quit quits stopped stops stop started starts start switched switches switch changed
changes change visits visit visited travels travel travelled traveled includes include
included contains contain builds build built wrote writes write reads read watches
watch supports support turns turn turned manages manage managed founded rents rent pays
pay paid costs cost drives drive drove cycles cycle walks walk departs depart leaves
arrives arrive belongs belong remains remain stays stay stayed
""".split())

ADVERB_STOPS = frozenset("""
now currently recently just also still no not never always usually often sometimes
actually finally already nowadays today yesterday tomorrow soon mostly mainly rarely
""".split())

PREPOSITIONS = frozenset(
    "of to for with at in on from by about into over under near during since until".split()
)
DETERMINERS = frozenset("a an the this that these those his her their my our your its".split())
TIME_NOUNS = frozenset("these days nowadays currently lately".split())
# after these a word that could be a verb is a noun ("favourite drink", "daily run")
PREMODIFIERS = frozenset("""favourite preferred current usual main primary daily morning
evening weekly regular new old first last best second home work go-to""".split())
_CORE_AUX = frozenset("is are was were am be been has have had will would does do did can "
                      "could should must may might".split())
# Relational nouns that hold one value at a time: "User's manager is X" -> "... is Y"
# replaces it, while "User's dog is a beagle" -> "... is afraid of storms" describes more.
FUNCTIONAL_HEADS = frozenset("""name surname nickname username handle address email e-mail
phone number timezone zone age birthday budget salary rent price cost fee rate plan tier
manager boss supervisor mentor doctor dentist therapist landlord lawyer accountant
deadline date time day schedule password pin colour color size type status title role
position job employer company team language editor browser os bank provider carrier
airline seat diet""".split())
FUNCTIONAL_MODIFIERS = frozenset("favourite preferred current usual main primary go-to "
                                 "default".split())
# sentiment verbs whose polarity flips a statement like a negation does
NEGATIVE_SENTIMENT = re.compile(r"\b(?:hates?|hated|dislikes?|disliked|detests?|can not "
                                r"stand|avoids?|avoided|refuses? to)\b")
# adjectives that open a subject-less memory ("Allergic to cats", "Afraid of heights")
PREDICATIVE_ADJECTIVES = frozenset("""afraid allergic fluent vegan vegetarian married single
based born keen fond aware scared proud""".split())
# words of the markers below: not content ("since", "anymore" say how, not what)
MARKER_WORDS = frozenset("anymore since instead longer actually ago either too".split())

NUMBER_WORDS = {
    "zero": "0", "one": "1", "once": "1", "two": "2", "twice": "2", "three": "3",
    "thrice": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
    "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "fifteen": "15",
    "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100",
}
MONTHS_DAYS = frozenset("""
january february march april may june july august september october november december
jan feb mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday
saturday sunday mondays tuesdays wednesdays thursdays fridays saturdays sundays
""".split())

# spelling variants folded before comparing
VARIANTS = {"favorite": "favourite", "favourites": "favourite", "favorites": "favourite",
            "neighbor": "neighbour", "color": "colour", "colors": "colour",
            "practices": "practises", "practice": "practise", "traveling": "travelling",
            "kids": "kid", "children": "kid", "child": "kid"}

# relatives and roles whose noun stands for a relation stated with another word
ROLE_SYNONYMS: dict[str, frozenset[str]] = {
    "wife": frozenset({"married", "marry", "spouse", "wed", "wedding"}),
    "husband": frozenset({"married", "marry", "spouse", "wed", "wedding"}),
    "spouse": frozenset({"married", "marry", "wife", "husband", "wed"}),
    "partner": frozenset({"married", "dating", "boyfriend", "girlfriend", "spouse"}),
    "son": frozenset({"kid", "kids", "children", "child"}),
    "daughter": frozenset({"kid", "kids", "children", "child"}),
    "kid": frozenset({"son", "daughter", "kids", "children", "child"}),
}

# Markers. "strong" change markers say by themselves that a value changed; "weak" ones only
# support a change that the values show.
STRONG_CHANGE = [
    r"no longer", r"not any ?more", r"any ?more", r"no more", r"switched", r"switching",
    r"switch(?:es)? to", r"moved (?:to|from|back|away|out|in)\b", r"moving to",
    r"relocated", r"relocating", r"changed", r"changing", r"instead", r"replaced",
    r"quit", r"stopped", r"gave up", r"given up", r"cancel+ed", r"rescheduled",
    r"postponed", r"pushed (?:back|to|out)", r"brought forward", r"moved (?:up )?to",
    r"upgraded", r"downgraded", r"went (?:up|down)", r"gone (?:up|down)", r"increased",
    r"decreased", r"dropped to", r"raised to", r"rose to", r"grew to", r"shrank to",
    r"became", r"has become", r"is now called", r"renamed", r"actually", r"correction",
    r"corrected", r"rather than", r"from now on", r"divorced", r"separated", r"broke up",
    r"graduated", r"sold (?:his|her|their|the|my)",
    r"left (?:the|his|her|their|my) (?:job|company|team)",
    r"not \w+(?: \w+)?, but", r", not ", r"^not ",
]
# ("new" and "since" are not among them: "the new baby", "since it helps" are too common)
WEAK_CHANGE = [r"\bnow\b", r"currently", r"these days", r"nowadays", r"at the moment",
               r"\bany longer\b", r"\bleft\b", r"\bjoined\b"]
ADDITIVE = [r"\balso\b", r"\btoo\b(?=\s*(?:[,.;!]|$))", r"\bas well\b",
            r"\beither\b(?=\s*(?:[,.;!]|$))", r"\bin addition\b", r"\badditionally\b",
            r"\banother\b", r"\bbesides\b", r"\bas well as\b"]
# negation of the statement itself ("without sugar", "no sugar" negate a detail, not it)
NEGATION = [r"\bnot\b", r"\bnever\b", r"\bno longer\b", r"\bno more\b", r"\bneither\b",
            r"\bnor\b",
            # the past habitual says the statement no longer holds: "User used to smoke"
            r"\bused to\b", r"\bpreviously\b", r"\bformerly\b"]
# The new memory states a fact bounded to the past, a temporary one or a plan: such a fact
# does not replace a standing one.
NON_CURRENT = [
    r"as a (?:child|kid|teenager|student)", r"\bused to\b",
    r"when (?:i|he|she|they|user) (?:was|were)",
    r"\bprevious(?:ly)?\b", r"\bformer(?:ly)?\b", r"\bback in\b", r"\bin (?:19|20)\d\d\b",
    r"\b\d+ (?:years?|months?|weeks?|days?) ago\b", r"\blast (?:year|month|week|spring|"
    r"summer|autumn|fall|winter|weekend|night|time)\b", r"\bthis (?:week|weekend|month|"
    r"morning|afternoon|evening)\b", r"\btoday\b", r"\btonight\b", r"\btomorrow\b",
    r"\buntil\b", r"\btill\b", r"\bfor a (?:conference|trip|holiday|vacation|visit|week|"
    r"few days|meeting)\b", r"\bon (?:a )?(?:trip|holiday|vacation|business trip|leave)\b",
    r"\btravel+ing\b", r"\bvisiting\b", r"\bvisited\b", r"\bfor the weekend\b",
    r"\btemporar(?:y|ily)\b", r"\bnext (?:year|month|week|spring|summer|autumn|fall|"
    r"winter|weekend|time)\b", r"\bplans? to\b", r"\bplanning to\b", r"\bgoing to\b",
    r"\bhopes? to\b", r"\bwants? to (?:learn|visit|go|try|buy|move|become)\b",
    r"\bwas born\b", r"\blived\b", r"\bworked\b",
]

# Predicate families: which attribute a memory talks about, and whether that attribute
# holds one value at a time ("single": a new value replaces the old), many ("multi": a new
# value is another fact), is a state named by the keyword itself ("state": "married" ->
# "divorced", "vegan" -> "vegetarian"), or holds one value per topic ("open": "prefers
# tea" -> "prefers coffee" replaces it, "prefers dark mode" does not).
FAMILIES: dict[str, tuple[str, str]] = {
    "location": ("single", r"\b(?:lives?|living|lived|resides?|residing|based|settled|"
                           r"relocat\w*|mov(?:ed|ing|es?) (?:to|from|back)|home is in)\b"),
    "birthplace": ("single", r"\b(?:born in|grew up in|is from|comes from|hometown)\b"),
    "address": ("single", r"\baddress\b"),
    "employer": ("single", r"\b(?:(?:works?|working|worked)(?: \w+ly)? (?:at|for)|employed|"
                           r"job|employer|joined|hired|company|startup|left)\b"),
    # occupations count as the person's role only when predicated ("is a nurse")
    "role": ("single", r"\b(?:works? as|job title|position as|senior|junior|retired|"
                       r"freelanc\w*|promoted|(?:is|am|are|was) (?:now )?an? (?:\w+ ){0,2}"
                       r"(?:engineer|manager|developer|designer|nurse|teacher|doctor|"
                       r"student|intern|lawyer|accountant|consultant|researcher|scientist|"
                       r"analyst|architect|chef|writer|officer|director|lead))\b"),
    "name": ("single", r"\b(?:name|names|named|called|call me|goes by|spelled|spelt|"
                       r"username|nickname|handle)\b"),
    "age": ("single", r"\b(?:years? old|aged?|turns|turned|birthday|^(?:is|am) \d{1,3}"
                      r"(?: now)?$)"),
    "contact": ("single", r"\b(?:e-?mail|phone|number|contact\w*|reach|slack|telegram|"
                          r"whatsapp)\b"),
    "timezone": ("single", r"\b(?:time ?zone|utc|gmt|[pecm][sd]t)\b"),
    "relationship": ("state", r"\b(?:married|engaged|dating|single|divorced|separated|"
                               r"widowed|girlfriend|boyfriend|fianc\w*)\b"),
    "schedule": ("single", r"\b(?:meeting|sync|appointment|call|deadline|due|flight|"
                           r"scheduled|shifts?)\b"),
    "waking": ("single", r"\b(?:wakes? up|woke up|gets? up|alarm)\b"),
    "sleep": ("single", r"\b(?:goes to bed|bedtime|sleeps?|falls? asleep)\b"),
    "amount": ("single", r"\b(?:budget|salary|rent|price|costs?|pays?|paid|earns?|"
                         r"income|expectation|\$|€|£|euros?|dollars?|pounds?)\b"),
    "plan": ("single", r"\b(?:subscription|plan|tier|membership)\b"),
    "diet": ("state", r"\b(?:vegan|vegetarian|pescatarian|omnivore|keto|meat|diet)\b"),
    "choice": ("open", r"\b(?:prefers?|preferred|preference|favou?rite|wants (?:replies|"
                         r"answers|responses)|replies in|answers in)\b"),
    "commute": ("single", r"\b(?:drives?|cycles?|bikes?|commutes?|walks? to|takes? the "
                          r"(?:bus|train|tube))\b"),
    "frequency": ("single", r"\b(?:times a (?:week|day|month)|twice|once|every day|daily|"
                            r"weekly)\b"),
    "tool": ("multi", r"\b(?:uses?|using|editor|laptop|phone|notes? in|app)\b"),
    "likes": ("multi", r"\b(?:likes?|loves?|enjoys?|hates?|dislikes?|fan of|into|"
                       r"passionate about)\b"),
    "possession": ("multi", r"\b(?:has|have|owns?|bought|got a)\b(?! been)"),
    "language": ("multi", r"\b(?:speaks?|fluent|native|language)\b"),
    "learning": ("multi", r"\b(?:learning|studying|studies|course|practis\w*)\b"),
    "health": ("multi", r"\b(?:allerg\w*|diabetes|asthma|medication|condition|"
                        r"intoleran\w*|blood type)\b"),
    "fear": ("multi", r"\b(?:afraid|scared|fear|phobia)\b"),
    "activity": ("multi", r"\b(?:plays?|watch(?:es)?|reads?|goes|volunteers?|runs?|"
                          r"swims?|hikes?|meditates?|smokes?|drinks?|eats?|cooks?|cooking)\b"),
    "family": ("multi", r"\b(?:sister|brother|son|daughter|kids?|children|mother|father|"
                        r"parents?|grandmother|grandfather|cousin|baby)\b"),
}
_FAMILY_RES = {name: re.compile(pat) for name, (_, pat) in FAMILIES.items()}
_ANY_FAMILY = re.compile("|".join(f"(?:{rx.pattern})" for rx in _FAMILY_RES.values()))


class _Cues:
    """A list of cue patterns and one alternation of them all: most texts match no cue of
    a list, and one search of the alternation says so (analyse() ran ~600k single-pattern
    searches per 2,300 memories ingested)."""

    __slots__ = ("any", "patterns")

    def __init__(self, patterns: Iterable[re.Pattern[str]]) -> None:
        self.patterns = list(patterns)
        self.any = re.compile("|".join(f"(?:{p.pattern})" for p in self.patterns))


def _compile(patterns: Iterable[str]) -> _Cues:
    return _Cues(re.compile(p if p.startswith(("\\b", "^", ",")) else rf"\b{p}\b")
                 for p in patterns)


_STRONG = _compile(STRONG_CHANGE)
_WEAK = _compile(WEAK_CHANGE)
_ADDITIVE = _compile(ADDITIVE)
_NEGATION = _compile(NEGATION)
_NON_CURRENT = _compile(NON_CURRENT)

# -- tokenising ------------------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z0-9$€£+@#][\w$€£+@#.:/'’&-]*|[,;()]")
_IRREGULAR_NOT = {"won't": "will not", "can't": "can not", "cannot": "can not",
                  "shan't": "shall not"}
_SUBJECT_PRONOUNS = {"i": "user", "me": "user", "my": "user", "user": "user",
                     "users": "user", "he": "user", "she": "user", "they": "user",
                     "his": "user", "her": "user", "their": "user"}
_LEAD_SKIP = frozenset("actually update note correction fyi so well now currently also "
                       "today recently btw".split())
_TIME_LEAD = frozenset("since until as from after before starting last this next in on "
                       "during".split())


def _expand(text: str) -> str:
    t = text.replace("’", "'")
    for k, v in _IRREGULAR_NOT.items():
        t = re.sub(rf"\b{k}\b", v, t, flags=re.I)
    t = re.sub(r"(\w)n't\b", r"\1 not", t, flags=re.I)
    t = re.sub(r"\b(I)'m\b", r"\1 am", t, flags=re.I)
    t = re.sub(r"(\w)'(re|ve|ll|d)\b",
               lambda m: m.group(1) + {"re": " are", "ve": " have", "ll": " will",
                                       "d": " would"}[m.group(2).lower()], t)
    t = re.sub(r"\b(he|she|it|that|there|what)'s\b", r"\1 is", t, flags=re.I)
    return t


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for m in _TOKEN.finditer(_expand(text)):
        tok = m.group(0)
        if tok not in ",;()":
            tok = tok.rstrip(".:/-'")
            if not tok:
                continue
        if tok.lower().endswith("'s") and len(tok) > 2:
            out.extend([tok[:-2], "'s"])
        elif tok.endswith("s'") and len(tok) > 2:
            out.extend([tok[:-1], "'s"])
        else:
            out.append(tok)
    return out


def _norm(word: str) -> str:
    w = word.lower()
    w = VARIANTS.get(w, w)
    return NUMBER_WORDS.get(w, w)


@functools.lru_cache(maxsize=16384)
def stem(word: str) -> str:
    """A deliberately light English stemmer: enough to match lives/live/living/lived."""
    w = _norm(word)
    if not w.isalpha() or len(w) <= 3:
        return w
    for suffix in ("ing", "ies", "ied", "ed", "es", "s"):
        if suffix == "s" and w.endswith(("ss", "us", "is")):
            break
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            base = w[: -len(suffix)]
            if suffix in ("ies", "ied"):
                base += "y"
            if suffix in ("ing", "ed") and len(base) > 3 and base[-1] == base[-2] \
                    and base[-1] not in "lsz":
                base = base[:-1]
            w = base
            break
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    return w


def _is_content(w: str) -> bool:
    n = _norm(w)
    return (n not in STOPWORDS and w not in (",", ";", "(", ")", "'s") and n not in TIME_NOUNS
            and n not in ADVERB_STOPS and n not in MARKER_WORDS)


def _ordered_content(words: Iterable[str]) -> list[str]:
    return [stem(w) for w in words if _is_content(w)]


def _is_value(tok: str, first: bool) -> bool:
    """Numbers, names, dates, times, e-mail addresses: the "values" a fact may change."""
    low = tok.lower()
    if any(ch.isdigit() for ch in tok) or low in NUMBER_WORDS or "@" in tok:
        return True
    if low in MONTHS_DAYS:
        return True
    return (not first and tok[:1].isupper() and low not in _SUBJECT_PRONOUNS
            and low not in STOPWORDS)


# -- analysis --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subject:
    """What a memory is about: `root` is the person ("user", a name) or None for a thing
    ("the Atlas project"); `head`, `modifiers`, `names` and `attachments` describe the
    possessed or named entity ("User's [work] email", "User's dog [Rex]", "flight [to
    Berlin]"); `head` is None when the memory is about the root itself."""

    root: str | None
    head: str | None = None
    modifiers: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    attachments: frozenset[str] = frozenset()
    parsed: bool = True

    def words(self) -> set[str]:
        out = set(self.modifiers | self.names | self.attachments)
        if self.head:
            out.add(self.head)
        return out

    def describe(self) -> str:
        if not self.parsed:
            return "?"
        parts = [self.root or ""]
        if self.head:
            np = " ".join(sorted(self.modifiers)) + " " + self.head
            if self.names:
                np += " " + "/".join(sorted(self.names))
            if self.attachments:
                np += " (" + " ".join(sorted(self.attachments)) + ")"
            parts.append(np.strip())
        return "'s ".join(p for p in parts if p) if self.root else parts[-1]


@dataclass(frozen=True, slots=True)
class TextFeatures:
    """What the rules see of one memory (see `analyse`)."""

    text: str
    subject: Subject
    predicate: tuple[str, ...]  # tokens after the subject
    verb: str  # stemmed main verb of the predicate; "be" for a copula, "have" for possession
    possessed: Subject | None  # for "has/owns <NP>": the thing possessed
    content: frozenset[str]  # stemmed content words of the predicate (subject words removed)
    objects: tuple[str, ...]  # content words minus verbs and attribute triggers, in order
    values: frozenset[str]  # normalised value tokens of the predicate: names, numbers, dates
    numbers: frozenset[str]
    families: frozenset[str]  # attribute families of the predicate and of the subject phrase
    pred_families: frozenset[str]  # of the predicate only
    strong_change: tuple[str, ...]
    weak_change: tuple[str, ...]
    additive: tuple[str, ...]
    negated: bool  # the statement is negative: a negation, or "hates"/"dislikes"/"avoids"
    non_current: tuple[str, ...]


def _looks_verb(tok: str, prev: str | None, consumed: int) -> bool:
    low = tok.lower()
    if low in AUX_VERBS:
        return True
    if consumed == 0 or not tok.isalpha() or not tok.islower():
        return False
    if prev is not None and (prev.lower() in PREPOSITIONS or prev.lower() in DETERMINERS
                             or _is_value(prev, first=True)):
        return False
    return low.endswith(("s", "ed")) and not low.endswith(("ss", "us", "is"))


def _parse_np(toks: list[str], i: int, after_possessive: bool = False) -> tuple[int, list[str]]:
    """Consume a noun phrase from toks[i]; return the index after it and its words. After a
    possessive ("User's", "my") the first word is a noun even if it could be a verb
    ("User's work email", "my drink order")."""
    words: list[str] = []
    while i < len(toks):
        tok = toks[i]
        low = tok.lower()
        if tok in ",;()" or low in ADVERB_STOPS or low in ("who", "which", "that", "and"):
            break
        prev = words[-1].lower() if words else None
        noun_slot = ((prev is not None and _norm(prev) in PREMODIFIERS)
                     or (prev is None and after_possessive)) and low not in _CORE_AUX
        if not noun_slot and _looks_verb(tok, words[-1] if words else None, len(words)):
            break
        words.append(tok)
        i += 1
    return i, words


def _np_subject(root: str | None, words: list[str], sentence_initial: bool) -> Subject:
    core: list[tuple[str, bool]] = []
    attach: set[str] = set()
    in_pp = False
    for k, w in enumerate(words):
        low = w.lower()
        if low in PREPOSITIONS:
            in_pp = True
            continue
        if low in DETERMINERS or low in TIME_NOUNS or low in STOPWORDS:
            continue
        if _is_value(w, first=True):  # numbers, dates, times: values, not identity
            continue
        if in_pp:
            attach.add(_norm(w))
            continue
        first = sentence_initial and k == 0
        core.append((w, w[:1].isupper() and not first))
    names = frozenset(_norm(w) for w, cap in core if cap)
    common = [stem(w) for w, cap in core if not cap]
    if not common and names:  # "the Atlas" / "Alice": the name is the head
        return Subject(root=root, head=None, names=names, attachments=frozenset(attach))
    head = common[-1] if common else None
    return Subject(root=root, head=head, modifiers=frozenset(common[:-1]), names=names,
                   attachments=frozenset(attach))


def _implicit_subject(toks: list[str], i: int) -> bool:
    """Does the text start with its predicate, the user being implied? A verb form
    ("Prefers", "Switched", "Planning") or a predicative adjective before a preposition
    ("Allergic to", "Fluent in") not itself followed by a verb ("James lives ...")."""
    low = toks[i].lower()
    j = i + 1
    while j < len(toks) and toks[j].lower() in ADVERB_STOPS:
        j += 1
    nxt = toks[j].lower() if j < len(toks) else ""
    if nxt in ("'s", ",") or nxt in AUX_VERBS:
        return False
    if low in AUX_VERBS:
        return True
    if low in STOPWORDS or not low.isalpha() or len(low) <= 3:
        return False
    if low.endswith(("s", "ed", "ing")) and not low.endswith(("ss", "us", "is")):
        return True
    return nxt in PREPOSITIONS and (
        low in PREDICATIVE_ADJECTIVES
        or low.endswith(("ic", "ous", "ful", "ive", "ent", "ant", "able", "ible")))


def _parse_subject(toks: list[str]) -> tuple[Subject, int]:
    i = 0
    # leading discourse words and time phrases: "Actually, ...", "Since January the user ..."
    while i < len(toks) and (toks[i].lower() in _LEAD_SKIP or toks[i] == ","):
        i += 1
    if i < len(toks) and toks[i].lower() in _TIME_LEAD:
        j = i
        while j < min(len(toks), i + 6):
            if toks[j] == ",":
                i = j + 1
                break
            if toks[j].lower() in ("user", "i", "my") or (
                    toks[j].lower() == "the" and j + 1 < len(toks)
                    and toks[j + 1].lower() == "user"):
                i = j
                break
            j += 1
    start = i
    if i < len(toks) and toks[i].lower() == "the" and i + 1 < len(toks) \
            and toks[i + 1].lower() in ("user", "users"):
        i += 1
    if i >= len(toks):
        return Subject(root=None, parsed=False), i
    tok = toks[i]
    low = tok.lower()
    nxt = toks[i + 1] if i + 1 < len(toks) else ""
    root: str | None = None
    possessive = False
    if low in ("my", "his", "her", "their"):
        root, possessive = "user", True
        i += 1
    elif low in _SUBJECT_PRONOUNS:
        root = "user"
        i += 1
        if nxt == "'s":
            possessive = True
            i += 1
    elif i == start and _implicit_subject(toks, i):
        # "Prefers dark mode", "Codes mostly in Rust", "Allergic to cats": about the user
        return Subject(root="user"), i
    elif tok[:1].isupper() and low not in STOPWORDS and (
            nxt == "'s" or nxt.lower() in AUX_VERBS or nxt.lower() in ADVERB_STOPS
            or _looks_verb(nxt, tok, 1)):
        root = _norm(tok)
        i += 1
        if nxt == "'s":
            possessive = True
            i += 1
    if root is not None and not possessive:
        return Subject(root=root), i
    j, words = _parse_np(toks, i, after_possessive=possessive)
    if not words:
        return (Subject(root=root) if root else Subject(root=None, parsed=False)), j
    return _np_subject(root, words, sentence_initial=(root is None and i == start)), j


def _find(cues: _Cues, text: str) -> tuple[str, ...]:
    if not cues.any.search(text):
        return ()
    found = (m.group(0).strip(" ,") for p in cues.patterns for m in [p.search(text)] if m)
    return tuple(dict.fromkeys(found))


_COPULA = frozenset("is are was were am be been being".split())
_AUX_SKIP = frozenset("will would do does did can could should must may might shall to "
                      "longer more".split()) | ADVERB_STOPS
_AUX_PAIRS = frozenset({("has", "been"), ("have", "been"), ("had", "been"), ("used", "to")})
_POSSESS = frozenset("has have had owns own owned got".split())
_ASPECTUAL = frozenset("quit quits stopped stops started starts began begins keeps kept "
                       "continues continued finished resumed".split())
_PARTICIPLES = frozenset("held written built born called named based known made kept "
                         "taken given done seen run set spelled spelt".split())


def _main_verb(pred: list[str]) -> tuple[str, int]:
    """The predicate's main verb (stemmed; "be" for a copula, "have" for possession) and
    the index of the token after it."""
    low = [t.lower() for t in pred]
    i, copula = 0, False
    while i < len(low):
        t = low[i]
        if t in _COPULA:
            copula = True
        elif (t, low[i + 1] if i + 1 < len(low) else "") in _AUX_PAIRS:
            pass  # "has been", "used to"
        elif t not in _AUX_SKIP and t not in ",;()":
            break
        i += 1
    if i >= len(low):
        return ("be" if copula else ""), i
    t = low[i]
    if copula:
        if t.isalpha() and (t.endswith(("ed", "ing")) or t in _PARTICIPLES):
            return stem(t), i + 1
        return "be", i
    if t in _POSSESS:
        return "have", i + 1
    # "quit smoking", "stopped eating meat", "started running": the gerund is the predicate
    if t in _ASPECTUAL and i + 1 < len(low) and low[i + 1].endswith("ing"):
        return stem(low[i + 1]), i + 2
    return stem(t), i + 1


_AUX_STEMS = frozenset(stem(w) for w in AUX_VERBS)
# a sentence ends at . ! ? ; after a lower-case word (not "Dr." or "Mr.") before a capital
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)][a-z0-9)])[.;!?]\s+(?=[A-Z])")
_ROLE_SYNONYM_STEMS = {stem(k): frozenset(stem(w) for w in v) for k, v in ROLE_SYNONYMS.items()}
_FUNCTIONAL_HEAD_STEMS = frozenset(stem(w) for w in FUNCTIONAL_HEADS)
_FUNCTIONAL_MODIFIER_STEMS = frozenset(stem(w) for w in FUNCTIONAL_MODIFIERS)


def _families(text: str) -> set[str]:
    if not _ANY_FAMILY.search(text):
        return set()
    return {name for name, rx in _FAMILY_RES.items() if rx.search(text)}


def _trigger_stems(text: str) -> set[str]:
    out: set[str] = set()
    if not _ANY_FAMILY.search(text):
        return out
    for rx in _FAMILY_RES.values():
        for m in rx.finditer(text):
            out.update(stem(w) for w in m.group(0).split())
    return out


@functools.lru_cache(maxsize=4096)
def analyse(text: str) -> TextFeatures:
    """The features of one memory text (deterministic, no model). Only its first sentence
    counts: memories state their fact first, and the sentences after it are context ("Do
    not bring it up in front of Hugo.") whose names and words are not the fact's values."""
    toks = _tokens(_SENTENCE_END.split(text, maxsplit=1)[0])
    subject, end = _parse_subject(toks)
    pred = toks[end:]
    low = " ".join(t.lower() for t in toks if t != "'s").replace(" ,", ",")
    pred_low = " ".join(t.lower() for t in pred if t != "'s").replace(" ,", ",")
    subj_low = " ".join(t.lower() for t in toks[:end] if t != "'s")
    subject_words = subject.words()
    content = [w for w in _ordered_content(pred) if w not in subject_words]
    verb, after_verb = _main_verb(pred)
    skip = _trigger_stems(pred_low) | _AUX_STEMS | {verb}
    objects = tuple(dict.fromkeys(w for w in content if w not in skip))
    possessed = None
    if verb == "have":
        j, words = _parse_np(pred, after_verb)
        if words:
            possessed = _np_subject(None, words, sentence_initial=False)
            # "a goldfish named Pepper": the name identifies the thing possessed
            if j + 1 < len(pred) and pred[j].lower() in ("named", "called") \
                    and pred[j + 1][:1].isupper():
                possessed = replace(possessed, names=possessed.names | {_norm(pred[j + 1])})
    values = {_norm(t) for k, t in enumerate(pred) if _is_value(t, first=(end == 0 and k == 0))}
    numbers = {v for v in values if any(ch.isdigit() for ch in v)}
    pred_families = _families(pred_low)
    strong = _find(_STRONG, low)
    # "left Acme", "quit Initech": leaving a named organisation or place
    strong += tuple(f"{t.lower()} {n}" for t, n in itertools.pairwise(toks)
                    if t.lower() in ("left", "leaving", "quit") and n[:1].isupper())
    # an entity subject names its attribute: "User's phone number is ..." is about contact
    families = pred_families | (_families(subj_low) if subject.head else set())
    return TextFeatures(
        text=text, subject=subject, predicate=tuple(pred), verb=verb, possessed=possessed,
        content=frozenset(content), objects=objects, values=frozenset(values),
        numbers=frozenset(numbers), families=frozenset(families),
        pred_families=frozenset(pred_families), strong_change=strong,
        weak_change=_find(_WEAK, low), additive=_find(_ADDITIVE, low),
        negated=bool(_find(_NEGATION, low)) != bool(NEGATIVE_SENTIMENT.search(low)),
        non_current=_find(_NON_CURRENT, low),
    )


# -- comparing subjects -----------------------------------------------------------------------

SubjectRelation = Literal["same_root", "same_entity", "elaborates", "different", "unknown"]


def _compatible(a: frozenset[str], b: frozenset[str]) -> bool:
    return a <= b or b <= a


def _mentions(entity: Subject, other: TextFeatures) -> bool:
    """Does the other memory (about the root itself) mention this entity?"""
    assert entity.head is not None
    words = set(other.content) | {stem(t) for t in other.predicate}
    if entity.head in words:
        return True
    return bool(_ROLE_SYNONYM_STEMS.get(entity.head, frozenset()) & words)


def same_entity(a: Subject, b: Subject) -> bool:
    """Same head noun, and modifiers, names and attachments that do not contradict
    ("User's [home] address" = "User's address"; "[work] email" != "[personal] email";
    "meeting with Bob" != "meeting with Alice")."""
    if a.head is None and b.head is None:
        return bool(a.names & b.names)
    return (a.head == b.head and _compatible(a.modifiers, b.modifiers)
            and _compatible(a.names, b.names) and _compatible(a.attachments, b.attachments))


def compare_subjects(new: TextFeatures, old: TextFeatures, similarity: float,
                     th: Thresholds) -> tuple[SubjectRelation, str]:
    a, b = new.subject, old.subject
    if not a.parsed or not b.parsed:
        if similarity >= th.same_subject_cosine:
            return "unknown", "subject not parsed; cosine says same subject"
        return "different", "subject not parsed and cosine below same_subject_cosine"
    if a.root != b.root and a.root is not None and b.root is not None:
        return "different", f"different people: {a.root} vs {b.root}"
    if (a.root == b.root or None in (a.root, b.root)) and a.head and b.head:
        if same_entity(a, b):
            return "same_entity", f"same subject: {a.describe()}"
        return "different", f"different subjects: {a.describe()} vs {b.describe()}"
    if a.root == b.root and a.head is None and b.head is None:
        return "same_root", f"both about {a.root}"
    # one side names an entity, the other is about a person (or the root is missing)
    entity, other = (a, old) if a.head else (b, new)
    if entity.head and _mentions(entity, other):
        return "elaborates", f"{entity.describe()} is mentioned by the other memory"
    return "different", f"different subjects: {a.describe()} vs {b.describe()}"


# -- the rules --------------------------------------------------------------------------------


def _coverage(new: TextFeatures, old: TextFeatures) -> float:
    if not old.content:
        return 1.0 if new.content else 0.0
    return len(old.content & new.content) / len(old.content)


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def _conflict(new: TextFeatures, old: TextFeatures) -> tuple[bool, str]:
    """Do the two memories give different values (numbers first, then names/dates)? A name
    one side uses to identify its subject ("User's manager Tom Becker") is not a value."""
    if new.numbers - old.numbers and old.numbers - new.numbers:
        return True, (f"numbers differ: {sorted(old.numbers - new.numbers)} -> "
                      f"{sorted(new.numbers - old.numbers)}")
    nv = new.values - old.subject.names
    ov = old.values - new.subject.names
    if nv - ov and ov - nv:
        return True, f"values differ: {sorted(ov - nv)} -> {sorted(nv - ov)}"
    return False, ""


def _substitution(new: TextFeatures, old: TextFeatures) -> tuple[str, str] | None:
    """The same statement with one word swapped ("prefers [window] seats on flights" ->
    "[aisle] seats"): the old and the new word, else None."""
    a, b = new.objects, old.objects
    if len(a) != len(b) or len(a) < 2:
        return None
    diff = [(y, x) for x, y in zip(a, b, strict=True) if x != y]
    return diff[0] if len(diff) == 1 else None


def _functional(subject: Subject) -> bool:
    return subject.head is not None and (
        subject.head in _FUNCTIONAL_HEAD_STEMS
        or bool(subject.modifiers & _FUNCTIONAL_MODIFIER_STEMS))


def _single(families: Iterable[str]) -> list[str]:
    return sorted(f for f in families if FAMILIES[f][0] in ("single", "state", "open"))


def _state_change(new: TextFeatures, old: TextFeatures, family: str) -> tuple[str, str] | None:
    """For a state family: the old and new state words when they differ."""
    if FAMILIES[family][0] != "state":
        return None
    rx = _FAMILY_RES[family]
    a = {m.group(0) for m in rx.finditer(" ".join(new.predicate).lower())}
    b = {m.group(0) for m in rx.finditer(" ".join(old.predicate).lower())}
    if a and b and not (a & b):
        return ", ".join(sorted(b)), ", ".join(sorted(a))
    return None


def decide(new_text: str, old_text: str, similarity: float,
           thresholds: Thresholds | None = None, judge: LLMJudge | None = None) -> Decision:
    """Classify the relation of a new memory to an existing one of the same scope.

    `similarity` is their cosine. With a `judge`, pairs at or above the candidate floor go
    to the LLM first; its answer wins unless it fails, and then the rules decide (the
    reason says so)."""
    th = thresholds or Thresholds()
    if not math.isfinite(similarity):
        raise ValueError(f"similarity must be a finite number (got {similarity!r})")
    if judge is not None and similarity >= th.candidate_floor:
        verdict = judge.judge(new_text, old_text, similarity)
        if isinstance(verdict, Decision):
            return verdict
        fallback = _rules(new_text, old_text, similarity, th)
        return Decision(fallback.relation, f"{fallback.reason} (LLM judge failed: {verdict})",
                        fallback.rule, fallback.similarity, "rules",
                        {**fallback.features, "llm_error": verdict})
    return _rules(new_text, old_text, similarity, th)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict on a new memory against its nearest neighbours: `relation` is
    ``updated`` if any neighbour is superseded, else ``extended`` if any is extended, else
    ``saved``; `superseded` and `extended` list those neighbours' ids (most similar first),
    and `decisions` has every (id, Decision) that was made."""

    relation: Relation
    superseded: tuple[str, ...]
    extended: tuple[str, ...]
    decisions: tuple[tuple[str, Decision], ...]


def decide_against(new_text: str, candidates: Iterable[tuple[str, str, float]],
                   thresholds: Thresholds | None = None, judge: LLMJudge | None = None,
                   max_candidates: int = 5) -> Outcome:
    """`decide` against several existing memories of the same scope: `candidates` are
    (id, content, cosine) triples, e.g. the store's nearest neighbours of the new memory.
    Those below the candidate floor are skipped; the `max_candidates` most similar of the
    rest (ties broken by id, so the result does not depend on the input order) are judged."""
    th = thresholds or Thresholds()
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be >= 1 (got {max_candidates})")
    pool = sorted(((mid, text, float(sim)) for mid, text, sim in candidates
                   if float(sim) >= th.candidate_floor), key=lambda c: (-c[2], c[0]))
    decisions = tuple((mid, decide(new_text, text, sim, th, judge))
                      for mid, text, sim in pool[:max_candidates])
    superseded = tuple(mid for mid, d in decisions if d.relation == "updated")
    extended = tuple(mid for mid, d in decisions if d.relation == "extended")
    relation: Relation = "updated" if superseded else "extended" if extended else "saved"
    return Outcome(relation, superseded, extended, decisions)


def _rules(new_text: str, old_text: str, similarity: float, th: Thresholds) -> Decision:
    sim = float(similarity)
    if sim < th.candidate_floor:
        return Decision("saved", f"below_floor: cosine {sim:.2f} < candidate_floor "
                        f"{th.candidate_floor:.2f}", "below_floor", sim)
    new, old = analyse(new_text), analyse(old_text)
    rel, why = compare_subjects(new, old, sim, th)
    shared_fam = sorted(new.families & old.families)
    cover = _coverage(new, old)
    conflict, conflict_why = _conflict(new, old)
    swap = _substitution(new, old) if _single(shared_fam) else None
    if swap and not conflict:
        conflict, conflict_why = True, f"{swap[0]} -> {swap[1]} in the same statement"
    feats: dict[str, Any] = {
        "subject_new": new.subject.describe(), "subject_old": old.subject.describe(),
        "subject_relation": rel, "verb_new": new.verb, "verb_old": old.verb,
        "families_new": sorted(new.families), "families_old": sorted(old.families),
        "objects_new": list(new.objects), "objects_old": list(old.objects),
        "strong_change": list(new.strong_change), "weak_change": list(new.weak_change),
        "additive": list(new.additive), "negated_new": new.negated,
        "negated_old": old.negated, "non_current": list(new.non_current),
        "coverage": round(cover, 3), "jaccard": round(_jaccard(new.content, old.content), 3),
        "value_conflict": conflict,
    }

    def out(relation: Relation, rule: str, reason: str) -> Decision:
        return Decision(relation, f"{rule}: {reason}", rule, sim, "rules", feats)

    # 1. different people or things: never a supersession
    if rel == "different":
        return out("saved", "different_subject", why)
    # shared words other than the verbs ("works at Initech" / "a new team at work" share
    # no statement)
    shared_terms = sorted((new.content & old.content) - {new.verb, old.verb} - _AUX_STEMS)
    same_verb = new.verb == old.verb and new.verb not in ("", "be", "have")
    related = (bool(shared_fam) or bool(shared_terms) or same_verb
               or rel in ("same_entity", "elaborates"))
    # 2. "also", "too", "as well", "either", "another": an addition to a related fact
    if new.additive and not new.strong_change and related:
        return out("extended", "additive",
                   f"additive marker {new.additive[0]!r} on the same subject ({why})")
    # 3. "no longer", "switched", "moved to", "instead", "quit", ... on a related fact
    if new.strong_change and related:
        return out("updated", "change_marker",
                   f"change marker {new.strong_change[0]!r}; {why}"
                   + (f"; shared attribute {shared_fam[0]}" if shared_fam else ""))
    # 4. one side negates what the other states ("is no longer vegan", "used to smoke",
    #    "hates X" after "loves X"); verbs alone do not count as the shared statement
    if new.negated != old.negated and shared_terms:
        return out("updated", "negation",
                   f"one memory negates what the other states ({', '.join(shared_terms)})")
    # 5. a past, temporary or planned fact leaves a standing one alone
    if new.non_current and not new.strong_change and cover < th.containment:
        return out("saved", "not_current",
                   f"the new memory is past, temporary or planned ({new.non_current[0]!r}); "
                   "it does not replace a standing fact")
    # 6. "User's favourite dish is X" -> "... is Y[, especially ...]": a relational noun
    #    holds one value; a different complement replaces it, whatever else is repeated
    if (rel == "same_entity" and new.verb == old.verb == "be" and _functional(new.subject)
            and new.objects and old.objects and new.objects[0] != old.objects[0]
            and new.objects[0] not in old.objects):
        return out("updated", "value_changed",
                   f"{why}, which holds one value: {old.objects[0]} -> {new.objects[0]}")
    # 7. the new memory repeats the old one and adds to it
    if (cover >= th.containment and len(old.content) >= 2 and new.content - old.content
            and not conflict):
        return out("extended", "containment",
                   f"repeats {cover:.0%} of the old memory and adds "
                   f"{', '.join(sorted(new.content - old.content))}")

    weak = bool(new.weak_change)
    parallel = new.verb == old.verb or bool(new.pred_families & old.pred_families)
    # 8. about the same thing ("User's manager", "the Atlas project", "User's dog" after
    #    "User has a dog"): a different value of the same predicate updates, anything
    #    else describes it further
    if rel in ("same_entity", "elaborates"):
        if conflict and parallel:
            return out("updated", "value_changed", f"{why}; {conflict_why}")
        return out("extended", "adds_detail", f"{why}; no contradicting value")

    if rel == "same_root":
        # 9. "User has X" / "User has Y": the same possession, or another one
        if new.possessed is not None and old.possessed is not None:
            np = new.possessed.describe()
            if same_entity(new.possessed, old.possessed):
                if conflict:
                    return out("updated", "value_changed", f"the same {np}; {conflict_why}")
                return out("extended", "adds_detail", f"the same {np}, described further")
            return out("saved", "other_value",
                       f"another thing the user has ({np} vs {old.possessed.describe()})")
        # 10. the same attribute of the person
        single = _single(shared_fam)
        shared_obj = [o for o in new.objects if o in old.objects]
        for fam in single:
            change = _state_change(new, old, fam)
            if change is not None:
                return out("updated", "state_changed",
                           f"{why}; {fam} changed: {change[0]} -> {change[1]}")
        if single:
            disjoint = bool(new.objects and old.objects and not shared_obj)
            # open-ended attributes ("prefers X") need the cosine to say X and Y are
            # alternatives (tea/coffee) rather than unrelated things (dark mode/short answers)
            if disjoint and not conflict and all(FAMILIES[f][0] == "open" for f in single) \
                    and sim < th.same_attribute_cosine:
                return out("saved", "other_value",
                           f"{why}; {single[0]} of something else (cosine {sim:.2f} < "
                           f"same_attribute_cosine {th.same_attribute_cosine:.2f})")
            if conflict or disjoint:
                reason = conflict_why or (f"{', '.join(old.objects)} -> "
                                          f"{', '.join(new.objects)}")
                return out("updated", "value_changed",
                           f"{why}; single-valued attribute {single[0]}; {reason}")
            if weak and set(new.objects) - set(old.objects) \
                    and set(old.objects) - set(new.objects):
                return out("updated", "value_changed",
                           f"{why}; {new.weak_change[0]!r}: {single[0]} "
                           f"{', '.join(old.objects)} -> {', '.join(new.objects)}")
            return out("extended", "adds_detail",
                       f"{why}; single-valued attribute {single[0]}, same value "
                       f"({', '.join(shared_obj) or 'no contradiction'})")
        if shared_fam:
            if new.objects[:1] and new.objects[:1] == old.objects[:1] and not conflict:
                return out("extended", "adds_detail",
                           f"{why}; same {shared_fam[0]} value {new.objects[0]!r}, more detail")
            if weak and conflict:
                return out("updated", "value_changed",
                           f"{why}; {new.weak_change[0]!r} and {conflict_why}")
            return out("saved", "other_value",
                       f"{why}; another value of the many-valued attribute {shared_fam[0]}")
        return out("saved", "other_attribute",
                   f"{why}; different attributes ({', '.join(sorted(new.families)) or '?'} "
                   f"vs {', '.join(sorted(old.families)) or '?'})")

    # 11. subject not parsed but the cosine is high: overlap decides
    jac = _jaccard(new.content, old.content)
    if jac >= th.fallback_jaccard:
        return out("extended", "overlap", f"{why}; content overlap {jac:.2f}")
    return out("saved", "fallback", f"{why}; content overlap {jac:.2f} too low")


# -- optional LLM judge ------------------------------------------------------------------------

_SYSTEM_PROMPT = """You compare two memories an AI assistant keeps about the same user.
Answer with one JSON object and nothing else: {"relation": "<label>", "reason": "<short>"}
Labels:
- "updated": NEW supersedes OLD - same subject and attribute, the value changed or OLD is \
no longer true (e.g. OLD "User lives in Berlin", NEW "User moved to Munich").
- "extended": NEW adds detail about OLD's subject without contradicting it; both stay true \
(e.g. OLD "User has a dog", NEW "User's dog is a beagle named Rex").
- "saved": merely related or unrelated - a different subject (e.g. the user's sister), a \
different attribute, another value of something that can have many values, or a past, \
temporary or planned fact."""


class LLMJudge:
    """Asks an OpenAI-compatible `/chat/completions` endpoint for the relation.

    `judge` returns a Decision, or a short error string when the call failed (network
    error, timeout, non-2xx status, or an answer without a valid label); `decide` then
    falls back to the rules. The client is created lazily and reused; call `close`."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 timeout: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self._transport = transport
        self._client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(timeout=self.timeout, headers=headers,
                                        transport=self._transport)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> LLMJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request_body(self, new_text: str, old_text: str) -> dict[str, Any]:
        return {
            "model": self.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": _SYSTEM_PROMPT},
                {"role": "user", "content": f"OLD: {old_text}\nNEW: {new_text}"},
            ],
        }

    def judge(self, new_text: str, old_text: str, similarity: float) -> Decision | str:
        try:
            resp = self._http().post(f"{self.base_url}/chat/completions",
                                     json=self.request_body(new_text, old_text))
            resp.raise_for_status()
            content = resp.json()["choices"][0]["message"]["content"]
            relation, reason = parse_llm_answer(content)
        except httpx.TimeoutException:
            return "timeout"
        except httpx.HTTPStatusError as exc:
            return f"HTTP {exc.response.status_code}"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}"
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return f"unusable answer ({exc})"
        return Decision(relation, f"llm: {reason}" if reason else "llm", "llm",
                        float(similarity), "llm", {"model": self.model})


def parse_llm_answer(content: Any) -> tuple[Relation, str]:
    """The label (and reason) from a model's message: a JSON object, possibly fenced."""
    if not isinstance(content, str):
        raise ValueError("message content is not text")
    m = re.search(r"\{.*\}", content, re.S)
    if m is None:
        raise ValueError("no JSON object")
    data = json.loads(m.group(0))
    if not isinstance(data, dict):
        raise ValueError("not an object")
    label = str(data.get("relation", data.get("label", ""))).strip().lower()
    for rel in RELATIONS:
        if label == rel:
            reason = data.get("reason")
            return rel, reason.strip()[:300] if isinstance(reason, str) else ""
    raise ValueError(f"label {label!r} is not one of {', '.join(RELATIONS)}")


def overrides_near_duplicate(decision: Decision) -> bool:
    """Whether an `updated` decision may save a memory that is a near duplicate by cosine
    (≥ 0.95). Near-identical text usually is a paraphrase ("long" / "lengthy paragraphs"),
    and MemLayer promises a 409 for it; only an explicit change word or a changed number or
    time ("is 34" -> "is 35 years old", "2pm" -> "4pm") is evidence enough of a new value."""
    if decision.relation != "updated":
        return False
    f = decision.features
    if decision.rule == "change_marker" or f.get("strong_change"):
        return True
    changed = set(f.get("objects_new") or ()) ^ set(f.get("objects_old") or ())
    return any(ch.isdigit() for word in changed for ch in str(word))
