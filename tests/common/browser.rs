//! Loads a report page in headless Chromium (Debian's `chromium` package) and reads back what the
//! browser saw: the DOM after rendering and every message the page wrote to the console. The
//! pages are static (inline SVG and tables, no scripts), so any console message is a defect.
//!
//! Without Chromium the checks are skipped with a message, unless `KNOWLENS_REQUIRE_BROWSER=1`
//! (set by `.ci/run`, which installs the package), where a missing browser fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const REQUIRE_VAR: &str = "KNOWLENS_REQUIRE_BROWSER";

pub struct Rendered {
    /// The document as the browser serialised it after loading.
    pub dom: String,
    /// `"message", source: …` of every console line.
    pub console: Vec<String>,
}

pub fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var(REQUIRE_VAR).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
        assert!(!required, "{REQUIRE_VAR} is set but no chromium is on PATH (apt-get install chromium)");
        eprintln!("skipped: no chromium on PATH (install Debian's chromium package to run the browser checks)");
    }
    found
}

/// Renders `page` (an HTML file) headless; `screenshot`: also write a PNG of the first
/// `height` pixels at 1280 wide.
pub fn render(browser: &Path, page: &Path, screenshot: Option<(&Path, u32)>) -> Rendered {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.canonicalize().expect("page exists").display());
    let mut cmd = Command::new(browser);
    // The flags this machine needs: no sandbox as root, no GPU, and nothing that reaches out to
    // the network (the closed network refuses those connections and they clutter the log).
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some((png, height)) => {
            cmd.arg(format!("--screenshot={}", png.display())).arg(format!("--window-size=1280,{height}"));
        }
        None => {
            cmd.arg("--dump-dom");
        }
    }
    let out = cmd.arg(&url).output().expect("chromium starts");
    assert!(out.status.success(), "chromium failed on {url}: {}", String::from_utf8_lossy(&out.stderr));
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.split_once(":CONSOLE").map(|(_, rest)| rest.to_string()))
        .collect();
    Rendered { dom: String::from_utf8_lossy(&out.stdout).into_owned(), console }
}

/// Every `src="…"` and `href="…"` of `html` that names a local file (not a URL, not an anchor),
/// resolved against the page's directory.
pub fn local_refs(html: &str, page: &Path) -> Vec<PathBuf> {
    let dir = page.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for piece in html.split(attr).skip(1) {
            let target = piece.split('"').next().unwrap_or("");
            let is_url = target.contains("://") || target.starts_with("data:") || target.starts_with("mailto:");
            if target.is_empty() || target.starts_with('#') || is_url {
                continue;
            }
            out.push(dir.join(target.split('#').next().unwrap_or(target)));
        }
    }
    out
}

/// The checks every report page must pass: it loads, writes nothing to the console, keeps every
/// chart and table it was written with, and links only to files that exist.
pub fn check_page(browser: &Path, page: &Path) -> Rendered {
    let source = std::fs::read_to_string(page).unwrap();
    let r = render(browser, page, None);
    assert!(r.console.is_empty(), "{}: console messages {:?}", page.display(), r.console);
    assert!(r.dom.contains("<body"), "{}: no document rendered", page.display());
    for tag in ["<svg", "<table"] {
        assert_eq!(
            r.dom.matches(tag).count(),
            source.matches(tag).count(),
            "{}: the browser's DOM lost {tag} elements (malformed markup)",
            page.display()
        );
    }
    for target in local_refs(&source, page) {
        assert!(target.exists(), "{}: links to {}, which does not exist", page.display(), target.display());
    }
    r
}
