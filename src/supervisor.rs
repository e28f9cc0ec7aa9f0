//! Watches every task and thread of the daemon. Each is joined and named by its stage and
//! camera: one that panics, fails, or (live) ends before shutdown is logged by name, cancels
//! shutdown, and becomes the daemon's exit status, so systemd restarts a daemon that is no
//! longer whole instead of leaving it half alive with its status still `online`.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Span, error, warn};

/// The stage that stopped the daemon, and why.
#[derive(Debug, thiserror::Error)]
#[error("{stage} failed: {message}")]
pub struct StageFailed {
    pub stage: Stage,
    pub message: String,
}

/// How a stage ends: `Err` with what went wrong.
pub type StageResult = Result<(), String>;

/// A stage's name and, unless shared, its camera: what a failure log names.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: &'static str,
    pub camera: Option<String>,
    /// Cancelled when the stage is stopped on purpose before shutdown (its camera removed or
    /// restarted by a reload): its end is then no failure.
    pub stopped: Option<CancellationToken>,
}

impl Stage {
    pub fn of(name: &'static str, camera: &str) -> Self {
        Self { name, camera: Some(camera.to_string()), stopped: None }
    }
    pub fn shared(name: &'static str) -> Self {
        Self { name, camera: None, stopped: None }
    }
    /// The same stage, whose end is expected once `stopped` is cancelled.
    pub fn until(self, stopped: &CancellationToken) -> Self {
        Self { stopped: Some(stopped.clone()), ..self }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.camera {
            Some(camera) => write!(f, "stage {} of camera {camera}", self.name),
            None => write!(f, "stage {}", self.name),
        }
    }
}

/// When a stage's normal end is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Live: stages run until shutdown; ending sooner is a failure.
    Shutdown,
    /// Replay: stages end when the clip is done.
    Done,
}

/// Every task and thread of the daemon, each joined and named.
#[derive(Default)]
pub struct Supervisor {
    stages: JoinSet<StageResult>,
    names: HashMap<tokio::task::Id, Stage>,
    /// The failure to exit with, and whether it is a cause (a panic or an error) rather than
    /// a consequence (a stage that ended because the one before it died).
    failure: Option<(Stage, String, bool)>,
}

impl Supervisor {
    pub fn spawn(&mut self, stage: Stage, task: impl Future<Output = StageResult> + Send + 'static) {
        let handle = self.stages.spawn(task);
        self.names.insert(handle.id(), stage);
    }

    /// CPU work (decoding, inference) on a thread of its own, inside `span`.
    pub fn spawn_thread(&mut self, stage: Stage, span: Span, work: impl FnOnce() -> StageResult + Send + 'static) {
        let handle = self.stages.spawn_blocking(move || span.in_scope(work));
        self.names.insert(handle.id(), stage);
    }

    /// Waits until shutdown (live) or until every stage is done (replay). A stage that panics,
    /// fails, or (live) ends before shutdown is logged by name and cancels `shutdown`.
    pub async fn watch(&mut self, shutdown: &CancellationToken, until: Until) {
        loop {
            let joined = tokio::select! {
                _ = shutdown.cancelled(), if until == Until::Shutdown => return,
                joined = self.stages.join_next_with_id() => joined,
            };
            let Some(joined) = joined else { return };
            let early = until == Until::Shutdown && !shutdown.is_cancelled();
            if self.judge(joined, early) {
                shutdown.cancel();
                if until == Until::Shutdown {
                    return;
                }
            }
        }
    }

    /// After shutdown: waits up to `grace` for every stage, judging each as it ends.
    pub async fn drain(&mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, self.stages.join_next_with_id()).await {
                Ok(None) => return,
                Ok(Some(joined)) => {
                    self.judge(joined, false);
                }
                Err(_) => {
                    let left: Vec<String> = self.names.values().map(|s| s.to_string()).collect();
                    warn!(?left, "stages still running after {grace:?}; exiting anyway");
                    return;
                }
            }
        }
    }

    /// Logs and records a stage's end if it is a failure (`early`: it should still be running).
    /// A panic found while stopping replaces an earlier "ended too soon", which it caused.
    fn judge(&mut self, joined: Result<(tokio::task::Id, StageResult), tokio::task::JoinError>, early: bool) -> bool {
        let (id, failure) = match joined {
            Ok((id, result)) => (id, result.err()),
            Err(e) if e.is_panic() => {
                let id = e.id();
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown payload".into());
                (id, Some(format!("panicked: {message}")))
            }
            Err(e) => (e.id(), Some("cancelled".into())),
        };
        let stage = self.names.remove(&id).unwrap_or(Stage::shared("unknown"));
        let early = early && !stage.stopped.as_ref().is_some_and(CancellationToken::is_cancelled);
        let camera = stage.camera.clone().unwrap_or_else(|| "-".into());
        let (message, cause) = match failure {
            Some(message) => (message, true),
            None if early => ("ended before shutdown".to_string(), false),
            None => return false,
        };
        error!(stage = stage.name, camera, error = %message, "{stage} failed; stopping");
        if self.failure.as_ref().is_none_or(|(_, _, was_cause)| cause && !was_cause) {
            self.failure = Some((stage, message, cause));
        }
        true
    }

    /// The failure to exit with, if any.
    pub fn result(&mut self) -> Result<(), StageFailed> {
        self.failure.take().map_or(Ok(()), |(stage, message, _)| Err(StageFailed { stage, message }))
    }
}
