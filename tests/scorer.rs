//! End-to-end tests of the batch scorer (`mri-ad score --tokens`) against the independent Python
//! references under scripts/oracles/: MuSc parity with numpy, Leiden-CPM against leidenalg, the planted
//! recurring anomaly, determinism, and bad inputs.

mod common;

use std::path::Path;

use common::{mri_ad, ok, run_mri_ad, run_script, s};
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
    run_script("fixtures/make_tokens.py", &all);
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
        let report = run_script("oracles/ref_musc.py", &r);
        println!("{name}: {report}");
    }
    // Subset division: each part is an independent batch; the reference scores each part's folder.
    let divided = dir.path().join("divided");
    score(
        &tokens,
        &divided,
        &["--method", "musc", "--divide", "2", "--seed", "4"],
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(divided.join("summary.json")).unwrap()).unwrap();
    let parts = summary["scoring"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    for (i, part) in parts.iter().enumerate() {
        let folder = dir.path().join(format!("part{i}"));
        std::fs::create_dir_all(&folder).unwrap();
        for name in part.as_array().unwrap() {
            let file = format!("{}.tokens.npz", name.as_str().unwrap());
            std::fs::copy(tokens.join(&file), folder.join(&file)).unwrap();
        }
        let report = run_script(
            "oracles/ref_musc.py",
            &[
                "--tokens",
                s(&folder),
                "--run",
                s(&divided),
                "--alpha",
                "0.3",
            ],
        );
        println!("part {i}: {report}");
    }
    // A different α must change the scores (the comparison is not vacuous).
    let run = dir.path().join("alpha");
    score(&tokens, &run, &["--method", "musc", "--alpha-musc", "0.1"]);
    let o = std::process::Command::new(common::python())
        .arg(common::root().join("scripts/oracles/ref_musc.py"))
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
    run_script("oracles/ref_leiden.py", &["make", "--out", s(&graphs)]);
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
    let report = run_script("oracles/ref_leiden.py", &["compare", s(&graphs), s(&ours)]);
    println!("{report}");
}

/// Whether the reference script accepts the run (exit 0) or not.
fn reference_accepts(script: &str, args: &[&str]) -> bool {
    std::process::Command::new(common::python())
        .arg(common::root().join("scripts").join(script))
        .args(args)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn window_search_matches_the_numpy_windowed_reference() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    make_tokens(
        &tokens,
        &[
            "--kind",
            "random",
            "--n",
            "9",
            "--grid",
            "5",
            "6",
            "7",
            "--layers",
            "2",
            "--dim",
            "24",
            "--void-frac",
            "0.3",
            "--seed",
            "8",
        ],
    );
    let run = dir.path().join("musc-r1");
    score(
        &tokens,
        &run,
        &["--method", "musc", "--search", "window", "--radius", "1"],
    );
    let musc_ref = ["--tokens", s(&tokens), "--run", s(&run), "--alpha", "0.3"];
    let mut windowed = musc_ref.to_vec();
    windowed.extend(["--radius", "1"]);
    println!("{}", run_script("oracles/ref_musc.py", &windowed));
    // Negative control: the exact reference must not accept the windowed run.
    assert!(!reference_accepts("oracles/ref_musc.py", &musc_ref));
    // A window wider than the grid is the exact search.
    let wide = dir.path().join("musc-r9");
    score(
        &tokens,
        &wide,
        &["--method", "musc", "--search", "window", "--radius", "9"],
    );
    let wide_ref = ["--tokens", s(&tokens), "--run", s(&wide), "--alpha", "0.3"];
    println!("{}", run_script("oracles/ref_musc.py", &wide_ref));
}

#[test]
fn window_search_with_codegraph_matches_the_numpy_reference() {
    let dir = tempfile::tempdir().unwrap();
    let planted = dir.path().join("planted");
    make_tokens(
        &planted,
        &[
            "--kind", "planted", "--n", "40", "--grid", "6", "6", "6", "--seed", "1",
        ],
    );
    let run = dir.path().join("cg-r2");
    score(&planted, &run, &["--search", "window", "--radius", "2"]);
    let report = run_script(
        "oracles/ref_codegraph.py",
        &["--tokens", s(&planted), "--run", s(&run)],
    );
    println!("{report}");
    let graph: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("graph.json")).unwrap()).unwrap();
    let excluded: usize = graph["excluded"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_array().unwrap().len())
        .sum();
    assert!(
        excluded > 0,
        "the planted anomaly must be excluded under the window search too"
    );
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
        "oracles/ref_planted.py",
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
    // Every CoDeGraph stage against the independent numpy implementation (same settings)...
    let report = run_script(
        "oracles/ref_codegraph.py",
        &["--tokens", s(&planted), "--run", s(&cg)],
    );
    println!("{report}");
    // The spec's fence over all communities (the tested one included) is checked the same way.
    let all_rule = dir.path().join("fence-all");
    score(&planted, &all_rule, &["--tukey-fence", "all"]);
    run_script(
        "oracles/ref_codegraph.py",
        &["--tokens", s(&planted), "--run", s(&all_rule)],
    );
    // ...which notices a run with other settings (another endurance-ratio weight selects other links).
    let plain = dir.path().join("other-beta");
    score(&planted, &plain, &["--beta", "0.5"]);
    let o = std::process::Command::new(common::python())
        .arg(common::root().join("scripts/oracles/ref_codegraph.py"))
        .args(["--tokens", s(&planted), "--run", s(&plain)])
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "the reference must notice different settings"
    );
    // The invalidate refine mode must find the same community.
    let inv = dir.path().join("inv");
    score(&planted, &inv, &["--refine-mode", "invalidate"]);
    run_script(
        "oracles/ref_planted.py",
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
        "oracles/ref_planted.py",
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
    run_script(
        "oracles/ref_codegraph.py",
        &["--tokens", s(&clean), "--run", s(&cg_clean)],
    );
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
        for plot in ["histogram.png", "scaling.png", "graph.png"] {
            assert_eq!(
                read(&runs[0].join("plots").join(plot)),
                read(&other.join("plots").join(plot)),
                "{plot} differs"
            );
        }
    }
}

#[test]
fn token_files_from_several_providers_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    make_tokens(
        &tokens,
        &[
            "--kind", "clean", "--n", "6", "--grid", "4", "4", "4", "--seed", "1",
        ],
    );
    let cases: Vec<String> = mri_ad::formats::tokens::discover(&tokens)
        .unwrap()
        .into_iter()
        .map(|(case, _)| case)
        .collect();
    assert_eq!(cases.len(), 6);
    let run = |name: &str| {
        let out = dir.path().join(name);
        let err = ok(&run_mri_ad(&[
            "score",
            "--tokens",
            s(&tokens),
            "--out",
            s(&out),
        ]));
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        (err, summary["token_providers"].clone())
    };
    // no sidecars: every file is unrecorded, and one kind is no mix
    let (err, providers) = run("none");
    assert_eq!(providers, serde_json::json!({"unrecorded": 6}));
    assert!(!err.contains("one execution provider"), "{err}");
    // sidecars naming two providers
    for (i, case) in cases.iter().enumerate() {
        let provider = if i == 0 {
            "CUDAExecutionProvider"
        } else {
            "CPUExecutionProvider"
        };
        std::fs::write(
            tokens.join(format!("{case}.tokens.json")),
            serde_json::json!({ "provider": provider }).to_string(),
        )
        .unwrap();
    }
    let (err, providers) = run("mixed");
    assert_eq!(
        providers,
        serde_json::json!({"CPUExecutionProvider": 5, "CUDAExecutionProvider": 1})
    );
    assert!(
        err.contains("do not all come from one execution provider (CPUExecutionProvider: 5, CUDAExecutionProvider: 1)"),
        "{err}"
    );
}

/// Writes token files with numpy from a Python snippet; `t(name, L, M, D)` writes a valid file, the
/// snippet can then break things.
fn py_tokens(dir: &Path, body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let code = format!(
        "import numpy as np, os\nos.chdir({dir:?})\nrng = np.random.default_rng(0)\n\
         def t(name, L=2, M=8, D=4, **over):\n    a = dict(tokens=rng.standard_normal((L, M, D)).astype(np.float32), \
         valid=np.ones(M, bool), grid=np.array([1, 2, M // 2], np.int64))\n    a.update(over)\n    \
         np.savez(name + '.tokens.npz', **a)\n{body}\n",
        dir = s(dir)
    );
    let o = std::process::Command::new(common::python())
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Runs score on `dir`, expects exit 2, a message containing every `needle`, and no output folder.
fn expect_bad(dir: &Path, needles: &[&str]) {
    let out = dir.with_extension("out");
    let o = mri_ad()
        .args(["score", "--tokens", s(dir), "--out", s(&out)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "exit code for {needles:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "message lacks {n:?}: {err}");
    }
    assert!(
        !out.exists(),
        "no output may be written for bad input: {err}"
    );
}

#[test]
fn bad_token_inputs_exit_2_with_a_message_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);

    py_tokens(&d("two"), "t('a'); t('b')");
    expect_bad(&d("two"), &["two", "2 token file(s)", "at least 3"]);

    std::fs::create_dir_all(d("empty")).unwrap();
    expect_bad(&d("empty"), &["empty", "no token files"]);
    expect_bad(&d("missing"), &["missing", "not a folder"]);

    for (name, body, what) in [
        (
            "layers",
            "t('a'); t('b'); t('c', L=3)",
            "number of layers L is 3",
        ),
        (
            "positions",
            "t('a'); t('b'); t('c', M=10)",
            "number of positions M is 10",
        ),
        (
            "dims",
            "t('a'); t('b'); t('c', D=5)",
            "feature dimension D is 5",
        ),
    ] {
        py_tokens(&d(name), body);
        expect_bad(&d(name), &["c.tokens.npz", what, "a.tokens.npz"]);
    }

    py_tokens(
        &d("nan"),
        "t('a'); t('b'); x = rng.standard_normal((2, 8, 4)).astype(np.float32); x[1, 5, 2] = np.nan; t('c', tokens=x)",
    );
    expect_bad(
        &d("nan"),
        &[
            "c.tokens.npz",
            "not finite",
            "layer 1, position 5, channel 2",
        ],
    );
    py_tokens(
        &d("inf"),
        "t('a'); x = rng.standard_normal((2, 8, 4)).astype(np.float32); x[0, 0, 0] = np.inf; t('b', tokens=x); t('c')",
    );
    expect_bad(&d("inf"), &["b.tokens.npz", "not finite"]);

    py_tokens(
        &d("garbage"),
        "t('a'); t('b'); open('c.tokens.npz', 'wb').write(b'not a zip file at all')",
    );
    expect_bad(
        &d("garbage"),
        &["c.tokens.npz", "not a readable .npz archive"],
    );
    py_tokens(&d("truncated"), "t('a'); t('b'); t('c'); b = open('c.tokens.npz','rb').read(); open('c.tokens.npz','wb').write(b[:len(b)//2])");
    expect_bad(&d("truncated"), &["c.tokens.npz"]);
    py_tokens(&d("noarray"), "t('a'); t('b'); np.savez('c.tokens.npz', tokens=np.zeros((2, 8, 4), np.float32), grid=np.array([1, 2, 4]))");
    expect_bad(&d("noarray"), &["c.tokens.npz", "array `valid` is missing"]);
    py_tokens(
        &d("f64"),
        "t('a'); t('b'); t('c', tokens=rng.standard_normal((2, 8, 4)))",
    );
    expect_bad(&d("f64"), &["c.tokens.npz", "must be float32"]);
    py_tokens(
        &d("grid"),
        "t('a'); t('b'); t('c', grid=np.array([3, 3, 3]))",
    );
    expect_bad(&d("grid"), &["c.tokens.npz", "grid"]);
    py_tokens(
        &d("void"),
        "t('a'); t('b'); t('c', valid=np.zeros(8, bool))",
    );
    expect_bad(&d("void"), &["c.tokens.npz", "every position is void"]);
}

#[test]
fn output_folder_and_config_problems_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    py_tokens(&tokens, "t('a'); t('b'); t('c')");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"user file").unwrap();
    // `score --tokens` into `into` with `extra`; `run` writes to `out` quietly.
    let score_into = |into: &Path, extra: &[&str]| {
        mri_ad()
            .args(["score", "--tokens", s(&tokens), "--out", s(into)])
            .args(extra)
            .output()
            .unwrap()
    };
    let run = |extra: &[&str]| score_into(&out, &[&["--quiet"], extra].concat());
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "nothing written without --force"
    );
    let o = run(&["--force", "--method", "musc"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"user file");
    assert!(out.join("scores.csv").exists());
    // The run folder now records its request: the same command again resumes without --force, another
    // setting or a token file with other contents is refused, naming it.
    let o = run(&["--method", "musc"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["--method", "codegraph"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--method") && err.contains("--force"), "{err}");
    let a = std::fs::read(tokens.join("a.tokens.npz")).unwrap();
    py_tokens(&tokens, "t('x'); t('a')");
    std::fs::remove_file(tokens.join("x.tokens.npz")).unwrap();
    let o = run(&["--method", "musc"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("other file contents") && err.contains(": a"),
        "{err}"
    );
    std::fs::write(tokens.join("a.tokens.npz"), a).unwrap();
    let o = run(&["--method", "musc"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A view that does not exist is refused before the output folder is created.
    let fresh = dir.path().join("fresh-out");
    let o = score_into(&fresh, &["--quiet", "--graph-views", "99"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--graph-views") && err.contains("99"), "{err}");
    assert!(!fresh.exists(), "no output folder: {err}");

    // Volume-only flags have no effect on token files: refused (naming them), not ignored.
    for (flags, named) in [
        (&["--size", "168"][..], "--size"),
        (
            &["--layers", "6,12", "--model", "x.onnx"][..],
            "--model, --layers",
        ),
        (&["--crop=volume"][..], "--crop"),
        (&["--upsample", "corners"][..], "--upsample"),
    ] {
        let o = score_into(&fresh, flags);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(named) && err.contains("--tokens"), "{err}");
        assert!(!fresh.exists(), "no output folder: {err}");
    }

    // Volume keys of a --config file (a volume run's config.toml has them) are not used here, with a notice.
    let vol_cfg = dir.path().join("volume.toml");
    std::fs::write(&vol_cfg, "size = 168\nlayers = [6, 12]\ntukey-k = 4.5\n").unwrap();
    let o = score_into(&out, &["--no-progress", "--force", "--config", s(&vol_cfg)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("notice") && err.contains("layers, size") && err.contains("--tokens"),
        "{err}"
    );
    let effective = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        effective.contains("tukey-k = 4.5") && !effective.contains("size"),
        "{effective}"
    );

    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "tukey-k = 3.0\nno-such-key = 1\n").unwrap();
    let o = run(&["--force", "--config", s(&cfg)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    // The keys listed include the volume keys too (a volume run's config.toml has them).
    assert!(
        err.contains("bad.toml")
            && err.contains("no-such-key")
            && err.contains("proj-dim, radius, reference-ratio"),
        "{err}"
    );
    let o = run(&["--force", "--divide", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--divide") && err.contains("at least 3"),
        "{err}"
    );
    let o = run(&["--force", "--coverage", "1.5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--coverage"), "{err}");
    // A valid config file is applied and the flags override it.
    std::fs::write(&cfg, "method = \"musc\"\nalpha-musc = 0.5\n").unwrap();
    let o = run(&["--force", "--config", s(&cfg), "--alpha-musc", "0.6"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["scoring"]["config"]["method"], "musc");
    assert_eq!(summary["scoring"]["config"]["alpha-musc"], 0.6);
}

/// The similarity-scaling curve of summary.json against the numpy reference (both methods), the
/// neighbour-burnout spike of the planted recurring anomaly at rank (its cases − 1), and the plots and page
/// of a token run.
#[test]
fn similarity_scaling_matches_numpy_and_shows_the_burnout_spike() {
    let dir = tempfile::tempdir().unwrap();
    let planted = dir.path().join("planted");
    make_tokens(
        &planted,
        &[
            "--kind", "planted", "--n", "30", "--grid", "5", "5", "5", "--seed", "3",
        ],
    );
    let (cg, musc) = (dir.path().join("cg"), dir.path().join("musc"));
    score(&planted, &cg, &[]);
    score(&planted, &musc, &["--method", "musc"]);
    for run in [&cg, &musc] {
        println!(
            "{}",
            run_script(
                "oracles/ref_scaling.py",
                &["--tokens", s(&planted), "--run", s(run)]
            )
        );
    }
    // The reference notices a wrong τ (squared distances double it).
    let o = std::process::Command::new(common::python())
        .arg(common::root().join("scripts/oracles/ref_scaling.py"))
        .args(["--tokens", s(&planted), "--run", s(&cg), "--squared"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "the reference must notice doubled τ");

    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let truth = read(&planted.join("truth.json"));
    let planted_cases = truth["planted_cases"].as_array().unwrap().len();
    let curve = &read(&cg.join("summary.json"))["scoring"]["similarity_scaling"];
    let mean = |key: &str| -> Vec<f64> {
        curve[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let (normal, flagged) = (mean("mean_tau_normal"), mean("mean_tau_flagged"));
    assert_eq!(normal.len(), 28);
    // Normal tokens: decreasing over the first half, a log–log slope between −1.5 and −0.3.
    let slope = curve["fit_normal"]["slope"].as_f64().unwrap();
    assert!((-1.5..=-0.3).contains(&slope), "slope {slope}: {curve}");
    assert!(normal[0] > 2.0 * normal[13], "{normal:?}");
    // Flagged tokens: the spike sits at the burnout rank planted − 1 and towers over the normal curve.
    let argmax = flagged
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i + 1)
        .expect("flagged tokens exist");
    assert_eq!(argmax, planted_cases - 1, "{flagged:?}");
    assert!(flagged[argmax - 1] > 10.0 * normal[argmax - 1]);
    // MuSc flags nothing.
    let musc_curve = &read(&musc.join("summary.json"))["scoring"]["similarity_scaling"];
    assert!(musc_curve["count_flagged"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c == 0));

    // A token run writes the batch plots (no ROC without labels, no QC without volumes) and the page.
    for f in ["histogram.png", "scaling.png", "graph.png"] {
        let bytes = std::fs::read(cg.join("plots").join(f)).unwrap();
        let info = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .info()
            .clone();
        assert!(info.width >= 600, "{f}");
    }
    assert!(!cg.join("plots/roc.png").exists() && !cg.join("plots/qc").exists());
    assert!(!musc.join("plots/graph.png").exists());
    let page = std::fs::read_to_string(cg.join("index.html")).unwrap();
    for name in truth["cases"].as_array().unwrap() {
        assert!(page.contains(&format!("<td>{}</td>", name.as_str().unwrap())));
    }
    assert!(!page.contains("maps/") && page.contains("plots/scaling.png"));
    // --no-plots: none.
    let bare = dir.path().join("bare");
    score(&planted, &bare, &["--no-plots"]);
    assert!(!bare.join("plots").exists() && bare.join("index.html").exists());
}
