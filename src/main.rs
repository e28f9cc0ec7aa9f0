//! Command line: `run`, `check`, `detect`, `replay` and `outbox`. Everything else lives in the
//! library.

// No input panics the daemon: outside tests, what can fail is handled, and the few places
// where a panic is impossible say why in an `allow`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

use anyhow::Context;
use clap::{Parser, Subcommand};
use fieldwatch::app::{self, AppError, ReplayOptions};
use fieldwatch::config::{self, LogFormat, Settings};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// sysexits.h EX_CONFIG: systemd and scripts can tell a bad config from a crash.
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(version, about = "Edge daemon: cameras in, field reports out (RTSP → ONNX → zone rules → MQTT)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, short, env = "FIELDWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config and print every problem with its key path (exit 78 if any).
    Check {
        #[arg(long, short, env = "FIELDWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Run the configured model on images; print detections as JSON and write annotated copies.
    Detect {
        #[arg(long, short, env = "FIELDWATCH_CONFIG")]
        config: PathBuf,
        /// Folder for annotated copies (`NAME.detections.jpg`).
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// The model to run, by name (`[models.NAME]`, or `[model]`'s name). Default: `[model]`.
        #[arg(long)]
        model: Option<String>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Show the reports waiting on disk for the broker (how many, how big, since when) and
    /// the dead letters: reports the broker refused, with its reason.
    Outbox {
        #[arg(long, short, env = "FIELDWATCH_CONFIG")]
        config: PathBuf,
        /// Put the dead letters back in the queue (once the broker's ACL or limits are fixed);
        /// a running daemon sends them next.
        #[arg(long)]
        requeue: bool,
    },
    /// Connect to a camera as the daemon would, watch it for a few seconds, and print what it
    /// sends: codec and profile, resolution, frame rate, GOP length, bitrate. Saves one decoded
    /// frame as JPEG. Exits non-zero, saying why, when it cannot.
    Probe {
        /// `rtsp://[user:password@]host[:port]/path`; or give the password in
        /// `FIELDWATCH_PROBE_PASSWORD` with `--username`.
        url: String,
        #[arg(long)]
        username: Option<String>,
        /// `tcp` (default) or `udp`.
        #[arg(long, default_value = "tcp")]
        transport: String,
        /// How long to watch, from the first keyframe.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Where to save the decoded frame.
        #[arg(long, default_value = "probe.jpg")]
        out: PathBuf,
    },
    /// Run one camera's pipeline (decode, detect, rules, reports) over a recorded clip as fast
    /// as the machine allows, timed by the clip; print each report and a summary.
    Replay {
        /// MP4, MKV or raw H.264 (Annex B) file.
        clip: PathBuf,
        #[arg(long, short, env = "FIELDWATCH_CONFIG")]
        config: PathBuf,
        /// The camera (its rules and detect_fps) to replay the clip as.
        #[arg(long)]
        camera: String,
        /// Folder for each report's JSON and snapshot JPEG.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also publish the reports to the configured broker.
        #[arg(long)]
        publish: bool,
        /// Wall time of the clip's first frame (RFC 3339). Default: the clip's creation_time,
        /// else the file's modification time.
        #[arg(long)]
        start: Option<chrono::DateTime<chrono::FixedOffset>>,
        /// Write a tuning report: one HTML page with each rule's incidents, timeline, scores,
        /// near misses and what-if table.
        #[arg(long)]
        report: Option<PathBuf>,
        /// The overlay to lay over the config instead of the one in its state directory (the
        /// remote and workbench changes of a box, copied from it).
        #[arg(long)]
        overlay: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Probe { url, username, transport, seconds, out } = cli.command {
        return probe(&url, username, &transport, seconds, &out);
    }
    let path = match &cli.command {
        Command::Probe { .. } => unreachable!("handled above: a probe needs no config"),
        Command::Run { config } | Command::Check { config } | Command::Detect { config, .. } => config.clone(),
        Command::Replay { config, .. } | Command::Outbox { config, .. } => config.clone(),
    };
    let overlay = match &cli.command {
        Command::Replay { overlay, .. } => overlay.clone(),
        _ => None,
    };
    let settings = match config::load_with(&path, overlay.as_deref()) {
        // A config without cameras is enough to try a model on photos or look at the outbox.
        Ok(s) if s.cameras.is_empty() && matches!(cli.command, Command::Run { .. } | Command::Check { .. }) => {
            let problems =
                vec![config::Problem { path: "cameras".into(), message: "at least one camera is required".into() }];
            eprintln!("{}", config::ConfigError::Invalid { path: path.display().to_string(), problems });
            return ExitCode::from(EXIT_CONFIG);
        }
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match cli.command {
        Command::Check { .. } => check(&settings, &path),
        Command::Run { .. } => run(settings),
        Command::Detect { out, images, model, .. } => detect(&settings, model.as_deref(), &out, &images),
        Command::Outbox { requeue, .. } => outbox(&settings, requeue),
        Command::Probe { .. } => unreachable!("handled above"),
        Command::Replay { clip, camera, out, publish, start, report, .. } => {
            replay(settings, &clip, &camera, ReplayOptions { out, publish, report }, start)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let config_error = e.downcast_ref::<AppError>().is_some_and(AppError::is_config);
            eprintln!("error: {e:#}");
            // A bad config or model is not fixed by restarting: systemd must not loop on it.
            if config_error { ExitCode::from(EXIT_CONFIG) } else { ExitCode::FAILURE }
        }
    }
}

/// Validates the config (done by loading it) and checks its rules against the model's classes.
fn check(settings: &Settings, path: &std::path::Path) -> anyhow::Result<()> {
    fieldwatch::telemetry::init_logging("warn", LogFormat::Text);
    app::load_models(settings, |_, _| 1)?;
    println!("config {} is valid (version {})", path.display(), app::config_version(&settings.config));
    match settings.overrides.as_slice() {
        [] => println!("no key overridden (overlay {}: none there, or it changes nothing)", settings.overlay.display()),
        overrides => {
            println!("{} key(s) overridden:", overrides.len());
            overrides.iter().for_each(|o| println!("  {o}"));
        }
    }
    Ok(())
}

fn outbox(settings: &Settings, requeue: bool) -> anyhow::Result<()> {
    let path = settings.outbox_path();
    let outbox = fieldwatch::outbox::Outbox::open(&path, settings.config.outbox.max_bytes).map_err(AppError::from)?;
    if requeue {
        println!("{} dead letter(s) put back in the queue", outbox.requeue_dead_letters()?);
    }
    let depth = outbox.depth();
    println!(
        "outbox {}: {} report(s) waiting, oldest queued at {} ({} s ago); {} dead letter(s); {} bytes \
         (limit {}); evicted to stay within it: {} report(s), the images of {}",
        path.display(),
        depth.reports,
        depth.oldest.as_deref().unwrap_or("-"),
        depth.oldest_age_secs().map_or("-".into(), |s| s.to_string()),
        depth.dead_letters,
        depth.bytes,
        settings.config.outbox.max_bytes,
        depth.evicted_reports,
        depth.evicted_images,
    );
    for dead in outbox.dead_letters()? {
        println!(
            "dead letter {}: camera {}, topic {}, {} bytes, queued {}, refused {}: {}",
            dead.id, dead.camera, dead.topic, dead.bytes, dead.queued_at, dead.failed_at, dead.reason
        );
    }
    let evidence = &settings.config.evidence;
    let clips = fieldwatch::clip::ClipStore::new(settings.evidence_dir(), evidence);
    let stored = clips.list();
    println!(
        "evidence {}: {} clip(s), {} bytes (limit {}, {} days)",
        clips.dir.display(),
        stored.len(),
        stored.iter().map(|c| c.bytes).sum::<u64>(),
        evidence.max_bytes,
        evidence.max_age_days
    );
    for clip in stored {
        let at =
            chrono::DateTime::<chrono::Utc>::from(clip.modified).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        println!("clip {}: {} bytes, written {at}, /evidence/{}.mp4", clip.report_id, clip.bytes, clip.report_id);
    }
    Ok(())
}

fn probe(url: &str, username: Option<String>, transport: &str, seconds: f64, out: &std::path::Path) -> ExitCode {
    fieldwatch::telemetry::init_logging("warn", LogFormat::Text);
    let transport = match transport {
        "tcp" => config::TransportConfig::Tcp,
        "udp" => config::TransportConfig::Udp,
        other => {
            eprintln!("--transport {other:?}: tcp or udp");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut url = match config::CameraUrl::parse(url) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("{}: {e}", config::redact_url(url));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(username) = username {
        url.username = username;
        url.password = config::Secret::new(std::env::var("FIELDWATCH_PROBE_PASSWORD").unwrap_or_default());
    }
    let shown = url.redacted.clone();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(fieldwatch::probe::probe(url, transport, seconds, out));
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(probed) => {
            println!("{shown}\n{probed}\nframe       saved to {}", out.display());
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("probe {shown}: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: Settings) -> anyhow::Result<()> {
    fieldwatch::telemetry::init_logging(&settings.config.log.level, settings.config.log.format);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        app::run(settings, Arc::new(fieldwatch::clock::SystemClock), shutdown).await
    });
    // Don't wait for blocking tasks stuck on a dead peer: everything that matters has stopped.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(result?)
}

fn replay(
    settings: Settings,
    clip: &std::path::Path,
    camera: &str,
    options: ReplayOptions,
    start: Option<chrono::DateTime<chrono::FixedOffset>>,
) -> anyhow::Result<()> {
    fieldwatch::telemetry::init_logging("warn", LogFormat::Text);
    let source = fieldwatch::source::FileSource::open(clip, start.map(|s| s.to_utc()))?;
    let options_report = options.report.clone();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let summary = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        app::replay(&settings, camera, source, options, shutdown).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    println!("replay {}: {}", clip.display(), summary?);
    if let Some(report) = &options_report {
        println!("tuning report written to {}", report.display());
    }
    Ok(())
}

/// First SIGTERM/SIGINT: clean shutdown. Second: exit at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("signal received; stopping (send again to exit immediately)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal; exiting now");
    std::process::exit(130);
}

fn detect(settings: &Settings, model: Option<&str>, out: &std::path::Path, images: &[PathBuf]) -> anyhow::Result<()> {
    fieldwatch::telemetry::init_logging("warn", LogFormat::Text);
    let models = settings.config.all_models();
    let chosen = match model {
        None => models.first().context("the config has no model")?,
        Some(name) => models.iter().find(|m| m.name == name).with_context(|| {
            let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            format!("--model: no model {name:?} in the config (it has {names:?})")
        })?,
    };
    let mut detector = fieldwatch::detect::Detector::load(chosen).map_err(AppError::from)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut results = Vec::new();
    for path in images {
        let mut rgb = image::open(path).with_context(|| format!("reading {}", path.display()))?.to_rgb8();
        let detections = detector.detect(&rgb)?;
        let boxes: Vec<_> = detections.iter().map(|d| d.bbox).collect();
        fieldwatch::report::annotate(&mut rgb, &[], &boxes);
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let annotated = out.join(format!("{stem}.detections.jpg"));
        let jpeg = fieldwatch::report::encode_jpeg(&rgb, settings.config.snapshot.jpeg_quality)
            .with_context(|| format!("encoding {}", annotated.display()))?;
        std::fs::write(&annotated, jpeg).with_context(|| format!("writing {}", annotated.display()))?;
        results.push(serde_json::json!({ "image": path, "annotated": annotated, "detections": detections }));
    }
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
