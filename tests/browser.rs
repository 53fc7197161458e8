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

#[test]
fn every_committed_report_page_renders_cleanly() {
    let Some(browser) = chromium() else { return };
    let mut pages = Vec::new();
    html_files(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data"), &mut pages);
    assert!(pages.len() >= 3, "found only {pages:?}");
    for page in &pages {
        let r = check_page(&browser, page);
        eprintln!("{}: {} bytes of DOM, no console messages", page.display(), r.dom.len());
    }
}
