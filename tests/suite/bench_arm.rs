//! tools/bench_arm.py on the tiny model: onnxruntime's aarch64 wheel in Debian's arm64 Python and mien's
//! aarch64 binary, both counted under qemu-user on an emulated Cortex-A76 and A72. The full benchmark
//! (ViT-B/16 and the default model) takes hours and is run by hand; this checks that the tool still works
//! end to end. The arm64 Python with onnxruntime comes from `.ci/run` (`tools/bench_arm.py --setup-only`).

use std::path::PathBuf;
use std::process::Command;

use crate::common;

fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let skip = |what: &str| common::missing::<(PathBuf, PathBuf)>("bench_arm", what);
    for tool in ["qemu-aarch64", "gcc", "dpkg-deb"] {
        if !common::on_path(tool) {
            return skip(&format!("`{tool}` is not installed (tools/install-cross.sh)"));
        }
    }
    let mien = std::env::var_os("MIEN_AARCH64_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::root().join("target/aarch64-unknown-linux-gnu/debug/mien"));
    if !mien.is_file() {
        return skip(&format!("{}: no aarch64 mien (cargo build --target aarch64-unknown-linux-gnu -p mien)", mien.display()));
    }
    let peers = common::cache_dir().join("bench-arm");
    let ready = std::fs::read_dir(&peers)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("peer-") && e.path().join(".complete").is_file());
    if !ready {
        return skip(&format!("no arm64 onnxruntime under {} (python tools/bench_arm.py --setup-only)", peers.display()));
    }
    let python = common::python();
    let has_onnxruntime = Command::new(&python).args(["-c", "import onnx, onnxruntime"]).output().is_ok_and(|o| o.status.success());
    if !has_onnxruntime {
        return skip(&format!("{} has no onnx and onnxruntime (set MIEN_PYTHON; tools/requirements.txt)", python.display()));
    }
    Some((mien, python))
}

#[test]
fn counts_onnxruntime_and_mien_on_emulated_pi_cores() {
    let Some((mien, python)) = prerequisites() else { return };
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(common::root().join("tools/bench_arm.py"))
        .args(["--models", "tiny", "--cpus", "cortex-a76", "cortex-a72", "--precisions", "f32", "int8", "f16"])
        .args(["--jobs", "2", "--no-cache", "--mien"])
        .arg(&mien)
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .expect("python runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench_arm.py failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("arm.json")).unwrap()).unwrap();
    assert_eq!(report["schema"], "mien.bench_arm/1");
    let results = report["results"].as_array().unwrap();
    let find = |cpu: &str, precision: &str, runtime: &str| {
        results.iter().find(|r| r["cpu"] == cpu && r["precision"] == precision && r["runtime"] == runtime).cloned()
    };
    for cpu in ["cortex-a76", "cortex-a72"] {
        for precision in ["f32", "int8"] {
            for runtime in ["onnxruntime", "mien"] {
                let r = find(cpu, precision, runtime).unwrap_or_else(|| panic!("no {cpu} {precision} {runtime} in {report}"));
                let (one, three, each) =
                    (r["runs1"].as_u64().unwrap(), r["runs3"].as_u64().unwrap(), r["per_inference"].as_u64().unwrap());
                // Three inferences execute more than one; the start-up both share is the larger part here.
                assert!(three > one && each > 0 && each == (three - one) / 2, "{r}");
            }
        }
        // mien's `auto` picks the integer kernels on ARM; f16 arithmetic only where the core has it.
        assert_eq!(find(cpu, "int8", "mien").unwrap()["int8_path"], "integer");
    }
    assert_eq!(find("cortex-a76", "f16", "mien").expect("f16 on the A76")["f16_path"], "f16");
    assert!(find("cortex-a76", "f16", "onnxruntime").expect("onnxruntime f16 on the A76")["per_inference"].as_u64() > Some(0));
    assert!(find("cortex-a72", "f16", "mien").is_none(), "no f16 on the A72");
    let table = std::fs::read_to_string(out_dir.path().join("arm.md")).unwrap();
    assert!(table.contains("| tiny | cortex-a72 (Raspberry Pi 4) | int8 (auto: integer) |"), "{table}");
}
