//! An emulated ARM board with a real V4L2 driver: boots the initramfs of `tools/vm/` (Debian's arm64
//! kernel, its `vivid` module, busybox, the aarch64 `mien` binary and the tiny int8 plan) under
//! qemu-system-aarch64 on Cortex-A76 and Cortex-A72, and checks from the serial console that
//! `mien devices` lists vivid, that `mien capture` streamed YUYV, NV12 and RGB24 frames from it through
//! mmap buffers and ran the plan on them, and that a missing camera is a clean error.
//!
//! The camera pipeline (`vivid_camera_pipeline_on_emulated_arm64`): a frame with two faces is written
//! to vivid's HDMI output node with v4l2-ctl and comes back through its capture node (vivid's
//! loop_video); `mien run --json` must find both faces in every frame, keep their two track ids, and
//! report, per face, the label and probabilities `mien classify` gives on the crop it saved, in YUYV
//! and in NV12. Then vivid is unbound, unloaded and reloaded during a run: mien must report the loss,
//! reopen the camera and keep reporting frames. `mien run --serve` over vivid answers
//! `/api/v1/latest` with both faces to a request from inside the guest.
//!
//! Needs qemu-system-aarch64, cpio, kmod and the aarch64 cross toolchain (`.ci/run` installs them) and
//! the aarch64 `mien` binary (`cargo build --target aarch64-unknown-linux-gnu -p mien`, which `.ci/run`'s
//! emulated ARM step builds; or `MIEN_VM_BINARY`). Debian packages are cached in `$MIEN_CACHE/vm`.
//! In CI (`CI=true`) anything missing fails the test; elsewhere it is skipped with a message.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Fails in CI, skips (returns None) elsewhere.
fn missing<T>(what: &str) -> Option<T> {
    common::missing("vm_vivid", what)
}


fn prerequisites() -> Option<PathBuf> {
    for tool in ["qemu-system-aarch64", "cpio", "aarch64-linux-gnu-readelf", "apt-get", "dpkg"] {
        if !common::on_path(tool) {
            return missing(&format!("`{tool}` is not installed (apt-get install qemu-system-arm cpio kmod binutils-aarch64-linux-gnu)"));
        }
    }
    if !common::on_path("depmod") && !Path::new("/sbin/depmod").exists() {
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
pub(crate) struct Step {
    pub(crate) output: String,
    pub(crate) rc: i32,
}

pub(crate) fn step(console: &str, name: &str) -> Step {
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
            .args(["--cpu", cpu, "--timeout", "900", "--steps", "capture"])
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

/// Two astronaut portraits side by side in a 640x480 frame, as the camera would see two people.
fn two_faces_frame() -> image::RgbImage {
    let astronaut = mien_image::open_rgb(common::committed_photo("astronaut.png")).unwrap();
    let portrait = mien_image::crop_rgb(&astronaut, mien_image::PixelRect { x: 96, y: 0, width: 256, height: 256 });
    let mut frame = image::RgbImage::from_pixel(640, 480, image::Rgb([70, 80, 90]));
    image::imageops::replace(&mut frame, &portrait, 40, 112);
    image::imageops::replace(&mut frame, &portrait, 344, 112);
    frame
}

/// The faces of one `mien run` step, checked, keyed by (frame, face index): (label, probabilities).
fn check_run(console: &str, name: &str, format: &str) -> std::collections::BTreeMap<(u64, usize), (String, Value)> {
    let s = step(console, name);
    assert_eq!(s.rc, 0, "{name} failed:\n{}", s.output);
    let lines = json_lines(&s);
    let frames: Vec<&Value> = lines.iter().filter(|v| v["type"] == "frame").collect();
    assert_eq!(frames.len(), 4, "{name}: {}", s.output);
    let summary = lines.iter().find(|v| v["type"] == "summary").unwrap_or_else(|| panic!("{name}: no summary:\n{}", s.output));
    assert_eq!(summary["frames"], 4, "{name}: {summary}");
    let mut faces = std::collections::BTreeMap::new();
    let mut tracks = std::collections::BTreeSet::new();
    for f in &frames {
        assert!(f["source"].as_str().unwrap().contains(&format!("{format} 640x480")), "{name}: {}", f["source"]);
        let found = f["faces"].as_array().unwrap();
        // Both people, in every frame: the looped frames carry the faces written to the output node.
        assert_eq!(found.len(), 2, "{name}: frame {} has {} faces: {f}", f["frame"], found.len());
        let mut xs: Vec<f64> = found.iter().map(|face| face["box"]["x"].as_f64().unwrap()).collect();
        xs.sort_by(f64::total_cmp);
        // Face centres at about 168 and 472 px; boxes start some 45 px left of them.
        assert!((xs[0] - 120.0).abs() < 40.0 && (xs[1] - 424.0).abs() < 40.0, "{name}: boxes at {xs:?}");
        for (i, face) in found.iter().enumerate() {
            tracks.insert(face["track"].as_u64().unwrap());
            faces.insert((f["frame"].as_u64().unwrap(), i), (face["frame_label"].as_str().unwrap().to_string(), face["probabilities"].clone()));
        }
    }
    assert_eq!(tracks.len(), 2, "{name}: two people should keep two track ids over the run, got {tracks:?}");
    faces
}

/// `mien classify` on the crops a run saved gives the labels and probabilities the run reported.
fn check_crops_match(console: &str, name: &str, run_faces: &std::collections::BTreeMap<(u64, usize), (String, Value)>) {
    let s = step(console, name);
    assert_eq!(s.rc, 0, "{name} failed:\n{}", s.output);
    let lines = json_lines(&s);
    assert_eq!(lines.len(), run_faces.len(), "{name}: {} crops classified, the run reported {} faces", lines.len(), run_faces.len());
    for line in &lines {
        // crops-FORMAT/frame000123-face1-happy.png
        let file = line["file"].as_str().unwrap();
        let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
        let mut parts = stem.split('-');
        let frame: u64 = parts.next().unwrap().trim_start_matches("frame").parse().unwrap();
        let face: usize = parts.next().unwrap().trim_start_matches("face").parse().unwrap();
        let (label, probabilities) = run_faces.get(&(frame, face)).unwrap_or_else(|| panic!("{name}: crop {file} matches no face of the run"));
        assert_eq!(line["label"].as_str().unwrap(), label, "{name}: {file}");
        for (class, p) in line["probabilities"].as_object().unwrap() {
            let ours = probabilities[class].as_f64().unwrap();
            assert!((ours - p.as_f64().unwrap()).abs() < 1e-5, "{name}: {file} {class}: run {ours}, classify {p}");
        }
    }
}

#[test]
fn vivid_camera_pipeline_on_emulated_arm64() {
    let Some(binary) = prerequisites() else { return };
    let root = common::root();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vm-arm64-pipeline");
    std::fs::create_dir_all(&out).unwrap();
    use mien_capture::{pixel::scalar::from_rgb, PixelFormat, YuvEncoding};
    let frame = two_faces_frame();
    std::fs::write(out.join("faces.yuyv"), from_rgb(&frame, PixelFormat::Yuyv, YuvEncoding::default())).unwrap();
    std::fs::write(out.join("faces.nv12"), from_rgb(&frame, PixelFormat::Nv12, YuvEncoding::default())).unwrap();
    let built = Command::new(root.join("tools/vm/build.sh"))
        .args(["--arch", "arm64", "--binary"])
        .arg(&binary)
        .arg("--plan")
        .arg(root.join("models/tiny-vit/tiny-vit-int8.mien"))
        .arg("--out")
        .arg(out.join("vm"))
        .arg("--add")
        .arg(out.join("faces.yuyv"))
        .arg("--add")
        .arg(out.join("faces.nv12"))
        .status()
        .unwrap();
    assert!(built.success(), "tools/vm/build.sh failed");
    let run = Command::new(root.join("tools/vm/run.sh"))
        .arg("--dir")
        .arg(out.join("vm"))
        .args(["--cpu", "cortex-a76", "--timeout", "1200", "--steps", "pipeline"])
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&run.stdout).replace('\r', "");
    std::fs::write(out.join("console.txt"), console.as_bytes()).unwrap();
    assert!(console.contains("MIEN-VM-DONE"), "the guest did not finish (qemu {:?}); console:\n{console}", run.status);

    for format in ["YUYV", "NV12"] {
        let faces = check_run(&console, &format!("run-{}", format.to_lowercase()), format);
        check_crops_match(&console, &format!("classify-{}", format.to_lowercase()), &faces);
    }

    // The kiosk API in the board: a request from inside the guest gets the latest frame, both faces in it.
    let serve = step(&console, "serve");
    assert_eq!(serve.rc, 0, "serve failed:\n{}", serve.output);
    let field = |prefix: &str| -> Value {
        let line = serve.output.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no `{prefix}` line:\n{}", serve.output));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("`{prefix}` is not JSON ({e}):\n{}", serve.output))
    };
    let latest = field("latest: ");
    assert_eq!(latest["type"], "frame", "{latest}");
    assert!(latest["source"].as_str().unwrap().contains("YUYV 640x480"), "{latest}");
    assert_eq!(latest["faces"].as_array().unwrap().len(), 2, "{latest}");
    assert_eq!(field("health: ")["status"], "ok", "{}", serve.output);
    let started = json_lines(&serve).into_iter().find(|l| l["event"] == "started").expect("a started notice");
    assert_eq!(started["url"], "http://127.0.0.1:8080/", "{started}");
    assert!(!serve.output.contains("panicked"), "{}", serve.output);

    // vivid unloaded and reloaded mid-run: mien reports the loss, reopens the camera, and goes on
    // reporting frames (the reloaded vivid shows its test pattern: no faces) until --max-frames.
    let fault = step(&console, "run-fault");
    assert_eq!(fault.rc, 0, "run-fault failed:\n{}", fault.output);
    assert!(fault.output.contains("vivid reloaded"), "{}", fault.output);
    let lines = json_lines(&fault);
    let events: Vec<String> = lines
        .iter()
        .map(|l| match l["type"].as_str().unwrap() {
            "notice" => l["event"].as_str().unwrap().to_string(),
            other => other.to_string(),
        })
        .collect();
    let lost = events.iter().position(|e| e == "camera_lost").unwrap_or_else(|| panic!("no camera_lost notice: {events:?}\n{}", fault.output));
    let restored = events.iter().position(|e| e == "camera_restored").unwrap_or_else(|| panic!("no camera_restored notice: {events:?}\n{}", fault.output));
    assert!(lost < restored, "{events:?}");
    assert!(events[..lost].iter().filter(|e| *e == "frame").count() >= 2, "{events:?}");
    assert!(events[restored..].iter().any(|e| e == "frame"), "no frame after the camera came back: {events:?}");
    let summary = lines.iter().find(|l| l["type"] == "summary").unwrap();
    assert_eq!(summary["frames"], 8, "{summary}");
    assert_eq!(summary["camera_losses"], 1, "{summary}");
    assert!(!fault.output.contains("panicked"), "{}", fault.output);

    let exit = step(&console, "run-exit-on-loss");
    assert_eq!(exit.rc, 1, "--exit-on-camera-loss must fail when the camera goes:\n{}", exit.output);
    assert!(exit.output.contains("mien: /dev/video0: streaming failed"), "{}", exit.output);
    let summary = json_lines(&exit).into_iter().find(|l| l["type"] == "summary").expect("a summary even on error");
    assert_eq!(summary["stopped_by"], "error", "{summary}");
    assert!(!exit.output.contains("panicked"), "{}", exit.output);
    eprintln!("vivid loop: YUYV and NV12 faces found, tracked and classified like mien classify; vivid reload survived");
}

/// The board soak, short: vivid unbound, unloaded and reloaded again and again under a running `mien
/// run` (tools/soak_board.py); every loss is reported and restored, the run reaches its frame count and
/// its memory does not grow.
#[test]
fn vivid_reloaded_again_and_again_in_the_emulated_board() {
    let Some(binary) = prerequisites() else { return };
    let python = common::python();
    let has_modules = Command::new(&python).args(["-c", "import numpy, PIL"]).output().is_ok_and(|o| o.status.success());
    if !has_modules {
        return missing(&format!("{} has no numpy and Pillow (set MIEN_PYTHON; tools/requirements.txt)", python.display()))
            .unwrap_or(());
    }
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(&python)
        .arg(common::root().join("tools/soak_board.py"))
        .arg("--mien")
        .arg(&binary)
        .args(["--frames", "240", "--reload-every", "40", "--warmup", "80", "--timeout", "900", "--out"])
        .arg(out.path())
        .output()
        .expect("python runs");
    let report = std::fs::read_to_string(out.path().join("board.json")).unwrap_or_else(|_| {
        let console = std::fs::read_to_string(out.path().join("board-console.log")).unwrap_or_default();
        panic!("no report: {}\n{console}", String::from_utf8_lossy(&run.stderr))
    });
    let report: Value = serde_json::from_str(&report).unwrap();
    assert!(run.status.success(), "{report}\n{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(report["frames"], 240, "{report}");
    assert_eq!(report["reloads"], 5, "{report}");
    assert_eq!(report["every_reload_seen"], true, "{report}");
    assert!(report["rss_growth_after_warmup_mb"].as_f64().unwrap() <= 1.0, "{report}");
}
