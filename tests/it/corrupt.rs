//! Nothing a clip sends can panic or hang the daemon: truncated and bit-flipped copies of the
//! test clips (H.264 and H.265, MP4 and Annex B) replayed through `fieldwatch replay`, each
//! ending with a result or an error that says what was wrong, within a time limit.

use crate::support::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `replay` on `clip` (killed after `limit`): its exit code and output, or None if it
/// had to be killed.
fn replay_within(
    clip: &std::path::Path,
    config: &std::path::Path,
    out: &std::path::Path,
    limit: Duration,
) -> Option<(i32, String)> {
    let log = out.with_extension("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldwatch"))
        .args(["replay", &clip.display().to_string(), "--config", &config.display().to_string()])
        .args(["--camera", "cam-ok", "--out", &out.display().to_string()])
        .env_remove("ORT_DYLIB_PATH")
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(log.with_extension("err")).unwrap()))
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap() + &std::fs::read_to_string(log.with_extension("err")).unwrap();
    Some((status.code().unwrap_or(-1), text))
}

/// `bytes` with `flips` bits flipped at places a seeded generator picks from byte `from` on.
fn bit_flipped(bytes: &[u8], from: usize, flips: usize, seed: u64) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut state = seed | 1;
    for _ in 0..flips {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = from + (state as usize) % (out.len() - from);
        out[at] ^= 1 << ((state >> 60) % 8);
    }
    out
}

#[test]
fn truncated_and_bit_flipped_clips_end_in_a_result_or_an_error_never_a_panic_or_a_hang() {
    let _serial = heavy_blocking();
    let dir = temp_dir("corrupt");
    // One detection a second: the damage is in the decoding; fewer inferences keep 20 replays short.
    let camera = scene_camera("rtsp://127.0.0.1:1/cam").replacen("detect_fps = 5", "detect_fps = 1", 1);
    let config = daemon_config(&dir, 1, &camera);
    let mut ran = Vec::new();
    for clip in ["scene.mp4", "scene_h265.mp4", "scene.h264", "scene_h265.h265"] {
        let bytes = std::fs::read(cache(&format!("clips/{clip}"))).unwrap();
        let ext = clip.rsplit('.').next().unwrap();
        let copies = [
            ("head", bytes[..bytes.len() / 3].to_vec()),
            ("two-thirds", bytes[..bytes.len() * 2 / 3].to_vec()),
            // Anywhere past the first bytes: often the container's index, so it does not open.
            ("flipped-8", bit_flipped(&bytes, 64, 8, 1)),
            ("flipped-200", bit_flipped(&bytes, 64, 200, 2)),
            // In the second half: mostly the pictures, so the damage reaches the decoder.
            ("flipped-late-50", bit_flipped(&bytes, bytes.len() / 2, 50, 3)),
        ];
        for (how, data) in copies {
            let name = format!("{}-{how}", clip.replace('.', "-"));
            let path = dir.join(format!("{name}.{ext}"));
            std::fs::write(&path, data).unwrap();
            let out = dir.join(&name);
            let Some((code, text)) = replay_within(&path, &config, &out, Duration::from_secs(60)) else {
                panic!("{name}: replay still running after 60 s");
            };
            assert!(!text.contains("panicked"), "{name}: {text}");
            assert!(code == 0 || text.contains("error"), "{name}: exit {code} without saying why:\n{text}");
            ran.push(format!("{name}: exit {code}"));
        }
    }
    eprintln!("{ran:#?}");
    std::fs::remove_dir_all(&dir).ok();
}
