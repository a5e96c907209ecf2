//! The healthy reference bank: `mri-ad bank` + `mri-ad score --bank` give the scores of the equivalent batch
//! run (`score --tokens` over one folder holding the bank's and the query's token files), never write into
//! the bank, and refuse a damaged bank or a query made otherwise, naming the file or flag.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{ok, run_mri_ad, run_script, s, stderr};

/// The planted batch (40 cases on a 6³ grid, a recurring anomaly in some) split into a bank folder and a
/// query folder of `queries` cases, one of them a planted case; also the folder holding all of them.
struct Split {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Split {
    fn new(queries: usize) -> Split {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let all = root.join("all");
        run_script(
            "fixtures/make_tokens.py",
            &[
                "--out",
                s(&all),
                "--kind",
                "planted",
                "--n",
                "40",
                "--grid",
                "6",
                "6",
                "6",
                "--seed",
                "1",
            ],
        );
        let truth: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(all.join("truth.json")).unwrap())
                .unwrap();
        let planted: Vec<String> = truth["planted_cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let cases: Vec<String> = truth["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        // the queries: one planted case and the first clean ones, spread through the sorted order
        let mut query = vec![planted[0].clone()];
        query.extend(
            cases
                .iter()
                .filter(|c| !planted.contains(c))
                .step_by(7)
                .take(queries - 1)
                .cloned(),
        );
        for (sub, keep) in [("bank-in", false), ("query", true)] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
            for c in cases.iter().filter(|c| query.contains(c) == keep) {
                let f = format!("{c}.tokens.npz");
                std::fs::copy(all.join(&f), root.join(sub).join(&f)).unwrap();
            }
        }
        Split { _dir: dir, root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `mri-ad bank` over the bank's cases into `bank/`, with `extra` flags.
    fn bank(&self, extra: &[&str]) -> PathBuf {
        let (input, bank) = (self.path("bank-in"), self.path("bank"));
        let mut args = vec!["bank", "--tokens", s(&input), "--out", s(&bank), "-q"];
        args.extend_from_slice(extra);
        ok(&run_mri_ad(&args));
        bank
    }
}

/// Every file of a folder (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(snapshot(&path));
        } else {
            out.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    out
}

/// The rows of scores.csv keyed by case: (score, community).
fn scores(run: &Path) -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(run.join("scores.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (case, score, community) = (col("case"), col("score"), col("community"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[case].to_string(),
                (f[score].to_string(), f[community].to_string()),
            )
        })
        .collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Asserts that two runs gave the same scores: every token score file byte for byte, scores.csv's
/// scores and communities, and the graph's edges, communities and excluded tokens.
fn assert_same_scores(batch: &Path, banked: &Path) {
    assert_eq!(scores(batch), scores(banked));
    let (a, b) = (
        snapshot(&batch.join("token_scores")),
        snapshot(&banked.join("token_scores")),
    );
    assert_eq!(a.len(), 40);
    for ((pa, va), (pb, vb)) in a.iter().zip(&b) {
        assert_eq!(pa.file_name(), pb.file_name());
        assert!(va == vb, "{} differs", pa.display());
    }
    assert_eq!(
        batch.join("graph.json").exists(),
        banked.join("graph.json").exists()
    );
    if !batch.join("graph.json").exists() {
        return;
    }
    let (ga, gb) = (
        json(&batch.join("graph.json")),
        json(&banked.join("graph.json")),
    );
    for key in ["edges", "communities", "excluded", "links_selected"] {
        assert_eq!(ga[key], gb[key], "graph.json `{key}`");
    }
}

fn score(args: &[&str]) {
    let mut all = vec!["score", "--quiet"];
    all.extend_from_slice(args);
    ok(&run_mri_ad(&all));
}

#[test]
fn bank_scores_equal_the_batch_run_for_codegraph_and_musc() {
    let split = Split::new(3);
    let (bank, all, query) = (split.bank(&[]), split.path("all"), split.path("query"));
    let before = snapshot(&bank);
    for method in ["codegraph", "musc"] {
        let batch = split.path(&format!("batch-{method}"));
        let banked = split.path(&format!("banked-{method}"));
        score(&["--tokens", s(&all), "--out", s(&batch), "--method", method]);
        score(&[
            "--bank",
            s(&bank),
            "--tokens",
            s(&query),
            "--out",
            s(&banked),
            "--method",
            method,
        ]);
        assert_same_scores(&batch, &banked);
    }
    // CoDeGraph did real work here: the planted recurring anomaly was excluded.
    let excluded: usize = json(&split.path("banked-codegraph/graph.json"))["excluded"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_array().unwrap().len())
        .sum();
    assert!(excluded > 0, "the planted anomaly must be excluded");
    // Negative control: the comparison tells two methods apart.
    assert_ne!(
        scores(&split.path("batch-musc")),
        scores(&split.path("banked-codegraph"))
    );
    assert!(snapshot(&bank) == before, "scoring wrote into the bank");
}

#[test]
fn a_window_bank_equals_the_windowed_batch_run_and_refuses_the_exact_search() {
    let split = Split::new(2);
    let bank = split.bank(&["--search", "window", "--radius", "1"]);
    let window = ["--search", "window", "--radius", "1"];
    let (all, query) = (split.path("all"), split.path("query"));
    let batch = split.path("batch");
    let banked = split.path("banked");
    let mut args = vec!["--tokens", s(&all), "--out", s(&batch)];
    args.extend(window);
    score(&args);
    let mut args = vec![
        "--bank",
        s(&bank),
        "--tokens",
        s(&query),
        "--out",
        s(&banked),
    ];
    args.extend(window);
    score(&args);
    assert_same_scores(&batch, &banked);
    let out = split.path("exact");
    let o = run_mri_ad(&[
        "score",
        "--bank",
        s(&bank),
        "--tokens",
        s(&query),
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--search") && stderr(&o).contains("--radius 1"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "a refused run writes nothing");
}

/// Scores the split's queries against `bank` into a new folder; returns the exit code and stderr.
fn score_against(split: &Split, bank: &Path, queries: &Path) -> (Option<i32>, String) {
    let out = split.path("refused");
    let o = run_mri_ad(&[
        "score",
        "--bank",
        s(bank),
        "--tokens",
        s(queries),
        "--out",
        s(&out),
    ]);
    assert!(!out.exists(), "a refused run writes nothing");
    (o.status.code(), stderr(&o))
}

#[test]
fn a_damaged_bank_or_a_foreign_query_is_refused_naming_the_file() {
    let split = Split::new(2);
    let (input, query) = (split.path("bank-in"), split.path("query"));
    // sidecars naming a model, so that a query made with another model can be told apart
    for (dir, model) in [(&input, "aaaa"), (&query, "aaaa")] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            let name = p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".tokens.npz", "");
            let side = dir.join(format!("{name}.tokens.json"));
            std::fs::write(
                side,
                format!(r#"{{"case": "{name}", "model_sha256": "{model}"}}"#),
            )
            .unwrap();
        }
    }
    let bank = split.bank(&[]);
    let copy = |name: &str| {
        let to = split.path(name);
        std::fs::create_dir_all(to.join("tokens")).unwrap();
        std::fs::create_dir_all(to.join("tables")).unwrap();
        for (path, bytes) in snapshot(&bank) {
            std::fs::write(to.join(path.strip_prefix(&bank).unwrap()), bytes).unwrap();
        }
        to
    };
    // a missing table
    let missing = copy("missing");
    std::fs::remove_file(missing.join("tables/view1.npz")).unwrap();
    let (code, err) = score_against(&split, &missing, &query);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("view1.npz") && err.contains("missing"),
        "{err}"
    );
    // a truncated token file
    let truncated = copy("truncated");
    let victim = std::fs::read_dir(truncated.join("tokens"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let (code, err) = score_against(&split, &truncated, &query);
    assert_eq!(code, Some(2));
    let victim_name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains(&victim_name) && err.contains("truncated"),
        "{err}"
    );
    // another format version
    let version = copy("version");
    let manifest = version.join("bank.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"version\": 1", "\"version\": 2")).unwrap();
    let (code, err) = score_against(&split, &version, &query);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("bank.json") && err.contains("version"),
        "{err}"
    );
    // not a bank at all
    let (code, err) = score_against(&split, &query, &query);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("bank.json") && err.contains("not a finished bank"),
        "{err}"
    );
    // a query made with another model
    let foreign = split.path("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    for entry in std::fs::read_dir(&query).unwrap() {
        let p = entry.unwrap().path();
        let to = foreign.join(p.file_name().unwrap());
        let text = std::fs::read(&p).unwrap();
        let text = if p.extension().is_some_and(|e| e == "json") {
            String::from_utf8(text)
                .unwrap()
                .replace("aaaa", "bbbb")
                .into_bytes()
        } else {
            text
        };
        std::fs::write(to, text).unwrap();
    }
    let (code, err) = score_against(&split, &bank, &foreign);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("model_sha256") && err.contains("bbbb") && err.contains(".tokens.json"),
        "{err}"
    );
    // the intact bank with the intact query is accepted (the refusals above are the damage's)
    let out = split.path("accepted");
    ok(&run_mri_ad(&[
        "score",
        "--bank",
        s(&bank),
        "--tokens",
        s(&query),
        "--out",
        s(&out),
        "-q",
    ]));
}

#[test]
fn a_bank_with_volumes_instead_of_token_files_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = run_mri_ad(&[
        "score",
        "--bank",
        s(dir.path()),
        "--query",
        s(dir.path()),
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--bank") && stderr(&o).contains("--tokens"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

#[test]
fn a_stopped_bank_build_is_replaced_with_force_and_other_folders_never() {
    let split = Split::new(2);
    let (input, bank) = (split.path("bank-in"), split.bank(&[]));
    // what a build stopped before its manifest leaves
    std::fs::remove_file(bank.join("bank.json")).unwrap();
    let o = run_mri_ad(&["bank", "--tokens", s(&input), "--out", s(&bank), "-q"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unfinished bank") && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    split.bank(&["--force"]);
    assert!(bank.join("bank.json").exists());
    // a folder of anything else is refused even with --force, and left as it was
    let before = snapshot(&input);
    let o = run_mri_ad(&[
        "bank",
        "--tokens",
        s(&input),
        "--out",
        s(&input),
        "--force",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(snapshot(&input) == before);
}

#[test]
fn flags_that_would_change_nothing_or_cannot_apply_are_refused_before_any_output() {
    let split = Split::new(2);
    let bank = split.bank(&[]);
    let out = split.path("run");
    let query = split.path("query");
    for (extra, flag) in [
        (&["--divide", "2"][..], "--divide"),
        (&["--radius", "3"][..], "--radius"),
    ] {
        let mut args = vec![
            "score",
            "--bank",
            s(&bank),
            "--tokens",
            s(&query),
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        let o = run_mri_ad(&args);
        assert_eq!(o.status.code(), Some(2), "{flag}");
        assert!(stderr(&o).contains(flag), "{}", stderr(&o));
        assert!(!out.exists(), "{flag}: nothing may be written");
    }
    let o = run_mri_ad(&[
        "bank",
        "--tokens",
        s(&query),
        "--out",
        s(&split.path("b2")),
        "--radius",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--radius"), "{}", stderr(&o));
}

#[test]
fn verify_bank_catches_two_token_files_swapped_by_hand() {
    let split = Split::new(2);
    let bank = split.bank(&[]);
    let mut files: Vec<PathBuf> = std::fs::read_dir(bank.join("tokens"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bank.npz"))
        .collect();
    files.sort();
    // two cases with the same number of active tokens have files of one size
    let (a, b) = files
        .iter()
        .enumerate()
        .flat_map(|(i, a)| files[i + 1..].iter().map(move |b| (a, b)))
        .find(|(a, b)| std::fs::metadata(a).unwrap().len() == std::fs::metadata(b).unwrap().len())
        .expect("two bank files of one size");
    let (bytes_a, bytes_b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    std::fs::write(a, &bytes_b).unwrap();
    std::fs::write(b, &bytes_a).unwrap();
    let (query, out) = (split.path("query"), split.path("run"));
    let args = [
        "score",
        "--bank",
        s(&bank),
        "--tokens",
        s(&query),
        "--out",
        s(&out),
        "-q",
    ];
    let o = run_mri_ad(&[&args[..], &["--verify-bank"]].concat());
    assert_eq!(o.status.code(), Some(2));
    let name = a.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stderr(&o).contains(&name) && stderr(&o).contains("SHA-256"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // without the check the swap goes unnoticed (what the README says)
    ok(&run_mri_ad(&args));
}
