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
//! Live and `replay` run the same stages; only the source (RTSP or a clip) and the edges'
//! policies (drop when behind, or never drop) differ. Frames are timed by their stream
//! timestamps, anchored to the wall clock once per connection.
//!
//! - [`config`]: typed config, loading with every error and its key path, runtime types.
//! - [`app`]: starts the daemon and replay: the models' workers and a unit per camera.
//! - [`unit`]: one camera's stages (source, decode, rules) as a unit that starts, changes and
//!   stops on its own.
//! - [`reload`]: the live cameras and publisher, and config changes applied without a restart.
//! - [`supervisor`]: watches every task and thread; a dying stage stops the daemon, named.
//! - [`pipeline`]: the generic edges between stages, each with its capacity and policy when full.
//! - [`clock`]: the injectable wall clock.
//! - [`source`]: the source trait; RTSP (retina) with reconnect, backoff and stall timeout, and
//!   clips (libavformat); stream-time anchors.
//! - [`decode`]: libavcodec decoding and frame sampling.
//! - [`detect`]: letterbox from YUV, ONNX Runtime, output decoding (YOLOv8, YOLOv5,
//!   end-to-end), NMS; inference workers per model, batching.
//! - [`rules`]: one camera's logic as a pure unit: zones, dwell, incidents (time injected).
//! - [`health`]: whether each camera itself works (offline, view blocked, view moved): cases of
//!   their own, which pause the camera's rules.
//! - [`scene`]: each camera's background, which tells a parked object that has gone from one
//!   that is only hidden.
//! - [`report`]: the versioned report JSON, descriptions and snapshots.
//! - [`outbox`]: the durable queue of reports on disk, between the rules and the broker.
//! - [`publish`]: MQTT client, delivering the outbox one acknowledged report at a time; status
//!   and last will.
//! - [`telemetry`]: logging, counters, and each own stage's progress.
//! - [`http`]: the local endpoint: `/healthz`, `/metrics`, and the live view and zone editor.
//! - [`live`]: each camera's latest frame as its rules see it, kept only while watched.
//! - [`tuning`]: the tuning report of a replay: incidents, near misses and what-if, as one page.
//! - [`systemd`]: READY, STOPPING and watchdog pings while the daemon's own stages progress.

// No input panics the daemon: outside tests, what can fail is handled, and the few places
// where a panic is impossible say why in an `allow`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod app;
pub mod clip;
pub mod clock;
pub mod config;
pub mod decode;
pub mod detect;
pub mod health;
pub mod http;
pub mod live;
pub mod outbox;
pub mod pipeline;
pub mod probe;
pub mod publish;
pub mod reload;
pub mod remote;
pub mod report;
pub mod rules;
pub mod scene;
pub mod source;
pub mod state;
pub mod supervisor;
pub mod systemd;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod track;
pub mod tuning;
pub mod unit;
pub mod workbench;
