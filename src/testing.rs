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
//!
//! [`Tmpfs`] and [`Ext4`]: small real file systems for the storage tests, to fill up, and to
//! turn read-only under a running writer as the kernel does on a disk error.

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

/// A small tmpfs mounted at a folder for the storage tests, so a disk can fill up and come
/// back for real; unmounted (and the folder removed) when dropped.
pub struct Tmpfs {
    pub dir: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts `bytes` of tmpfs at `dir` (made if missing); an error, with the reason, where this
    /// process may not mount (not root, or in a container without the right).
    pub fn mount(dir: &std::path::Path, bytes: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        run("mount", &["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"], dir)?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// Fills it with a file of its own, to the last byte; removing the file frees the space.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.dir.join("filler");
        if let Ok(mut file) = std::fs::File::create(&filler) {
            let block = vec![0xA5u8; 64 << 10];
            while file.write_all(&block).is_ok() {}
            for _ in 0..64 {
                let _ = file.write_all(&[0xA5; 512]);
            }
            let _ = file.sync_all();
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A small ext4 file system in an image file, mounted at a folder with `errors=remount-ro`, so
/// a test can have the kernel turn it read-only under open files (as a failing SD card does;
/// `mount -o remount,ro` refuses while files are open for writing) and bring it back.
pub struct Ext4 {
    pub dir: std::path::PathBuf,
    image: std::path::PathBuf,
}

impl Ext4 {
    /// Makes and mounts `bytes` of ext4 at `dir`; an error with the reason where this process
    /// may not (not root, no loop devices).
    pub fn mount(dir: &std::path::Path, bytes: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let image = dir.with_extension("img");
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(bytes).map_err(|e| e.to_string())?;
        run("mkfs.ext4", &["-q", "-F"], &image)?;
        let fs = Self { dir: dir.to_path_buf(), image };
        fs.attach()?;
        Ok(fs)
    }

    fn attach(&self) -> Result<(), String> {
        run("mount", &["-o", "loop,errors=remount-ro", &self.image.to_string_lossy()], &self.dir)
    }

    /// Has the kernel find an error in it, which turns it read-only (`emergency_ro`) under
    /// every open file.
    pub fn fail(&self) -> Result<(), String> {
        let source = std::process::Command::new("findmnt").args(["-no", "SOURCE"]).arg(&self.dir).output();
        let device = source.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
        let name = device.rsplit('/').next().unwrap_or_default();
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "fieldwatch storage test")
            .map_err(|e| format!("trigger_fs_error on {device}: {e}"))
    }

    /// Brings it back as a technician would: unmounted, checked and mounted again, writable.
    pub fn repair(&self) -> Result<(), String> {
        run("umount", &["-l"], &self.dir)?;
        // e2fsck exits 1 when it fixed something: fine here.
        let checked = std::process::Command::new("e2fsck")
            .arg("-fy")
            .arg(&self.image)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !checked.as_ref().is_ok_and(|s| s.code().is_some_and(|c| c <= 1)) {
            return Err(format!("e2fsck {}: {checked:?}", self.image.display()));
        }
        self.attach_fresh()
    }

    /// Mounts the image through a loop device of its own: the kernel keeps the failed file
    /// system (and its device) alive while the old files are open, and `mount -o loop` would
    /// find it again.
    fn attach_fresh(&self) -> Result<(), String> {
        let made = std::process::Command::new("losetup").args(["--find", "--show"]).arg(&self.image).output();
        let device = made.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
        if device.is_empty() {
            return Err(format!("losetup {}: no device", self.image.display()));
        }
        let mounted = run("mount", &["-o", "errors=remount-ro", &device], &self.dir);
        // The device goes with the mount (autoclear) once nothing holds it.
        let _ = std::process::Command::new("losetup").args(["-d", &device]).status();
        mounted
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Runs `command args path`; an error with what it said on stderr.
fn run(command: &str, args: &[&str], path: &std::path::Path) -> Result<(), String> {
    let out =
        std::process::Command::new(command).args(args).arg(path).output().map_err(|e| format!("{command}: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("{command}: {}", String::from_utf8_lossy(&out.stderr).trim())),
    }
}
