#!/usr/bin/env python3
"""Answer-matching reference cases -> tests/fixtures/matching/cases.json.

Reproduces the paper's answer matching (javiferran/sae_entities,
dataset/process_data/wikidata/check_correctness_wikidata.py; functions copied
verbatim below) on hand-written (gold, generation) pairs that look like base-model
completions, and records thefuzz's and rapidfuzz's token_set_ratio for each, so
the Rust port can be checked against the library the authors used.

    python3 -m venv /tmp/fuzzenv
    /tmp/fuzzenv/bin/pip install thefuzz==0.22.1 rapidfuzz==3.14.6
    /tmp/fuzzenv/bin/python tools/make_match_cases.py [--out tests/fixtures/matching/cases.json]

Deterministic: no randomness, fixed case order, sorted JSON keys inside records.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import rapidfuzz
import thefuzz
from rapidfuzz import fuzz as rfuzz
from rapidfuzz import utils as rutils
from rapidfuzz import utils_py as rutils_py
from thefuzz import fuzz
from thefuzz import utils as tutils

THEFUZZ_VERSION = "0.22.1"
RAPIDFUZZ_VERSION = "3.14.6"
REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------
# Verbatim from sae_entities dataset/process_data/wikidata/check_correctness_wikidata.py
# (commit 13ce480).

def check_name_correctness(generation, correct_answer):
    generation = generation.lower().replace(",", " ").replace(".", " ").replace("-", " ")
    correct_answer = correct_answer.lower()
    if correct_answer == "united states of america":
        correct_answer = "united states of america, united states, us, usa"
    elif correct_answer == "people's republic of china":
        correct_answer = "people's republic of china, china"

    any_correct = False

    for name in correct_answer.split(","):
        any_correct = any_correct or fuzz.token_set_ratio(name, generation) > 90

    return any_correct


def number_match(generation, correct_answer, tolerance: int = 5, pct=None):
    generation = generation.lower().strip()
    # Remove comma separator of numbers
    generation = generation.replace(',', '')
    numbers_found = re.findall(r'\d+', generation)
    if len(numbers_found) == 0:
        return 0
    else:
        for number in numbers_found:
            if pct == None:  # noqa: E711 (verbatim)
                if abs(int(float(number)) - int(float(correct_answer))) <= tolerance:
                    return 1
            else:
                if abs(int(float(number)) - int(float(correct_answer))) <= pct * int(float(correct_answer)):
                    return 1
    return 0

# ----------------------------------------------------------------------------


def paper_generation(generation: str) -> str:
    return generation.lower().replace(",", " ").replace(".", " ").replace("-", " ")


def paper_names(gold: str) -> list[str]:
    g = gold.lower()
    if g == "united states of america":
        g = "united states of america, united states, us, usa"
    elif g == "people's republic of china":
        g = "people's republic of china, china"
    return g.split(",")


def thefuzz_unrounded(a: str, b: str) -> float:
    """What thefuzz.fuzz.token_set_ratio computes before int(round(.))."""
    return rfuzz.token_set_ratio(tutils.full_process(a, force_ascii=True),
                                 tutils.full_process(b, force_ascii=True))


# ---------------------------------------------------------------- name cases
# (gold, [generations]). Generations look like greedy/sampled base-model continuations
# of prompts such as "... The director of the movie 'The Godfather' is".
NAME_CASES: list[tuple[str, list[str]]] = [
    ("Francis Ford Coppola", [
        " Francis Ford Coppola. He was born", " Francis Coppola", " Coppola", " Francis Ford",
        " Francis Ford Copola", " francis ford coppola", " FRANCIS FORD COPPOLA!",
        " Sofia Coppola", " Martin Scorsese.", " directed by Francis Ford Coppola in 1972",
        "", " ", "Francis-Ford-Coppola", " Coppola, Francis Ford"]),
    ("Christopher Nolan", [
        " Christopher Nolan.\n\nThe director", " Nolan", " Chris Nolan", " Jonathan Nolan",
        " Christopher Nolen", " Christopher Nolan and Emma Thomas", " Christopher", " 2010",
        " christopher nolan's brother"]),
    ("Quentin Tarantino", [
        " Quentin Tarantino", " Tarantino, who also wrote", " Quentin Tarentino",
        " Q. Tarantino", " Robert Rodriguez", " Quentin"]),
    ("Frank Darabont", [" Frank Darabont.", " Frank Darabont, based on a novel by Stephen King",
                        " Stephen King", " Frank Darabon", " Darabont"]),
    ("Morgan Freeman", [" Morgan Freeman, who plays Red", " Tim Robbins", " Morgan Freemen",
                        " Freeman", " morgan freeman and tim robbins"]),
    ("Leonardo DiCaprio", [" Leonardo DiCaprio", " Leonardo Di Caprio", " Leo DiCaprio",
                           " DiCaprio", " Leonardo da Vinci"]),
    ("Joseph Gordon-Levitt", [" Joseph Gordon-Levitt", " Joseph Gordon Levitt",
                              " Joseph Gordon", " Gordon-Levitt", " Joseph Levitt"]),
    ("Helena Bonham Carter", [" Helena Bonham Carter", " Helena Bonham-Carter", " Helena Carter",
                              " Bonham Carter, the British actress"]),
    ("Ellen Page", [" Ellen Page", " Elliot Page", " Page"]),
    ("Mario Puzo", [" Mario Puzo (screenplay)", " Mario Puzo and Francis Ford Coppola",
                    " Mario Puzzo", " Puzo"]),
    ("Jan de Bont", [" Jan de Bont", " Jan De Bont.", " de Bont", " Jan van Bont"]),
    ("Guillermo del Toro", [" Guillermo del Toro", " Guillermo Del Toro", " Guillermo", " del Toro"]),
    ("Pedro Almodóvar", [" Pedro Almodóvar", " Pedro Almodovar", " Almodóvar", " Pedro Almodvar"]),
    ("Zhang Yimou", [" Zhang Yimou", " Yimou Zhang", " 张艺谋", " Zhang Yimou (张艺谋)", " Zhang"]),
    ("Akira Kurosawa", [" Akira Kurosawa.", " 黒澤明", " Kurosawa Akira", " Akira Kurasawa"]),
    ("Hayao Miyazaki", [" Hayao Miyazaki", " 宮崎駿 (Hayao Miyazaki)", " Miyazaki", " Isao Takahata"]),
    ("Thomas Müller", [" Thomas Müller", " Thomas Muller", " Thomas Mueller", " Müller",
                       " THOMAS MÜLLER"]),
    ("Ludwig Göransson", [" Ludwig Göransson", " Ludwig Goransson", " Ludwig Gransson"]),
    ("Björk", [" Björk", " Bjork", " Bjrk", " björk guðmundsdóttir"]),
    ("Sinéad O'Connor", [" Sinéad O'Connor", " Sinead O'Connor", " Sinead OConnor",
                         " Sinéad O’Connor"]),
    ("Beyoncé", [" Beyoncé", " Beyonce", " Beyoncé Knowles", " Destiny's Child"]),
    ("Motörhead", [" Motörhead", " Motorhead", " Lemmy"]),
    ("Zürich", [" Zürich", " Zurich", " Zuerich", " Zrich", " Zürich, Switzerland"]),
    ("São Paulo", [" São Paulo", " Sao Paulo", " São Paulo, Brazil", " Paulo", " San Paulo"]),
    ("Kraków", [" Kraków", " Krakow", " Cracow", " Kraków, Poland"]),
    ("Reykjavík", [" Reykjavík", " Reykjavik", " Reykjavík."]),
    ("Málaga", [" Málaga", " Malaga", " Mlaga", " Malága"]),
    ("Łódź", [" Łódź", " Lodz", " Łodź", " Łódz"]),
    ("İzmir", [" İzmir", " Izmir", " izmir"]),
    ("Düsseldorf", [" Düsseldorf", " Dusseldorf", " Duesseldorf"]),
    ("東京", [" 東京", " 東京都", " Tokyo", " 東 京"]),
    ("Tokyo", [" Tokyo, Japan", " 東京", " Tokio", " Kyoto", " Tokyo-to"]),
    ("北京", [" 北京", " 北京市", " Beijing"]),
    ("Москва", [" Москва", " Moscow", " москва", " МОСКВА"]),
    ("Αθήνα", [" Αθήνα", " Athens", " ΑΘΗΝΑ"]),
    ("Japan", [" Japan.", " Japan, and the population is", " japan", " Japanese",
               " the country of Japan", " China"]),
    ("United States of America", [
        " the United States", " the United States of America", " USA.", " the US",
        " U.S.", " U.S.A.", " America", " the United Kingdom", " United States, and it",
        " US", " the USA and Canada", " United Sates"]),
    ("United States", [" the United States", " USA", " the United States of America", " U.S."]),
    ("People's Republic of China", [" China", " the People's Republic of China", " PRC",
                                    " Republic of China", " Taiwan", " china."]),
    ("China", [" China", " the People's Republic of China", " People’s Republic of China",
               " Chinese", " Taiwan"]),
    ("United Kingdom", [" the United Kingdom", " UK", " England", " Great Britain",
                        " the United Kingdom of Great Britain and Northern Ireland"]),
    ("Germany", [" Germany", " Deutschland", " West Germany", " Germany.\n\nThe city"]),
    ("Brazil", [" Brazil", " Brasil", " Brazil, South America", " Argentina"]),
    ("Democratic Republic of the Congo", [" the Democratic Republic of the Congo", " Congo",
                                          " DR Congo", " Republic of the Congo", " DRC"]),
    ("Côte d'Ivoire", [" Côte d'Ivoire", " Cote d'Ivoire", " Ivory Coast", " Côte d’Ivoire"]),
    ("New York Yankees", [
        " New York Yankees and the Boston", " the New York Yankees", " Yankees", " New York",
        " New York Mets", " the Yankees in 1923", " NY Yankees", " New-York Yankees"]),
    ("Boston Red Sox", [" Boston Red Sox", " the Red Sox", " Boston", " Boston Red Socks",
                        " Chicago White Sox"]),
    ("St. Louis Cardinals", [" St. Louis Cardinals", " St Louis Cardinals", " Saint Louis Cardinals",
                             " the Cardinals", " Cardinals, where he played"]),
    ("Los Angeles Dodgers", [" Los Angeles Dodgers", " LA Dodgers", " Brooklyn Dodgers",
                             " Los Angeles Dodgers.", " Dodgers"]),
    ("Milwaukee Braves", [" Milwaukee Braves", " Atlanta Braves", " Milwaukee Brewers", " Braves"]),
    ("Philadelphia Athletics", [" Philadelphia Athletics", " Philadelphia Phillies",
                                " Oakland Athletics", " Philadelphia A's"]),
    ("Mobile", [" Mobile, Alabama", " Mobile", " Montgomery", " mobile phone"]),
    ("Havre de Grace", [" Havre de Grace, Maryland", " Havre De Grace", " Havre", " Le Havre"]),
    ("San Pedro de Macorís", [" San Pedro de Macorís", " San Pedro de Macoris",
                              " San Pedro", " Santo Domingo"]),
    ("Los Angeles", [" Los Angeles, California", " LA", " L.A.", " Los Angeles",
                     " los angeles county"]),
    ("Iron Maiden", [" Iron Maiden", " Iron Maiden's", " Iron Maden", " Maiden", " Judas Priest"]),
    ("AC/DC", [" AC/DC", " ACDC", " AC DC", " AC-DC", " Acca Dacca"]),
    ("Guns N' Roses", [" Guns N' Roses", " Guns N Roses", " Guns and Roses", " Guns N’ Roses"]),
    ("Christina Aguilera", [" Christina Aguilera", " Aguilera, Christina", " Christina",
                            " Christina Aguillera", " Britney Spears"]),
    ("Destiny's Child", [" Destiny's Child", " Destinys Child", " Beyoncé", " Destiny’s Child"]),
    ("*NSYNC", [" *NSYNC", " NSYNC", " N'Sync", " 'N Sync"]),
    ("The Number of the Beast", [" The Number of the Beast", " Number of the Beast",
                                 " The Number Of The Beast (1982)", " Powerslave"]),
    ("Kill 'Em All", [" Kill 'Em All", " Kill Em All", " Kill 'em All, their debut album",
                      " Ride the Lightning"]),
    ("Rock", [" rock", " Rock and roll", " hard rock", " Rock.", " pop rock", " Pop"]),
    ("Hip Hop/Rap", [" hip hop", " rap", " Hip-Hop/Rap", " Hip Hop / Rap"]),
    ("R&B/Soul", [" R&B", " soul", " R&B/Soul", " rhythm and blues"]),
    ("Drama", [" drama", " a drama film", " Comedy-drama", " melodrama"]),
    ("Sci-Fi", [" science fiction", " sci-fi", " Sci Fi", " scifi"]),
    ("Jean-Luc Godard", [" Jean-Luc Godard", " Jean Luc Godard", " Godard", " Jean-Luc"]),
    ("Rainer Werner Fassbinder", [" Rainer Werner Fassbinder", " Fassbinder",
                                  " Rainer Fassbinder", " R. W. Fassbinder"]),
    ("J. R. R. Tolkien", [" J.R.R. Tolkien", " JRR Tolkien", " Tolkien", " J. R. R. Tolkien"]),
    ("Martin Luther King Jr.", [" Martin Luther King Jr.", " Martin Luther King",
                                " Martin Luther King, Jr.", " MLK"]),
    ("Robert Downey Jr.", [" Robert Downey Jr.", " Robert Downey, Jr.", " Robert Downey Junior",
                           " Robert Downey"]),
    ("Samuel L. Jackson", [" Samuel L. Jackson", " Samuel Jackson", " Samuel L Jackson",
                           " Sam Jackson"]),
    ("George Lucas, Steven Spielberg", [" George Lucas", " Steven Spielberg", " Spielberg",
                                        " George Lucas and Steven Spielberg", " James Cameron"]),
    ("Joel Coen, Ethan Coen", [" the Coen brothers", " Joel Coen", " Ethan and Joel Coen",
                               " Coen"]),
    ("1972", [" 1972", " 1972.", " in 1972", " nineteen seventy-two"]),
    ("Zhang", [" Zhang", " zhang yimou", " 张"]),
    ("Ng", [" Ng", " NG", " Andrew Ng"]),
    ("", [" anything", ""]),
    (" ", [" ", " Francis"]),
    ("Tom Hanks", ["Tom Hanks", "Tom Hanks" * 3, "   Tom   Hanks   ", "\tTom\nHanks", "Tom_Hanks",
                   "Tom\u00a0Hanks", "TomHanks", "Tom Hank", "Tom Hanx", "Tim Hanks",
                   "Thomas Hanks", "Hanks Tom", "tom hanks tom hanks", "T o m H a n k s"]),
    ("Élodie Yung", [" Élodie Yung", " Elodie Yung", " lodie Yung", " E\u0301lodie Yung"]),
    ("Ærø", [" Ærø", " Aero", " Aeroe", " r"]),
]


# ----------------------------------------------------------------- number cases
# (gold, generation, tol, pct). Tolerances as the paper: birth year 5, release year 2,
# elevation 20, population pct 0.1, song publication year 0.
NUMBER_CASES: list[tuple[str, str, int, float | None]] = [
    ("1972", " 1972, and", 2, None), ("1972", " 1,974 and", 2, None), ("1972", " 1974", 2, None),
    ("1972", " 1975", 2, None), ("1972", " 1970.", 2, None), ("1972", " 1969", 2, None),
    ("1972", " the early 1970s", 2, None), ("1972", " 72", 2, None), ("1972", "", 2, None),
    ("1972", " unknown", 2, None), ("1972", " 1 9 7 2", 2, None), ("1972", " 19,72", 2, None),
    ("1972", " 1972-03-15", 2, None), ("1972", " March 15, 1972", 2, None),
    ("1972", " 15 March 1972", 2, None), ("1972", " 1972.5", 2, None),
    ("1972", " -1972", 2, None), ("1972", " １９７２", 2, None), ("1972", " ١٩٧٢", 2, None),
    ("1972", " १९७२", 2, None), ("1972", " ¹⁹⁷²", 2, None), ("1972", " 1972年", 2, None),
    ("1972", " 二〇〇〇", 2, None), ("1972", " 0001972", 2, None), ("1972", " 1972000", 2, None),
    ("1994", " 1994", 0, None), ("1994", " 1995", 0, None), ("1994", " 1993", 0, None),
    ("2000", " 2000.", 0, None), ("2000", " 2,000", 0, None), ("2000", " 99", 0, None),
    ("1999", " in the year 2000", 0, None),
    ("1934", " 1934", 5, None), ("1934", " 1939", 5, None), ("1934", " 1940", 5, None),
    ("1934", " 1929", 5, None), ("1934", " 1928", 5, None), ("1934", " February 5, 1934", 5, None),
    ("1934", " born in 1935 in Mobile", 5, None), ("1934", " 34", 5, None),
    ("1934", " the 1930s", 5, None),
    ("1850", " 1,850 m", 20, None), ("1850", " 1870 meters", 20, None), ("1850", " 1871", 20, None),
    ("1850", " 6,070 feet (1,850 m)", 20, None), ("12", " 30 m", 20, None), ("12", " -5", 20, None),
    ("0", " sea level", 20, None), ("0", " 0", 20, None), ("-28", " 28 m below sea level", 20, None),
    ("-28", " -40", 20, None),
    ("2148000", " 2,148,000", 5, 0.1), ("2148000", " 2,148,000 people", 5, 0.1),
    ("2148000", " 2.1 million", 5, 0.1), ("2148000", " 2 million", 5, 0.1),
    ("2148000", " 2000000", 5, 0.1), ("2148000", " 1933200", 5, 0.1),
    ("2148000", " 1933199", 5, 0.1), ("2148000", " 2362800", 5, 0.1),
    ("2148000", " 2362801", 5, 0.1), ("2148000", " about 2.148 million", 5, 0.1),
    ("2148000", " 2 148 000", 5, 0.1), ("2148000", " 2.148.000", 5, 0.1),
    ("1000000", " 1,100,000", 5, 0.1), ("1000000", " 900,000", 5, 0.1),
    ("1000000", " 1,100,001", 5, 0.1), ("1000000", " 899,999", 5, 0.1),
    ("3", " 3", 5, 0.1), ("3", " 4", 5, 0.1), ("10", " 11", 5, 0.1), ("10", " 9", 5, 0.1),
    ("37732000", " 37.7 million", 5, 0.1), ("37732000", " 37,732,000 (2023)", 5, 0.1),
    ("37732000", " 14,000,000 in the city proper and 37,000,000", 5, 0.1),
    ("37732000", " 40,000,000", 5, 0.1), ("37732000", " 41505200", 5, 0.1),
    ("37732000", " 41505201", 5, 0.1),
    ("3192", " 3,192", 5, 0.1), ("3192", " 3500", 5, 0.1), ("3192", " 3511", 5, 0.1),
    ("3192", " 3512", 5, 0.1), ("3192", " 2873", 5, 0.1), ("3192", " 2872", 5, 0.1),
    ("1000", " 1100", 5, 0.1), ("1000", " 900", 5, 0.1),
    ("123456789012345678", " 123456789012345679", 0, None),
    ("123456789012345678", " 123456789012345700", 0, None),
    ("1972", " 99999999999999999999999", 2, None),
]


def constructed_half_ties() -> list[tuple[str, str]]:
    """Pairs whose unrounded thefuzz score is exactly 90.5 / 92.5 / 97.5. thefuzz rounds with
    Python's round() (half to even): 90.5 -> 90, which is NOT > 90. With a shared part of s
    characters and one differing token of x characters on each side, the best ratio is
    max(100 * (1 - (1 + x) / (2s + 1 + x)), 100 * (1 - x / (s + 1 + x))), and the first
    term wins here: s=181, x=37 gives 90.5; s=37, x=5 gives 92.5; s=78, x=3 gives 97.5."""
    words = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
             "november oscar papa quebec romeo sierra tango uniform victor whiskey yankee").split()

    def shared(n: int) -> str:
        out, i = [], 0
        while len(" ".join(out)) < n:
            out.append(words[i % len(words)] + ("" if i < len(words) else str(i)))  # unique
            i += 1
        text = " ".join(out)
        return text[:n].rstrip() + "z" * (n - len(text[:n].rstrip()))

    out = []
    for s_len, x in [(181, 37), (37, 5), (78, 3)]:
        sect = shared(s_len)
        assert len(sect) == s_len and not sect.endswith(" ")
        out.append((f"{sect} {'q' * x}", f" {sect} {'w' * x}"))
    return out


NOTES = {
    "source": "javiferran/sae_entities, dataset/process_data/wikidata/check_correctness_wikidata.py "
              "(commit 13ce480), functions check_name_correctness and number_match, copied verbatim "
              "into tools/make_match_cases.py",
    "paper_processing": "check_name_correctness(generation, gold): generation_processed = "
                        "generation.lower().replace(',', ' ').replace('.', ' ').replace('-', ' '); "
                        "gold is lowercased (Python str.lower, full Unicode case mapping); "
                        "'united states of america' becomes 'united states of america, united states, "
                        "us, usa' and \"people's republic of china\" becomes \"people's republic of china, "
                        "china\" (exact equality after lowercasing, no stripping); then the gold string "
                        "is split on ',' WITHOUT stripping the pieces (' united states' keeps its "
                        "leading space) and the answer is correct iff any piece has "
                        "thefuzz.fuzz.token_set_ratio(piece, generation_processed) > 90 (strictly).",
    "gold_processed": "gold.lower() (the whole gold string; for golds without ',' and without an "
                      "alias it is the only piece the paper scores). 'names' lists every piece the "
                      "paper scores, with its thefuzz score.",
    "thefuzz_token_set_ratio": "thefuzz.fuzz.token_set_ratio(gold_processed, generation_processed) "
                               "with its defaults force_ascii=True, full_process=True. thefuzz 0.22.1 "
                               "code: `if full_process: if s1 is None or s2 is None: return 0; "
                               "s1 = utils.full_process(s1, force_ascii=force_ascii); s2 = ...; "
                               "return int(round(scorer(s1, s2)))` with scorer = "
                               "rapidfuzz.fuzz.token_set_ratio (processor=None). utils.full_process: "
                               "`if force_ascii: s = ascii_only(str(s))` then "
                               "`rapidfuzz.utils.default_process(s)`. ascii_only: "
                               "`s.translate({i: None for i in range(128, 256)})`, i.e. it DELETES only "
                               "the code points U+0080..U+00FF (Latin-1 Supplement: ü é ã ø ß Æ, NBSP "
                               "U+00A0, ½, ²...); characters above U+00FF (ł ı ō İ, Cyrillic, Greek, "
                               "CJK, ’) are NOT removed. So 'Zürich' -> 'zrich', 'São Paulo' -> "
                               "'so paulo', 'Łódź' -> 'łdź' (ó deleted; Ł and ź kept), 'Tom\\u00a0Hanks' -> 'tomhanks' (NBSP deleted, so the tokens merge), '東京' unchanged.",
    "default_process": "rapidfuzz.utils.default_process is the C++ implementation (utils_cpp), "
                       "not utils_py: every character that is not a letter or number (Unicode "
                       "general category L* or N*, per rapidfuzz's own table; newer-Unicode letters "
                       "may be missing) becomes ' ', including '_' (utils_py would keep '_'), "
                       "combining marks (Mn/Mc: NFD 'e\\u0301' -> 'e ') and all whitespace/"
                       "punctuation/symbols; then leading/trailing ' ' are trimmed (inner runs of "
                       "spaces are kept); then each character is lowercased with the SIMPLE 1:1 "
                       "Unicode mapping (U+0130 'İ' -> 'i', final 'Σ' -> 'σ' not 'ς'; Python's and "
                       "Rust's str lowercasing differ there). Note the paper lowercases first with "
                       "Python str.lower, so 'İzmir' becomes 'i\\u0307zmir' and the combining dot then "
                       "becomes a space: 'i zmir'. Field thefuzz_s1/thefuzz_s2 give "
                       "full_process(gold_processed) / full_process(generation_processed) per case.",
    "token_set_ratio": "rapidfuzz.fuzz.token_set_ratio(a, b) (rapidfuzz fuzz_py reference of the C++ "
                       "code): tokens_a = set(a.split()), tokens_b likewise (whitespace split); if either "
                       "set is empty -> 0; if the intersection is non-empty and one set contains the "
                       "other -> 100; else diff_ab = ' '.join(sorted(tokens_a - tokens_b)), diff_ba "
                       "likewise, sect = ' '.join(sorted(intersection)); ab_len, ba_len, sect_len = their "
                       "lengths in code points; sect_ab_len = sect_len + (sect_len != 0) + ab_len, "
                       "sect_ba_len likewise; result = norm(indel_distance(diff_ab, diff_ba), sect_ab_len "
                       "+ sect_ba_len); if sect_len == 0 return result; else return max(result, "
                       "norm((sect_len != 0) + ab_len, sect_len + sect_ab_len), norm((sect_len != 0) + "
                       "ba_len, sect_len + sect_ba_len)), where norm(dist, lensum) = 100 - 100 * dist / "
                       "lensum in f64, in exactly this order (100*38/400 = 9.5 exactly, so 90.5 occurs), "
                       "and 100 if lensum == 0. indel_distance = len1 + len2 - 2 * LCS (code points). "
                       "Sorting is by code point. The C++ whitespace split treats as whitespace exactly "
                       "Python's str.isspace() set minus U+0085 and U+00A0 (so U+001C..U+001F count, "
                       "NBSP does not; Rust's char::is_whitespace differs on all six). After "
                       "default_process only ' ' can occur, so this matters only for "
                       "rapidfuzz_token_set_ratio (processor=None): 'Tom\\u00a0Hanks' is one token there.",
    "rounding": "thefuzz returns int(round(x)) with Python's round(): ties go to the EVEN integer "
                "(90.5 -> 90, 91.5 -> 92). Rust's f64::round rounds half away from zero; use "
                "round_ties_even. Field thefuzz_unrounded holds x; some cases have x = k + 0.5.",
    "rapidfuzz_token_set_ratio": "rapidfuzz.fuzz.token_set_ratio(gold_processed, generation_processed, "
                                 "processor=None): no ascii folding, no default_process (case already "
                                 "lowered by the paper step; punctuation other than , . - stays in tokens).",
    "rapidfuzz_token_set_ratio_processed": "rapidfuzz.fuzz.token_set_ratio(gold_processed, "
                                           "generation_processed, processor=rapidfuzz.utils.default_process): "
                                           "like thefuzz but WITHOUT the U+0080..U+00FF deletion and "
                                           "without rounding.",
    "name_correct": "check_name_correctness(generation, gold) exactly as in the paper's code "
                    "(any alias/comma piece with thefuzz score > 90).",
    "number_match": "number_match(generation, gold, tolerance=tol, pct=pct): generation.lower().strip(), "
                    "remove every ',', numbers = re.findall(r'\\d+', generation) (Python str regex: \\d is "
                    "any Unicode decimal digit Nd, e.g. fullwidth '１９７２', Arabic-Indic '١٩٧٢', "
                    "Devanagari '१९७२'; not superscripts '¹⁹⁷²' (No) nor CJK numerals '二〇〇〇'; "
                    "signs and decimal points are not part of a match: '-1972' -> 1972, '1972.5' -> "
                    "1972 and 5). Each number n is converted with int(float(n)) (float() accepts "
                    "Unicode digits; long digit strings lose precision through the f64). Correct iff "
                    "some n has |n - int(float(gold))| <= tol when pct is None, else "
                    "|n - g| <= pct * g evaluated in f64 (tol is then unused; the paper calls it with the "
                    "default 5) (0.1 * 2148000 = 214800.0, 0.1 * 3 = "
                    "0.30000000000000004). number_correct is the result as a bool.",
    "tolerances_used_by_paper": {"player_date_birth": 5, "movie_release_year": 2, "city_elevation": 20,
                                 "city_population": "pct=0.1", "song_publication_year": 0},
}


def name_record(gold: str, generation: str) -> dict:
    gp = gold.lower()
    genp = paper_generation(generation)
    names = [{"name": n, "thefuzz_token_set_ratio": fuzz.token_set_ratio(n, genp)}
             for n in paper_names(gold)]
    rec = {
        "gold": gold,
        "generation": generation,
        "gold_processed": gp,
        "generation_processed": genp,
        "thefuzz_s1": tutils.full_process(gp, force_ascii=True),
        "thefuzz_s2": tutils.full_process(genp, force_ascii=True),
        "thefuzz_unrounded": thefuzz_unrounded(gp, genp),
        "thefuzz_token_set_ratio": fuzz.token_set_ratio(gp, genp),
        "rapidfuzz_token_set_ratio": rfuzz.token_set_ratio(gp, genp, processor=None),
        "rapidfuzz_token_set_ratio_processed": rfuzz.token_set_ratio(
            gp, genp, processor=rutils.default_process),
        "names": names,
        "name_correct": bool(check_name_correctness(generation, gold)),
    }
    assert rec["name_correct"] == any(n["thefuzz_token_set_ratio"] > 90 for n in names)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path,
                    default=REPO / "tests" / "fixtures" / "matching" / "cases.json")
    args = ap.parse_args()
    if thefuzz.__version__ != THEFUZZ_VERSION or rapidfuzz.__version__ != RAPIDFUZZ_VERSION:
        sys.exit(f"need thefuzz=={THEFUZZ_VERSION} rapidfuzz=={RAPIDFUZZ_VERSION}, have "
                 f"{thefuzz.__version__} / {rapidfuzz.__version__}")
    if rutils.default_process is rutils_py.default_process:
        sys.exit("rapidfuzz is using its pure-Python default_process; the C++ one is required")

    pairs = [(g, gen) for g, gens in NAME_CASES for gen in gens]
    half = constructed_half_ties()
    pairs += half
    seen, name_cases = set(), []
    for g, gen in pairs:
        if (g, gen) in seen:
            continue
        seen.add((g, gen))
        name_cases.append(name_record(g, gen))
    number_cases = [{"gold": g, "generation": gen, "tol": tol, "pct": pct,
                     "number_correct": bool(number_match(gen, g, tolerance=tol, pct=pct))}
                    for g, gen, tol, pct in NUMBER_CASES]
    doc = {
        "description": "Reference cases for the paper's answer matching (check_name_correctness, "
                       "number_match). Generated by tools/make_match_cases.py.",
        "versions": {"thefuzz": THEFUZZ_VERSION, "rapidfuzz": RAPIDFUZZ_VERSION,
                     "python": ".".join(map(str, sys.version_info[:3])),
                     "rapidfuzz_default_process": "C++ (utils_cpp)"},
        "notes": NOTES,
        "threshold": 90,
        "name_cases": name_cases,
        "number_cases": number_cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    n_true = sum(c["name_correct"] for c in name_cases)
    m_true = sum(c["number_correct"] for c in number_cases)
    print(f"wrote {args.out}: {len(name_cases)} name cases ({n_true} correct, "
          f"{len(half)} constructed .5 ties), {len(number_cases)} number cases ({m_true} correct)")


if __name__ == "__main__":
    main()
