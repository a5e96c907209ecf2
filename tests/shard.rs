//! The sharded scorer: `mri-ad shard` in K blocks writes the files one `score --tokens` writes, bit for
//! bit (scores.csv, token_scores/, graph.json, the similarity-scaling sums), and a step refuses the files of
//! a missing, truncated or foreign step, naming the file, without touching the run folder.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, planted_tokens, run_mri_ad, s, stderr};

/// The planted batch (40 cases on a 6³ grid, one recurring anomaly), made once per test.
fn planted(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    planted_tokens(&tokens, 1);
    tokens
}

fn mri_ad(args: &[&str]) -> std::process::Output {
    run_mri_ad(args)
}

/// Every step of a sharded run over `tokens` in `k` blocks, with `settings` given to the plan.
fn shard_run(tokens: &Path, work: &Path, out: &Path, k: usize, settings: &[&str]) {
    let w = s(work);
    let mut plan = vec!["shard", "plan", "--tokens", s(tokens), "--work", w, "-q"];
    let blocks = k.to_string();
    plan.extend(["--blocks", &blocks]);
    plan.extend(settings);
    ok(&mri_ad(&plan));
    let block = |i: usize| format!("{i}/{k}");
    for i in 1..=k {
        ok(&mri_ad(&[
            "shard",
            "distances",
            "--work",
            w,
            "--block",
            &block(i),
            "-q",
        ]));
    }
    if !settings.contains(&"musc") {
        for i in 1..=k {
            ok(&mri_ad(&[
                "shard",
                "links",
                "--work",
                w,
                "--block",
                &block(i),
                "-q",
            ]));
        }
        ok(&mri_ad(&["shard", "graph", "--work", w, "-q"]));
        for t in 1..=rounds(work) {
            let t = t.to_string();
            for i in 1..=k {
                ok(&mri_ad(&[
                    "shard",
                    "ratios",
                    "--work",
                    w,
                    "--block",
                    &block(i),
                    "--round",
                    &t,
                    "-q",
                ]));
            }
        }
    }
    for i in 1..=k {
        ok(&mri_ad(&[
            "shard",
            "finish",
            "--work",
            w,
            "--block",
            &block(i),
            "-q",
        ]));
    }
    ok(&mri_ad(&[
        "shard",
        "join",
        "--work",
        w,
        "--out",
        s(out),
        "--no-plots",
        "-q",
    ]));
}

/// The number of outlier communities the graph step found.
fn rounds(work: &Path) -> usize {
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("graph/graph.json")).unwrap())
            .unwrap();
    g["details"]["outliers"].as_array().unwrap().len()
}

fn score_tokens(tokens: &Path, out: &Path, settings: &[&str]) {
    let mut args = vec![
        "score",
        "--tokens",
        s(tokens),
        "--out",
        s(out),
        "--no-plots",
        "-q",
    ];
    args.extend(settings);
    ok(&mri_ad(&args));
}

/// The files that must be equal, with their bytes.
fn outputs(run: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = vec!["scores.csv".to_string()];
    if run.join("graph.json").exists() {
        files.push("graph.json".into());
    }
    let mut scores: Vec<String> = std::fs::read_dir(run.join("token_scores"))
        .unwrap()
        .map(|e| format!("token_scores/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    scores.sort();
    files.extend(scores);
    files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(run.join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

fn scaling(run: &Path) -> serde_json::Value {
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    s["scoring"]["similarity_scaling"].clone()
}

fn assert_same_run(single: &Path, sharded: &Path, what: &str) {
    let (a, b) = (outputs(single), outputs(sharded));
    assert_eq!(a.len(), b.len(), "{what}: the runs wrote different files");
    for ((fa, ba), (fb, bb)) in a.iter().zip(&b) {
        assert_eq!(fa, fb, "{what}");
        assert!(ba == bb, "{what}: {fa} differs from the single-process run");
    }
    assert_eq!(
        scaling(single),
        scaling(sharded),
        "{what}: similarity scaling"
    );
}

#[test]
fn codegraph_in_1_3_and_7_blocks_equals_one_score_run() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = planted(dir.path());
    let single = dir.path().join("single");
    score_tokens(&tokens, &single, &[]);
    let graph = std::fs::read_to_string(single.join("graph.json")).unwrap();
    assert!(
        graph.contains("\"tokens_excluded\""),
        "the planted group must be found and filtered"
    );
    for k in [1, 3, 7] {
        let (work, out) = (
            dir.path().join(format!("w{k}")),
            dir.path().join(format!("o{k}")),
        );
        shard_run(&tokens, &work, &out, k, &[]);
        assert_same_run(&single, &out, &format!("codegraph, K = {k}"));
    }
}

#[test]
fn musc_in_1_3_and_7_blocks_equals_one_score_run() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = planted(dir.path());
    let single = dir.path().join("single");
    score_tokens(&tokens, &single, &["--method", "musc"]);
    for k in [1, 3, 7] {
        let (work, out) = (
            dir.path().join(format!("w{k}")),
            dir.path().join(format!("o{k}")),
        );
        shard_run(&tokens, &work, &out, k, &["--method", "musc"]);
        assert_same_run(&single, &out, &format!("musc, K = {k}"));
    }
}

#[test]
fn several_rounds_the_window_search_and_other_settings_shard_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = planted(dir.path());
    let variants: [&[&str]; 4] = [
        &["--outlier-rule", "top-densest", "--top-densest", "3"],
        &["--search", "window", "--radius", "1"],
        &["--graph-views", "0", "--keep-void"],
        &[
            "--refine-mode",
            "invalidate",
            "--outlier-rule",
            "top-densest",
        ],
    ];
    for (i, settings) in variants.iter().enumerate() {
        let single = dir.path().join(format!("single{i}"));
        score_tokens(&tokens, &single, settings);
        let (work, out) = (
            dir.path().join(format!("w{i}")),
            dir.path().join(format!("o{i}")),
        );
        shard_run(&tokens, &work, &out, 3, settings);
        assert_same_run(&single, &out, &format!("{settings:?}"));
        if i == 0 {
            assert_eq!(
                rounds(&work),
                3,
                "top-densest 3 gives three rounds of Algorithm 2"
            );
        }
    }
}

/// A finished sharded run in 3 blocks: (tempdir, tokens, work, out).
fn finished() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = planted(dir.path());
    let (work, out) = (dir.path().join("work"), dir.path().join("out"));
    shard_run(&tokens, &work, &out, 3, &[]);
    (dir, tokens, work, out)
}

/// `shard join` again into the finished run folder fails with exit 2 naming `file`, and leaves the run
/// folder as it was.
fn join_refused(work: &Path, out: &Path, file: &str) -> String {
    let before = outputs(out);
    let o = mri_ad(&[
        "shard",
        "join",
        "--work",
        s(work),
        "--out",
        s(out),
        "--force",
        "-q",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(file), "the message must name {file}: {err}");
    assert!(
        outputs(out) == before,
        "a refused join changed the run folder"
    );
    err
}

#[test]
fn join_refuses_a_missing_or_truncated_block_file_naming_it() {
    let (_dir, _tokens, work, out) = finished();
    let scores = work.join("final/block2.scores.npy");
    let bytes = std::fs::read(&scores).unwrap();
    std::fs::write(&scores, &bytes[..bytes.len() - 8]).unwrap();
    let err = join_refused(&work, &out, "final/block2.scores.npy");
    assert!(err.contains("truncated"), "{err}");
    std::fs::remove_file(&scores).unwrap();
    let err = join_refused(&work, &out, "final/block2.scores.npy");
    assert!(err.contains("missing"), "{err}");
    std::fs::write(&scores, &bytes).unwrap();
    std::fs::remove_file(work.join("final/block3.json")).unwrap();
    join_refused(&work, &out, "final/block3.json");
}

#[test]
fn join_refuses_block_files_of_another_plan_and_a_block_run_again_with_other_settings() {
    let (dir, tokens, work, out) = finished();
    // Another plan's block 1 (other settings) copied over this one's.
    let other = dir.path().join("other");
    shard_run(
        &tokens,
        &other,
        &dir.path().join("other-out"),
        3,
        &["--alpha-codegraph", "0.2"],
    );
    for f in ["block1.json", "block1.scores.npy"] {
        std::fs::copy(other.join("final").join(f), work.join("final").join(f)).unwrap();
    }
    let err = join_refused(&work, &out, "final/block1.json");
    assert!(err.contains("another plan"), "{err}");
    // The same file name with this plan's record but another plan's bytes: caught by its digest.
    let (dir2, _t, work2, out2) = finished();
    std::fs::copy(
        other.join("final/block2.scores.npy"),
        work2.join("final/block2.scores.npy"),
    )
    .unwrap();
    let err = join_refused(&work2, &out2, "final/block2.scores.npy");
    assert!(err.contains("SHA-256"), "{err}");
    // Re-planned with other settings, block 3 of the old plan kept: the new plan's join refuses it.
    let kept = std::fs::read(work2.join("final/block3.json")).unwrap();
    let kept_scores = std::fs::read(work2.join("final/block3.scores.npy")).unwrap();
    let replanned = dir2.path().join("replanned");
    shard_run(
        &dir2.path().join("tokens"),
        &work2,
        &replanned,
        3,
        &["--alpha-codegraph", "0.2", "--force"],
    );
    std::fs::write(work2.join("final/block3.json"), kept).unwrap();
    std::fs::write(work2.join("final/block3.scores.npy"), kept_scores).unwrap();
    join_refused(&work2, &replanned, "final/block3.json");
}

#[test]
fn a_block_step_refuses_a_truncated_tile_naming_it() {
    let (_dir, _tokens, work, _out) = finished();
    let tile = work.join("distances/r2c3.v0.dist.npy");
    let bytes = std::fs::read(&tile).unwrap();
    std::fs::write(&tile, &bytes[..bytes.len() / 2]).unwrap();
    let o = mri_ad(&[
        "shard",
        "finish",
        "--work",
        s(&work),
        "--block",
        "2/3",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("r2c3.v0.dist.npy") && stderr(&o).contains("truncated"),
        "{}",
        stderr(&o)
    );
    let err = mri_ad(&["shard", "links", "--work", s(&work), "--block", "3/3", "-q"]);
    assert_eq!(
        err.status.code(),
        Some(0),
        "block 3 does not read r2c3: {}",
        stderr(&err)
    );
}

#[test]
fn plan_and_block_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = planted(dir.path());
    let work = dir.path().join("work");
    let plan = |extra: &[&str]| {
        let mut a = vec![
            "shard",
            "plan",
            "--tokens",
            s(&tokens),
            "--work",
            s(&work),
            "-q",
        ];
        a.extend(extra);
        mri_ad(&a)
    };
    for (blocks, why) in [("0", "--blocks"), ("41", "--blocks")] {
        let o = plan(&["--blocks", blocks]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains(why), "{}", stderr(&o));
    }
    assert!(!work.exists(), "a refused plan writes nothing");
    ok(&plan(&["--blocks", "3"]));
    ok(&plan(&["--blocks", "3"])); // the same plan again is kept
    let o = plan(&["--blocks", "4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = mri_ad(&[
        "shard",
        "distances",
        "--work",
        s(&work),
        "--block",
        "2/5",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--block") && stderr(&o).contains("i/3"),
        "{}",
        stderr(&o)
    );
    let o = mri_ad(&[
        "shard",
        "distances",
        "--work",
        s(&work),
        "--block",
        "4/3",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = mri_ad(&["shard", "links", "--work", s(&work), "--block", "1/3", "-q"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("distances/job1.json") && stderr(&o).contains("shard distances"),
        "{}",
        stderr(&o)
    );
    let o = mri_ad(&[
        "shard",
        "plan",
        "--tokens",
        s(&tokens),
        "--work",
        s(&tokens),
        "--blocks",
        "2",
        "-q",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a non-empty folder without a plan is refused"
    );
}

#[test]
fn the_graph_step_says_when_a_block_kept_too_few_link_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = planted(dir.path());
    let work = dir.path().join("work");
    let w = s(&work);
    ok(&mri_ad(&[
        "shard",
        "plan",
        "--tokens",
        s(&tokens),
        "--work",
        w,
        "--blocks",
        "2",
        "-q",
    ]));
    for i in ["1/2", "2/2"] {
        ok(&mri_ad(&[
            "shard",
            "distances",
            "--work",
            w,
            "--block",
            i,
            "-q",
        ]));
        ok(&mri_ad(&[
            "shard",
            "links",
            "--work",
            w,
            "--block",
            i,
            "--link-candidates",
            "5",
            "-q",
        ]));
    }
    let o = mri_ad(&["shard", "graph", "--work", w, "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--link-candidates") && stderr(&o).contains("links/block"),
        "{}",
        stderr(&o)
    );
    // with the default the same step succeeds
    for i in ["1/2", "2/2"] {
        ok(&mri_ad(&[
            "shard", "links", "--work", w, "--block", i, "-q",
        ]));
    }
    ok(&mri_ad(&["shard", "graph", "--work", w, "-q"]));
}

#[test]
fn a_batch_over_the_memory_budget_is_told_which_command_splits_it() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = planted(dir.path());
    let out = dir.path().join("out");
    let o = mri_ad(&[
        "score",
        "--tokens",
        s(&tokens),
        "--out",
        s(&out),
        "--memory-budget",
        "1",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--memory-budget") && stderr(&o).contains("mri-ad shard plan"),
        "{}",
        stderr(&o)
    );
    let fits = mri_ad(&[
        "score",
        "--tokens",
        s(&tokens),
        "--out",
        s(&out),
        "--memory-budget",
        "64",
        "-q",
    ]);
    ok(&fits);
}
