//! The ONNX Runtime embedder: runs a model that follows the contract of `onnx/README.md`.
//!
//! * Input: `pixel_values` f32 `[B, 3, H, W]` (normalised by the caller).
//! * Output: `layer_<k>` f32 `[B, (H/14)(W/14), C]` for each selected block `k`, gathered into `[L, B, N, C]`;
//!   with [`Embedder::embed_with_cls`] also `cls` f32 `[B, C]` (requested only then: a second set of run
//!   options asks for it, so the 3D path that never needs it does not run the blocks after its last layer).
//!
//! The shared library is loaded at run time (`ort` with `load-dynamic`) from `--ort-lib` or `ORT_DYLIB_PATH`;
//! it comes from the `onnxruntime` (CPU) or `onnxruntime-gpu` (CUDA) wheel on PyPI. Nothing is downloaded.
//!
//! Devices: `cpu` registers nothing (ONNX Runtime's CPU provider); `cuda` registers the CUDA execution
//! provider *strictly* (`error_on_failure`: ONNX Runtime would otherwise fall back to the CPU silently) and a
//! failure is an error that quotes the provider's own message; `auto` tries `cuda` and falls back to the CPU
//! with a notice ([`OrtEmbedder::notice`]), and [`OrtEmbedder::provider`] always names the provider that runs.
//!
//! Traps: the library can be loaded once per process (a second, different path is refused); the model is
//! probed once at load time with a 14×14 image to check the contract and learn `C`; only the selected outputs
//! are requested, so ONNX Runtime skips the blocks after the last selected one.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ndarray::{Array2, Array4, ArrayView4, Axis};
use ort::environment::Environment;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionOutputs};
use ort::value::TensorRef;

use super::{Embedder, PATCH};
use crate::{Error, Result};

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when the CUDA execution provider really registers, else the CPU (with a notice).
    Auto,
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// The CUDA execution provider; failure to register it is an error.
    Cuda,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            other => Err(format!(
                "unknown device `{other}` (expected auto, cpu or cuda)"
            )),
        }
    }
}

/// Everything needed to open a model with ONNX Runtime.
#[derive(Debug, Clone)]
pub struct OrtConfig {
    /// The ONNX file (model contract of `onnx/README.md`).
    pub model: PathBuf,
    /// The ONNX Runtime shared library; `None` = the `ORT_DYLIB_PATH` environment variable.
    pub ort_lib: Option<PathBuf>,
    pub device: Device,
    /// Intra-op threads; 0 = ONNX Runtime's default (one per physical core).
    pub threads: usize,
    /// Selected blocks (1-based), read from the outputs `layer_<k>`.
    pub layers: Vec<usize>,
}

/// Name of the CPU execution provider as ONNX Runtime spells it.
pub const CPU_PROVIDER: &str = "CPUExecutionProvider";
/// The fix of a CUDA failure, in one line.
const CUDA_FIX: &str =
    "fix: on a machine without an NVIDIA GPU give --device cpu (or auto); for CUDA give --ort-lib \
     the library of the onnxruntime-gpu wheel (.venv/lib/python3.*/site-packages/onnxruntime/capi/\
     libonnxruntime.so.*, with CUDA 13 and cuDNN 9 on the loader path)";

/// Whether ONNX Runtime's CUDA error says that the library has no CUDA provider at all.
fn is_cpu_wheel(error: &str) -> bool {
    error.contains("not enabled in this build")
}

/// ONNX Runtime's reason, said of the library (its "not enabled in this build" reads as if mri-ad had
/// to be rebuilt).
fn plain_cuda_reason(first: &str) -> String {
    if is_cpu_wheel(first) {
        "this library was built without CUDA: it is the CPU wheel's".to_string()
    } else {
        first.to_string()
    }
}

/// Name of the CUDA execution provider as ONNX Runtime spells it.
pub const CUDA_PROVIDER: &str = "CUDAExecutionProvider";

static ENVIRONMENT: OnceLock<Mutex<Option<(PathBuf, Environment)>>> = OnceLock::new();

/// Resolves the ONNX Runtime library path: `--ort-lib`, else `ORT_DYLIB_PATH`; checks that the file exists.
pub fn resolve_ort_lib(flag: Option<&Path>) -> Result<PathBuf> {
    let (path, source) = match flag {
        Some(p) => (p.to_path_buf(), "--ort-lib"),
        None => match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) if !p.is_empty() => (PathBuf::from(p), "ORT_DYLIB_PATH"),
            _ => {
                return Err(Error::bad_argument(
                    "--ort-lib",
                    format!(
                        "the ONNX Runtime shared library is needed to run the model; pass --ort-lib PATH or set \
                         ORT_DYLIB_PATH (it ships in the `onnxruntime` wheel: \
                         .venv/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.*; \
                         scripts/setup/python.sh installs it){}",
                        venv_hint()
                    ),
                ))
            }
        },
    };
    if !path.is_file() {
        return Err(Error::bad_argument(
            source,
            format!(
                "{}: no such file (expected the ONNX Runtime shared library libonnxruntime.so.*)",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// If the repository's `.venv` holds the library, say where (a hint for the error message).
fn venv_hint() -> String {
    let Ok(entries) = std::fs::read_dir(".venv/lib") else {
        return String::new();
    };
    for e in entries.flatten() {
        let capi = e.path().join("site-packages/onnxruntime/capi");
        if let Ok(files) = std::fs::read_dir(&capi) {
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with("libonnxruntime.so.") {
                    return format!("; found one here: {}", f.path().display());
                }
            }
        }
    }
    String::new()
}

/// Loads the ONNX Runtime library (once per process) and returns the environment.
fn environment(lib: &Path) -> Result<Environment> {
    let cell = ENVIRONMENT.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((loaded, env)) = guard.as_ref() {
        if loaded != lib {
            return Err(Error::bad_argument(
                "--ort-lib",
                format!(
                    "ONNX Runtime was already loaded from {} in this process; cannot switch to {}",
                    loaded.display(),
                    lib.display()
                ),
            ));
        }
        return Ok(env.clone());
    }
    let builder = ort::init_from(lib).map_err(|e| {
        Error::bad_argument(
            "--ort-lib",
            format!("cannot load ONNX Runtime from {}: {e}", lib.display()),
        )
    })?;
    let env = builder.with_name("mri-ad").build().map_err(|e| {
        Error::bad_argument(
            "--ort-lib",
            format!("ONNX Runtime from {} failed to start: {e}", lib.display()),
        )
    })?;
    *guard = Some((lib.to_path_buf(), env.clone()));
    Ok(env)
}

/// A model opened with ONNX Runtime.
pub struct OrtEmbedder {
    session: Session,
    layers: Vec<usize>,
    outputs: Vec<String>,
    dim: usize,
    provider: &'static str,
    notice: Option<String>,
    options: RunOptions<HasSelectedOutputs>,
    /// Run options that also request `cls` (None when the model has no `cls` output).
    options_cls: Option<RunOptions<HasSelectedOutputs>>,
    model: PathBuf,
}

impl std::fmt::Debug for OrtEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtEmbedder")
            .field("model", &self.model)
            .field("layers", &self.layers)
            .field("dim", &self.dim)
            .field("provider", &self.provider)
            .finish()
    }
}

fn session(env: &Environment, cfg: &OrtConfig, cuda: bool) -> std::result::Result<Session, String> {
    let mut b = Session::builder(env).map_err(|e| e.to_string())?;
    if cfg.threads > 0 {
        b = b
            .with_intra_threads(cfg.threads)
            .map_err(|e| e.to_string())?;
    }
    if cuda {
        b = b
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| format!("the CUDA execution provider could not be registered: {e}"))?;
    }
    b.commit_from_file(&cfg.model).map_err(|e| e.to_string())
}

/// Refuses a missing model file and an empty block selection (before ONNX Runtime is loaded).
fn check_config(cfg: &OrtConfig) -> Result<()> {
    if !cfg.model.is_file() {
        return Err(Error::bad_argument(
            "--model",
            format!(
                "{}: no such file (build the default model with scripts/setup/build_default_model.py, see onnx/README.md)",
                cfg.model.display()
            ),
        ));
    }
    if cfg.layers.is_empty() {
        return Err(Error::bad_argument(
            "--layers",
            "at least one block must be selected",
        ));
    }
    Ok(())
}

/// An error about the model file of `cfg`.
fn model_error(cfg: &OrtConfig, problem: String) -> Error {
    Error::bad_input(&cfg.model, problem)
}

/// The error of a model that ONNX Runtime cannot load.
fn load_error(cfg: &OrtConfig, problem: String) -> Error {
    model_error(
        cfg,
        format!(
            "ONNX Runtime cannot load the model (not an ONNX file, or a damaged one? onnx/README.md says \
             how to build the default model): {problem}"
        ),
    )
}

/// Opens the model on `cfg.device` (see the module doc): the session, the provider that runs it and, when
/// `auto` fell back to the CPU, the notice saying so. `lib` is named in the error of a failed `cuda`.
fn open_on_device(
    env: &Environment,
    cfg: &OrtConfig,
    lib: &Path,
) -> Result<(Session, &'static str, Option<String>)> {
    Ok(match cfg.device {
        Device::Cpu => (
            session(env, cfg, false).map_err(|e| load_error(cfg, e))?,
            CPU_PROVIDER,
            None,
        ),
        Device::Cuda => match session(env, cfg, true) {
            Ok(s) => (s, CUDA_PROVIDER, None),
            Err(e) => {
                return Err(Error::bad_argument(
                    "--device",
                    format!(
                        "cuda was requested but ONNX Runtime ({}) cannot run {} on CUDA: {e}{}\n{CUDA_FIX}",
                        lib.display(),
                        cfg.model.display(),
                        if is_cpu_wheel(&e) {
                            " (that is: this library is the CPU wheel's, built without CUDA)"
                        } else {
                            ""
                        }
                    ),
                ))
            }
        },
        Device::Auto => match session(env, cfg, true) {
            Ok(s) => (s, CUDA_PROVIDER, None),
            Err(e) => {
                let first = e.lines().next().unwrap_or("").to_string();
                let s = session(env, cfg, false).map_err(|e| load_error(cfg, e))?;
                (
                    s,
                    CPU_PROVIDER,
                    Some(format!(
                        "CUDA is not available with the ONNX Runtime library {} ({}); running on the CPU. \
                         For CUDA, give --ort-lib the library of the onnxruntime-gpu wheel; --device cpu \
                         says CPU without this notice",
                        lib.display(),
                        plain_cuda_reason(&first)
                    )),
                )
            }
        },
    })
}

/// The outputs `layer_<k>` of the selected blocks, each checked against the model's outputs (`available`).
fn selected_outputs(cfg: &OrtConfig, available: &[String]) -> Result<Vec<String>> {
    let mut outputs = Vec::new();
    for &k in &cfg.layers {
        let name = format!("layer_{k}");
        if !available.contains(&name) {
            return Err(Error::bad_argument(
                "--layers",
                format!(
                    "block {k} is not exported by {} (it has outputs {}); choose among those",
                    cfg.model.display(),
                    available.join(", ")
                ),
            ));
        }
        outputs.push(name);
    }
    Ok(outputs)
}

/// Run options that request only `outputs` (and `cls` when `with_cls`).
fn run_options(outputs: &[String], with_cls: bool) -> Result<RunOptions<HasSelectedOutputs>> {
    let mut selector = OutputSelector::no_default();
    for o in outputs {
        selector = selector.with(o.clone());
    }
    if with_cls {
        selector = selector.with("cls");
    }
    Ok(RunOptions::new()
        .map_err(|e| Error::Backend {
            what: "ONNX Runtime".into(),
            problem: e.to_string(),
        })?
        .with_outputs(selector))
}

impl OrtEmbedder {
    /// Loads ONNX Runtime and the model, registers the device, checks the model contract.
    pub fn load(cfg: &OrtConfig) -> Result<Self> {
        check_config(cfg)?;
        let lib = resolve_ort_lib(cfg.ort_lib.as_deref())?;
        let env = environment(&lib)?;
        let (session, provider, notice) = open_on_device(&env, cfg, &lib)?;
        let input_names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        if input_names != ["pixel_values"] {
            return Err(model_error(cfg, format!(
                "the model contract requires one input `pixel_values` [B, 3, H, W]; this model has inputs {input_names:?}"
            )));
        }
        let available: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let outputs = selected_outputs(cfg, &available)?;
        let options = run_options(&outputs, false)?;
        let options_cls = if available.iter().any(|o| o == "cls") {
            Some(run_options(&outputs, true)?)
        } else {
            None
        };
        let mut me = OrtEmbedder {
            session,
            layers: cfg.layers.clone(),
            outputs,
            dim: 0,
            provider,
            notice,
            options,
            options_cls,
            model: cfg.model.clone(),
        };
        // probe: one 14x14 image, to check the output shapes and learn C
        let probe = me.run(Array4::zeros((1, 3, PATCH, PATCH)).view(), true, false)?;
        me.dim = probe.0.dim().3;
        Ok(me)
    }

    /// A notice for the user when `--device auto` fell back to the CPU.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// Runs the model on a batch and discards the result: plain ONNX Runtime inference, for benchmarks.
    pub fn run_plain(&mut self, pixel_values: ArrayView4<f32>) -> Result<()> {
        let input = TensorRef::from_array_view(pixel_values).map_err(|e| self.backend(e))?;
        let out = self
            .session
            .run_with_options(ort::inputs!["pixel_values" => input], &self.options)
            .map_err(|e| Error::Backend {
                what: format!("running {}", self.model.display()),
                problem: e.to_string(),
            })?;
        drop(out);
        Ok(())
    }

    fn backend(&self, e: impl std::fmt::Display) -> Error {
        Error::Backend {
            what: format!("running {}", self.model.display()),
            problem: e.to_string(),
        }
    }

    fn run(
        &mut self,
        px: ArrayView4<f32>,
        probing: bool,
        with_cls: bool,
    ) -> Result<(Array4<f32>, Option<Array2<f32>>)> {
        let (b, c, h, w) = px.dim();
        if c != 3 || h % PATCH != 0 || w % PATCH != 0 || h == 0 || w == 0 || b == 0 {
            return Err(Error::bad_argument(
                "backbone input",
                format!("pixel_values must be [B, 3, H, W] with H, W multiples of {PATCH}; got [{b}, {c}, {h}, {w}]"),
            ));
        }
        let model = self.model.clone();
        let options = if with_cls {
            self.options_cls.as_ref().ok_or_else(|| {
                Error::bad_input(
                    &model,
                    "the model has no `cls` output, which the 2D path needs for RsCIN (model contract of \
                     onnx/README.md: `cls` f32 [B, C])",
                )
            })?
        } else {
            &self.options
        };
        let input = TensorRef::from_array_view(px).map_err(|e| self.backend(e))?;
        let result = self
            .session
            .run_with_options(ort::inputs!["pixel_values" => input], options);
        let out = match result {
            Ok(o) => o,
            Err(e) if probing => {
                return Err(Error::bad_input(
                    &model,
                    format!("the model fails on a [1, 3, 14, 14] probe input (is it a ViT/14 following onnx/README.md?): {e}"),
                ))
            }
            Err(e) => return Err(Error::Backend { what: format!("running {}", model.display()), problem: e.to_string() }),
        };
        let contract = OutputContract {
            model: &model,
            outputs: &self.outputs,
            batch: b,
            height: h,
            width: w,
            dim: (!probing).then_some(self.dim),
        };
        let tokens = contract.layers(&out)?;
        let cls = if with_cls {
            Some(contract.cls(&out, tokens.dim().3)?)
        } else {
            None
        };
        Ok((tokens, cls))
    }
}

/// What the outputs of one run must look like (model contract of `onnx/README.md`).
struct OutputContract<'a> {
    /// The model file, named in errors.
    model: &'a Path,
    /// The selected `layer_<k>` outputs, in order.
    outputs: &'a [String],
    /// The input's batch size and image size.
    batch: usize,
    height: usize,
    width: usize,
    /// The token width C the outputs must have (`None` when probing, which learns it).
    dim: Option<usize>,
}

impl OutputContract<'_> {
    /// The selected outputs gathered into `[L, B, N, C]`, each checked to be `[B, N, C]` of one width C.
    fn layers(&self, out: &SessionOutputs) -> Result<Array4<f32>> {
        let (b, h, w, model) = (self.batch, self.height, self.width, self.model);
        let n = (h / PATCH) * (w / PATCH);
        let mut result: Option<Array4<f32>> = None;
        for (l, name) in self.outputs.iter().enumerate() {
            let view = out[name.as_str()].try_extract_array::<f32>().map_err(|e| {
                Error::bad_input(
                    model,
                    format!("output `{name}` is not a float32 tensor: {e}"),
                )
            })?;
            let shape = view.shape().to_vec();
            let ok = shape.len() == 3
                && shape[0] == b
                && shape[1] == n
                && shape[2] > 0
                && self.dim.is_none_or(|dim| shape[2] == dim);
            if !ok {
                return Err(Error::bad_input(
                    model,
                    format!(
                        "output `{name}` has shape {shape:?} for an input [{b}, 3, {h}, {w}]; the model contract requires \
                         [B, (H/14)·(W/14), C] = [{b}, {n}, C] (patch tokens only, CLS dropped)"
                    ),
                ));
            }
            let dst =
                result.get_or_insert_with(|| Array4::zeros((self.outputs.len(), b, n, shape[2])));
            if dst.dim().3 != shape[2] {
                return Err(Error::bad_input(
                    model,
                    format!(
                        "output `{name}` has width {} but `{}` has {}",
                        shape[2],
                        self.outputs[0],
                        dst.dim().3
                    ),
                ));
            }
            dst.index_axis_mut(Axis(0), l).assign(
                &view
                    .into_dimensionality::<ndarray::Ix3>()
                    .expect("checked: 3 dimensions"),
            );
        }
        Ok(result.expect("at least one layer"))
    }

    /// The `cls` output, checked to be `[B, C]` for the layers' width `dim`.
    fn cls(&self, out: &SessionOutputs, dim: usize) -> Result<Array2<f32>> {
        let (b, model) = (self.batch, self.model);
        let view = out["cls"].try_extract_array::<f32>().map_err(|e| {
            Error::bad_input(model, format!("output `cls` is not a float32 tensor: {e}"))
        })?;
        let shape = view.shape().to_vec();
        if shape != [b, dim] {
            return Err(Error::bad_input(
                model,
                format!(
                    "output `cls` has shape {shape:?}; the model contract requires [B, C] = [{b}, {dim}]"
                ),
            ));
        }
        Ok(view
            .into_dimensionality::<ndarray::Ix2>()
            .expect("checked: 2 dimensions")
            .to_owned())
    }
}

impl Embedder for OrtEmbedder {
    fn layers(&self) -> &[usize] {
        &self.layers
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed(&mut self, pixel_values: ArrayView4<f32>) -> Result<Array4<f32>> {
        Ok(self.run(pixel_values, false, false)?.0)
    }
    fn embed_with_cls(
        &mut self,
        pixel_values: ArrayView4<f32>,
    ) -> Result<(Array4<f32>, Array2<f32>)> {
        let (tokens, cls) = self.run(pixel_values, false, true)?;
        Ok((tokens, cls.expect("requested")))
    }
    fn provider(&self) -> &str {
        self.provider
    }
}
