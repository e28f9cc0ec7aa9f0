//! What systemd is told (`Type=notify`): READY once the daemon is up, STOPPING when it begins
//! to stop, and watchdog pings (`WatchdogSec`) only while the daemon's own stages make progress.
//! A stage busy with one piece of work for longer than the watchdog interval — an inference
//! run or a decode that never returns — stops the pings, and systemd restarts the service. A dead
//! camera leaves its stages idle, which is not a failure of the daemon: the status topic and
//! heartbeat report it. Without `NOTIFY_SOCKET` (not under systemd) all of this does nothing.

use crate::telemetry::Stages;
use sd_notify::NotifyState;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub fn ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("running")]);
}

/// A reload began; [`ready`] says it ended (systemd 253+ waits for it on `systemctl reload`).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now, NotifyState::Status("reloading")]),
        Err(error) => warn!(%error, "cannot read the monotonic clock for systemd"),
    }
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        warn!(%error, "cannot notify systemd");
    }
}

/// Pings the watchdog every third of its interval while no stage of `stages` is hung, until
/// `shutdown`. Runs on the async runtime, so a stuck runtime stops the pings too.
pub async fn watchdog(stages: Stages, shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else { return };
    info!(interval_ms = interval.as_millis() as u64, "systemd watchdog enabled");
    let mut complained = None::<Instant>;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval / 3) => {}
        }
        let hung = stages.hung(interval);
        if hung.is_empty() {
            notify(&[NotifyState::Watchdog]);
            complained = None;
        } else if complained.is_none_or(|at| at.elapsed() >= interval) {
            let hung: Vec<String> = hung.iter().map(|(n, d)| format!("{n} ({:.0} s)", d.as_secs_f64())).collect();
            error!(?hung, "stages stuck in one piece of work; not pinging the watchdog, systemd will restart us");
            complained = Some(Instant::now());
        }
    }
}
