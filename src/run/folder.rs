//! The run-folder protocol (`--out` of `score`).
//!
//! * A run folder is marked with [`RUN_MARKER`], which records the run's request ([`run_request`]: the
//!   cases with the SHA-256 of their files, the settings that change results, file settings by content).
//! * The same request again resumes: token files whose cache key matches are reused, the rest of the
//!   outputs rewritten.
//! * A finished run (summary.json) of another request, or of none recorded, is refused without `--force`
//!   ([`replaces_another_run`]); with it, or for an unfinished run, the earlier outputs ([`RUN_OUTPUTS`])
//!   are removed first so that none is left stale (maps of cases no longer in the batch, a ROC curve of a
//!   run with labels) ([`prepare_run_folder`]).
//! * A non-empty folder without the marker needs `--force`.
//!
//! Traps: the caller checks everything it can before [`prepare_run_folder`], since with `--force` the
//! earlier results are gone after it; inputs inside the outputs a replacing run removes are refused
//! ([`check_inputs_outside_outputs`]). One run writes a folder at a time: [`replaces_another_run`] refuses
//! a folder in use early, and [`prepare_run_folder`] takes its lock ([`super::lock`]) before touching it.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::lock::FolderLock;
use super::outdir;
use crate::formats::{absolute, atomic};
use crate::messages::{first_few, Reporter};
use crate::parallel::map_in_order;
use crate::{Error, Result};

/// Marker file of a run folder.
pub const RUN_MARKER: &str = ".mri-ad-run";

/// The outputs of a run folder that a run of another request replaces. The token cache `tokens/` is kept:
/// its files are reused wherever their cache key still matches.
pub const RUN_OUTPUTS: &[&str] = &[
    // First: a removal cut short must not leave a folder that looks finished.
    "summary.json",
    "config.toml",
    "eval.json",
    "graph.json",
    "index.html",
    "maps",
    "masks",
    "nyul.json",
    "plots",
    "scores.csv",
    "token_scores",
];

/// Settings that change no result, left out of a run's request: threads and memory, the library that runs
/// the model, the device, and the slices per backbone call (cached token files are reused whatever they
/// were).
pub const OPERATIONAL_SETTINGS: &[&str] =
    &["batch", "device", "memory-budget", "ort-lib", "threads"];

/// What a run folder holds the results of: `inputs` (the cases and their files' SHA-256) and `settings`
/// (the run's `config.toml` table, its file settings such as `model` given by content so that a moved or
/// copied file is the same request and a file replaced in place is not) without the
/// [`OPERATIONAL_SETTINGS`].
pub fn run_request(inputs: Value, settings: &toml::Table) -> Value {
    let settings: serde_json::Map<String, Value> = settings
        .iter()
        .filter(|(k, _)| !OPERATIONAL_SETTINGS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect();
    json!({"inputs": inputs, "settings": settings})
}

/// The SHA-256 of each file, one worker per core (the inputs of a request; 1 MiB of buffer each).
pub fn hash_files(paths: &[&Path]) -> Result<Vec<String>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    map_in_order(workers, paths, &|| {}, &|_, p| {
        crate::formats::hash::sha256_file(p)
    })
}

/// The version of the request a run folder's marker records; a marker of another version counts as one
/// without a request.
pub const REQUEST_FORMAT: u64 = 1;

/// The request a run folder's marker records (`None` for a marker without one, or of another
/// [`REQUEST_FORMAT`]: written before requests were recorded).
fn recorded_request(marker: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(marker).ok()?;
    let doc: Value = serde_json::from_str(&text).ok()?;
    if doc.get("request_format").and_then(Value::as_u64) != Some(REQUEST_FORMAT) {
        return None;
    }
    doc.get("request").cloned()
}

/// How `now` differs from `before`, in words: the settings by name with both values, and the inputs.
fn request_differences(before: &Value, now: &Value) -> String {
    let mut out = Vec::new();
    let (old, new) = (&before["settings"], &now["settings"]);
    let mut keys: Vec<&String> = old
        .as_object()
        .into_iter()
        .chain(new.as_object())
        .flat_map(|m| m.keys())
        .collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (a, b) = (&old[k.as_str()], &new[k.as_str()]);
        if a != b {
            out.push(format!("--{k} {a} then, {b} now"));
        }
    }
    if before["inputs"] != now["inputs"] {
        out.push(input_differences(&before["inputs"], &now["inputs"]));
    }
    out.join("; ")
}

/// How the recorded inputs differ, in words: cases that joined or left the batch, and cases whose files
/// have other contents (or that gained or lost a label map).
fn input_differences(before: &Value, now: &Value) -> String {
    let entries = |v: &Value| -> BTreeMap<String, Value> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["case"].as_str().unwrap_or("").to_string(), e.clone()))
            .collect()
    };
    let (old, new) = (entries(before), entries(now));
    let list = |ids: Vec<&String>| first_few(&ids);
    let mut parts = Vec::new();
    let left: Vec<&String> = old.keys().filter(|k| !new.contains_key(*k)).collect();
    let joined: Vec<&String> = new.keys().filter(|k| !old.contains_key(*k)).collect();
    let moved: Vec<&String> = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| o["group"] != v["group"]))
        .map(|(k, _)| k)
        .collect();
    let changed: Vec<&String> = new
        .iter()
        .filter(|(k, v)| {
            old.get(*k)
                .is_some_and(|o| o != *v && o["group"] == v["group"])
        })
        .map(|(k, _)| k)
        .collect();
    if !left.is_empty() {
        parts.push(format!("cases no longer given: {}", list(left)));
    }
    if !joined.is_empty() {
        parts.push(format!("new cases: {}", list(joined)));
    }
    if !moved.is_empty() {
        parts.push(format!(
            "cases moved between --healthy and --query: {}",
            list(moved)
        ));
    }
    if !changed.is_empty() {
        parts.push(format!(
            "other file contents (image, label map or token file) for: {}",
            list(changed)
        ));
    }
    if parts.is_empty() {
        "other inputs".to_string()
    } else {
        parts.join("; ")
    }
}

/// Whether a run of `request` into `out` would replace the results of another run (`Ok(true)`), or is
/// refused: `out` holds the finished results (a summary.json) of another request, or of a run that
/// recorded none (made before requests were recorded), and `force` is not given.
pub fn replaces_another_run(out: &Path, force: bool, request: &Value) -> Result<bool> {
    super::lock::refuse_if_in_use(out)?;
    let marker = out.join(RUN_MARKER);
    if !marker.is_file() {
        return Ok(false);
    }
    let before = recorded_request(&marker);
    if before.as_ref() == Some(request) {
        return Ok(false);
    }
    // An unfinished run (no summary.json) has no results to lose: its outputs go without --force.
    if !force && out.join("summary.json").is_file() {
        let what = match &before {
            Some(b) => format!("another run ({})", request_differences(b, request)),
            None => "a run whose inputs and settings are not recorded (made by an earlier mri-ad)"
                .to_string(),
        };
        return Err(Error::BadOutput {
            path: out.into(),
            problem: format!(
                "this run folder holds the results of {what}; choose another --out, or pass --force to \
                 replace them (the token cache tokens/ is kept and reused where it matches)"
            ),
        });
    }
    Ok(true)
}

/// The outputs a replacing run removes from `out`: [`RUN_OUTPUTS`] and those the earlier run's marker
/// lists (`outputs`: a 2D run's class folders, say), keeping only plain names of entries of `out` (no path
/// separator, no `..`), so that a damaged marker cannot point outside the folder.
fn outputs_to_remove(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = RUN_OUTPUTS.iter().map(|n| n.to_string()).collect();
    let recorded = std::fs::read_to_string(out.join(RUN_MARKER))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|doc| doc.get("outputs").cloned());
    for name in recorded.iter().flat_map(|v| v.as_array()).flatten() {
        let Some(name) = name.as_str() else { continue };
        let plain = !name.is_empty()
            && name != "."
            && name != ".."
            && name != RUN_MARKER
            && name != "tokens"
            && !name.contains(['/', '\\']);
        if plain && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// Refuses inputs that lie inside the outputs a replacing run would remove (e.g. `--labels RUN/masks`).
pub fn check_inputs_outside_outputs(out: &Path, inputs: &[&Path]) -> Result<()> {
    let names = outputs_to_remove(out);
    let out = absolute(out);
    for input in inputs {
        let input = absolute(input);
        if let Some(name) = names.iter().find(|n| input.starts_with(out.join(n))) {
            return Err(Error::bad_input(
                &input,
                format!(
                    "this input lies in {name} of the run folder {}, which this run replaces: copy it \
                     elsewhere first",
                    out.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Creates or reuses the run folder for `request` (see the module doc): a folder holding the finished
/// results of another request needs `force` ([`replaces_another_run`]), and then loses those results (not
/// its token cache; `outputs_to_remove`) before this run writes anything, so that no file of the other
/// run is left to pass as one of this run's. The marker records `outputs`, the entries this run writes
/// (with [`RUN_OUTPUTS`] the default), for the run that may replace it. The caller has checked everything
/// it can before this point: a mistake must not cost the earlier results. The returned lock
/// ([`super::lock`]) is taken before anything is removed or written; hold it until the run is done.
pub fn prepare_run_folder(
    out: &Path,
    force: bool,
    request: &Value,
    outputs: &[String],
    report: &Reporter,
) -> Result<FolderLock> {
    let marker = out.join(RUN_MARKER);
    let lock;
    if marker.is_file() {
        lock = super::lock::acquire(out, report)?;
        if replaces_another_run(out, force, request)? {
            for name in outputs_to_remove(out) {
                remove_entry(&out.join(&name))?;
            }
        }
    } else {
        outdir::prepare(out, force)?;
        lock = super::lock::acquire(out, report)?;
    }
    atomic::write_json(
        &marker,
        &json!({
            "mri_ad_run": "run folder of mri-ad",
            "request_format": REQUEST_FORMAT,
            "request": request,
            "outputs": outputs,
        }),
    )?;
    Ok(lock)
}

/// [`RUN_OUTPUTS`] as owned names, the outputs of `score` (volumes and `--tokens`).
pub fn standard_outputs() -> Vec<String> {
    RUN_OUTPUTS.iter().map(|n| n.to_string()).collect()
}

/// Removes a file or a whole folder; nothing there is not an error.
pub fn remove_entry(path: &Path) -> Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else if path.exists() {
        std::fs::remove_file(path)
    } else {
        Ok(())
    };
    removed.map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacing_run_removes_the_recorded_outputs_and_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let old = json!({"inputs": [1], "settings": {}});
        let outputs = vec!["summary.json".to_string(), "classA".into()];
        let _lock = prepare_run_folder(&out, false, &old, &outputs, &Reporter::silent()).unwrap();
        drop(_lock);
        for d in ["classA", "maps", "tokens"] {
            std::fs::create_dir_all(out.join(d)).unwrap();
        }
        std::fs::write(out.join("summary.json"), "{}").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "keep").unwrap();
        // A marker naming something outside the folder is not followed.
        let marker: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(RUN_MARKER)).unwrap()).unwrap();
        let mut doctored = marker.clone();
        doctored["outputs"] = json!(["classA", "../outside.txt", "tokens"]);
        std::fs::write(out.join(RUN_MARKER), doctored.to_string()).unwrap();
        let new = json!({"inputs": [2], "settings": {}});
        let e = prepare_run_folder(&out, false, &new, &standard_outputs(), &Reporter::silent())
            .unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        let _lock =
            prepare_run_folder(&out, true, &new, &standard_outputs(), &Reporter::silent()).unwrap();
        assert!(!out.join("classA").exists() && !out.join("maps").exists());
        assert!(out.join("tokens").is_dir(), "the token cache is kept");
        assert!(dir.path().join("outside.txt").is_file());
        let now: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(RUN_MARKER)).unwrap()).unwrap();
        assert_eq!(now["request"], new);
        assert_eq!(now["outputs"], json!(standard_outputs()));
    }
}
