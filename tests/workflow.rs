//! workflow/Snakefile run by the real Snakemake (`--cores 2`, from MRI_AD_SNAKEMAKE, which
//! scripts/test.sh sets up): on a NIfTI cohort with the tiny model, and on token files, its run folder holds
//! the files one `mri-ad score` writes, bit for bit.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The snakemake executable (fails loudly when MRI_AD_SNAKEMAKE is not set: never skipped).
fn snakemake() -> PathBuf {
    let exe = std::env::var_os("MRI_AD_SNAKEMAKE").unwrap_or_else(|| {
        panic!(
            "MRI_AD_SNAKEMAKE is not set: run the tests with scripts/test.sh (it creates .venv-workflow), or \
             export MRI_AD_SNAKEMAKE=$PWD/.venv-workflow/bin/snakemake after scripts/setup/workflow.sh"
        )
    });
    PathBuf::from(exe)
}

/// Runs the workflow in `dir` with `config` (key=value pairs); panics with its log on failure.
fn run_workflow(dir: &Path, config: &[String]) {
    let exe = snakemake();
    let out = Command::new(&exe)
        .current_dir(dir)
        .args([
            "-s",
            s(&root().join("workflow/Snakefile")),
            "--cores",
            "2",
            "-q",
            "--config",
        ])
        .args(config)
        .arg(format!("mri_ad={}", env!("CARGO_BIN_EXE_mri-ad")))
        .env("ORT_DYLIB_PATH", ort_lib())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run MRI_AD_SNAKEMAKE={}: {e} (scripts/setup/workflow.sh makes it)",
                exe.display()
            )
        });
    assert!(
        out.status.success(),
        "snakemake failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The relative paths and bytes of `files` and of every file under `dirs`, in order.
fn contents(run: &Path, files: &[&str], dirs: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    for d in dirs {
        let mut inner: Vec<String> = std::fs::read_dir(run.join(d))
            .unwrap_or_else(|e| panic!("{}: {e}", run.join(d).display()))
            .map(|e| format!("{d}/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        inner.sort();
        names.extend(inner);
    }
    names
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(run.join(&f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            (f, bytes)
        })
        .collect()
}

fn assert_same(single: &Path, workflow: &Path, files: &[&str], dirs: &[&str]) {
    let (a, b) = (
        contents(single, files, dirs),
        contents(workflow, files, dirs),
    );
    assert_eq!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        b.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    for ((f, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x == y,
            "{f} differs between the workflow's run and one `mri-ad score`"
        );
    }
}

#[test]
fn the_workflow_on_nifti_folders_writes_the_run_of_one_score() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (healthy, query, labels) = (d.join("healthy"), d.join("query"), d.join("labels"));
    write_cohort(&healthy, &query, &labels, 7, 10..14);
    let model = tiny_model(3);
    let backbone = tiny_backbone(s(&model), "56");
    let scoring = ["--outlier-rule", "top-densest", "--top-densest", "2"];
    let single = d.join("single");
    let mut args = vec![
        "score",
        "--healthy",
        s(&healthy),
        "--query",
        s(&query),
        "--labels",
        s(&labels),
    ];
    args.extend(["--out", s(&single), "-q"]);
    args.extend(backbone);
    args.extend(scoring);
    ok(&run_mri_ad(&args));
    run_workflow(
        d,
        &[
            format!("healthy={}", healthy.display()),
            format!("query={}", query.display()),
            format!("labels={}", labels.display()),
            "out=wf".into(),
            "blocks=3".into(),
            "extract_shards=2".into(),
            format!("extract_args={}", backbone.join(" ")),
            format!("score_args={}", scoring.join(" ")),
        ],
    );
    let wf = d.join("wf");
    assert_same(
        &single,
        &wf,
        &["scores.csv", "graph.json", "nyul.json"],
        &["token_scores", "maps", "masks"],
    );
    assert!(
        d.join("wf.work/shard/rounds/2").is_dir(),
        "top-densest 2 runs two rounds of Algorithm 2 as jobs"
    );
    let summary = std::fs::read_to_string(wf.join("summary.json")).unwrap();
    assert!(
        summary.contains("\"evaluation\"") || summary.contains("auroc"),
        "the metrics are written"
    );
}

#[test]
fn the_workflow_on_token_files_writes_the_run_of_score_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tokens = d.join("tokens");
    planted_tokens(&tokens, 2);
    for (method, out) in [("codegraph", "cg"), ("musc", "musc")] {
        let single = d.join(format!("single-{out}"));
        ok(&run_mri_ad(&[
            "score",
            "--tokens",
            s(&tokens),
            "--out",
            s(&single),
            "--method",
            method,
            "-q",
        ]));
        run_workflow(
            d,
            &[
                format!("tokens={}", tokens.display()),
                format!("out={out}"),
                "blocks=4".into(),
                format!("score_args=--method {method}"),
            ],
        );
        let files: &[&str] = if method == "musc" {
            &["scores.csv"]
        } else {
            &["scores.csv", "graph.json"]
        };
        assert_same(&single, &d.join(out), files, &["token_scores"]);
    }
}
