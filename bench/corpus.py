# ruff: noqa: SIM905  (word lists are kept as readable strings)
"""Deterministic synthetic agent memories and search queries for the benchmarks.

Memories read like what an assistant would remember about a user ("User prefers …",
"Met … on …", "Works at …", "Allergic to …"): one main fact from one of ~45 templates with
several slots drawn from large vocabularies, then 0-4 context clauses (when, why, who said
it, follow-ups) until a target length of 8-60 words is reached. Because every text varies in
several independent slots at once, two memories of one user are almost never near duplicates
(cosine >= 0.95) even for a user holding thousands of them; texts are also kept unique after
case folding so that no exact duplicate is ever generated.

Queries are questions about the same kinds of facts ("Where did I meet …?", "Does the user
have any allergies?"), generated from a separate random stream and never equal to a memory.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

# -- vocabularies ------------------------------------------------------------------------

FIRST = (
    "Alice Priya Mateo Sofia Kenji Amara Lukas Fatima Diego Ingrid Tomasz Mei Olu Hannah "
    "Rafael Yuki Noor Elena Kwame Chloe Arjun Freya Omar Leila Sven Camila Jonas Aisha Marco "
    "Zara Pavel Rosa Ibrahim Nina Hugo Ananya Felix Imani Bruno Clara Tariq Greta Santiago "
    "Wen Malik Astrid Dmitri Lucia Kofi Mila Rohan Beatriz Emeka Saoirse Nikolai Valentina "
    "Hamza Ines Theo Keiko Andrei Paloma Tobias Adaeze Ravi Elif Jasper Yara Matteo Linnea "
    "Samir Esther Lorenzo Naledi Viktor Maya Caspian Ayesha Gustavo Ewa"
).split()
LAST = (
    "Okafor Lindqvist Tanaka Moreau Haddad Kowalski Fernandes Nguyen Schmidt Rossi Mensah "
    "Petrov Castillo Brennan Yilmaz Sato Almeida Novak Johansson Ibrahim Chen Dubois Kaur "
    "Mwangi Horvath Ortega Nakamura Larsen Delgado Farouk Weber Silva Kim Osei Bianchi "
    "Andersen Park Costa Adeyemi Varga Romero Fischer Walsh Iyer Koenig Mbeki Sorensen "
    "Takahashi Navarro Quinn Abara Lehmann Murphy Rao Santos Virtanen Greco Hosseini"
).split()
CITIES = (
    "Lisbon|Nairobi|Kyoto|Montreal|Reykjavik|Buenos Aires|Tallinn|Hanoi|Cape Town|Oslo|"
    "Marrakech|Vancouver|Porto|Seoul|Edinburgh|Lagos|Valencia|Krakow|Melbourne|Istanbul|"
    "Copenhagen|Mexico City|Tbilisi|Singapore|Dublin|Bogota|Ljubljana|Osaka|Accra|Lyon|"
    "Helsinki|Santiago|Bruges|Taipei|Zanzibar|Quebec City|Bergen|Cusco|Sevilla|Hamburg|"
    "Auckland|Dubrovnik|Chiang Mai|Prague|Boston|Austin|Kigali|Vilnius|Bologna|Halifax|"
    "Salzburg|Galway|Tromso|Busan|Cartagena|Zagreb|Perth|Antwerp|Denver|Montevideo"
).split("|")
COMPANIES = (
    "Northwind Analytics|Bluefin Robotics|Quarry Labs|Helios Energy|Tidepool Health|"
    "Cobalt Freight|Lumen Bank|Fernleaf Foods|Arcadia Games|Meridian Insurance|Brightwater "
    "Studios|Kestrel Aerospace|Oakridge Pharma|Saltmarsh Media|Pinecone Logistics|Vantage "
    "Retail|Orbital Telecom|Greenline Transit|Atlas Consulting|Silverleaf Capital|Harbor "
    "Biotech|Nimbus Cloud|Redwood Legal|Copperfield Mining|Sparrow Education|Juniper "
    "Hospitality|Ironclad Security|Lighthouse Nonprofit|Mosaic Architecture|Driftwood "
    "Furniture|Summit Outdoor|Foxglove Cosmetics|Beacon Hospital|Granite Construction|"
    "Willow Childcare|Polaris Shipping|Cedar Software|Marigold Bakery|Zephyr Drones|"
    "Riverbend University"
).split("|")
ROLES = (
    "data engineer|product manager|nurse|high school teacher|backend developer|UX "
    "researcher|civil engineer|accountant|graphic designer|paramedic|sales director|lab "
    "technician|staff software engineer|marketing lead|pharmacist|architect|site reliability "
    "engineer|HR business partner|financial analyst|veterinarian|project coordinator|chef|"
    "security analyst|machine learning engineer|copywriter|operations manager|physiotherapist|"
    "customer success manager|logistics planner|research scientist|mobile developer|"
    "legal counsel|CTO|freelance photographer|university lecturer"
).split("|")
FOODS = (
    "ramen|sourdough bread|pad thai|falafel|dark chocolate|sushi|lentil soup|tacos al pastor|"
    "shakshuka|mushroom risotto|jollof rice|pho|kimchi stew|paella|dumplings|greek salad|"
    "butter chicken|ceviche|pierogi|banh mi|halloumi|oatmeal with berries|carbonara|"
    "black bean burritos|miso salmon|spanakopita|chana masala|bibimbap|avocado toast|"
    "lamb tagine|poke bowls|gnocchi|arepas|tom yum soup|baklava|cheesecake|croissants|"
    "vegetable curry|fish and chips|udon|goulash|empanadas|hummus|matcha ice cream|pancakes"
).split("|")
DRINKS = (
    "oat milk flat white|green tea|sparkling water|espresso|chai latte|rooibos|cold brew|"
    "kombucha|hot chocolate|peppermint tea|decaf americano|orange juice|yerba mate|red wine|"
    "craft IPA|ginger beer|matcha latte|earl grey|lemonade|filter coffee"
).split("|")
HOBBIES = (
    "bouldering|trail running|watercolor painting|chess|sourdough baking|birdwatching|"
    "salsa dancing|woodworking|sea kayaking|playing the cello|knitting|astrophotography|"
    "urban gardening|jiu-jitsu|pottery|cycling|reading science fiction|learning Japanese|"
    "board games|open water swimming|fly fishing|rock climbing|yoga|journaling|"
    "mountain biking|calligraphy|volunteering at the animal shelter|amateur radio|"
    "cross-country skiing|tennis|playing jazz piano|foraging mushrooms|home brewing|"
    "restoring old motorcycles|bird photography|scuba diving|podcasting|crossword puzzles|"
    "beekeeping|stand-up comedy open mics"
).split("|")
ALLERGENS = (
    "peanuts|shellfish|penicillin|cat dander|tree nuts|lactose|gluten|bee stings|latex|"
    "sesame|soy|eggs|pollen|dust mites|ibuprofen|strawberries|kiwi|mustard|sulfites|"
    "ragweed|mold|celery|fish|wheat"
).split("|")
CONDITIONS = (
    "asthma|migraines|type 1 diabetes|a bad left knee|lower back pain|mild hearing loss in "
    "one ear|high blood pressure|celiac disease|insomnia|seasonal allergies|a recovering "
    "ankle sprain|tinnitus|anemia|color blindness|a heart murmur|carpal tunnel"
).split("|")
LANGS = (
    "Python|Rust|TypeScript|Go|Kotlin|Elixir|Haskell|C++|Java|Swift|Ruby|Scala|Julia|R|Zig|"
    "OCaml|Clojure|PHP|Lua|Dart"
).split("|")
TOOLS = (
    "Neovim|VS Code|Emacs|JetBrains IDEs|Docker|Kubernetes|Terraform|Postgres|SQLite|Redis|"
    "Kafka|Figma|Notion|Obsidian|Linear|Jira|GitHub Actions|Grafana|Airflow|dbt|Blender|"
    "Ableton Live|Excel|Tableau|Jupyter"
).split("|")
SPOKEN = (
    "Portuguese|Swahili|Japanese|French|Polish|Arabic|Spanish|Mandarin|Hindi|German|Turkish|"
    "Korean|Italian|Dutch|Finnish|Greek|Yoruba|Vietnamese|Russian|Icelandic"
).split("|")
PETS = (
    "a border collie|a tabby cat|two rabbits|a corgi|a parrot|a rescue greyhound|a bearded "
    "dragon|three chickens|a labrador|a Maine Coon|a goldfish|a husky|a pair of budgies|"
    "a dachshund|a tortoise|a ferret|a Siamese cat|an axolotl"
).split("|")
PET_KINDS = (
    "border collie|tabby cat|rabbit|corgi|parrot|greyhound|bearded dragon|labrador|kitten|"
    "husky|dachshund|tortoise|ferret|puppy|old dog|axolotl"
).split("|")
PET_NAMES = (
    "Biscuit Pixel Mango Juniper Otis Clementine Waffles Nova Pepper Ziggy Luna Bramble "
    "Socks Turnip Miso Pancake Echo Rufus Hazel Kiwi Noodle Maple Ginger Tofu"
).split()
GENRES = (
    "historical fiction|hard science fiction|cozy mysteries|narrative nonfiction|fantasy "
    "epics|poetry|graphic novels|biographies of scientists|Nordic noir|climate fiction|"
    "self-help|travel memoirs|philosophy|horror|romance novels|economics books"
).split("|")
MUSIC = (
    "jazz|lo-fi beats|classical piano|Afrobeats|synthwave|bossa nova|metal|indie folk|"
    "K-pop|techno|blues|film scores|reggae|punk rock|opera|ambient music|salsa|hip hop"
).split("|")
EVENTS = (
    "PyCon|a friend's wedding|the company offsite|a climbing meetup|the parent-teacher "
    "evening|a product launch|the quarterly planning session|a hackathon|a book club "
    "meeting|the farmers market|a charity run|a design sprint|a board meeting|the "
    "neighborhood barbecue|a jazz concert|a university reunion|the trade fair|a yoga retreat|"
    "a job interview panel|a dinner party|KubeCon|a hospital fundraiser|the school play"
).split("|")
RELATIONS = (
    "sister|brother|manager|mentor|daughter|son|partner|best friend|neighbor|cofounder|"
    "landlord|therapist|personal trainer|grandmother|cousin|former colleague|dentist|"
    "accountant|piano teacher|wife|husband|roommate|uncle|niece"
).split("|")
MONTHS = (
    "January February March April May June July August September October November December"
).split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
TIMES = (
    "early morning|before 9am|around lunchtime|late afternoon|after 6pm|in the evening|"
    "on weekends|late at night|right after the school run|between meetings"
).split("|")
CHANNELS = (
    "email|Slack|text message|a phone call|a video call|WhatsApp|Signal|a handwritten note|"
    "a voice memo|Microsoft Teams"
).split("|")
TONES = (
    "short bullet points|detailed explanations|a casual tone|formal language|examples "
    "first|the answer before the reasoning|no emojis|plenty of code samples|a summary at the "
    "end|metric units|British spelling|24-hour time"
).split("|")
PROJECTS = (
    "the billing migration|a mobile banking app|the warehouse robot fleet|a recipe "
    "recommendation engine|the new onboarding flow|a climate dashboard|the data lake "
    "cleanup|a patient scheduling system|the search relevance overhaul|an internal "
    "design system|a fraud detection model|the payroll integration|a podcast editing "
    "tool|the API rate limiter|a grant application|the kitchen renovation|a wedding "
    "website|the garden irrigation system|a thesis on urban heat islands|a children's book"
).split("|")
GOALS = (
    "run a half marathon|learn to play the guitar|read fifty books this year|save for a "
    "house deposit|get an AWS certification|speak conversational Spanish|cut down on "
    "caffeine|sleep eight hours a night|finish the novel draft|switch careers into data "
    "science|climb Kilimanjaro|cook at home five nights a week|pay off the student loan|"
    "publish an open source library|learn to swim properly|visit every national park in "
    "the country|meditate daily|build a standing desk"
).split("|")
REASONS = (
    "because the old setup kept breaking|since it helps with focus|after a doctor's advice|"
    "to spend more time with family|because the commute is long|since moving to a new "
    "apartment|after a stressful quarter at work|to save money|because a friend "
    "recommended it|after reading an article about it|since the new baby arrived|because "
    "of a tight deadline|to feel healthier|after trying it on holiday"
).split("|")
ADJ = (
    "strongly|slightly|usually|always|lately|these days|for years now|since last spring|"
    "mostly|definitely"
).split("|")
PURCHASES = (
    "road bike|espresso machine|standing desk|kayak|used Volvo|cello|drone|air fryer|"
    "telescope|sewing machine|tent|3D printer|e-reader|rowing machine"
).split("|")
APPOINTMENTS = (
    "Dentist appointment|Eye exam|Physiotherapy session|Haircut|Passport renewal|Vet "
    "checkup|Car service|Parent-teacher meeting|Blood test|Tax advisor meeting|Job interview|"
    "Therapy session|Piano lesson|Flu shot|Bank appointment|Apartment viewing"
).split("|")
FEELINGS = (
    "excited|nervous|frustrated|relieved|curious|overwhelmed|proud|skeptical|optimistic|"
    "tired|grateful|anxious"
).split("|")

Rng = random.Random


def _pick(rng: Rng, seq: list[str] | tuple[str, ...]) -> str:
    return seq[rng.randrange(len(seq))]


def _person(rng: Rng) -> str:
    return f"{_pick(rng, FIRST)} {_pick(rng, LAST)}"


def _date(rng: Rng) -> str:
    return f"{_pick(rng, MONTHS)} {rng.randint(1, 28)}, {rng.randint(2018, 2025)}"


def _money(rng: Rng) -> str:
    return f"${rng.choice((5, 10, 20, 25, 50, 100)) * rng.randint(1, 60)}"


# -- main facts --------------------------------------------------------------------------

_Fact = Callable[[Rng], str]

FACTS: tuple[_Fact, ...] = (
    lambda r: f"User prefers {_pick(r, DRINKS)} {_pick(r, TIMES)} and {_pick(r, ADJ)} avoids "
              f"{_pick(r, DRINKS)}.",
    lambda r: f"User {_pick(r, ADJ)} prefers {_pick(r, TONES)} in answers about "
              f"{_pick(r, PROJECTS)}, {_pick(r, REASONS)}.",
    lambda r: f"Met {_person(r)} on {_date(r)} at {_pick(r, EVENTS)} in {_pick(r, CITIES)}.",
    lambda r: f"Met {_person(r)}, a {_pick(r, ROLES)} from {_pick(r, COMPANIES)}, during "
              f"{_pick(r, EVENTS)}.",
    lambda r: f"Works at {_pick(r, COMPANIES)} as a {_pick(r, ROLES)} since {_pick(r, MONTHS)} "
              f"{r.randint(2010, 2025)}.",
    lambda r: f"Works on {_pick(r, PROJECTS)} with {_person(r)} and reports to "
              f"{_person(r)}.",
    lambda r: f"Allergic to {_pick(r, ALLERGENS)}; reacts badly to {_pick(r, ALLERGENS)} as "
              f"well.",
    lambda r: f"Allergic to {_pick(r, ALLERGENS)} and carries medication when eating "
              f"{_pick(r, FOODS)}.",
    lambda r: f"Has {_pick(r, CONDITIONS)} and mentioned it affects {_pick(r, HOBBIES)}.",
    lambda r: f"Favorite dish is {_pick(r, FOODS)}, especially from a place in "
              f"{_pick(r, CITIES)}.",
    lambda r: f"Does not eat {_pick(r, FOODS)} but loves {_pick(r, FOODS)} and "
              f"{_pick(r, FOODS)}.",
    lambda r: f"Enjoys {_pick(r, HOBBIES)} {_pick(r, TIMES)} and wants to try "
              f"{_pick(r, HOBBIES)}.",
    lambda r: f"Took up {_pick(r, HOBBIES)} in {_pick(r, MONTHS)} {_pick(r, REASONS)}.",
    lambda r: f"Lives in {_pick(r, CITIES)} and is thinking about moving to "
              f"{_pick(r, CITIES)}.",
    lambda r: f"Grew up in {_pick(r, CITIES)} and still visits {_pick(r, RELATIONS)} "
              f"{_person(r)} there.",
    lambda r: f"Planning a trip to {_pick(r, CITIES)} in {_pick(r, MONTHS)} with their "
              f"{_pick(r, RELATIONS)}.",
    lambda r: f"Flight to {_pick(r, CITIES)} departs on {_date(r)}; wants a window seat "
              f"and {_pick(r, FOODS)} if available.",
    lambda r: f"Their {_pick(r, RELATIONS)} {_person(r)} has a birthday on {_pick(r, MONTHS)} "
              f"{r.randint(1, 28)} and likes {_pick(r, GENRES)}.",
    lambda r: f"Their {_pick(r, RELATIONS)} is called {_pick(r, FIRST)} and works as a "
              f"{_pick(r, ROLES)}.",
    lambda r: f"Has {_pick(r, PETS)} named {_pick(r, PET_NAMES)} who needs a vet visit in "
              f"{_pick(r, MONTHS)}.",
    lambda r: f"Codes mostly in {_pick(r, LANGS)} and {_pick(r, LANGS)}, uses "
              f"{_pick(r, TOOLS)} daily and dislikes {_pick(r, TOOLS)}.",
    lambda r: f"Wants code examples in {_pick(r, LANGS)} rather than {_pick(r, LANGS)}.",
    lambda r: f"Speaks {_pick(r, SPOKEN)} natively and is learning {_pick(r, SPOKEN)}.",
    lambda r: f"Prefers to be contacted by {_pick(r, CHANNELS)} {_pick(r, TIMES)}, never by "
              f"{_pick(r, CHANNELS)}.",
    lambda r: f"Goal for this year: {_pick(r, GOALS)}; feeling {_pick(r, FEELINGS)} about "
              f"it, and {_pick(r, FIRST)} offered to help.",
    lambda r: f"Reading {_pick(r, GENRES)} lately; recommended a book to {_person(r)}.",
    lambda r: f"Listens to {_pick(r, MUSIC)} while working and {_pick(r, MUSIC)} when "
              f"{_pick(r, HOBBIES)}.",
    lambda r: f"Budget for {_pick(r, PROJECTS)} is {_money(r)} per month, approved by "
              f"{_person(r)}.",
    lambda r: f"Owes {_person(r)} {_money(r)} for {_pick(r, EVENTS)} tickets.",
    lambda r: f"Deadline for {_pick(r, PROJECTS)} moved to {_date(r)} after a call with "
              f"{_person(r)}.",
    lambda r: f"Feels {_pick(r, FEELINGS)} about {_pick(r, PROJECTS)} and {_pick(r, FEELINGS)} "
              f"about {_pick(r, EVENTS)}.",
    lambda r: f"Has a recurring {_pick(r, HOBBIES)} session every {_pick(r, DAYS)} "
              f"{_pick(r, TIMES)} with {_pick(r, FIRST)}.",
    lambda r: f"{_pick(r, APPOINTMENTS)} on {_pick(r, DAYS)} {_pick(r, TIMES)} in "
              f"{_pick(r, CITIES)}; {_pick(r, RELATIONS)} {_pick(r, FIRST)} will drive.",
    lambda r: f"Asked to be reminded to call {_pick(r, RELATIONS)} {_pick(r, FIRST)} every "
              f"{_pick(r, DAYS)} about {_pick(r, PROJECTS)}.",
    lambda r: f"Switched from {_pick(r, TOOLS)} to {_pick(r, TOOLS)} for "
              f"{_pick(r, PROJECTS)} {_pick(r, REASONS)}.",
    lambda r: f"Interviewing with {_pick(r, COMPANIES)} for a {_pick(r, ROLES)} role; the "
              f"panel includes {_person(r)}.",
    lambda r: f"Studied {_pick(r, GENRES)} at university in {_pick(r, CITIES)} and wrote a "
              f"thesis with {_person(r)}.",
    lambda r: f"Is vegetarian on weekdays but eats {_pick(r, FOODS)} at {_pick(r, EVENTS)}.",
    lambda r: f"Bought a {_pick(r, PURCHASES)} for {_money(r)} from {_person(r)}.",
    lambda r: f"Volunteers at {_pick(r, COMPANIES)} every other {_pick(r, DAYS)} helping "
              f"with {_pick(r, HOBBIES)} classes.",
    lambda r: f"Wakes up {_pick(r, TIMES)} and does {_pick(r, HOBBIES)} before checking "
              f"{_pick(r, CHANNELS)}.",
    lambda r: f"Child {_pick(r, FIRST)} started school in {_pick(r, CITIES)} and loves "
              f"{_pick(r, HOBBIES)}.",
    lambda r: f"Thinks {_pick(r, TOOLS)} is overrated and that {_pick(r, LANGS)} is "
              f"underrated for {_pick(r, PROJECTS)}.",
    lambda r: f"Recommended {_pick(r, FOODS)} at a restaurant in {_pick(r, CITIES)} to "
              f"{_person(r)}.",
    lambda r: f"Password manager migration for {_pick(r, COMPANIES)} is blocked on "
              f"{_person(r)} until {_date(r)}.",
)

# -- context clauses ---------------------------------------------------------------------

CLAUSES: tuple[_Fact, ...] = (
    lambda r: f"They mentioned this on {_date(r)} while we discussed {_pick(r, PROJECTS)}.",
    lambda r: f"{_person(r)} confirmed it over {_pick(r, CHANNELS)}.",
    lambda r: f"This came up {_pick(r, REASONS)}.",
    lambda r: f"They seemed {_pick(r, FEELINGS)} when talking about it.",
    lambda r: f"Follow up {_pick(r, TIMES)} next {_pick(r, DAYS)}.",
    lambda r: f"It matters for planning {_pick(r, EVENTS)} in {_pick(r, CITIES)}.",
    lambda r: f"Their {_pick(r, RELATIONS)} {_pick(r, FIRST)} feels the same way about "
              f"{_pick(r, FOODS)}.",
    lambda r: f"Do not bring it up in front of {_person(r)}.",
    lambda r: f"Earlier they said the opposite, but this is the newer preference as of "
              f"{_pick(r, MONTHS)}.",
    lambda r: f"Relevant when suggesting restaurants, gifts or weekend plans near "
              f"{_pick(r, CITIES)}.",
    lambda r: f"Noted during a {_pick(r, CHANNELS)} about {_pick(r, GOALS)}.",
    lambda r: f"They asked me to keep it in mind for {_pick(r, PROJECTS)}.",
    lambda r: f"Budget is tight this month, roughly {_money(r)} left.",
    lambda r: f"They were listening to {_pick(r, MUSIC)} and drinking {_pick(r, DRINKS)} at "
              f"the time.",
    lambda r: f"Confidence is moderate; verify with {_pick(r, RELATIONS)} {_pick(r, FIRST)}.",
    lambda r: f"It ties in with the goal to {_pick(r, GOALS)}.",
    lambda r: f"Same topic as the conversation with {_person(r)} from {_pick(r, COMPANIES)}.",
    lambda r: f"They would rather handle it themselves {_pick(r, TIMES)}.",
    lambda r: f"Mentioned alongside {_pick(r, CONDITIONS)} and a dislike of "
              f"{_pick(r, FOODS)}.",
    lambda r: f"A reminder is set for {_date(r)}.",
    lambda r: f"They use {_pick(r, TOOLS)} to track it and share updates over "
              f"{_pick(r, CHANNELS)}.",
    lambda r: f"Their {_pick(r, PET_KINDS)} sometimes interrupts calls about this.",
)

MIN_WORDS, MAX_WORDS = 8, 60


def _target_length(rng: Rng) -> int:
    # Most memories are one or two sentences; a long tail reaches 60 words.
    return min(MAX_WORDS, max(MIN_WORDS, MIN_WORDS + int(rng.expovariate(1 / 10))))


def memory_text(rng: Rng) -> str:
    """One memory of 8-60 words."""
    target = _target_length(rng)
    text = _pick(rng, FACTS)(rng)
    words = len(text.split())
    for _ in range(6):
        if words >= target:
            break
        clause = _pick(rng, CLAUSES)(rng)
        n = len(clause.split())
        if words + n > MAX_WORDS:
            continue
        text = f"{text} {clause}"
        words += n
    if words < MIN_WORDS:
        text = f"{text} {_pick(rng, CLAUSES)(rng)}"
    return text


# -- queries -----------------------------------------------------------------------------

QUERIES: tuple[_Fact, ...] = (
    lambda r: f"what does the user like to drink {_pick(r, TIMES)}?",
    lambda r: f"where did I meet {_person(r)}?",
    lambda r: f"when did we meet {_pick(r, FIRST)} at {_pick(r, EVENTS)}?",
    lambda r: "which company does the user work for and in what role?",
    lambda r: f"is the user allergic to {_pick(r, ALLERGENS)}?",
    lambda r: f"any food allergies I should know before ordering {_pick(r, FOODS)}?",
    lambda r: f"what are their hobbies besides {_pick(r, HOBBIES)}?",
    lambda r: f"does the user enjoy {_pick(r, HOBBIES)}?",
    lambda r: f"favourite {_pick(r, ('restaurant', 'dish', 'food', 'snack', 'dessert'))} "
              f"in {_pick(r, CITIES)}",
    lambda r: f"trip plans for {_pick(r, CITIES)} in {_pick(r, MONTHS)}",
    lambda r: f"when is the birthday of their {_pick(r, RELATIONS)}?",
    lambda r: f"what is the name of the user's {_pick(r, PET_KINDS)}?",
    lambda r: f"preferred programming language for {_pick(r, PROJECTS)}",
    lambda r: f"how should I format answers, {_pick(r, TONES)} or not?",
    lambda r: f"best way to contact them {_pick(r, TIMES)}",
    lambda r: f"deadline for {_pick(r, PROJECTS)}",
    lambda r: f"who is {_person(r)} and how do they know the user?",
    lambda r: f"what languages does the user speak, e.g. {_pick(r, SPOKEN)}?",
    lambda r: f"health issues like {_pick(r, CONDITIONS)} to keep in mind",
    lambda r: f"music they listen to while {_pick(r, HOBBIES)}",
    lambda r: f"what are the user's goals around {_pick(r, GOALS)}?",
    lambda r: f"how much money do they owe {_pick(r, FIRST)}?",
    lambda r: f"gift ideas for someone who likes {_pick(r, GENRES)} and {_pick(r, DRINKS)}",
    lambda r: f"does the user eat {_pick(r, FOODS)} or are they vegetarian?",
    lambda r: f"which tools does the user use, {_pick(r, TOOLS)}?",
    lambda r: f"appointments on {_pick(r, DAYS)} {_pick(r, TIMES)}",
    lambda r: f"what is the status of {_pick(r, PROJECTS)} and who is blocking it?",
    lambda r: f"how does the user feel about {_pick(r, EVENTS)}?",
)


QUERY_PREFIXES = (
    "", "", "", "hey, ", "quick question: ", "remind me, ", "do you remember: ",
    "can you check ", "before I reply, ", "context needed: ",
)
QUERY_SUFFIXES: tuple[_Fact, ...] = (
    lambda r: "", lambda r: "", lambda r: "", lambda r: " thanks",
    lambda r: f" (planning for next {_pick(r, DAYS)})",
    lambda r: f" {_pick(r, FIRST)} asked me about it",
    lambda r: f" I need it for {_pick(r, PROJECTS)}",
    lambda r: f" before {_pick(r, EVENTS)}",
)


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


class Corpus:
    """A reproducible stream of memory texts and of queries, all distinct."""

    def __init__(self, seed: int) -> None:
        self._mem_rng = random.Random(f"memories:{seed}")
        self._query_rng = random.Random(f"queries:{seed}")
        self._seen: set[str] = set()

    def memories(self) -> Iterator[str]:
        while True:
            text = memory_text(self._mem_rng)
            k = _key(text)
            if k in self._seen:
                continue
            self._seen.add(k)
            yield text

    def queries(self, n: int) -> list[str]:
        """n new questions, distinct from each other, from earlier ones and from memories."""
        out: list[str] = []
        while len(out) < n:
            r = self._query_rng
            q = f"{_pick(r, QUERY_PREFIXES)}{_pick(r, QUERIES)(r)}{_pick(r, QUERY_SUFFIXES)(r)}"
            k = _key(q)
            if k in self._seen:
                continue
            self._seen.add(k)
            out.append(q)
        return out
