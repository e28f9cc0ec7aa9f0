//! fieldwatch: a daemon for roadside edge boxes that turns city cameras into field reporters.
//!
//! It pulls RTSP streams, runs an ONNX object detector, applies per-zone rules, and publishes
//! reports with annotated snapshots over MQTT when a violation opens and when it clears.
//!
//! # Layout
//!
//! ```text
//! RTSP ─► source ─EncodedFrame─► decode ─Frame (newest wins)─► detect ─Detected─► rules
//!            ─IncidentEvent─► report ─Report─► publish (MQTT) ─► IOC
//! ```
//!
//! - [`config`]: typed config, loading with every error and its key path, validation.
//! - [`app`]: builds the stages per camera and owns shutdown.
//! - [`pipeline`]: every channel between stages, its capacity and its policy when full.
//! - [`source`]: RTSP (retina) with reconnect, backoff and stall timeout.
//! - [`decode`]: libavcodec decoding and frame sampling.
//! - [`detect`]: letterbox, ONNX Runtime, YOLOv8 output decoding, NMS.
//! - [`rules`]: zones, dwell and the incident state machine (pure, time injected).
//! - [`report`]: the versioned report JSON, descriptions and snapshots.
//! - [`publish`]: MQTT client, status and last will.
//! - [`telemetry`]: logging and counters.

pub mod app;
pub mod clock;
pub mod config;
pub mod decode;
pub mod detect;
pub mod pipeline;
pub mod publish;
pub mod report;
pub mod rules;
pub mod source;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
