//! An emulated ARM board with a real V4L2 driver: boots the initramfs of `tools/vm/` (Debian's arm64
//! kernel, its `vivid` module, busybox, the aarch64 `mien` binary and the tiny int8 plan) under
//! qemu-system-aarch64 on Cortex-A76 and Cortex-A72, and checks from the serial console that
//! `mien devices` lists vivid, that `mien capture` streamed YUYV, NV12 and RGB24 frames from it through
//! mmap buffers and ran the plan on them, and that a missing camera is a clean error.
//!
//! Needs qemu-system-aarch64, cpio, kmod and the aarch64 cross toolchain (`.ci/run` installs them) and
//! the aarch64 `mien` binary (`cargo build --target aarch64-unknown-linux-gnu -p mien`, which `.ci/run`'s
//! emulated ARM step builds; or `MIEN_VM_BINARY`). Debian packages are cached in `$MIEN_CACHE/vm`.
//! In CI (`CI=true`) anything missing fails the test; elsewhere it is skipped with a message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Fails in CI, skips (returns None) elsewhere.
fn missing<T>(what: &str) -> Option<T> {
    common::missing("vm_vivid", what)
}

fn on_path(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().map(|o| o.status.success()).unwrap_or(false)
}

fn prerequisites() -> Option<PathBuf> {
    for tool in ["qemu-system-aarch64", "cpio", "aarch64-linux-gnu-readelf", "apt-get", "dpkg"] {
        if !on_path(tool) {
            return missing(&format!("`{tool}` is not installed (apt-get install qemu-system-arm cpio kmod binutils-aarch64-linux-gnu)"));
        }
    }
    if !on_path("depmod") && !Path::new("/sbin/depmod").exists() {
        return missing("`depmod` is not installed (apt-get install kmod)");
    }
    let binary = std::env::var_os("MIEN_VM_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::root().join("target/aarch64-unknown-linux-gnu/debug/mien"));
    if !binary.exists() {
        return missing(&format!(
            "the aarch64 mien binary {} does not exist (cargo build --target aarch64-unknown-linux-gnu -p mien)",
            binary.display()
        ));
    }
    Some(binary)
}

/// The console output of one guest step, between its markers, and its exit code.
struct Step {
    output: String,
    rc: i32,
}

fn step(console: &str, name: &str) -> Step {
    let begin = format!("MIEN-VM-BEGIN {name}\n");
    let start = console.find(&begin).unwrap_or_else(|| panic!("step {name} never started; console:\n{console}")) + begin.len();
    let end_marker = format!("MIEN-VM-END {name} rc=");
    let end = console[start..].find(&end_marker).unwrap_or_else(|| panic!("step {name} never ended; console:\n{console}")) + start;
    let rc_text: String = console[end + end_marker.len()..].chars().take_while(|c| c.is_ascii_digit()).collect();
    Step { output: console[start..end].replace('\r', ""), rc: rc_text.parse().unwrap() }
}

fn json_lines(step: &Step) -> Vec<Value> {
    step.output.lines().filter(|l| l.starts_with('{') || l.starts_with('[')).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Checks one capture step and returns the 4x4 grid of mean colours of its last frame.
fn check_capture(console: &str, name: &str, format: &str, size: Option<(u64, u64)>, frames: usize, labels: &[String]) -> Vec<[f64; 3]> {
    let s = step(console, name);
    assert_eq!(s.rc, 0, "{name} failed:\n{}", s.output);
    let lines = json_lines(&s);
    let frame_lines: Vec<&Value> = lines.iter().filter(|v| v["type"] == "frame").collect();
    let summary = lines.iter().find(|v| v["type"] == "summary").unwrap_or_else(|| panic!("{name}: no summary:\n{}", s.output));
    assert_eq!(frame_lines.len(), frames, "{name}: {}", s.output);
    assert_eq!(summary["driver"], "vivid", "{name}: {summary}");
    assert_eq!(summary["format"], format, "{name}: {summary}");
    assert_eq!(summary["frames"], frames as u64, "{name}: {summary}");
    if let Some((w, h)) = size {
        assert_eq!((summary["width"].as_u64().unwrap(), summary["height"].as_u64().unwrap()), (w, h), "{name}: {summary}");
    }
    // Sequence numbers increase: these are distinct frames from the driver.
    let sequences: Vec<u64> = frame_lines.iter().map(|f| f["sequence"].as_u64().unwrap()).collect();
    assert!(sequences.windows(2).all(|w| w[1] > w[0]), "{name}: sequences {sequences:?}");
    if !labels.is_empty() {
        for f in &frame_lines {
            let c = &f["classification"];
            let label = c["label"].as_str().unwrap_or_else(|| panic!("{name}: frame without classification: {f}"));
            assert!(labels.iter().any(|l| l == label), "{name}: label {label} not in {labels:?}");
            let total: f64 = c["probabilities"].as_object().unwrap().values().map(|p| p.as_f64().unwrap()).sum();
            assert!((total - 1.0).abs() < 1e-3, "{name}: probabilities sum to {total}");
        }
    }
    let grid = frame_lines.last().unwrap()["grid_rgb"].as_array().unwrap();
    grid.iter().map(|cell| [0, 1, 2].map(|c| cell[c].as_f64().unwrap())).collect()
}

#[test]
fn vivid_capture_and_classify_on_emulated_arm64() {
    let Some(binary) = prerequisites() else { return };
    let root = common::root();
    let plan = root.join("models/tiny-vit/tiny-vit-int8.mien");
    let labels: Vec<String> = mien_plan::Plan::open(&plan).unwrap().manifest().labels.clone();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vm-arm64");
    let built = Command::new(root.join("tools/vm/build.sh"))
        .args(["--arch", "arm64", "--binary"])
        .arg(&binary)
        .arg("--plan")
        .arg(&plan)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(built.success(), "tools/vm/build.sh failed");
    for (cpu, dotprod) in [("cortex-a76", true), ("cortex-a72", false)] {
        let run = Command::new(root.join("tools/vm/run.sh"))
            .args(["--dir"])
            .arg(&out)
            .args(["--cpu", cpu, "--timeout", "900"])
            .output()
            .unwrap();
        let console = String::from_utf8_lossy(&run.stdout).replace('\r', "");
        assert!(console.contains("MIEN-VM-DONE"), "{cpu}: the guest did not finish (qemu {:?}); console:\n{console}\n{}", run.status, String::from_utf8_lossy(&run.stderr));
        assert!(!console.contains("insmod") || !console.contains("failed"), "{cpu}: a module failed to load:\n{console}");

        let devices = step(&console, "devices");
        assert_eq!(devices.rc, 0, "{cpu}: mien devices failed:\n{}", devices.output);
        let list = &json_lines(&devices)[0];
        let vivid_capture = list
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["driver"] == "vivid" && d["capture"] == true)
            .unwrap_or_else(|| panic!("{cpu}: no vivid capture node in {list}"));
        let fourccs: Vec<&str> = vivid_capture["formats"].as_array().unwrap().iter().map(|f| f["fourcc"].as_str().unwrap()).collect();
        for wanted in ["YUYV", "NV12", "RGB3"] {
            assert!(fourccs.contains(&wanted), "{cpu}: vivid offers {fourccs:?}");
        }
        assert!(list.as_array().unwrap().iter().any(|d| d["driver"] == "vivid" && d["capture"] == false), "{cpu}: vivid's output node is listed as not capture: {list}");

        // The CPU the plan runs on, as the guest kernel reports it (not qemu-user's host /proc/cpuinfo).
        let info = step(&console, "info");
        assert_eq!(info.rc, 0, "{cpu}: mien info failed:\n{}", info.output);
        let start = info.output.find('{').unwrap();
        let info_json: Value = serde_json::from_str(&info.output[start..]).unwrap();
        assert_eq!(info_json["cpu"]["features"]["dotprod"], dotprod, "{cpu}: {}", info_json["cpu"]);
        assert_eq!(info_json["int8_path"]["path"], "integer", "{cpu}: {}", info_json["int8_path"]);

        let yuyv = check_capture(&console, "capture-yuyv", "YUYV", Some((640, 360)), 3, &labels);
        let nv12 = check_capture(&console, "capture-nv12", "NV12", Some((640, 360)), 3, &labels);
        let rgb24 = check_capture(&console, "capture-rgb24", "RGB24", Some((640, 360)), 2, &[]);
        // vivid renders one test pattern (colour bars) into every format; converted to RGB, each 4x4 grid
        // cell of the YUV captures must show the colour the RGB24 capture shows. Swapped chroma or a wrong
        // range moves cells by tens of levels; rounding and 4:2:x chroma at bar edges by a few.
        for (format, grid) in [("YUYV", &yuyv), ("NV12", &nv12)] {
            for (cell, (yuv, rgb)) in grid.iter().zip(&rgb24).enumerate() {
                for c in 0..3 {
                    assert!((yuv[c] - rgb[c]).abs() < 4.0, "{cpu}: {format} cell {cell} {yuv:?} vs RGB24 {rgb:?}");
                }
            }
        }
        let spread = rgb24.iter().map(|c| c[0]).fold(f64::MIN, f64::max) - rgb24.iter().map(|c| c[0]).fold(f64::MAX, f64::min);
        assert!(spread > 50.0, "{cpu}: the RGB24 frame has no colour bars: {rgb24:?}");

        let missing_camera = step(&console, "capture-missing");
        assert_ne!(missing_camera.rc, 0, "{cpu}: a missing camera must fail");
        assert!(
            missing_camera.output.contains("no capture device named like `no-such-camera`"),
            "{cpu}: {}",
            missing_camera.output
        );
        assert!(!missing_camera.output.contains("panicked"), "{cpu}: {}", missing_camera.output);
        eprintln!("{cpu}: vivid streamed YUYV, NV12 and RGB24 through mien in the emulated board; grids agree");
    }
}
