//! Detection: letterbox a frame into the model's input, run ONNX Runtime, read its output
//! (YOLOv8, YOLOv5 or end-to-end layout), NMS.
//!
//! ONNX Runtime is loaded at run time from a shared library (`model.runtime` or
//! `$ORT_DYLIB_PATH`), so a missing or wrong library is a start-up error, not a panic. Each
//! model runs in [`Worker`] threads (`workers` of them, each with a [`Detector`] of its own)
//! that serve every camera using it; inference is CPU work that must stay off the async
//! workers. A model whose batch dimension is dynamic runs the frames waiting from several
//! cameras in one inference.

mod preprocess;
mod provider;
mod yolo;

pub use preprocess::{InputStyle, Letterbox, Preprocessor, letterbox};
pub use yolo::{Layout, decode, nms};

use crate::config::{ChannelOrder, ModelConfig, ModelFormat, PixelRange};
use crate::decode::Frame;
use crate::pipeline::{EdgeReceiver, EdgeSender};
use crate::telemetry::{CameraCounters, ModelCounters, Progress};
use image::RgbImage;
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// An axis-aligned box in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    /// The part both cover (of no area if none).
    pub fn intersection(&self, o: &BBox) -> BBox {
        BBox { x1: self.x1.max(o.x1), y1: self.y1.max(o.y1), x2: self.x2.min(o.x2), y2: self.y2.min(o.y2) }
    }

    pub fn iou(&self, o: &BBox) -> f32 {
        let inter = self.intersection(o).area();
        let union = self.area() + o.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// Bottom centre: where an object touches the ground, which is what zones are drawn around.
    pub fn anchor(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, self.y2)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// The model that found it: an index into `Config::all_models`.
    #[serde(skip)]
    pub model: usize,
    pub class_id: usize,
    pub label: String,
    pub score: f32,
    pub bbox: BBox,
}

/// What went wrong with a model; `key` is where its settings are (`model`, `models.garbage`).
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{key}.runtime: no ONNX Runtime library configured (set {key}.runtime or ORT_DYLIB_PATH)")]
    NoRuntime { key: String },
    #[error("{key}.runtime: cannot load ONNX Runtime from {path}: {message}")]
    Runtime { key: String, path: String, message: String },
    #[error("{key}.path: cannot load model {path}: {message}")]
    Model { key: String, path: String, message: String },
    #[error("model {model}: {message}")]
    Layout { model: String, message: String },
    #[error(
        "{key}.provider: {provider} is not available: {reason}; set {key}.provider_fallback = true to run on the CPU instead"
    )]
    Provider { key: String, provider: &'static str, reason: String },
    #[error("model {model}: inference failed: {message}")]
    Inference { model: String, message: String },
    #[error("model {model}: a picture cannot be its input: {error}")]
    Picture { model: String, error: String },
}

/// Loads the ONNX Runtime library and creates its environment, once per process; sessions
/// need the environment alive, so it is kept for the life of the process.
pub fn init_runtime(key: &str, path: &Path) -> Result<Environment, DetectError> {
    static RUNTIME: Mutex<Option<Environment>> = Mutex::new(None);
    let mut runtime = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = runtime.as_ref() {
        return Ok(env.clone());
    }
    let err = |message: String| DetectError::Runtime { key: key.into(), path: path.display().to_string(), message };
    if !path.is_file() {
        return Err(err("no such file".into()));
    }
    let env = ort::init_from(path)
        .map_err(|e| err(e.to_string()))?
        .with_name("fieldwatch")
        .with_telemetry(false)
        .build()
        .map_err(|e| err(e.to_string()))?;
    *runtime = Some(env.clone());
    Ok(env)
}

/// The model's input tensor for one batch size, made once and written in place after.
enum Input {
    F32(Tensor<f32>),
    F16(Tensor<half::f16>),
}

impl Input {
    /// Writes image `index` of the batch with `write`, which fills one `[3, H, W]` slice
    /// through the conversion to the tensor's element type.
    /// Has `write` fill image `index` (of `len` values) of the tensor; None past its end.
    fn write<T>(&mut self, index: usize, len: usize, write: impl FnOnce(InputSlice<'_>) -> T) -> Option<T> {
        let at = index * len..(index + 1) * len;
        match self {
            Input::F32(t) => t.extract_tensor_mut().1.get_mut(at).map(|s| write(InputSlice::F32(s))),
            Input::F16(t) => t.extract_tensor_mut().1.get_mut(at).map(|s| write(InputSlice::F16(s))),
        }
    }
}

/// One image's part of an input tensor.
enum InputSlice<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [half::f16]),
}

/// The model's input tensors by batch size (index 0: one frame), each made when first needed.
struct Inputs {
    /// Float16 (else float32) elements.
    half: bool,
    /// One image: channels, height, width.
    image: [usize; 3],
    by_batch: Vec<Option<Input>>,
}

impl Inputs {
    /// The tensor for a batch of `n`, made the first time (an error names `model`).
    fn get(&mut self, n: usize, model: &str) -> Result<&mut Input, DetectError> {
        let layout = |message: String| DetectError::Layout { model: model.to_string(), message };
        let (half, [c, h, w], most) = (self.half, self.image, self.by_batch.len());
        let Some(slot) = n.checked_sub(1).and_then(|i| self.by_batch.get_mut(i)) else {
            return Err(layout(format!("a batch of {n} images; the model takes 1 to {most}")));
        };
        let input = match slot.take() {
            Some(input) => input,
            None => {
                let allocator = ort::memory::Allocator::default();
                let made = match half {
                    false => Tensor::new(&allocator, [n, c, h, w]).map(Input::F32),
                    true => Tensor::new(&allocator, [n, c, h, w]).map(Input::F16),
                };
                made.map_err(|e| layout(format!("cannot make the input tensor: {e}")))?
            }
        };
        Ok(slot.insert(input))
    }
}

/// A loaded model and how to read it.
pub struct Detector {
    /// Declared before `_model_bytes`: a session runs from those bytes, so it is dropped first.
    session: Session,
    /// The model in ONNX Runtime's own format, optimized for this machine, which the sessions of
    /// all of a model's workers run from (see [`Detector::load_workers`]).
    _model_bytes: Option<Arc<Vec<u8>>>,
    name: String,
    input_width: u32,
    input_height: u32,
    inputs: Inputs,
    labels: Vec<String>,
    min_score: f32,
    multi_label: bool,
    nms_iou: f32,
    prep: Preprocessor,
    /// How its output reads: known from the declared shape, else from the first output.
    format: ModelFormat,
    provider: &'static str,
    /// Malformed candidates dropped since last taken.
    malformed: u64,
}

/// The error of loading `config`'s model.
fn model_error(config: &ModelConfig, message: impl ToString) -> DetectError {
    DetectError::Model {
        key: config.key.clone(),
        path: config.path.display().to_string(),
        message: message.to_string(),
    }
}

impl Detector {
    pub fn load(config: &ModelConfig) -> Result<Self, DetectError> {
        let (mut builder, provider) = Self::builder(config)?;
        let session = builder.commit_from_file(&config.path).map_err(|e| model_error(config, e))?;
        Self::from_session(config, session, provider, None)
    }

    /// `workers` detectors of one model. On the CPU they share one copy of its weights: the
    /// model is optimized once into ONNX Runtime's own format (with this machine's layout
    /// transforms), and every session runs from those bytes, its weights read where they lie
    /// (`session.use_ort_model_bytes_for_initializers`), prepacked weights shared too. Each
    /// further worker then costs its activations, not another copy of the model.
    pub fn load_workers(config: &ModelConfig, workers: usize) -> Result<Vec<Self>, DetectError> {
        if workers <= 1 || config.provider != crate::config::Provider::Cpu {
            return (0..workers).map(|_| Self::load(config)).collect();
        }
        static OPTIMIZED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = OPTIMIZED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("fieldwatch-{}-{n}.ort", std::process::id()));
        let optimized = (|| {
            let (builder, _) = Self::builder(config)?;
            let err = |e: ort::Error<_>| model_error(config, e);
            let builder = builder.with_optimized_model_path(&path).map_err(err)?;
            let mut builder = builder.with_config_entry("session.save_model_format", "ORT").map_err(err)?;
            drop(builder.commit_from_file(&config.path).map_err(|e| model_error(config, e))?);
            std::fs::read(&path).map_err(|e| model_error(config, format!("reading its optimized copy: {e}")))
        })();
        let _ = std::fs::remove_file(&path);
        let bytes = match optimized {
            Ok(bytes) => Arc::new(bytes),
            // A full or read-only temp directory costs memory, not the model.
            Err(error) => {
                warn!(%error, workers, "model not shared between its workers: each loads its own copy");
                return (0..workers).map(|_| Self::load(config)).collect();
            }
        };
        let prepacked = ort::session::builder::PrepackedWeights::new();
        (0..workers)
            .map(|_| {
                let (builder, provider) = Self::builder(config)?;
                let err = |e: ort::Error<_>| model_error(config, e);
                let builder = builder.with_prepacked_weights(&prepacked).map_err(err)?;
                let builder = builder.with_config_entry("session.use_ort_model_bytes_directly", "1").map_err(err)?;
                let mut builder =
                    builder.with_config_entry("session.use_ort_model_bytes_for_initializers", "1").map_err(err)?;
                // The session reads `bytes` for as long as it lives: the detector keeps them. (The
                // crate's `commit_from_memory_directly` sets the same two keys, but its session
                // cannot `run`, which takes `&mut`.)
                let session = builder.commit_from_memory(&bytes).map_err(|e| model_error(config, e))?;
                Self::from_session(config, session, provider, Some(bytes.clone()))
            })
            .collect()
    }

    /// A session builder with `config`'s options and execution provider.
    fn builder(config: &ModelConfig) -> Result<(ort::session::builder::SessionBuilder, &'static str), DetectError> {
        let key = &config.key;
        let env =
            init_runtime(key, &config.runtime_path().ok_or_else(|| DetectError::NoRuntime { key: key.clone() })?)?;
        let model_err = |message: String| model_error(config, message);
        if !config.path.is_file() {
            return Err(model_err("no such file".into()));
        }
        let builder = Session::builder(&env)
            .and_then(|b| b.with_intra_threads(config.threads).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|b| b.with_config_entry("session.intra_op.allow_spinning", "0").map_err(Into::into))
            .and_then(|b| b.with_memory_pattern(config.arena).map_err(Into::into))
            .map_err(|e| model_err(e.to_string()))?;
        // The CPU provider's arena keeps every run's peak resident; without it memory follows use.
        let builder = match config.arena {
            true => builder,
            false => builder
                .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
                .map_err(|e| model_err(e.to_string()))?,
        };
        provider::apply(builder, config)
    }

    fn from_session(
        config: &ModelConfig,
        session: Session,
        provider: &'static str,
        model_bytes: Option<Arc<Vec<u8>>>,
    ) -> Result<Self, DetectError> {
        let (key, name) = (&config.key, config.display_name());
        let layout_err = |message: String| DetectError::Layout { model: name.clone(), message };

        let input = session.inputs().first().ok_or_else(|| layout_err("the model has no input".into()))?;
        let dims: Vec<i64> = input.dtype().tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default();
        let side = |d: i64| u32::try_from(d).ok().filter(|&d| d > 0).unwrap_or(config.input_size);
        let (batch, input_height, input_width) = match dims.as_slice() {
            [1, 3, h, w] => (1, side(*h), side(*w)),
            // A batch dimension left open: several cameras' frames can run together.
            [b, 3, h, w] if *b <= 0 => (config.batch.max(1), side(*h), side(*w)),
            other => return Err(layout_err(format!("input shape {other:?} is not [1, 3, H, W] or [N, 3, H, W]"))),
        };
        let half = match input.dtype().tensor_type() {
            Some(ort::value::TensorElementType::Float32) => false,
            Some(ort::value::TensorElementType::Float16) => true,
            other => return Err(layout_err(format!("input element type {other:?} is not float32 or float16"))),
        };
        let labels = labels(config, &session)?;
        if labels.is_empty() {
            return Err(layout_err(format!(
                "no class names: the model has no `names` metadata; set {key}.labels or {key}.labels_file"
            )));
        }
        // The declared output shape is read now, so a wrong model fails at start, not per frame;
        // later outputs are read in the format found here. Only a shape that says too little
        // waits for the first output.
        let output = session.outputs().first().ok_or_else(|| layout_err("the model has no output".into()))?;
        let mut out_dims: Vec<i64> =
            output.dtype().tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default();
        if let (true, Some(images)) = (batch > 1 && out_dims.len() == 3, out_dims.first_mut()) {
            *images = 1; // one image's part of a batch's output
        }
        let open = out_dims.is_empty() || (out_dims.len() == 3 && out_dims.iter().any(|d| *d <= 0));
        let format = match Layout::of(&out_dims, labels.len(), config.format) {
            Ok(layout) => layout.format(),
            Err(_) if open => config.format,
            Err(message) => return Err(layout_err(message)),
        };
        let style = InputStyle {
            bgr: config.channel_order == ChannelOrder::Bgr,
            scale: if config.pixel_range == PixelRange::Unit { 1.0 / 255.0 } else { 1.0 },
        };
        info!(
            model = %name, input = %format!("{input_width}x{input_height}"), batch, ?format, provider, labels = ?labels,
            "model loaded"
        );
        let mut detector = Self {
            session,
            _model_bytes: model_bytes,
            name,
            input_width,
            input_height,
            inputs: Inputs {
                half,
                image: [3, input_height as usize, input_width as usize],
                by_batch: (0..batch).map(|_| None).collect(),
            },
            labels,
            min_score: config.min_score,
            multi_label: config.multi_label,
            nms_iou: config.nms_iou,
            prep: Preprocessor::new(input_width, input_height, style),
            format,
            provider,
            malformed: 0,
        };
        detector.inputs.get(1, &detector.name)?; // a model whose input cannot be made fails now
        Ok(detector)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn input_size(&self) -> (u32, u32) {
        (self.input_width, self.input_height)
    }

    /// The most frames one run takes: 1, or `model.batch` for a model with a dynamic batch.
    pub fn max_batch(&self) -> usize {
        self.inputs.by_batch.len()
    }

    /// The execution provider inference runs on (`cpu`, `cuda`, ...).
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// Detects objects in decoded frames, straight from their YUV planes, in one run (at most
    /// [`max_batch`](Self::max_batch)); boxes in each frame's pixels. Also says how long the
    /// preprocessing took.
    pub fn detect_frames(&mut self, frames: &[&Frame]) -> (Result<Vec<Vec<Detection>>, DetectError>, Duration) {
        let started = Instant::now();
        let (len, prep) = (self.prep.input_len(), &mut self.prep);
        let input = match self.inputs.get(frames.len(), &self.name) {
            Ok(input) => input,
            Err(e) => return (Err(e), started.elapsed()),
        };
        let boxes: Result<Vec<Letterbox>, DetectError> = (frames.iter().enumerate())
            .map(|(i, frame)| {
                let written = input.write(i, len, |slice| match slice {
                    InputSlice::F32(out) => prep.frame(frame, out, |v| v),
                    InputSlice::F16(out) => prep.frame(frame, out, half::f16::from_f32),
                });
                letterboxed(&self.name, i, written)
            })
            .collect();
        let preprocessed = started.elapsed();
        (boxes.and_then(|boxes| self.infer(&boxes)), preprocessed)
    }

    /// Detects objects in one decoded frame (see [`detect_frames`](Self::detect_frames)).
    pub fn detect_frame(&mut self, frame: &Frame) -> (Result<Vec<Detection>, DetectError>, Duration) {
        let (result, preprocessed) = self.detect_frames(&[frame]);
        (result.map(|mut all| all.pop().unwrap_or_default()), preprocessed)
    }

    /// Detects objects in an RGB image (a photo); boxes in its pixels.
    pub fn detect(&mut self, rgb: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        let (len, prep) = (self.prep.input_len(), &mut self.prep);
        let input = self.inputs.get(1, &self.name)?;
        let written = input.write(0, len, |slice| match slice {
            InputSlice::F32(out) => prep.rgb(rgb, out, |v| v),
            InputSlice::F16(out) => prep.rgb(rgb, out, half::f16::from_f32),
        });
        let lb = letterboxed(&self.name, 0, written)?;
        Ok(self.infer(&[lb])?.pop().unwrap_or_default())
    }

    /// Runs an already letterboxed RGB 0..1 `[1, 3, H, W]` tensor (float models), mapping boxes
    /// back through `lb`: for comparing with a reference implementation on the same input.
    pub fn detect_tensor(&mut self, tensor: &[f32], lb: &Letterbox) -> Result<Vec<Detection>, DetectError> {
        let len = self.prep.input_len();
        if tensor.len() != len {
            let error = format!("a tensor of {} values for an input of {len}", tensor.len());
            return Err(DetectError::Picture { model: self.name.clone(), error });
        }
        self.inputs.get(1, &self.name)?.write(0, len, |slice| match slice {
            InputSlice::F32(out) => out.iter_mut().zip(tensor).for_each(|(d, v)| *d = *v),
            InputSlice::F16(out) => out.iter_mut().zip(tensor).for_each(|(d, v)| *d = half::f16::from_f32(*v)),
        });
        Ok(self.infer(std::slice::from_ref(lb))?.pop().unwrap_or_default())
    }

    /// Runs the input tensor of `boxes.len()` images and maps each image's boxes back through
    /// its letterbox.
    fn infer(&mut self, boxes: &[Letterbox]) -> Result<Vec<Vec<Detection>>, DetectError> {
        let name = &self.name;
        let infer = |message: String| DetectError::Inference { model: name.clone(), message };
        let input = boxes.len().checked_sub(1).and_then(|i| self.inputs.by_batch.get(i)).and_then(Option::as_ref);
        let outputs = match input {
            Some(Input::F32(t)) => self.session.run(ort::inputs![t]),
            Some(Input::F16(t)) => self.session.run(ort::inputs![t]),
            None => return Err(infer(format!("no input tensor written for a batch of {}", boxes.len()))),
        }
        .map_err(|e| infer(e.to_string()))?;
        let Some((_, output)) = outputs.iter().next() else { return Err(infer("the model gave no output".into())) };
        let (out_shape, data) = output.try_extract_tensor::<f32>().map_err(|e| infer(e.to_string()))?;
        let classes = self.labels.len();
        // Each image's part of the output reads as a batch of one.
        let one: Vec<i64> = out_shape.iter().enumerate().map(|(i, d)| if i == 0 { 1 } else { *d }).collect();
        let layout = Layout::of(&one, classes, self.format)
            .map_err(|message| DetectError::Layout { model: name.clone(), message })?;
        self.format = layout.format();
        // The values must be what the shape says, for every image of the run (an output whose
        // detection count changes between runs is fine: its shape changes with it).
        let per_image = layout.values(classes).filter(|v| v.checked_mul(boxes.len()) == Some(data.len()));
        let Some(per_image) = per_image else {
            return Err(infer(format!("output shape {out_shape:?} does not match its {} values", data.len())));
        };
        if per_image == 0 {
            return Ok(vec![Vec::new(); boxes.len()]); // no candidates at all: an empty scene
        }
        let mut found = Vec::with_capacity(boxes.len());
        for (lb, data) in boxes.iter().zip(data.chunks_exact(per_image)) {
            let decoded = decode(data, layout, classes, lb, self.min_score, self.multi_label);
            self.malformed += decoded.malformed as u64;
            let mut dets = if layout.end_to_end() { decoded.detections } else { nms(decoded.detections, self.nms_iou) };
            for d in &mut dets {
                d.label = self.labels.get(d.class_id).cloned().unwrap_or_default();
            }
            found.push(dets);
        }
        Ok(found)
    }

    /// Candidates dropped as malformed since the last call (see [`yolo::Decoded`]).
    pub fn take_malformed(&mut self) -> u64 {
        std::mem::take(&mut self.malformed)
    }
}

/// What letterboxing image `index` into the input gave (None: the tensor has no such image), as
/// model `model`'s error if it failed.
fn letterboxed(
    model: &str,
    index: usize,
    written: Option<Result<Letterbox, preprocess::PreprocessError>>,
) -> Result<Letterbox, DetectError> {
    let picture = |error: String| DetectError::Picture { model: model.to_string(), error };
    let written = written.ok_or_else(|| picture(format!("image {index} is past the input tensor")))?;
    written.map_err(|e| picture(e.to_string()))
}

/// Class names: `model.labels`, else `model.labels_file`, else the model's `names` metadata.
fn labels(config: &ModelConfig, session: &Session) -> Result<Vec<String>, DetectError> {
    if !config.labels.is_empty() {
        return Ok(config.labels.clone());
    }
    if !config.labels_file.as_os_str().is_empty() {
        let text = std::fs::read_to_string(&config.labels_file).map_err(|e| DetectError::Model {
            key: config.key.clone(),
            path: config.labels_file.display().to_string(),
            message: format!("{}.labels_file: {e}", config.key),
        })?;
        return Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect());
    }
    let names = session.metadata().ok().and_then(|m| m.custom("names"));
    Ok(names.as_deref().map(parse_names).unwrap_or_default())
}

/// Parses Ultralytics' `names` metadata: `{0: 'person', 1: 'bicycle'}`.
fn parse_names(raw: &str) -> Vec<String> {
    let mut names: Vec<(usize, String)> = raw
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(", ")
        .filter_map(|entry| {
            let (k, v) = entry.split_once(':')?;
            Some((k.trim().parse().ok()?, v.trim().trim_matches(['\'', '"']).to_string()))
        })
        .collect();
    names.sort();
    names.into_iter().map(|(_, n)| n).collect()
}

/// A frame on its way through the models its camera's rules read, with what they found so
/// far; after the last model it goes to the camera's rules.
pub struct Detected {
    pub frame: Arc<Frame>,
    pub detections: Vec<Detection>,
}

impl From<Arc<Frame>> for Detected {
    fn from(frame: Arc<Frame>) -> Self {
        Self { frame, detections: Vec::new() }
    }
}

/// Where one model sends each camera's frames, by the camera's key on the model's frames edge:
/// the camera units fill in their route when they start and clear it when they stop, so the
/// model's workers serve cameras that come and go with reloads. One table per model: once a
/// model's workers have ended, dropping theirs ends the edges after them.
#[derive(Clone, Default)]
pub struct Routes(Arc<std::sync::RwLock<Vec<Option<Route>>>>);

/// One camera's route: `next` is where its frames go after this model (the camera's next
/// model or its rules).
pub struct Route {
    pub camera_id: String,
    pub counters: Arc<CameraCounters>,
    pub next: EdgeSender<Detected>,
}

impl Routes {
    pub fn set(&self, key: usize, route: Route) {
        let mut routes = self.0.write().unwrap_or_else(|e| e.into_inner());
        if routes.len() <= key {
            routes.resize_with(key + 1, || None);
        }
        if let Some(slot) = routes.get_mut(key) {
            *slot = Some(route);
        }
    }

    /// Forgets a stopped camera's route: frames of its key still waiting go nowhere.
    pub fn clear(&self, key: usize) {
        let mut routes = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = routes.get_mut(key) {
            *slot = None;
        }
    }

    /// Camera `key`'s id, counters and where its frames go next (sent outside the lock: a
    /// lossless edge may wait).
    fn get(&self, key: usize) -> Option<(String, Arc<CameraCounters>, EdgeSender<Detected>)> {
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner());
        let route = routes.get(key)?.as_ref()?;
        Some((route.camera_id.clone(), route.counters.clone(), route.next.clone()))
    }
}

/// One model's inference worker: its index among the models, the edge it takes frames from
/// (keyed by camera), and the cameras' routes.
pub struct Worker {
    pub detector: Detector,
    pub model: usize,
    pub input: Arc<EdgeReceiver<Detected>>,
    pub routes: Routes,
    pub stats: Arc<ModelCounters>,
    /// Busy while a run is in progress: a run that never ends is a hung worker.
    pub progress: Arc<Progress>,
}

impl Worker {
    /// Runs until the input edge ends: each run takes the waiting frames, one per camera (up
    /// to the model's batch), detects them together, and passes each on.
    pub fn run(mut self) {
        let first = self.routes.get(0).map(|(camera, _, _)| camera).unwrap_or_default();
        crate::testing::maybe_panic("detect", &first);
        loop {
            let batch = self.input.recv_batch(self.detector.max_batch());
            if batch.is_empty() {
                return;
            }
            let started = Instant::now();
            self.progress.start();
            let routes: Vec<_> = batch.iter().map(|(key, _)| self.routes.get(*key)).collect();
            let first_camera = routes.first().and_then(Option::as_ref).map(|(camera, _, _)| camera.as_str());
            crate::testing::maybe_block("detect", first_camera.unwrap_or_default());
            let frames: Vec<&Frame> = batch.iter().map(|(_, d)| &*d.frame).collect();
            let (result, preprocessing) = self.detector.detect_frames(&frames);
            self.progress.done();
            let took = started.elapsed();
            self.stats.ran(batch.len(), took);
            self.stats.malformed.add(self.detector.take_malformed());
            // Each frame of a run is charged an equal share of it.
            let share = |d: Duration| d.as_nanos() as u64 / batch.len() as u64;
            let (busy, preprocessing) = (share(took), share(preprocessing));
            for (_, counters, _) in routes.iter().flatten() {
                counters.detect_busy.add(busy);
                counters.preprocess_busy.add(preprocessing);
            }
            match result {
                Ok(found) => {
                    for (((_, mut job), mut detections), route) in batch.into_iter().zip(found).zip(routes) {
                        detections.iter_mut().for_each(|d| d.model = self.model);
                        job.detections.append(&mut detections);
                        // A closed output or no route means that camera is stopping; the others go on.
                        if let Some((_, _, next)) = route {
                            let _ = next.send(job);
                        }
                    }
                }
                Err(error) => {
                    self.stats.failures.inc();
                    let cameras: Vec<&str> = routes.iter().flatten().map(|(camera, _, _)| camera.as_str()).collect();
                    warn!(%error, model = %self.detector.name(), ?cameras, "detection failed; frames skipped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ultralytics_names_metadata_parses_in_index_order() {
        assert_eq!(parse_names("{1: 'Fall', 0: 'Normal'}"), vec!["Normal", "Fall"]);
        assert_eq!(parse_names("{0: 'red', 1: 'green'}"), vec!["red", "green"]);
    }

    #[test]
    fn box_geometry() {
        let a = BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 };
        let b = BBox { x1: 5.0, y1: 0.0, x2: 15.0, y2: 10.0 };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(a.anchor(), (5.0, 10.0));
    }
}
