//! The report pages in a real browser: headless Chromium loads each committed page and a freshly
//! written one, and must see no console message, every chart and table, and no broken link. A
//! deliberately broken page shows the check can fail.

mod common;

use std::path::{Path, PathBuf};

use common::browser::{check_page, chromium, local_refs, render};

fn html_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            html_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "html") {
            out.push(p);
        }
    }
}

#[test]
fn the_browser_check_catches_script_errors_and_broken_links() {
    let Some(browser) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let page = tmp.path().join("broken.html");
    std::fs::write(
        &page,
        "<html><body><img src=\"missing.png\"><script>console.error(\"boom\"); undefinedFn();</script></body></html>",
    )
    .unwrap();
    let r = render(&browser, &page, None);
    assert!(r.console.iter().any(|m| m.contains("boom")), "{:?}", r.console);
    assert!(r.console.iter().any(|m| m.contains("undefinedFn")), "{:?}", r.console);
    let refs = local_refs(&std::fs::read_to_string(&page).unwrap(), &page);
    assert_eq!(refs, vec![tmp.path().join("missing.png")]);
    let outcome = std::panic::catch_unwind(|| check_page(&browser, &page));
    assert!(outcome.is_err(), "a page with console errors passed the check");
}

/// Every inline SVG figure of a page carries words: a title and axis or scale labels (a chart
/// drawn without them reads as a picture, not a figure).
fn unlabelled_figures(html: &str) -> usize {
    html.split("<svg").skip(1).filter(|f| f.split("</svg>").next().unwrap_or("").matches("<text").count() < 2).count()
}

#[test]
fn every_committed_report_page_renders_cleanly() {
    let Some(browser) = chromium() else { return };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut pages = Vec::new();
    html_files(&root.join("data"), &mut pages);
    assert!(pages.len() >= 3, "found only {pages:?}");
    // What a reader sees of the reproduce pages and their discovery pages, as PNGs (the ones
    // committed beside the reports are copies of these).
    let shots = root.join("target").join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    for page in &pages {
        let r = check_page(&browser, page);
        let source = std::fs::read_to_string(page).unwrap();
        assert_eq!(unlabelled_figures(&source), 0, "{}: a figure without labels", page.display());
        let rel = page.strip_prefix(root.join("data")).unwrap();
        let parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        let parts_str: Vec<&str> = parts.iter().map(String::as_str).collect();
        let wanted = matches!(
            parts_str.as_slice(),
            ["reproduce", _, "report.html"] | ["reproduce", _, "discover-base", "report.html"]
        );
        if wanted {
            let png = shots.join(parts.join("-").replace(".html", ".png"));
            render(&browser, page, Some((&png, 2400)));
            assert!(std::fs::metadata(&png).is_ok_and(|m| m.len() > 1000), "{}: no screenshot", png.display());
        }
        eprintln!("{}: {} bytes of DOM, no console messages", page.display(), r.dom.len());
    }
}

#[test]
fn a_figure_without_labels_is_caught() {
    assert_eq!(unlabelled_figures("<svg><text>a</text><text>b</text></svg>"), 0);
    assert_eq!(unlabelled_figures("<p></p><svg><rect/></svg><svg><text>t</text><text>x</text></svg>"), 1);
}
