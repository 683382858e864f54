//! The `mien` binary as users and scripts see it: output formats, exit codes, one-line errors.

use std::path::PathBuf;
use std::process::{Command, Output};

mod common;

use common::{mien_command, root};

fn plan() -> PathBuf {
    common::tiny_plan()
}

fn photo(name: &str) -> PathBuf {
    common::photos().join(name)
}

fn mien(args: &[&std::ffi::OsStr]) -> Output {
    mien_command().args(args).output().expect("mien runs")
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

#[test]
fn classify_json_has_the_documented_fields() {
    let out = mien(&[os("classify"), plan().as_os_str(), photo("astronaut.png").as_os_str(), photo("rocket.jpg").as_os_str(), os("--json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let probs = line["probabilities"].as_object().unwrap();
        assert_eq!(probs.len(), 7);
        let label = line["label"].as_str().unwrap();
        let score = line["score"].as_f64().unwrap();
        assert_eq!(probs[label].as_f64().unwrap(), score);
        assert!(probs.values().all(|p| p.as_f64().unwrap() <= score));
        assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
        assert!(line["file"].as_str().unwrap().ends_with(".png") || line["file"].as_str().unwrap().ends_with(".jpg"));
    }
}

#[test]
fn classify_table_and_bad_image() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.jpg");
    std::fs::write(&bad, "not an image").unwrap();
    let out = mien(&[os("classify"), plan().as_os_str(), bad.as_os_str(), photo("camera.png").as_os_str()]);
    assert_eq!(out.status.code(), Some(1), "a bad image fails the run");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("FILE"), "{stdout}");
    assert!(stdout.contains("camera.png"), "the good image is still classified: {stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("notes.jpg") && stderr.contains("cannot decode"), "{stderr}");
}

#[test]
fn missing_plan_is_one_line() {
    let out = mien(&[os("classify"), os("/nonexistent/plan.mien"), photo("camera.png").as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/plan.mien"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn info_lists_kernels_and_ops() {
    let out = mien(&[os("info"), plan().as_os_str(), os("--json")]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["manifest"]["labels"].as_array().unwrap().len(), 7);
    assert!(v["op_counts"]["OptMatMul"].as_u64().unwrap() > 0);
    assert!(!v["matmul_kernels"].as_object().unwrap().is_empty());
    let text = mien(&[os("info"), plan().as_os_str()]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("kernels") && text.contains("angry, disgust"), "{text}");
}

#[test]
fn bench_json_has_the_fields_other_tools_read() {
    let out = mien(&[os("bench"), plan().as_os_str(), os("--runs"), os("5"), os("--threads"), os("1"), os("--json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["load_ms", "optimize_ms", "peak_rss_mb", "threads"] {
        assert!(v[field].is_number(), "{field} missing: {v}");
    }
    for p in ["p50", "p90", "p99"] {
        assert!(v["latency_ms"][p].as_f64().unwrap() > 0.0);
    }
    assert!(v["latency_ms"]["p50"].as_f64() <= v["latency_ms"]["p99"].as_f64());
    assert_eq!(v["threads"], 1);
}

#[test]
fn bench_profile_accounts_for_every_node_type() {
    let out = mien(&[os("bench"), plan().as_os_str(), os("--runs"), os("2"), os("--profile"), os("--json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let profile = v["profile"].as_array().unwrap_or_else(|| panic!("no profile: {v}"));
    let ops: Vec<&str> = profile.iter().map(|p| p["op"].as_str().unwrap()).collect();
    // The tiny ViT: its matmuls, softmax (inside the runtime's attention op or folded into Q·Kᵀ, or its
    // own op where the CPU has a kernel for it, else tract's) and layer norms all show up, slowest
    // first, shares adding to 1.
    assert!(ops.contains(&"OptMatMul"), "OptMatMul missing: {ops:?}");
    let softmax = ["Attention(mien)", "BatchedProduct+Softmax(mien)", "RowSoftmax(mien)", "Softmax"];
    assert!(ops.iter().any(|op| softmax.contains(op)), "softmax missing: {ops:?}");
    let ms: Vec<f64> = profile.iter().map(|p| p["ms"].as_f64().unwrap()).collect();
    assert!(ms.windows(2).all(|w| w[0] >= w[1]), "{ms:?}");
    let share: f64 = profile.iter().map(|p| p["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6, "{share}");
    assert!(profile.iter().all(|p| p["nodes"].as_u64().unwrap() >= 1));
    // Without --profile, no profile.
    let plain = mien(&[os("bench"), plan().as_os_str(), os("--runs"), os("1"), os("--json")]);
    let v: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert!(v.get("profile").is_none());
}

#[test]
fn help_has_examples() {
    let out = mien(&[os("--help")]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Examples:") && text.contains("classify"), "{text}");
}

#[test]
fn eval_json_with_label_map_reports_what_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    for (folder, file) in [("HA", "astronaut.png"), ("sad", "camera.png"), ("contempt", "coffee.png")] {
        std::fs::create_dir_all(dir.path().join(folder)).unwrap();
        std::fs::copy(photo(file), dir.path().join(folder).join(file)).unwrap();
    }
    std::fs::write(dir.path().join("sad/broken.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let out = mien(&[os("eval"), plan().as_os_str(), dir.path().as_os_str(), os("--label-map"), os("HA=happy"), os("--json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "mien.eval/1");
    assert_eq!(v["images"], 2);
    assert_eq!(v["confusion"].as_array().unwrap().len(), 7);
    assert_eq!(v["unknown_folders"][0]["name"], "contempt");
    assert!(v["unreadable"][0]["file"].as_str().unwrap().ends_with("broken.png"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("contempt") && stderr.contains("broken.png"), "{stderr}");

    let out = mien(&[os("eval"), plan().as_os_str(), os("--against"), plan().as_os_str(), dir.path().as_os_str(), os("--json")]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "mien.eval.compare/1");
    assert_eq!(v["agreement"], 1.0);
    assert_eq!(v["max_abs_diff"], 0.0);

    // Images directly in DIR are an unlabelled set.
    let out = mien(&[os("eval"), plan().as_os_str(), dir.path().join("contempt").as_os_str(), os("--json")]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["accuracy"].is_null() && v["images"] == 1);

    // Only unknown folders: a one-line error that suggests --label-map.
    let only_unknown = tempfile::tempdir().unwrap();
    std::fs::create_dir(only_unknown.path().join("AN")).unwrap();
    std::fs::copy(photo("camera.png"), only_unknown.path().join("AN/camera.png")).unwrap();
    let out = mien(&[os("eval"), plan().as_os_str(), only_unknown.path().as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--label-map") && stderr.contains("AN"), "{stderr}");
}

#[test]
fn info_and_bench_report_the_int8_path() {
    let int8 = root().join("models/tiny-vit/tiny-vit-int8.mien");
    let out = mien(&[os("info"), int8.as_os_str(), os("--json"), os("--int8-path"), os("integer")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["int8_path"]["path"], "integer");
    assert_eq!(info["manifest"]["precision"], "int8");
    assert_eq!(info["manifest"]["quantization"]["int8_layers"], 14); // the patch embedding and 2 x 6 linear layers and the classifier
    assert!(info["cpu"]["arch"].is_string());
    assert!(info["matmul_kernels"].as_object().unwrap().keys().any(|k| k.contains("i32")));

    let out = mien(&[os("bench"), int8.as_os_str(), os("--json"), os("--runs"), os("2"), os("--int8-path"), os("dequantized")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bench: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(bench["int8_path"]["path"], "dequantized");
    assert!(!bench["matmul_kernels"].as_object().unwrap().keys().any(|k| k.contains("i32")));

    // Float plans have no int8 path; a wrong value is a usage error naming the flag.
    let out = mien(&[os("info"), plan().as_os_str(), os("--json")]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(info["int8_path"].is_null());
    let out = mien(&[os("info"), int8.as_os_str(), os("--int8-path"), os("sideways")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--int8-path"));
}

/// Camera errors are one line naming the device or flag, with a non-zero exit and no panic. (Streaming
/// from a real driver is tests/suite/vm_vivid.rs, in an emulated board with vivid.)
#[test]
fn capture_errors_are_one_line() {
    let out = mien(&[os("capture"), os("--device"), os("/nonexistent/video9"), os("--count"), os("1")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "mien: /nonexistent/video9: cannot open: No such file or directory (os error 2)");

    let out = mien(&[os("capture"), os("--size"), os("640by480")]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected WIDTHxHEIGHT such as 640x480, got `640by480`"));

    let out = mien(&[os("capture"), os("--format"), os("H264")]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown pixel format `H264`"));

    let out = mien(&[os("capture"), os("--count"), os("0")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "mien: --count: expected at least 1 frame");
}

/// `devices --json` is always a JSON array (empty on a machine without cameras, such as CI).
#[test]
fn devices_json_is_an_array() {
    let out = mien(&[os("devices"), os("--json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for device in list.as_array().expect("an array") {
        assert!(device["path"].as_str().unwrap().starts_with("/dev/video"), "{device}");
        assert!(device["capture"].is_boolean(), "{device}");
    }
}

/// `info --cpu` needs no plan and names the features kernel choice depends on (under qemu: the emulated
/// core's, e.g. dotprod on cortex-a76 but not on cortex-a72).
#[test]
fn info_cpu_without_a_plan() {
    let out = mien(&[os("info"), os("--cpu"), os("--json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arch = value["cpu"]["arch"].as_str().unwrap();
    let features = value["cpu"]["features"].as_object().unwrap();
    let kernels = &value["cpu"]["kernels"];
    let f32_override = std::env::var_os("MIEN_F32_PRODUCTS").is_some();
    match arch {
        "aarch64" => {
            assert_eq!(features["neon"], true);
            assert_eq!(kernels["softmax"], "mien_neon_softmax", "{value}");
            match std::env::var("QEMU_CPU").as_deref() {
                Ok("cortex-a76") => {
                    assert_eq!(features["dotprod"], true, "{value}");
                    assert_eq!(kernels["i8 tile"], "tract's", "SDOT cores keep tract's int8 kernel: {value}");
                }
                Ok("cortex-a72") => {
                    assert_eq!(features["dotprod"], false, "{value}");
                    assert_eq!(kernels["i8 tile"], "mien_neon_i8_smull_4x4", "{value}");
                }
                _ => {}
            }
        }
        "armv7" => {
            assert!(features.contains_key("neon"));
            assert_eq!(kernels["f32 tile"], "tract's", "{value}");
        }
        "x86_64" => {
            assert!(features.contains_key("avx2"));
            // AVX-512 CPUs keep tract's 16-wide kernels (and MIEN_F32_PRODUCTS can say otherwise).
            let avx2_only = features["avx2"] == true && features["fma"] == true && features["avx512f"] == false;
            let expected = if avx2_only { "mien_avx2_fma_f32_tile" } else { "tract's" };
            if !f32_override {
                assert_eq!(kernels["f32 tile"], expected, "{value}");
            }
        }
        other => panic!("unexpected arch {other}"),
    }
    let out = mien(&[os("info")]);
    assert_eq!(out.status.code(), Some(2), "a plan is required without --cpu");
}

fn detector() -> PathBuf {
    root().join("models/blazeface/blazeface-short.mien")
}

fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got {:?}", out.status);
    assert!(out.stdout.is_empty(), "an error writes no results: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "one-line error expected: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn run_json_labels_match_classify_on_the_saved_crops() {
    let crops = tempfile::tempdir().unwrap();
    let out = mien(&[
        os("run"), os("--plan"), plan().as_os_str(), os("--detector"), detector().as_os_str(),
        os("--source"), photo("astronaut.png").as_os_str(), os("--json"), os("--smoothing"), os("1"),
        os("--save-crops"), crops.path().as_os_str(), os("--threads"), os("1"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let frames: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "frame").collect();
    assert_eq!(frames.len(), 1);
    let faces = frames[0]["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1, "{}", frames[0]);
    let face = &faces[0];
    assert_eq!(face["track"], 1);
    let saved: Vec<PathBuf> = std::fs::read_dir(crops.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert!(saved[0].extension().unwrap() == "png");
    let classified = mien(&[os("classify"), plan().as_os_str(), saved[0].as_os_str(), os("--json"), os("--threads"), os("1")]);
    assert!(classified.status.success());
    let classified: serde_json::Value = serde_json::from_slice(&classified.stdout).unwrap();
    assert_eq!(face["frame_label"], classified["label"]);
    // Smoothing off: the run's probabilities are the crop's own.
    for (label, p) in classified["probabilities"].as_object().unwrap() {
        let ours = face["probabilities"][label].as_f64().unwrap();
        assert!((ours - p.as_f64().unwrap()).abs() < 1e-6, "{label}: run {ours} vs classify {p}");
    }
    let summary = lines.last().unwrap();
    assert_eq!((summary["type"].as_str(), summary["frames"].as_u64()), (Some("summary"), Some(1)));
}

#[test]
fn run_errors_are_one_line() {
    let run = |extra: &[&std::ffi::OsStr]| {
        let mut args = vec![os("run"), os("--plan"), plan().into_os_string().leak(), os("--detector"), detector().into_os_string().leak()];
        args.extend_from_slice(extra);
        mien(&args)
    };
    let e = one_line_error(&run(&[os("--source"), os("/nonexistent/frames")]));
    assert!(e.contains("/nonexistent/frames") && e.contains("no such file"), "{e}");
    let cargo_toml = root().join("Cargo.toml");
    let e = one_line_error(&run(&[os("--source"), cargo_toml.as_os_str()]));
    assert!(e.contains("expected a camera, a folder of images"), "{e}");
    let e = one_line_error(&run(&[os("--source"), photo("astronaut.png").as_os_str(), os("--raw-format"), os("YUYV")]));
    assert!(e.contains("--raw-format and --raw-size go together"), "{e}");
    let e = one_line_error(&run(&[os("--source"), photo("astronaut.png").as_os_str(), os("--max-frames"), os("0")]));
    assert!(e.contains("--max-frames"), "{e}");
    let e = one_line_error(&run(&[os("--source"), photo("astronaut.png").as_os_str(), os("--smoothing"), os("0")]));
    assert!(e.contains("--smoothing"), "{e}");
    // Plans swapped.
    let out = mien(&[
        os("run"), os("--plan"), detector().as_os_str(), os("--detector"), plan().as_os_str(),
        os("--source"), photo("astronaut.png").as_os_str(),
    ]);
    let e = one_line_error(&out);
    assert!(e.contains("--plan") && e.contains("detector plan"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = one_line_error(&run(&[os("--source"), empty.path().as_os_str()]));
    assert!(e.contains("no image files"), "{e}");
}

#[test]
fn run_stops_cleanly_on_sigint_and_sigterm_with_a_summary() {
    for signal in ["INT", "TERM"] {
        stops_cleanly_on(signal);
    }
}

fn stops_cleanly_on(signal: &str) {
    // A long raw video (60 grey frames) played at 5 fps: still running when the signal comes.
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("grey.yuyv");
    std::fs::write(&video, vec![128u8; 64 * 48 * 2 * 60]).unwrap();
    let mut child = mien_command()
        .args([os("run"), os("--plan"), plan().as_os_str(), os("--detector"), detector().as_os_str(), os("--source")])
        .arg(&video)
        .args(["--raw-format", "YUYV", "--raw-size", "64x48", "--max-fps", "5", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The "started" notice comes once the signal handlers are in place (and the models loaded).
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert!(first.contains("\"started\""), "{first}");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let killed = Command::new("sh").arg("-c").arg(format!("kill -{signal} {}", child.id())).status().unwrap();
    assert!(killed.success());
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["type"], "summary", "{text}");
    assert_eq!(summary["stopped_by"], "signal", "{summary}");
    let frames = summary["frames"].as_u64().unwrap();
    assert!(frames >= 1 && frames < 60, "{frames} frames before the signal");
    assert_eq!(summary["frames_without_faces"], frames, "grey frames have no face: {summary}");
}

#[test]
fn run_without_a_camera_says_so() {
    let has_video_nodes = std::fs::read_dir("/dev")
        .map(|d| d.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().starts_with("video")))
        .unwrap_or(false);
    if has_video_nodes {
        eprintln!("SKIPPED run_without_a_camera_says_so: this machine has /dev/video* nodes");
        return;
    }
    let out = mien(&[os("run"), os("--plan"), plan().as_os_str(), os("--detector"), detector().as_os_str()]);
    let e = one_line_error(&out);
    assert!(e.contains("no video devices found"), "{e}");
}

#[test]
fn run_over_a_list_of_images() {
    let out = mien(&[
        os("run"), os("--plan"), plan().as_os_str(), os("--detector"), detector().as_os_str(), os("--json"),
        os("--source"), photo("astronaut.png").as_os_str(), os("--source"), photo("coffee.png").as_os_str(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let frames: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "frame").collect();
    assert_eq!(frames.len(), 2);
    assert!(frames[0]["file"].as_str().unwrap().ends_with("astronaut.png"));
    assert_eq!(frames[0]["faces"].as_array().unwrap().len(), 1, "the astronaut's face");
    assert_eq!(frames[1]["faces"], serde_json::json!([]), "a cup of coffee has no face");

    let folder = root().join("tests/data/photos");
    let e = one_line_error(&mien(&[
        os("run"), os("--plan"), plan().as_os_str(), os("--detector"), detector().as_os_str(),
        os("--source"), photo("astronaut.png").as_os_str(), os("--source"), folder.as_os_str(),
    ]));
    assert!(e.contains("several sources must all be image files"), "{e}");
}

#[test]
fn info_shows_a_detector_plan() {
    let out = mien(&[os("info"), detector().as_os_str(), os("--json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["manifest"]["labels"], serde_json::json!(["face"]));
    assert_eq!(info["manifest"]["detector"]["keypoints"], 6);
    assert_eq!(info["manifest"]["output"]["shape"], serde_json::json!([1, 896, 17]));
}

#[test]
fn bench_pipeline_json_has_every_stage() {
    let out = mien(&[
        os("bench"), plan().as_os_str(), os("--pipeline"), os("--image"), photo("astronaut.png").as_os_str(),
        os("--detector"), detector().as_os_str(), os("--runs"), os("2"), os("--threads"), os("1"), os("--json"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for stage in ["mjpeg_decode", "yuyv_convert", "detect", "crop", "classifier_preprocess", "classify"] {
        let p50 = v["stages_ms"][stage]["p50"].as_f64().unwrap_or_else(|| panic!("no {stage}: {v}"));
        assert!(p50 >= 0.0);
    }
    for total in ["yuyv_frame_to_classifier_input_ms", "mjpeg_frame_to_classifier_input_ms", "frame_with_classification_ms"] {
        assert!(v[total].as_f64().unwrap() > 0.0, "{total}: {v}");
    }
    let only = mien(&[
        os("bench"), plan().as_os_str(), os("--pipeline"), os("--image"), photo("astronaut.png").as_os_str(),
        os("--detector"), detector().as_os_str(), os("--runs"), os("1"), os("--only"), os("yuyv_convert"), os("--json"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&only.stdout).unwrap();
    assert_eq!(v["stages_ms"].as_object().unwrap().len(), 1, "{v}");
    // A photo without a face cannot make a pipeline benchmark.
    let e = one_line_error(&mien(&[
        os("bench"), plan().as_os_str(), os("--pipeline"), os("--image"), photo("coffee.png").as_os_str(),
        os("--detector"), detector().as_os_str(),
    ]));
    assert!(e.contains("no face found"), "{e}");
}

/// Photos from a folder are not a sequence: by default every face is reported as it was classified,
/// under a track id of its own; `--track` tracks and smooths the same folder as if it were video.
#[test]
fn image_folders_classify_each_face_alone_unless_tracked() {
    let (plan, detector, folder) = (plan(), detector(), photo(""));
    let faces = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec![
            os("run"), os("--plan"), plan.as_os_str(), os("--detector"), detector.as_os_str(),
            os("--source"), folder.as_os_str(), os("--json"), os("--threads"), os("1"),
        ];
        args.extend(extra.iter().map(|a| os(a)));
        let out = mien(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["type"] == "frame")
            .flat_map(|l| l["faces"].as_array().unwrap().clone())
            .collect()
    };
    let alone = faces(&[]);
    // The astronaut and the cameraman: two people, in two photos.
    assert!(alone.len() >= 2, "{alone:?}");
    for face in &alone {
        assert_eq!(face["label"], face["frame_label"], "{face}");
        assert_eq!(face["score"], face["frame_score"], "{face}");
    }
    let mut ids: Vec<u64> = alone.iter().map(|f| f["track"].as_u64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), alone.len(), "a track id per face: {ids:?}");

    let tracked = faces(&["--track"]);
    assert_eq!(tracked.len(), alone.len());
    let mut ids: Vec<u64> = tracked.iter().map(|f| f["track"].as_u64().unwrap()).collect();
    ids.dedup();
    assert!(ids.len() < tracked.len(), "faces in the same place continue a track: {ids:?}");
    assert!(tracked.iter().any(|f| f["score"] != f["frame_score"]), "smoothed: {tracked:?}");
    // And --no-track wins over --track when both are given, the last one deciding.
    let last_wins = faces(&["--track", "--no-track"]);
    assert!(last_wins.iter().all(|f| f["score"] == f["frame_score"]));
}

#[test]
fn config_file_settings_apply_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiosk.toml");
    let photos = common::photos();
    std::fs::write(
        &config,
        format!(
            "[models]\nplan = {:?}\n[source]\ninput = {:?}\nmax_frames = 3\n[output]\njson = true\n",
            plan().display().to_string(),
            photos.display().to_string()
        ),
    )
    .unwrap();
    // The file alone: three frames of the photo folder, as JSON.
    let out = mien(&[os("run"), os("--config"), config.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let frames = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("\"type\":\"frame\"")).count();
    assert_eq!(frames, 3);
    // A flag beats the file's key.
    let out = mien(&[os("run"), os("--config"), config.as_os_str(), os("--max-frames"), os("1")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let frames = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("\"type\":\"frame\"")).count();
    assert_eq!(frames, 1);
    // `config show` says where each setting came from.
    let out = mien(&[os("config"), os("show"), os("--json"), os("--"), os("--config"), config.as_os_str(), os("--max-frames"), os("1")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = |key: &str| rows.iter().find(|r| r["key"] == key).unwrap().clone();
    assert_eq!(row("source.max_frames")["origin"], "command line");
    assert_eq!(row("source.max_frames")["value"], 1);
    assert_eq!(row("output.json")["origin"], config.display().to_string());
    assert_eq!(row("detector.min_face")["origin"], "default");
}

#[test]
fn bad_config_files_are_one_line_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        ("[detector]\nmin_fase = 30\n", "unknown key `detector.min_fase`; did you mean `detector.min_face`?"),
        ("[detector]\nmin_face = \"big\"\n", "`detector.min_face`: invalid value 'big'"),
        ("[http]\nlisten = \"nowhere\"\n", "`http.listen`: invalid value 'nowhere'"),
        ("[output\njson = true\n", "line 1: "),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        for args in [vec![os("run"), os("--config"), config.as_os_str()], vec![os("config"), os("check"), config.as_os_str()]] {
            let out = mien(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{text:?} was accepted");
            assert_eq!(stderr.trim().lines().count(), 1, "{text:?}: {stderr}");
            assert!(stderr.contains(&config.display().to_string()) && stderr.contains(expected), "{text:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{text:?}: output before the error");
        }
    }
    let missing = dir.path().join("none.toml");
    let out = mien(&[os("run"), os("--config"), missing.as_os_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("none.toml: cannot read the config file"));
}

#[test]
fn the_shipped_config_checks_and_completions_and_man_pages_generate() {
    let shipped = root().join("crates/mien/debian/mien.toml");
    let out = mien(&[os("config"), os("check"), shipped.as_os_str(), os("--json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let out = mien(&[os("completions"), os("bash")]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("config"), "completions lack `config`");
    let dir = tempfile::tempdir().unwrap();
    let out = mien(&[os("man"), dir.path().as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_page = std::fs::read_to_string(dir.path().join("mien-run.1")).unwrap();
    assert!(run_page.contains("min\\-face"), "mien-run.1 lacks --min-face");
}

#[test]
fn tune_times_every_path_and_writes_the_choice_into_the_config() {
    let models = root().join("models/tiny-vit");
    let plans = ["tiny-vit.mien", "tiny-vit-int8.mien", "tiny-vit-f16.mien"].map(|p| models.join(p));
    let dir = tempfile::tempdir().unwrap();
    // The shipped settings file, with its comments: tune changes [models] and nothing else.
    let shipped = std::fs::read_to_string(root().join("crates/mien/debian/mien.toml")).unwrap();
    let config = dir.path().join("mien.toml");
    std::fs::write(&config, &shipped).unwrap();
    let mut args = vec![os("tune")];
    args.extend(plans.iter().map(|p| p.as_os_str()));
    args.extend([os("--max-threads"), os("2"), os("--runs"), os("2"), os("--json"), os("--write-config"), config.as_os_str()]);
    let out = mien(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["schema"], "mien.tune/1");
    assert_eq!(report["threads_tried"], serde_json::json!([1, 2]));
    let timings = report["timings"].as_array().unwrap();
    let paths = |plan: &str| -> Vec<String> {
        let mut paths: Vec<String> = timings
            .iter()
            .filter(|t| t["plan"].as_str().unwrap().ends_with(plan) && t["threads"] == 1)
            .map(|t| t["int8_path"].as_str().or(t["f16_path"].as_str()).unwrap_or("-").to_string())
            .collect();
        paths.sort();
        paths
    };
    assert_eq!(paths("tiny-vit.mien"), ["-"]);
    assert_eq!(paths("tiny-vit-int8.mien"), ["dequantized", "integer"]);
    // f16 arithmetic is tried only where the core has it (Cortex-A76, not A72 or x86-64).
    let f16_skipped = report["skipped"].as_array().unwrap().iter().any(|s| s["path"] == "f16");
    assert_eq!(paths("tiny-vit-f16.mien"), if f16_skipped { vec!["f32"] } else { vec!["f16", "f32"] });
    match std::env::var("QEMU_CPU").as_deref() {
        Ok("cortex-a76") => assert!(!f16_skipped, "the A76 has FP16 arithmetic"),
        Ok("cortex-a72") => assert!(f16_skipped, "the A72 has no FP16 arithmetic"),
        _ => {}
    }
    assert_eq!(timings.len(), 2 * (1 + 2 + paths("tiny-vit-f16.mien").len()));
    for t in timings {
        assert_eq!(t["runs"], 2);
        let l = &t["latency_ms"];
        assert!(l["min"].as_f64().unwrap() > 0.0 && l["min"].as_f64() <= l["p50"].as_f64() && l["p50"].as_f64() <= l["max"].as_f64(), "{t}");
    }
    // The choice is one of the timings, and no timing is more than 5 % faster with fewer threads.
    let choice = &report["choice"];
    let p50 = choice["latency_ms"]["p50"].as_f64().unwrap();
    assert!(timings.iter().any(|t| t["latency_ms"]["p50"].as_f64() == Some(p50) && t["threads"] == choice["threads"]));
    let fastest = timings.iter().map(|t| t["latency_ms"]["p50"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
    assert!(p50 <= fastest * 1.05 + 1e-9, "choice {p50} ms, fastest {fastest} ms");

    // The file: every comment kept, the choice in [models], and `mien run` reads it as chosen.
    let written = std::fs::read_to_string(&config).unwrap();
    for line in shipped.lines().filter(|l| l.starts_with('#')) {
        assert!(written.contains(line), "lost the line {line:?}");
    }
    let out = mien(&[os("config"), os("show"), os("--json"), os("--"), os("--config"), config.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = |key: &str| rows.iter().find(|r| r["key"] == key).unwrap().clone();
    assert_eq!(row("models.plan")["value"], choice["plan"]);
    assert_eq!(row("models.plan")["origin"], config.display().to_string());
    assert_eq!(row("models.threads")["value"], choice["threads"]);
    let int8_path = row("models.int8_path");
    match choice["int8_path"].as_str() {
        Some(path) => assert_eq!(int8_path["value"], path),
        None => assert_eq!(int8_path["origin"], "default"),
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("mien.toml")], "temporary files left behind");
}

#[test]
fn tune_refuses_plans_of_different_models_and_bad_settings_files_before_timing() {
    let tiny = plan();
    let other = root().join("models/vit-s14-fer/vit-s14-fer-int8.mien");
    let out = mien(&[os("tune"), tiny.as_os_str(), other.as_os_str()]);
    let error = one_line_error(&out);
    assert!(error.contains("vit-s14-fer-int8.mien: not the same model as") && error.contains("one model at a time"), "{error}");
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("mien.toml");
    std::fs::write(&broken, "[models\nthreads = 2\n").unwrap();
    let out = mien(&[os("tune"), tiny.as_os_str(), os("--write-config"), broken.as_os_str()]);
    let error = one_line_error(&out);
    assert!(error.starts_with(&format!("mien: --write-config {}: ", broken.display())), "{error}");
    assert_eq!(std::fs::read_to_string(&broken).unwrap(), "[models\nthreads = 2\n");
    let nowhere = dir.path().join("no/such/folder/mien.toml");
    let out = mien(&[os("tune"), tiny.as_os_str(), os("--write-config"), nowhere.as_os_str()]);
    assert!(one_line_error(&out).ends_with("does not exist"));
}
