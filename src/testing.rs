//! A fault hook for the supervision tests: `FIELDWATCH_TEST_PANIC=STAGE:CAMERA` makes that
//! stage of that camera panic when it starts (STAGE: source, decode, detect, rules; `detect`
//! is shared, so any camera name triggers it). Unset, it costs one environment lookup per stage
//! start. It exists so the tests can prove that a dying stage stops the daemon with a non-zero
//! exit instead of leaving it half alive.

pub fn maybe_panic(stage: &str, camera: &str) {
    if let Ok(spec) = std::env::var("FIELDWATCH_TEST_PANIC")
        && let Some((s, c)) = spec.split_once(':')
        && s == stage
        && (c == camera || stage == "detect")
    {
        panic!("FIELDWATCH_TEST_PANIC: {stage} of camera {camera} panics as asked");
    }
}
