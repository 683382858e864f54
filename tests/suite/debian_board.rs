//! The Debian package, installed the way a Raspberry Pi or Jetson user installs it.
//!
//! `packaged_service_on_a_booted_debian_arm64_board`: boots Debian bookworm with systemd as PID 1 and
//! the vivid camera driver on an emulated arm64 board (`tools/vm/debian-board.sh`), installs the arm64
//! package with `apt-get install ./mien_*.deb` and checks, from `tools/vm/board-test.sh`'s output: the
//! service starts by itself, finds vivid's camera and processes frames (HTTP health, metrics, latest);
//! it runs as a dynamic user in group video and cannot write outside its state directory; `kill -9`
//! restarts it; `kill -STOP` starves the watchdog, which kills and restarts it; `systemd-analyze
//! verify` is clean and `security` rates it at most 2.5; the shipped config passes `mien config
//! check`; `apt remove` leaves no process and `apt purge` removes the config.
//!
//! `armhf_package_in_a_debian_root`: the armhf package's files in an armhf Debian root (debootstrap's
//! first stage), run with qemu-arm: `mien info --cpu` and `mien run` on photos with the packaged
//! default plans.
//!
//! The packages come from `tools/package.sh` (target/debian/, or MIEN_BOARD_DEB / MIEN_ARMHF_DEB);
//! `.ci/run` builds them before the tests. Building the board's image needs root and debootstrap; it is
//! cached in $MIEN_CACHE/vm. In CI (`CI=true`) anything missing fails the tests; elsewhere they skip.

use crate::common;
use crate::vm_vivid::step;

use std::path::{Path, PathBuf};
use std::process::Command;



/// The newest package for ARCH in target/debian/, or the one $VAR names.
fn package(arch: &str, var: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    let dir = common::root().join("target/debian");
    let suffix = format!("_{arch}.deb");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("mien_") && n.ends_with(&suffix)))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

fn prerequisites(test: &str, arch: &str, var: &str, tools: &[&str]) -> Option<PathBuf> {
    for tool in tools {
        if !common::on_path(tool) {
            return common::missing(test, &format!("`{tool}` is not installed (.ci/run installs it)"));
        }
    }
    if !common::is_root() {
        return common::missing(test, "building the Debian root needs root (debootstrap)");
    }
    match package(arch, var) {
        Some(deb) if deb.is_file() => Some(deb),
        _ => common::missing(test, &format!("no {arch} package in target/debian (tools/package.sh --target {arch}) and no ${var}")),
    }
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(name).map(str::trim))
}

fn numbers(text: &str) -> Vec<u64> {
    text.split_whitespace().filter_map(|w| w.parse().ok()).collect()
}

#[test]
fn packaged_service_on_a_booted_debian_arm64_board() {
    let tools = ["qemu-system-aarch64", "debootstrap", "mkfs.ext4", "cpio", "tar", "dpkg", "apt-get"];
    let Some(deb) = prerequisites("debian_board", "arm64", "MIEN_BOARD_DEB", &tools) else { return };
    let root = common::root();
    let image = Command::new(root.join("tools/vm/debian-board.sh")).arg("image").output().unwrap();
    assert!(image.status.success(), "tools/vm/debian-board.sh image failed:\n{}", String::from_utf8_lossy(&image.stderr));

    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("debian-board");
    let _ = std::fs::remove_dir_all(&work);
    let payload = work.join("payload");
    std::fs::create_dir_all(&payload).unwrap();
    std::fs::write(payload.join("run.sh"), "exec bash ./board-test.sh\n").unwrap();
    std::fs::copy(root.join("tools/vm/board-test.sh"), payload.join("board-test.sh")).unwrap();
    std::fs::copy(&deb, payload.join("mien_test_arm64.deb")).unwrap();
    std::fs::copy(root.join("models/tiny-vit/tiny-vit-int8.mien"), payload.join("tiny-vit-int8.mien")).unwrap();
    let archive = work.join("payload.tar");
    let packed = Command::new("tar").arg("-cf").arg(&archive).arg("-C").arg(&payload).arg(".").status().unwrap();
    assert!(packed.success());

    let started = std::time::Instant::now();
    let run = Command::new(root.join("tools/vm/debian-board.sh"))
        .args(["boot", "--timeout", "1500", "--payload"])
        .arg(&archive)
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&run.stdout).replace('\r', "");
    std::fs::write(work.join("console.log"), &console).unwrap();
    assert!(
        console.contains("MIEN-BOARD-DONE"),
        "the board did not finish (qemu {:?}, console in {}):\n{console}\n{}",
        run.status,
        work.join("console.log").display(),
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!("debian_board: booted, tested and powered off in {:.0} s", started.elapsed().as_secs_f64());

    let install = step(&console, "install");
    assert_eq!(install.rc, 0, "apt-get install ./mien_*.deb failed:\n{}", install.output);
    assert!(install.output.contains("install ok installed"), "{}", install.output);
    assert!(install.output.contains("enabled enabled"), "the service is not enabled:\n{}", install.output);

    // Started by itself (the package's postinst), reading the vivid camera, frames flowing.
    let service = step(&console, "service");
    assert_eq!(service.rc, 0, "the service did not come up:\n{}", service.output);
    let health = field(&service.output, "health:").unwrap();
    assert!(health.contains("\"ok\""), "health: {health}");
    let frames = numbers(field(&service.output, "frames_total").unwrap());
    assert!(frames.len() == 2 && frames[1] > frames[0], "frames did not flow: {frames:?}\n{}", service.output);
    let latest = field(&service.output, "latest:").unwrap();
    let latest: serde_json::Value = serde_json::from_str(latest).unwrap_or_else(|e| panic!("latest: {e}: {latest}"));
    assert!(latest["source"].as_str().unwrap().contains("vivid"), "not reading vivid: {latest}");
    assert!(service.output.contains("reading "), "no started notice in the journal:\n{}", service.output);

    // A dynamic user in group video; writes only to its state directory.
    let sandbox = step(&console, "sandbox");
    assert_eq!(sandbox.rc, 0, "{}", sandbox.output);
    let uid = numbers(field(&sandbox.output, "Uid:").unwrap())[0];
    assert!((61184..=65519).contains(&uid), "not a dynamic user: uid {uid}\n{}", sandbox.output);
    let video = numbers(field(&sandbox.output, "video_gid").unwrap())[0];
    assert!(numbers(field(&sandbox.output, "Groups:").unwrap()).contains(&video), "not in group video:\n{}", sandbox.output);
    assert_eq!(field(&sandbox.output, "user"), Some("mien"), "{}", sandbox.output);
    for line in sandbox.output.lines().filter(|l| l.starts_with("write ")) {
        let allowed = line.ends_with(" allowed");
        assert_eq!(allowed, line.contains("/var/lib/mien/"), "{line}");
    }
    assert_eq!(sandbox.output.lines().filter(|l| l.starts_with("write ")).count(), 7, "{}", sandbox.output);

    for (name, what) in [("kill9", "kill -9"), ("watchdog", "kill -STOP")] {
        let s = step(&console, name);
        assert_eq!(s.rc, 0, "{what}: the service was not restarted:\n{}", s.output);
        let restarts = numbers(s.output.lines().find(|l| l.contains(" restarted ")).unwrap());
        // "killed|stopped OLD restarted NEW restarts BEFORE AFTER"
        assert!(restarts[1] != restarts[0] && restarts[3] > restarts[2], "{what}: {}", s.output);
    }
    let watchdog = step(&console, "watchdog");
    assert!(watchdog.output.contains("Watchdog timeout"), "not killed by the watchdog:\n{}", watchdog.output);

    let security = step(&console, "security");
    assert!(security.output.contains("verify rc=0"), "systemd-analyze verify:\n{}", security.output);
    let verify = &security.output[..security.output.find("verify rc=").unwrap()];
    assert!(!verify.contains("mien.service"), "systemd-analyze verify complains:\n{verify}");
    let exposure: f64 = security
        .output
        .lines()
        .find_map(|l| l.split("Overall exposure level for mien.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level:\n{}", security.output));
    assert!(exposure <= 2.5, "exposure {exposure}:\n{}", security.output);
    eprintln!("debian_board: systemd-analyze security: {exposure}");

    let config = step(&console, "config");
    assert_eq!(config.rc, 0, "mien config check /etc/mien/mien.toml:\n{}", config.output);

    let remove = step(&console, "remove");
    assert_eq!(remove.rc, 0, "{}", remove.output);
    assert!(remove.output.contains("no mien process"), "{}", remove.output);
    assert!(remove.output.contains("after remove: config kept, binary gone"), "{}", remove.output);
    assert!(remove.output.contains("after purge: config gone, state gone"), "{}", remove.output);
}

/// Runs the armhf `mien` of ROOT under qemu-arm with ROOT as its library prefix.
fn qemu_arm(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("qemu-arm")
        .arg("-L")
        .arg(root)
        .arg(root.join("usr/bin/mien"))
        .args(args)
        // tract reads NEON support from /proc/cpuinfo, which qemu-user passes through from the host.
        .env("TRACT_CPU_ARM32_NEON", "true")
        .env_remove("MIEN_PLAN")
        .env_remove("MIEN_DETECTOR")
        .env_remove("MIEN_CONFIG")
        .current_dir(root)
        .output()
        .unwrap()
}

#[test]
fn armhf_package_in_a_debian_root() {
    let tools = ["qemu-arm", "debootstrap", "dpkg-deb"];
    let Some(deb) = prerequisites("debian_board", "armhf", "MIEN_ARMHF_DEB", &tools) else { return };
    let root = common::root();
    let made = Command::new(root.join("tools/vm/debian-board.sh")).args(["root", "--arch", "armhf"]).output().unwrap();
    assert!(made.status.success(), "tools/vm/debian-board.sh root failed:\n{}", String::from_utf8_lossy(&made.stderr));
    let cached = PathBuf::from(String::from_utf8_lossy(&made.stdout).trim());
    // A copy per run: the cached root stays as debootstrap left it.
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("debian-root-armhf");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let sysroot = work.join("root");
    assert!(Command::new("cp").arg("-a").arg(&cached).arg(&sysroot).status().unwrap().success());
    let unpacked = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&sysroot).status().unwrap();
    assert!(unpacked.success(), "dpkg-deb -x {} failed", deb.display());
    for packaged in ["usr/share/mien/models/vit-s14-fer112/vit-s14-fer112-int8.mien", "usr/share/mien/models/blazeface/blazeface-short.mien", "etc/mien/mien.toml", "usr/lib/systemd/system/mien.service"] {
        assert!(sysroot.join(packaged).is_file(), "the package lacks /{packaged}");
    }

    let info = qemu_arm(&sysroot, &["info", "--cpu", "--json"]);
    assert!(info.status.success(), "mien info --cpu:\n{}", String::from_utf8_lossy(&info.stderr));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["cpu"]["arch"], "armv7", "{info}");
    assert_eq!(info["cpu"]["features"]["neon"], true, "{info}");

    // The committed photos, each face classified by the packaged default plans (found beside the binary).
    let photos = work.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["astronaut.png", "camera.png"] {
        std::fs::copy(common::committed_photo(name), photos.join(name)).unwrap();
    }
    let run = qemu_arm(&sysroot, &["run", "--source", photos.to_str().unwrap(), "--json", "-v"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "mien run:\n{stderr}");
    assert!(stderr.contains("share/mien/models/vit-s14-fer112/vit-s14-fer112-int8.mien"), "not the packaged plan:\n{stderr}");
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&run.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let frames: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "frame").collect();
    assert_eq!(frames.len(), 2, "{lines:?}");
    let astronaut = frames.iter().find(|f| f["file"].as_str().unwrap().ends_with("astronaut.png")).unwrap();
    assert_eq!(astronaut["faces"].as_array().unwrap().len(), 1, "{astronaut}");
    let labels = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"];
    assert!(labels.contains(&astronaut["faces"][0]["label"].as_str().unwrap()), "{astronaut}");
}
