//! Detection: letterbox a frame into the model's input, run ONNX Runtime, read its output
//! (YOLOv8, YOLOv5 or end-to-end layout), NMS.
//!
//! ONNX Runtime is loaded at run time from a shared library (`model.runtime` or
//! `$ORT_DYLIB_PATH`), so a missing or wrong library is a start-up error, not a panic. One
//! [`Detector`] serves every camera from its own thread ([`run_worker`]); inference is CPU work
//! that must stay off the async workers.

mod preprocess;
mod provider;
mod yolo;

pub use preprocess::{InputStyle, Letterbox, Preprocessor, letterbox};
pub use yolo::{Layout, decode, nms};

use crate::config::{ChannelOrder, ModelConfig, ModelFormat, PixelRange};
use crate::decode::Frame;
use crate::pipeline::{EdgeReceiver, EdgeSender};
use crate::telemetry::CameraCounters;
use image::RgbImage;
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// An axis-aligned box in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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

    pub fn iou(&self, o: &BBox) -> f32 {
        let inter =
            BBox { x1: self.x1.max(o.x1), y1: self.y1.max(o.y1), x2: self.x2.min(o.x2), y2: self.y2.min(o.y2) }.area();
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
    pub class_id: usize,
    pub label: String,
    pub score: f32,
    pub bbox: BBox,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("model.runtime: no ONNX Runtime library configured (set model.runtime or ORT_DYLIB_PATH)")]
    NoRuntime,
    #[error("model.runtime: cannot load ONNX Runtime from {path}: {message}")]
    Runtime { path: String, message: String },
    #[error("model.path: cannot load model {path}: {message}")]
    Model { path: String, message: String },
    #[error("model {model}: {message}")]
    Layout { model: String, message: String },
    #[error(
        "model.provider: {provider} is not available: {reason}; set model.provider_fallback = true to run on the CPU instead"
    )]
    Provider { provider: &'static str, reason: String },
    #[error("model {model}: inference failed: {message}")]
    Inference { model: String, message: String },
}

/// Loads the ONNX Runtime library and creates its environment, once per process; sessions
/// need the environment alive, so it is kept for the life of the process.
pub fn init_runtime(path: &Path) -> Result<Environment, DetectError> {
    static RUNTIME: Mutex<Option<Environment>> = Mutex::new(None);
    let mut runtime = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = runtime.as_ref() {
        return Ok(env.clone());
    }
    let err = |message: String| DetectError::Runtime { path: path.display().to_string(), message };
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

/// The model's input tensor, made once and written in place for every frame.
enum Input {
    F32(Tensor<f32>),
    F16(Tensor<half::f16>),
}

/// A loaded model and how to read it.
pub struct Detector {
    session: Session,
    name: String,
    input_width: u32,
    input_height: u32,
    labels: Vec<String>,
    min_score: f32,
    nms_iou: f32,
    input: Input,
    prep: Preprocessor,
    /// How its output reads: known from the declared shape, else from the first output.
    format: ModelFormat,
    provider: &'static str,
}

impl Detector {
    pub fn load(config: &ModelConfig) -> Result<Self, DetectError> {
        let env = init_runtime(&config.runtime_path().ok_or(DetectError::NoRuntime)?)?;
        let name = config.display_name();
        let model_err = |message: String| DetectError::Model { path: config.path.display().to_string(), message };
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
        let (mut builder, provider) = provider::apply(builder, config)?;
        let session = builder.commit_from_file(&config.path).map_err(|e| model_err(e.to_string()))?;
        let layout_err = |message: String| DetectError::Layout { model: name.clone(), message };

        let input = session.inputs().first().ok_or_else(|| layout_err("the model has no input".into()))?;
        let dims: Vec<i64> = input.dtype().tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default();
        let side = |d: i64| if d > 0 { d as u32 } else { config.input_size };
        let (input_height, input_width) = match dims.as_slice() {
            [_, 3, h, w] => (side(*h), side(*w)),
            other => return Err(layout_err(format!("input shape {other:?} is not [1, 3, H, W]"))),
        };
        let shape = [1usize, 3, input_height as usize, input_width as usize];
        let allocator = ort::memory::Allocator::default();
        let tensor_err = |e: ort::Error| layout_err(format!("cannot make the input tensor: {e}"));
        let input = match input.dtype().tensor_type() {
            Some(ort::value::TensorElementType::Float32) => {
                Input::F32(Tensor::new(&allocator, shape).map_err(tensor_err)?)
            }
            Some(ort::value::TensorElementType::Float16) => {
                Input::F16(Tensor::new(&allocator, shape).map_err(tensor_err)?)
            }
            other => return Err(layout_err(format!("input element type {other:?} is not float32 or float16"))),
        };
        let labels = labels(config, &session)?;
        if labels.is_empty() {
            return Err(layout_err(
                "no class names: the model has no `names` metadata; set model.labels or model.labels_file".into(),
            ));
        }
        // The declared output shape is read now, so a wrong model fails at start, not per frame;
        // later outputs are read in the format found here. Only a shape that says too little
        // waits for the first output.
        let output = session.outputs().first().ok_or_else(|| layout_err("the model has no output".into()))?;
        let out_dims: Vec<i64> = output.dtype().tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default();
        let format = match Layout::of(&out_dims, labels.len(), config.format) {
            Ok(layout) => layout.format(),
            Err(_) if out_dims.len() != 3 || out_dims.iter().any(|d| *d <= 0) => config.format,
            Err(message) => return Err(layout_err(message)),
        };
        let style = InputStyle {
            bgr: config.channel_order == ChannelOrder::Bgr,
            scale: if config.pixel_range == PixelRange::Unit { 1.0 / 255.0 } else { 1.0 },
        };
        info!(
            model = %name, input = %format!("{input_width}x{input_height}"), ?format, provider, labels = ?labels,
            "model loaded"
        );
        Ok(Self {
            session,
            name,
            input_width,
            input_height,
            labels,
            min_score: config.min_score,
            nms_iou: config.nms_iou,
            input,
            prep: Preprocessor::new(input_width, input_height, style),
            format,
            provider,
        })
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

    /// The execution provider inference runs on (`cpu`, `cuda`, ...).
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// Detects objects in a decoded frame, straight from its YUV planes; boxes in frame pixels.
    /// Also says how long the preprocessing took.
    pub fn detect_frame(&mut self, frame: &Frame) -> (Result<Vec<Detection>, DetectError>, Duration) {
        let started = Instant::now();
        let lb = match &mut self.input {
            Input::F32(t) => self.prep.frame(frame, t.extract_tensor_mut().1, |v| v),
            Input::F16(t) => self.prep.frame(frame, t.extract_tensor_mut().1, half::f16::from_f32),
        };
        let preprocessed = started.elapsed();
        (self.infer(&lb), preprocessed)
    }

    /// Detects objects in an RGB image (a photo); boxes in its pixels.
    pub fn detect(&mut self, rgb: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        let lb = match &mut self.input {
            Input::F32(t) => self.prep.rgb(rgb, t.extract_tensor_mut().1, |v| v),
            Input::F16(t) => self.prep.rgb(rgb, t.extract_tensor_mut().1, half::f16::from_f32),
        };
        self.infer(&lb)
    }

    /// Runs an already letterboxed RGB 0..1 `[1, 3, H, W]` tensor (float models), mapping boxes
    /// back through `lb`: for comparing with a reference implementation on the same input.
    pub fn detect_tensor(&mut self, tensor: &[f32], lb: &Letterbox) -> Result<Vec<Detection>, DetectError> {
        match &mut self.input {
            Input::F32(t) => t.extract_tensor_mut().1.copy_from_slice(tensor),
            Input::F16(t) => {
                for (d, v) in t.extract_tensor_mut().1.iter_mut().zip(tensor) {
                    *d = half::f16::from_f32(*v);
                }
            }
        }
        self.infer(lb)
    }

    /// Runs the input tensor as it stands and maps boxes back through `lb`.
    fn infer(&mut self, lb: &Letterbox) -> Result<Vec<Detection>, DetectError> {
        let name = &self.name;
        let infer = |message: String| DetectError::Inference { model: name.clone(), message };
        let outputs = match &self.input {
            Input::F32(t) => self.session.run(ort::inputs![t]),
            Input::F16(t) => self.session.run(ort::inputs![t]),
        }
        .map_err(|e| infer(e.to_string()))?;
        let (out_shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(|e| infer(e.to_string()))?;
        let classes = self.labels.len();
        let layout = Layout::of(out_shape, classes, self.format)
            .map_err(|message| DetectError::Layout { model: name.clone(), message })?;
        self.format = layout.format();
        let found = decode(data, layout, classes, lb, self.min_score);
        let mut dets = if layout.end_to_end() { found } else { nms(found, self.nms_iou) };
        for d in &mut dets {
            d.label = self.labels[d.class_id].clone();
        }
        Ok(dets)
    }
}

/// Class names: `model.labels`, else `model.labels_file`, else the model's `names` metadata.
fn labels(config: &ModelConfig, session: &Session) -> Result<Vec<String>, DetectError> {
    if !config.labels.is_empty() {
        return Ok(config.labels.clone());
    }
    if !config.labels_file.as_os_str().is_empty() {
        let text = std::fs::read_to_string(&config.labels_file).map_err(|e| DetectError::Model {
            path: config.labels_file.display().to_string(),
            message: format!("model.labels_file: {e}"),
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

/// What the detector hands to a camera's rules: the frame and what was found in it.
pub struct Detected {
    pub frame: Arc<Frame>,
    pub detections: Vec<Detection>,
}

/// Serves every camera's frames until `input` ends; `outputs[i]` and `counters[i]` belong to
/// the camera whose frames come with key `i`.
pub fn run_worker(
    mut detector: Detector,
    input: &EdgeReceiver<Arc<Frame>>,
    outputs: Vec<EdgeSender<Detected>>,
    counters: Vec<Arc<CameraCounters>>,
    camera_ids: Vec<String>,
) {
    crate::testing::maybe_panic("detect", camera_ids.first().map(String::as_str).unwrap_or_default());
    while let Some((camera, frame)) = input.recv_keyed() {
        let started = Instant::now();
        let (result, preprocessing) = detector.detect_frame(&frame);
        let c = &counters[camera];
        c.detect_busy.add_since(started);
        c.preprocess_busy.add(preprocessing.as_nanos() as u64);
        c.latency.record((chrono::Utc::now() - frame.at).num_milliseconds().clamp(0, u32::MAX as i64) as u32);
        match result {
            Ok(detections) => {
                counters[camera].frames_detected.inc();
                counters[camera].detections.add(detections.len() as u64);
                // A closed output means that camera is shutting down; the others go on.
                let _ = outputs[camera].send(Detected { frame, detections });
            }
            Err(error) => warn!(%error, camera = %camera_ids[camera], "detection failed; frame skipped"),
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
