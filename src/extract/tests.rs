//! Unit tests of the parent module.

use super::*;
use crate::backbone::fake::FakeEmbedder;
use crate::pipeline::cubes::NpyCubes;
use ndarray::Array3;
use ndarray_npy::write_npy;
use std::sync::atomic::{AtomicUsize, Ordering};

fn cfg(out: &Path) -> ExtractConfig {
    ExtractConfig {
        out: out.into(),
        shard: Shard::ALL,
        model: "unused".into(),
        ort_lib: None,
        device: Device::Cpu,
        threads: 1,
        layers: vec![1, 2],
        proj_dim: 4,
        seed: 1,
        size: 28,
        tokenizer: TokenizerConfig::default(),
        force: false,
        progress: false,
        report: crate::messages::Reporter::silent(),
        save_projection: None,
        reuse_from: Vec::new(),
    }
}

fn cube(shift: usize) -> Array3<f32> {
    Array3::from_shape_fn((28, 28, 28), |(z, y, x)| {
        if z < 2 {
            0.0
        } else {
            (((z + shift) * 13 + y * 5 + x) % 17) as f32 / 17.0
        }
    })
}

/// Cubes a, b, c as `.npy` files under `<dir>/in`; returns that folder, the output folder and the source.
fn three_cubes(dir: &Path) -> (PathBuf, PathBuf, NpyCubes) {
    let input = dir.join("in");
    std::fs::create_dir(&input).unwrap();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        write_npy(input.join(format!("{name}.npy")), &cube(i)).unwrap();
    }
    let src = NpyCubes::new(&input);
    (input, dir.join("out"), src)
}

#[test]
fn cache_reuses_matching_cases_and_recomputes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out, src) = three_cubes(dir.path());
    let loads = std::cell::Cell::new(0);
    let mut load = || -> Result<Box<dyn Embedder>> {
        loads.set(loads.get() + 1);
        Ok(Box::new(FakeEmbedder::new(&[1, 2], 5, 0)))
    };
    let c = cfg(&out);
    let s = run_with(&c, &src, "m1", &mut load).unwrap();
    assert_eq!((s.computed, s.reused), (3, 0));
    let s = run_with(&c, &src, "m1", &mut load).unwrap();
    assert_eq!((s.computed, s.reused, s.slices_inferred), (0, 3, 0));
    assert_eq!(loads.get(), 1, "a fully cached run must not load the model");
    // model hash, seed, layers, d' each invalidate every case
    assert_eq!(run_with(&c, &src, "m2", &mut load).unwrap().computed, 3);
    let c2 = ExtractConfig {
        seed: 2,
        ..c.clone()
    };
    assert_eq!(run_with(&c2, &src, "m2", &mut load).unwrap().computed, 3);
    assert_eq!(run_with(&c2, &src, "m2", &mut load).unwrap().computed, 0);
    // an input change recomputes exactly that case
    write_npy(input.join("b.npy"), &cube(7)).unwrap();
    let s = run_with(&c2, &src, "m2", &mut load).unwrap();
    assert_eq!((s.computed, s.reused), (1, 2));
    assert!(s.per_case[1].computed && !s.per_case[0].computed);
    // a deleted token file is recomputed even though its sidecar matches
    std::fs::remove_file(out.join("c.tokens.npz")).unwrap();
    assert_eq!(run_with(&c2, &src, "m2", &mut load).unwrap().computed, 1);
    // a foreign file in the output folder needs --force
    std::fs::write(out.join("notes.txt"), b"x").unwrap();
    let e = run_with(&c2, &src, "m2", &mut load).unwrap_err();
    assert!(
        e.to_string().contains("notes.txt") && e.exit_code() == 2,
        "{e}"
    );
    let c3 = ExtractConfig { force: true, ..c2 };
    let s = run_with(&c3, &src, "m2", &mut load).unwrap();
    assert_eq!(s.reused, 3);
    assert_eq!(s.token_providers, [("fake".to_string(), 3)].into());
    assert_eq!(mixed_providers_notice(&s.token_providers), None);
}

/// A cube source that counts its loads and can panic on one case.
struct Counting {
    inner: NpyCubes,
    loads: AtomicUsize,
    panic_on: Option<&'static str>,
}

impl CubeSource for Counting {
    fn cases(&self) -> Result<Vec<CaseInput>> {
        self.inner.cases()
    }
    fn load(&self, case: &CaseInput, size: usize) -> Result<Cube> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if self.panic_on == Some(case.id.as_str()) {
            panic!("loading c broke");
        }
        self.inner.load(case, size)
    }
    fn preprocessing(&self) -> Value {
        self.inner.preprocessing()
    }
}

#[test]
fn a_bad_case_stops_the_run_in_case_order_and_the_loader_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out, src) = three_cubes(dir.path());
    std::fs::write(input.join("b.npy"), b"not an array").unwrap();
    let mut load =
        || -> Result<Box<dyn Embedder>> { Ok(Box::new(FakeEmbedder::new(&[1, 2], 5, 0))) };
    // b fails while it is loaded one case ahead of a: a is still finished first, and the loader stops
    // there (c is never loaded, let alone computed).
    let counting = Counting {
        inner: src.clone(),
        loads: AtomicUsize::new(0),
        panic_on: None,
    };
    let e = run_with(&cfg(&out), &counting, "m1", &mut load).unwrap_err();
    assert!(e.to_string().contains("b.npy") && e.exit_code() == 2, "{e}");
    assert_eq!(
        counting.loads.load(Ordering::SeqCst),
        2,
        "a and b loaded, not c"
    );
    assert!(out.join("a.tokens.npz").is_file() && out.join("a.tokens.json").is_file());
    assert!(!out.join("c.tokens.npz").exists() && !out.join("c.tokens.json").exists());
    // A loader that panics: its own panic reaches the caller.
    let panicking = Counting {
        inner: src.clone(),
        loads: AtomicUsize::new(0),
        panic_on: Some("c"),
    };
    write_npy(input.join("b.npy"), &cube(1)).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_with(&cfg(&dir.path().join("out3")), &panicking, "m1", &mut load)
    }))
    .unwrap_err();
    assert_eq!(caught.downcast_ref::<&str>(), Some(&"loading c broke"));
    // A backbone that cannot be loaded stops the run too, while the loader waits with the next cube.
    let mut broken = || -> Result<Box<dyn Embedder>> { Err(Error::Resource("no backbone".into())) };
    let fresh = dir.path().join("out2");
    let e = run_with(&cfg(&fresh), &src, "m1", &mut broken).unwrap_err();
    assert!(e.to_string().contains("no backbone"), "{e}");
    // With a fixed b, the first folder resumes: a reused, b and c computed, in order.
    let s = run_with(&cfg(&out), &src, "m1", &mut load).unwrap();
    assert_eq!((s.computed, s.reused), (2, 1));
    let order: Vec<(&str, bool)> = s
        .per_case
        .iter()
        .map(|c| (c.case.as_str(), c.computed))
        .collect();
    assert_eq!(order, [("a", false), ("b", true), ("c", true)]);
}

#[test]
fn reused_token_files_report_the_provider_that_made_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_, out, src) = three_cubes(dir.path());
    let mut load =
        || -> Result<Box<dyn Embedder>> { Ok(Box::new(FakeEmbedder::new(&[1, 2], 5, 0))) };
    let c = cfg(&out);
    run_with(&c, &src, "m1", &mut load).unwrap();
    // as if case b had been made on a GPU, and case c by a version that did not record the provider
    let edit = |case: &str, provider: Option<&str>| {
        let path = out.join(format!("{case}.tokens.json"));
        let mut side: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        match provider {
            Some(p) => side["provider"] = json!(p),
            None => {
                side.as_object_mut().unwrap().remove("provider");
            }
        }
        std::fs::write(&path, side.to_string()).unwrap();
    };
    edit("b", Some("CUDAExecutionProvider"));
    edit("c", None);
    let s = run_with(&c, &src, "m1", &mut load).unwrap();
    assert_eq!((s.computed, s.reused, s.provider.as_deref()), (0, 3, None));
    let expected: BTreeMap<String, usize> = [
        ("CUDAExecutionProvider".to_string(), 1),
        ("fake".to_string(), 1),
        ("unrecorded".to_string(), 1),
    ]
    .into();
    assert_eq!(s.token_providers, expected);
    let notice = mixed_providers_notice(&s.token_providers).unwrap();
    assert!(
        notice.contains("CUDAExecutionProvider: 1, fake: 1, unrecorded: 1"),
        "{notice}"
    );
    // a recomputed case counts under the provider that ran
    std::fs::remove_file(out.join("b.tokens.npz")).unwrap();
    let s = run_with(&c, &src, "m1", &mut load).unwrap();
    assert_eq!(s.provider.as_deref(), Some("fake"));
    assert_eq!(s.token_providers.get("fake"), Some(&2));
    assert_eq!(s.token_providers.get("CUDAExecutionProvider"), None);
}

#[test]
fn shards_partition_the_cases() {
    assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 1, count: 3 });
    for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
        assert_eq!(Shard::parse(bad).unwrap_err().exit_code(), 2, "{bad}");
    }
    let shards: Vec<Shard> = (1..=3)
        .map(|i| Shard::parse(&format!("{i}/3")).unwrap())
        .collect();
    for c in 0..10 {
        assert_eq!(shards.iter().filter(|s| s.owns(c)).count(), 1);
    }
}
