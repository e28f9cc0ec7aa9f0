//! Command line: `run`, `check` and `detect`. Everything else lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use fieldwatch::config::{self, ConfigError};
use std::path::PathBuf;
use std::process::ExitCode;
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
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match &cli.command {
        Command::Run { config } | Command::Check { config } | Command::Detect { config, .. } => config.clone(),
    };
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(e @ ConfigError::Invalid { .. }) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match cli.command {
        Command::Check { .. } => {
            println!("config {} is valid (version {})", path.display(), fieldwatch::app::config_version(&config));
            Ok(())
        }
        Command::Run { .. } => run(config),
        Command::Detect { out, images, .. } => detect(config, &out, &images),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: config::Config) -> anyhow::Result<()> {
    fieldwatch::telemetry::init_logging(&config.log.level);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        fieldwatch::app::run(config, shutdown).await
    })?;
    // Don't wait for blocking tasks stuck on a dead peer: everything that matters has stopped.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
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

fn detect(config: config::Config, out: &std::path::Path, images: &[PathBuf]) -> anyhow::Result<()> {
    fieldwatch::telemetry::init_logging("warn");
    let mut detector = fieldwatch::detect::Detector::load(&config.model)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut results = Vec::new();
    for path in images {
        let mut rgb = image::open(path).with_context(|| format!("reading {}", path.display()))?.to_rgb8();
        let detections = detector.detect(&rgb)?;
        let boxes: Vec<_> = detections.iter().map(|d| d.bbox).collect();
        fieldwatch::report::annotate(&mut rgb, &[], &boxes);
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let annotated = out.join(format!("{stem}.detections.jpg"));
        std::fs::write(&annotated, fieldwatch::report::encode_jpeg(&rgb))
            .with_context(|| format!("writing {}", annotated.display()))?;
        results.push(serde_json::json!({ "image": path, "annotated": annotated, "detections": detections }));
    }
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
