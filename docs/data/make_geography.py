"""Write docs/data/geography.jsonl: 120 geography questions (capitals, continents), fields "question" / "answer".

A domain unlike math, code and reasoning, for the "a new domain routed" walk-through
(docs/new_domain.sh):
    python docs/data/make_geography.py      # seeded: the same 120 rows every time
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# (country, capital, continent)
COUNTRIES = [
    ("France", "Paris", "Europe"), ("Germany", "Berlin", "Europe"), ("Italy", "Rome", "Europe"),
    ("Spain", "Madrid", "Europe"), ("Portugal", "Lisbon", "Europe"), ("Poland", "Warsaw", "Europe"),
    ("Austria", "Vienna", "Europe"), ("Greece", "Athens", "Europe"), ("Norway", "Oslo", "Europe"),
    ("Sweden", "Stockholm", "Europe"), ("Finland", "Helsinki", "Europe"), ("Ireland", "Dublin", "Europe"),
    ("Hungary", "Budapest", "Europe"), ("Denmark", "Copenhagen", "Europe"), ("Belgium", "Brussels", "Europe"),
    ("Japan", "Tokyo", "Asia"), ("China", "Beijing", "Asia"), ("India", "New Delhi", "Asia"),
    ("Thailand", "Bangkok", "Asia"), ("Vietnam", "Hanoi", "Asia"), ("Indonesia", "Jakarta", "Asia"),
    ("South Korea", "Seoul", "Asia"), ("Nepal", "Kathmandu", "Asia"), ("Iran", "Tehran", "Asia"),
    ("Iraq", "Baghdad", "Asia"), ("Pakistan", "Islamabad", "Asia"), ("Philippines", "Manila", "Asia"),
    ("Mongolia", "Ulaanbaatar", "Asia"), ("Egypt", "Cairo", "Africa"), ("Kenya", "Nairobi", "Africa"),
    ("Nigeria", "Abuja", "Africa"), ("Ghana", "Accra", "Africa"), ("Ethiopia", "Addis Ababa", "Africa"),
    ("Morocco", "Rabat", "Africa"), ("Senegal", "Dakar", "Africa"), ("Uganda", "Kampala", "Africa"),
    ("Algeria", "Algiers", "Africa"), ("Tunisia", "Tunis", "Africa"), ("Zimbabwe", "Harare", "Africa"),
    ("Canada", "Ottawa", "North America"), ("Mexico", "Mexico City", "North America"),
    ("Cuba", "Havana", "North America"), ("Jamaica", "Kingston", "North America"),
    ("Panama", "Panama City", "North America"), ("Guatemala", "Guatemala City", "North America"),
    ("Brazil", "Brasilia", "South America"), ("Argentina", "Buenos Aires", "South America"),
    ("Peru", "Lima", "South America"), ("Chile", "Santiago", "South America"),
    ("Colombia", "Bogota", "South America"), ("Venezuela", "Caracas", "South America"),
    ("Ecuador", "Quito", "South America"), ("Uruguay", "Montevideo", "South America"),
    ("Paraguay", "Asuncion", "South America"), ("Bolivia", "Sucre", "South America"),
    ("Australia", "Canberra", "Oceania"), ("New Zealand", "Wellington", "Oceania"),
    ("Fiji", "Suva", "Oceania"), ("Samoa", "Apia", "Oceania"), ("Tonga", "Nuku'alofa", "Oceania"),
]  # fmt: skip

CAPITAL = [
    "What is the capital of {country}?",
    "Which city is the capital of {country}?",
    "Name the capital city of {country}.",
    "{country}'s government sits in which capital city?",
]
CONTINENT = [
    "On which continent is {country}?",
    "Which continent is {country} part of?",
    "Name the continent where {country} lies.",
    "{country} is a country on which continent?",
]


def main() -> None:
    rng = random.Random(2026)
    rows = []
    for country, capital, continent in COUNTRIES:
        rows.append({"question": rng.choice(CAPITAL).format(country=country), "answer": capital})
        rows.append({"question": rng.choice(CONTINENT).format(country=country), "answer": continent})
    rows = [{"id": f"geo-{i}", **row} for i, row in enumerate(rows)]
    out = Path(__file__).with_name("geography.jsonl")
    out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} questions to {out}")


if __name__ == "__main__":
    main()
