//! The local HTTP endpoint (`http.listen`, default 127.0.0.1:9464): what a monitoring agent or
//! a technician on the box asks.
//!
//! - `GET /healthz`: 200 while the daemon's own stages are alive, 503 when one (a decoder, an
//!   inference worker) has been busy with one piece of work for `http.stuck_after_secs`. The
//!   JSON body lists every stage with its state and every camera with its connection state. A
//!   dead camera is reported there but does not fail the check: it is the camera's fault, and
//!   restarting the daemon would not help.
//! - `GET /metrics`: Prometheus text format, read from the counters the stages keep anyway
//!   (`prometheus-client` encodes them at scrape time).
//! - `GET /evidence/{report_id}.mp4`: an opened report's evidence clip (see [`crate::clip`]),
//!   with the workbench's token when there is one.
//! - Everything else is the technician's workbench (see [`crate::workbench`]): the live view,
//!   the zone editor, and the login they need when `http.token` is set. `/healthz` and
//!   `/metrics` need no token: a local scraper reads them as before.

use crate::outbox::{Outbox, Storage};
use crate::telemetry::{CameraCounters, CameraList, ConfigState, ModelList, ModelStatus, Stages};
use crate::workbench::{self, Workbench};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Everything the endpoint reads.
#[derive(Clone)]
pub struct Observed {
    pub stages: Stages,
    pub stuck_after: Duration,
    pub cameras: CameraList,
    pub models: ModelList,
    pub outbox: Arc<Outbox>,
    pub config: ConfigState,
    pub workbench: Workbench,
    pub clips: Arc<crate::clip::ClipStore>,
}

/// Binds `listen`; the error names the key, so a port in use is plain at start.
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("http.listen: cannot listen on {listen}: {e}"))
}

/// Serves `/healthz` and `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, observed: Observed, shutdown: CancellationToken) {
    info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "health and metrics endpoint listening");
    let observed = Arc::new(observed);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let observed = observed.clone();
        let service = hyper::service::service_fn(move |request| {
            let observed = observed.clone();
            async move { Ok::<_, Infallible>(respond(&observed, request, peer).await) }
        });
        let connection =
            hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

/// A response: status, content type, body.
type Answer = (StatusCode, &'static str, Vec<u8>);

const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// The largest request body taken (a zone, a login).
const MAX_BODY: usize = 64 << 10;

async fn respond(observed: &Observed, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let header =
        |name: hyper::header::HeaderName| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (authorization, cookies) = (header(hyper::header::AUTHORIZATION), header(hyper::header::COOKIE));
    let csrf = request.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bench = &observed.workbench;
    let mut cookie = None;
    let (status, content_type, body): Answer = match (method.as_str(), path.as_str()) {
        ("GET", "/healthz") => {
            let (healthy, body) = health(observed);
            let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, JSON, body.into())
        }
        ("GET", "/metrics") => {
            (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics(observed).into())
        }
        ("GET", "/login") => (StatusCode::OK, HTML, workbench::login_page(false).into()),
        ("POST", "/login") => match read_body(request).await.map(|b| bench.login(&String::from_utf8_lossy(&b))) {
            Some(Some(set)) => {
                info!(from = %peer, "workbench login");
                cookie = Some(set);
                (StatusCode::SEE_OTHER, TEXT, Vec::new())
            }
            _ => {
                warn!(from = %peer, "workbench login refused: wrong token");
                (StatusCode::UNAUTHORIZED, HTML, workbench::login_page(true).into())
            }
        },
        // Every page, picture and change from here on needs the token, when there is one.
        _ if !bench.allows(authorization.as_deref(), cookies.as_deref()) => {
            (StatusCode::UNAUTHORIZED, HTML, workbench::login_page(false).into())
        }
        ("GET", "/") => (StatusCode::OK, HTML, bench.index(&observed.cameras).into()),
        ("GET", path) if path.starts_with("/evidence/") => evidence_clip(&observed.clips, path).await,
        ("GET", path) => match path.strip_prefix("/cameras/").map(|rest| rest.split_once('/').unwrap_or((rest, ""))) {
            Some((id, "")) if observed.cameras.get(id).is_some() => {
                (StatusCode::OK, HTML, bench.camera_page(id).into())
            }
            Some((id, "view.json")) => view(&observed.cameras, id),
            Some((id, "frame.jpg")) => frame(&observed.cameras, id).await,
            _ => (StatusCode::NOT_FOUND, TEXT, "no such page: GET /, /cameras/ID, /healthz or /metrics\n".into()),
        },
        ("POST", path) => match path.strip_prefix("/cameras/").and_then(|rest| rest.split_once('/')) {
            _ if !bench.csrf_ok(csrf.as_deref()) => {
                warn!(from = %peer, %path, "change refused: no valid CSRF token");
                (StatusCode::FORBIDDEN, JSON, problems(&["the page's CSRF token is missing or wrong: reload the page"]))
            }
            Some((id, what @ ("zones" | "masks"))) => {
                let body = read_body(request).await;
                save(bench, &observed.cameras, id, what == "zones", body, peer).await
            }
            Some((id, "reference")) => retake_reference(bench, &observed.cameras, id, peer),
            _ => (StatusCode::NOT_FOUND, TEXT, "no such change\n".into()),
        },
        _ => (StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET or POST only\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    headers.insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    if let Some(set) = cookie.and_then(|c| hyper::header::HeaderValue::from_str(&c).ok()) {
        headers.insert(hyper::header::SET_COOKIE, set);
        headers.insert(hyper::header::LOCATION, hyper::header::HeaderValue::from_static("/"));
    }
    response
}

async fn read_body(request: Request<Incoming>) -> Option<Bytes> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
    limited.collect().await.ok().map(|c| c.to_bytes())
}

fn problems(list: &[&str]) -> Vec<u8> {
    serde_json::json!({ "problems": list }).to_string().into_bytes()
}

/// A camera's live view as JSON: its state, and what its rules saw in the latest frame (null
/// until a frame has been seen while watched).
fn view(cameras: &CameraList, id: &str) -> Answer {
    let Some(camera) = cameras.get(id) else { return (StatusCode::NOT_FOUND, TEXT, "no such camera\n".into()) };
    let c = &camera.counters;
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let seen = camera.live.ask();
    let body = serde_json::json!({
        "camera": id,
        "state": c.connection_state(now_ms),
        "last_error": c.last_error(),
        "frame_size": (c.frame_width.get() > 0).then(|| [c.frame_width.get(), c.frame_height.get()]),
        "frames_received": c.encoded_frames.get(),
        "connects": c.connects.get(),
        "seen": seen.as_deref().map(crate::live::json),
    });
    (StatusCode::OK, JSON, body.to_string().into_bytes())
}

/// The latest frame as JPEG, made now (on a blocking thread: conversion and encoding).
async fn evidence_clip(clips: &crate::clip::ClipStore, path: &str) -> Answer {
    let found =
        (path.strip_prefix("/evidence/").and_then(|name| name.strip_suffix(".mp4"))).and_then(|id| clips.path_of(id));
    let Some(file) = found else {
        return (StatusCode::NOT_FOUND, TEXT, "no such clip: /evidence/REPORT_ID.mp4\n".into());
    };
    match tokio::task::spawn_blocking(move || std::fs::read(&file))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    {
        Ok(mp4) => (StatusCode::OK, "video/mp4", mp4),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (StatusCode::NOT_FOUND, TEXT, "no such clip (never made, or dropped for the store's limits)\n".into())
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n").into()),
    }
}

async fn frame(cameras: &CameraList, id: &str) -> Answer {
    let Some(camera) = cameras.get(id) else { return (StatusCode::NOT_FOUND, TEXT, "no such camera\n".into()) };
    let Some(seen) = camera.live.ask() else {
        return (StatusCode::NOT_FOUND, TEXT, "no frame yet: the camera keeps one once watched\n".into());
    };
    let view = camera.live.clone();
    match tokio::task::spawn_blocking(move || crate::live::picture(&view, &seen)).await {
        Ok(Ok(jpeg)) => (StatusCode::OK, "image/jpeg", jpeg),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{error}\n").into()),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{error}\n").into()),
    }
}

/// The editor's save: a zone (or a mask) into the overlay, then a reload; the answer says how
/// it went.
async fn save(
    bench: &Workbench,
    cameras: &CameraList,
    id: &str,
    zone: bool,
    body: Option<Bytes>,
    peer: SocketAddr,
) -> Answer {
    let Some(edits) = &bench.edits else {
        return (StatusCode::FORBIDDEN, JSON, problems(&["http.edit is false: nothing can be saved here"]));
    };
    let Some(listed) = cameras.get(id) else {
        return (StatusCode::NOT_FOUND, JSON, problems(&["no such camera"]));
    };
    let edit = match body.map(|b| serde_json::from_slice::<workbench::Edit>(&b)) {
        Some(Ok(edit)) => edit,
        _ => {
            let expected = "expected {\"zone\": NAME, \"polygon\": [[x, y], ...]} or {\"mask\": N, \"polygon\": ...}";
            return (StatusCode::BAD_REQUEST, JSON, problems(&[expected]));
        }
    };
    if let Some(problem) = edit.problem(zone) {
        return (StatusCode::UNPROCESSABLE_ENTITY, JSON, problems(&[&problem]));
    }
    let polygon: Vec<[f64; 2]> = edit.polygon.iter().copied().map(crate::live::round_point).collect();
    let (overlay, camera) = (edits.overlay.clone(), id.to_string());
    let (what, write): (String, Box<dyn FnOnce() -> Result<(), String> + Send>) = if zone {
        let name = edit.zone.clone();
        (format!("zone {name}"), Box::new(move || crate::live::save_zone(&overlay, &camera, &name, &polygon)))
    } else {
        // The camera's masks as they run, with this one replaced or added.
        let mut masks = listed.camera.masks.clone();
        let replaced = edit.mask.and_then(|n| n.checked_sub(1)).and_then(|i| masks.get_mut(i));
        match replaced {
            Some(mask) => *mask = polygon,
            None => masks.push(polygon),
        }
        (
            format!("mask {}", edit.mask.unwrap_or(masks.len())),
            Box::new(move || crate::live::save_masks(&overlay, &camera, &masks)),
        )
    };
    let written = tokio::task::spawn_blocking(write).await;
    if let Some(error) = match written {
        Ok(result) => result.err(),
        Err(error) => Some(error.to_string()),
    } {
        error!(%error, camera = %id, "the editor's save failed");
        return (StatusCode::INTERNAL_SERVER_ERROR, JSON, problems(&[&error]));
    }
    info!(from = %peer, camera = %id, %what, polygon = ?edit.polygon, overlay = %edits.overlay.display(),
          "saved from the workbench; reloading");
    let (reply, outcome) = tokio::sync::oneshot::channel();
    let request = workbench::ReloadRequest { from: peer.to_string(), reply };
    if edits.reloads.send(request).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, JSON, problems(&["the daemon is stopping"]));
    }
    match outcome.await {
        Ok(Ok(version)) => (StatusCode::OK, JSON, serde_json::json!({ "config_version": version }).to_string().into()),
        Ok(Err(found)) => {
            let list: Vec<&str> = found.iter().map(String::as_str).collect();
            (StatusCode::UNPROCESSABLE_ENTITY, JSON, problems(&list))
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, JSON, problems(&["the daemon is stopping"])),
    }
}

/// Asks camera `id` for a new reference picture (see [`crate::health`]): after the camera was
/// turned on purpose, its next good frame is the view it should keep.
fn retake_reference(bench: &Workbench, cameras: &CameraList, id: &str, peer: SocketAddr) -> Answer {
    if bench.edits.is_none() {
        return (StatusCode::FORBIDDEN, JSON, problems(&["http.edit is false: nothing can be changed here"]));
    }
    let Some(listed) = cameras.get(id) else {
        return (StatusCode::NOT_FOUND, JSON, problems(&["no such camera"]));
    };
    listed.counters.health.request_new_reference();
    info!(from = %peer, camera = %id, "a new reference picture asked for from the workbench");
    let answer = serde_json::json!({ "reference": "the next good frame becomes the camera's reference picture" });
    (StatusCode::ACCEPTED, JSON, answer.to_string().into())
}

/// Whether every own stage is alive, and the JSON that says so stage by stage.
pub fn health(observed: &Observed) -> (bool, String) {
    let stages: Vec<serde_json::Value> = observed
        .stages
        .all()
        .into_iter()
        .map(|(name, busy)| {
            let state = match busy {
                None => "idle",
                Some(b) if b > observed.stuck_after => "stuck",
                Some(_) => "busy",
            };
            serde_json::json!({ "name": name, "state": state, "busy_secs": busy.map(|b| b.as_secs_f64()) })
        })
        .collect();
    let healthy = stages.iter().all(|s| s["state"] != "stuck");
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let cameras: Vec<serde_json::Value> = (observed.cameras.all().iter())
        .map(|(id, c)| serde_json::json!({ "id": id, "state": c.connection_state(now_ms), "last_error": c.last_error() }))
        .collect();
    // Storage trouble degrades the box but does not fail the check: the cameras go on, the
    // reports are held, and a restart would not mend the disk. So does a refused reload: the
    // config before it runs on.
    let depth = observed.outbox.depth();
    let config = observed.config.now();
    let status = match (healthy, depth.storage, config.problems.is_empty()) {
        (false, _, _) => "stuck",
        (true, Storage::Ok, true) => "ok",
        (true, _, _) => "degraded",
    };
    let body = serde_json::json!({
        "status": status,
        "storage": {
            "state": depth.storage.as_str(), "error": depth.storage_error, "free_bytes": depth.free_bytes,
            "held_in_memory": depth.held_reports, "lost_reports": depth.lost_reports,
        },
        "config": config,
        "stages": stages,
        "cameras": cameras,
    });
    (healthy, format!("{body:#}\n"))
}

/// The Prometheus exposition of everything counted.
pub fn metrics(observed: &Observed) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Exposed(observed.clone())));
    let mut text = String::new();
    // Writing to a String fails only if a collector does: what was written is still served.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!(%error, "the metrics exposition stopped part way");
    }
    text
}

/// The collector that reads the counters at scrape time.
struct Exposed(Observed);

impl std::fmt::Debug for Exposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fieldwatch counters")
    }
}

type Labels = Vec<(&'static str, String)>;

/// Reads one counter of a camera.
type CameraValue = fn(&CameraCounters) -> u64;

/// One counter or gauge family: (name, help, type, value per label set).
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    values: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in values {
        let encoder = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value).encode(encoder)?,
            _ => ConstGauge::new(value as i64).encode(encoder)?,
        }
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Exposed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let o = &self.0;
        let all = o.cameras.all();
        let per_camera = |value: CameraValue| -> Vec<(Labels, u64)> {
            all.iter().map(|(id, c)| (vec![("camera", id.clone())], value(c))).collect()
        };
        let cameras: [(&str, &str, CameraValue); 12] = [
            ("fieldwatch_frames_received", "Access units received from the camera", |c| c.encoded_frames.get()),
            ("fieldwatch_frames_decoded", "Access units decoded", |c| c.units_decoded.get()),
            ("fieldwatch_frames_sampled", "Decoded frames picked at detect_fps", |c| c.frames_sampled.get()),
            ("fieldwatch_frames_detected", "Frames whose detection finished", |c| c.frames_detected.get()),
            ("fieldwatch_detections", "Objects found, after NMS", |c| c.detections.get()),
            ("fieldwatch_incidents_opened", "Incidents opened", |c| c.incidents_opened.get()),
            ("fieldwatch_reports", "Reports made (queued in the outbox)", |c| c.reports.get()),
            ("fieldwatch_evidence_clips", "Evidence clips written", |c| c.clips.get()),
            ("fieldwatch_evidence_clips_failed", "Evidence clips that could not be made", |c| c.clips_failed.get()),
            ("fieldwatch_evidence_clips_dropped", "Evidence clips dropped for the store's size or age", |c| {
                c.clips_dropped.get()
            }),
            ("fieldwatch_connects", "RTSP connections made (reconnects are the count less one)", |c| c.connects.get()),
            ("fieldwatch_camera_silences", "Connections given up because the camera fell silent", |c| c.silences.get()),
        ];
        for (name, help, value) in cameras {
            family(&mut encoder, name, help, Counter, per_camera(value))?;
        }
        let dropped: [(&str, CameraValue); 5] = [
            ("source_queue_full", |c| c.encoded.dropped.get()),
            ("replaced_by_newer", |c| c.frames.dropped.get()),
            ("rules_queue_full", |c| c.detected.dropped.get()),
            ("stale", |c| c.frames_stale.get()),
            ("decode_error", |c| c.decode_errors.get()),
        ];
        let drops = all.iter().flat_map(|(id, c)| {
            dropped
                .iter()
                .map(move |(reason, value)| (vec![("camera", id.clone()), ("reason", reason.to_string())], value(c)))
        });
        family(&mut encoder, "fieldwatch_frames_dropped", "Frames dropped, by reason", Counter, drops)?;
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let streaming: Vec<(Labels, u64)> = (all.iter())
            .map(|(id, c)| (vec![("camera", id.clone())], (c.connection_state(now_ms) == "streaming") as u64))
            .collect();
        family(&mut encoder, "fieldwatch_camera_streaming", "1 while the camera streams", Gauge, streaming)?;
        let cases = all.iter().flat_map(|(id, c)| {
            (crate::health::Kind::ALL.into_iter()).map(move |k| {
                (vec![("camera", id.clone()), ("kind", k.as_str().to_string())], c.health.is_open(k) as u64)
            })
        });
        family(
            &mut encoder,
            "fieldwatch_health_case_open",
            "1 while a camera-health case of the kind is open",
            Gauge,
            cases,
        )?;
        let live = |value: fn(&crate::live::LiveView) -> u64| -> Vec<(Labels, u64)> {
            (all.iter())
                .filter_map(|(id, _)| o.cameras.get(id).map(|c| (vec![("camera", id.clone())], value(&c.live))))
                .collect()
        };
        let kept = live(|v| v.views_kept.get());
        family(
            &mut encoder,
            "fieldwatch_live_views_kept",
            "Frames kept for the live view (only while watched)",
            Counter,
            kept,
        )?;
        let pictures = live(|v| v.pictures.get());
        family(
            &mut encoder,
            "fieldwatch_live_pictures",
            "Live view pictures encoded (only when asked)",
            Counter,
            pictures,
        )?;

        let per_model = |value: &dyn Fn(&ModelStatus) -> u64| -> Vec<(Labels, u64)> {
            o.models.all().iter().map(|m| (vec![("model", m.name.clone())], value(m))).collect()
        };
        family(
            &mut encoder,
            "fieldwatch_inference_frames",
            "Frames run through the model",
            Counter,
            per_model(&|m| m.stats.frames.get()),
        )?;
        family(
            &mut encoder,
            "fieldwatch_inference_failures",
            "Inference runs that failed",
            Counter,
            per_model(&|m| m.stats.failures.get()),
        )?;
        family(
            &mut encoder,
            "fieldwatch_inference_malformed",
            "Output candidates dropped as malformed: not finite, of no size, or a class the model lacks",
            Counter,
            per_model(&|m| m.stats.malformed.get()),
        )?;
        family(
            &mut encoder,
            "fieldwatch_queue_depth",
            "Frames waiting for the model",
            Gauge,
            per_model(&|m| (m.waiting)() as u64),
        )?;
        let mut runs = encoder.encode_descriptor(
            "fieldwatch_inference_seconds",
            "Seconds per inference run (one or a batch of frames), preprocessing included",
            None,
            MetricType::Histogram,
        )?;
        for m in &o.models.all() {
            let labels: Labels = vec![("model", m.name.clone())];
            m.stats.run_seconds.encode(runs.encode_family(&labels)?)?;
        }

        let depth = o.outbox.depth();
        let one = |v: u64| [(Labels::new(), v)];
        family(
            &mut encoder,
            "fieldwatch_reports_published",
            "Reports the broker acknowledged",
            Counter,
            one(o.outbox.delivered.get()),
        )?;
        family(&mut encoder, "fieldwatch_reports_pending", "Reports waiting in the outbox", Gauge, one(depth.reports))?;
        family(
            &mut encoder,
            "fieldwatch_reports_dead_letters",
            "Reports the broker refused",
            Gauge,
            one(depth.dead_letters),
        )?;
        family(&mut encoder, "fieldwatch_outbox_bytes", "Bytes kept in the outbox", Gauge, one(depth.bytes))?;
        let states = [Storage::Ok, Storage::Low, Storage::Full, Storage::ReadOnly, Storage::Corrupt, Storage::Failing];
        family(
            &mut encoder,
            "fieldwatch_storage_state",
            "What the state directory's disk is doing: 1 for the current state",
            Gauge,
            states.map(|s| (vec![("state", s.as_str().to_string())], u64::from(s == depth.storage))),
        )?;
        family(
            &mut encoder,
            "fieldwatch_disk_free_bytes",
            "Free bytes on the state directory's disk",
            Gauge,
            one(depth.free_bytes.unwrap_or(0)),
        )?;
        family(
            &mut encoder,
            "fieldwatch_reports_held_in_memory",
            "Reports held in memory while the disk does not take them",
            Gauge,
            one(depth.held_reports),
        )?;
        let lost = [
            (vec![("what", "images".to_string())], depth.lost_images),
            (vec![("what", "reports".to_string())], depth.lost_reports),
        ];
        family(
            &mut encoder,
            "fieldwatch_reports_lost",
            "Lost past outbox.memory_bytes while the disk was out",
            Counter,
            lost,
        )?;
        family(
            &mut encoder,
            "fieldwatch_outbox_set_aside",
            "Corrupt outbox files renamed aside",
            Counter,
            one(depth.set_aside),
        )?;
        let evicted = [
            (vec![("what", "images".to_string())], depth.evicted_images),
            (vec![("what", "reports".to_string())], depth.evicted_reports),
        ];
        family(
            &mut encoder,
            "fieldwatch_reports_evicted",
            "Evicted to keep the outbox within its size",
            Counter,
            evicted,
        )?;
        Ok(())
    }
}
