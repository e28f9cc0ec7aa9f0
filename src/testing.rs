//! A fault hook for the supervision tests: `FIELDWATCH_TEST_PANIC=STAGE:CAMERA` makes that
//! stage of that camera panic when it starts (STAGE: source, decode, detect, rules; `detect`
//! is shared, so any camera name triggers it), and `report:CAMERA` makes the first report of
//! that camera panic while it is built. Unset, it costs one environment lookup per stage start
//! and per report. It exists so the tests can prove that a dying stage stops the daemon with a
//! non-zero exit instead of leaving it half alive, and that a report is not lost to a panic.
//!
//! `FIELDWATCH_TEST_BLOCK=STAGE:CAMERA:SECS` makes that stage stop for SECS: decode when it
//! starts (idle: a blocked pipeline, not a silent camera), detect inside its first run for that
//! camera (busy: a hung inference worker, which the watchdog must notice).

use std::sync::atomic::{AtomicBool, Ordering};

fn asked(stage: &str, camera: &str) -> bool {
    std::env::var("FIELDWATCH_TEST_PANIC")
        .is_ok_and(|spec| spec.split_once(':').is_some_and(|(s, c)| s == stage && (c == camera || stage == "detect")))
}

#[allow(clippy::panic, reason = "the tests' fault injection: panics only when FIELDWATCH_TEST_PANIC asks")]
pub fn maybe_panic(stage: &str, camera: &str) {
    if asked(stage, camera) {
        panic!("FIELDWATCH_TEST_PANIC: {stage} of camera {camera} panics as asked");
    }
}

/// Like [`maybe_panic`], but only the first time in the process.
#[allow(clippy::panic, reason = "the tests' fault injection: panics only when FIELDWATCH_TEST_PANIC asks")]
pub fn maybe_panic_once(stage: &str, camera: &str) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if asked(stage, camera) && !DONE.swap(true, Ordering::Relaxed) {
        panic!("FIELDWATCH_TEST_PANIC: {stage} of camera {camera} panics once as asked");
    }
}

/// Sleeps for the seconds `FIELDWATCH_TEST_BLOCK` gives this stage of this camera, if any;
/// once per process.
pub fn maybe_block(stage: &str, camera: &str) {
    static DONE: AtomicBool = AtomicBool::new(false);
    let Ok(spec) = std::env::var("FIELDWATCH_TEST_BLOCK") else { return };
    let mut parts = spec.splitn(3, ':');
    if (parts.next(), parts.next()) == (Some(stage), Some(camera))
        && let Some(secs) = parts.next().and_then(|s| std::time::Duration::try_from_secs_f64(s.parse().ok()?).ok())
        && !DONE.swap(true, Ordering::Relaxed)
    {
        std::thread::sleep(secs);
    }
}
