//! End-to-end tests of the batch scorer (`mri-ad score --tokens`) against the independent Python
//! references under scripts/: MuSc parity with numpy, Leiden-CPM against leidenalg, the planted
//! recurring anomaly, determinism, and bad inputs.

mod common;

use std::path::Path;

use common::{mri_ad, run_script, s};
use mri_ad::score::codegraph::leiden::{CommunityDetector, Graph, Leiden};

fn score(tokens: &Path, out: &Path, extra: &[&str]) {
    let o = mri_ad()
        .args(["score", "--tokens", s(tokens), "--out", s(out), "--quiet"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mri-ad score failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn make_tokens(out: &Path, args: &[&str]) {
    let mut all = vec!["--out", s(out)];
    all.extend_from_slice(args);
    run_script("make_tokens.py", &all);
}

#[test]
fn musc_matches_numpy_reference() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    make_tokens(
        &tokens,
        &[
            "--kind",
            "random",
            "--n",
            "21",
            "--grid",
            "4",
            "3",
            "5",
            "--layers",
            "2",
            "--dim",
            "48",
            "--void-frac",
            "0.3",
            "--seed",
            "5",
        ],
    );
    for (name, extra, ref_extra) in [
        ("default", vec![], vec![]),
        ("keep-void", vec!["--keep-void"], vec!["--keep-void"]),
    ] {
        let run = dir.path().join(name);
        let mut args = vec!["--method", "musc"];
        args.extend(extra);
        score(&tokens, &run, &args);
        let mut r = vec![
            "--tokens",
            s(&tokens),
            "--run",
            s(&run),
            "--alpha",
            "0.3",
            "--tol",
            "1e-4",
        ];
        r.extend(ref_extra);
        let report = run_script("ref_musc.py", &r);
        println!("{name}: {report}");
    }
    // A different α must change the scores (the comparison is not vacuous).
    let run = dir.path().join("alpha");
    score(&tokens, &run, &["--method", "musc", "--alpha-musc", "0.1"]);
    let o = std::process::Command::new(common::python())
        .arg(common::root().join("scripts/ref_musc.py"))
        .args(["--tokens", s(&tokens), "--run", s(&run), "--alpha", "0.3"])
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "the reference must notice a different k"
    );
}

#[test]
fn leiden_cpm_matches_or_beats_leidenalg() {
    let dir = tempfile::tempdir().unwrap();
    let graphs = dir.path().join("graphs.json");
    run_script("ref_leiden.py", &["make", "--out", s(&graphs)]);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&graphs).unwrap()).unwrap();
    let graphs_json = doc["graphs"].as_array().unwrap();
    assert!(graphs_json.len() >= 20);
    let memberships: Vec<Vec<usize>> = graphs_json
        .iter()
        .map(|g| {
            let n = g["n"].as_u64().unwrap() as usize;
            let edges: Vec<(usize, usize, f64)> = g["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e[0].as_u64().unwrap() as usize,
                        e[1].as_u64().unwrap() as usize,
                        e[2].as_f64().unwrap(),
                    )
                })
                .collect();
            let graph = Graph::from_edges(n, &edges);
            Leiden::default().detect(&graph, g["resolution"].as_f64().unwrap())
        })
        .collect();
    let ours = dir.path().join("ours.json");
    std::fs::write(
        &ours,
        serde_json::json!({ "memberships": memberships }).to_string(),
    )
    .unwrap();
    let report = run_script("ref_leiden.py", &["compare", s(&graphs), s(&ours)]);
    println!("{report}");
}

#[test]
fn codegraph_finds_the_planted_recurring_anomaly_and_spares_a_clean_batch() {
    let dir = tempfile::tempdir().unwrap();
    let planted = dir.path().join("planted");
    make_tokens(
        &planted,
        &[
            "--kind", "planted", "--n", "40", "--grid", "6", "6", "6", "--seed", "1",
        ],
    );
    let (cg, musc) = (dir.path().join("cg"), dir.path().join("musc"));
    score(&planted, &cg, &[]);
    score(&planted, &musc, &["--method", "musc"]);
    let report = run_script(
        "check_planted.py",
        &[
            "--tokens",
            s(&planted),
            "--codegraph",
            s(&cg),
            "--musc",
            s(&musc),
            "--expect",
            "planted",
        ],
    );
    println!("{report}");
    // The invalidate refine mode must find the same community.
    let inv = dir.path().join("inv");
    score(&planted, &inv, &["--refine-mode", "invalidate"]);
    run_script(
        "check_planted.py",
        &[
            "--tokens",
            s(&planted),
            "--codegraph",
            s(&inv),
            "--expect",
            "planted",
        ],
    );

    let clean = dir.path().join("clean");
    make_tokens(
        &clean,
        &[
            "--kind", "clean", "--n", "40", "--grid", "6", "6", "6", "--seed", "2",
        ],
    );
    let cg_clean = dir.path().join("cg-clean");
    score(&clean, &cg_clean, &[]);
    let report = run_script(
        "check_planted.py",
        &[
            "--tokens",
            s(&clean),
            "--codegraph",
            s(&cg_clean),
            "--expect",
            "clean",
        ],
    );
    println!("{report}");
}

#[test]
fn same_seed_gives_identical_outputs_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    make_tokens(
        &tokens,
        &[
            "--kind", "planted", "--n", "30", "--grid", "6", "6", "6", "--seed", "7",
        ],
    );
    let runs: Vec<_> = [("a", "2"), ("b", "2"), ("c", "1")]
        .iter()
        .map(|(name, threads)| {
            let out = dir.path().join(name);
            score(&tokens, &out, &["--seed", "3", "--threads", threads]);
            out
        })
        .collect();
    let read = |p: &Path| std::fs::read(p).unwrap();
    let graph = read(&runs[0].join("graph.json"));
    assert!(graph.len() > 100);
    for other in &runs[1..] {
        assert_eq!(graph, read(&other.join("graph.json")), "graph.json differs");
        for entry in std::fs::read_dir(runs[0].join("token_scores")).unwrap() {
            let name = entry.unwrap().file_name();
            assert_eq!(
                read(&runs[0].join("token_scores").join(&name)),
                read(&other.join("token_scores").join(&name)),
                "{name:?} differs"
            );
        }
        assert_eq!(
            read(&runs[0].join("scores.csv")),
            read(&other.join("scores.csv"))
        );
    }
}
