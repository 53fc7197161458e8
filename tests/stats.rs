//! src/stats.rs against scipy and scikit-learn (tests/fixtures/stats/cases.json, written by
//! tools/make_stats_cases.py).

mod common;

use knowlens::stats::{auroc, welch, wilson, LogisticProbe};
use serde_json::Value;

fn cases() -> Value {
    serde_json::from_str(&std::fs::read_to_string(common::fixture("stats/cases.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn auroc_matches_sklearn() {
    for c in cases()["auroc"].as_array().unwrap() {
        let got = auroc(&floats(&c["pos"]), &floats(&c["neg"])).unwrap();
        assert!((got - c["auroc"].as_f64().unwrap()).abs() < 1e-12, "{got} vs {}", c["auroc"]);
    }
}

#[test]
fn welch_matches_scipy() {
    for c in cases()["welch"].as_array().unwrap() {
        let w = welch(&floats(&c["a"]), &floats(&c["b"])).unwrap();
        assert!((w.t - c["t"].as_f64().unwrap()).abs() < 1e-10, "t {} vs {}", w.t, c["t"]);
        assert!((w.df - c["df"].as_f64().unwrap()).abs() < 1e-8, "df {} vs {}", w.df, c["df"]);
        let p = c["p"].as_f64().unwrap();
        assert!((w.p - p).abs() < 1e-9 * p.max(1e-3), "p {} vs {p}", w.p);
    }
    assert!(welch(&[1.0], &[1.0, 2.0]).is_err());
}

#[test]
fn wilson_matches_the_formula_with_scipy_quantiles() {
    for c in cases()["wilson"].as_array().unwrap() {
        let e = wilson(c["k"].as_u64().unwrap() as usize, c["n"].as_u64().unwrap() as usize).unwrap();
        assert!(
            (e.lo - c["lo"].as_f64().unwrap()).abs() < 1e-12 && (e.hi - c["hi"].as_f64().unwrap()).abs() < 1e-12,
            "{e:?} vs {c}"
        );
    }
}

#[test]
fn logistic_probe_matches_sklearn() {
    let c = &cases()["probe"];
    let rows: Vec<Vec<f64>> = c["x"].as_array().unwrap().iter().map(floats).collect();
    let d = rows[0].len();
    let x: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    let y: Vec<bool> = c["y"].as_array().unwrap().iter().map(|v| v.as_bool().unwrap()).collect();
    let p = LogisticProbe::fit(&x, d, &y, c["l2"].as_f64().unwrap()).unwrap();
    let want = floats(&c["weights"]);
    for (g, w) in p.weights.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-4 * w.abs().max(1.0), "weights {:?} vs {want:?}", p.weights);
    }
    assert!((p.bias as f64 - c["bias"].as_f64().unwrap()).abs() < 1e-4, "bias {} vs {}", p.bias, c["bias"]);
}
