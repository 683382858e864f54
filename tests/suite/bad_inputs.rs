//! The bad-input matrix: the real `mien` and `mien-convert` binaries fed inputs nobody planned for. Per
//! case: the exit code, the exact first line of the error (naming the file or field and what was
//! expected), no panic or backtrace, and no partial output (nothing at the destination, no staging area
//! left). Then interrupted conversions: SIGTERM and SIGKILL while `mien-convert` writes a plan leave the
//! old plan or none, never half of one.
//!
//! The binaries are the workspace's debug builds (target/debug/mien, target/debug/mien-convert), which
//! `cargo test --workspace` builds. Two cases mount small tmpfs file systems (a full one, a read-only
//! one): they need root; elsewhere they are skipped with a message (never in CI).

use crate::common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn binary(name: &str) -> Option<PathBuf> {
    // target/debug/deps/suite-HASH → target/debug/NAME
    let path = std::env::current_exe().ok()?.parent()?.parent()?.join(name);
    if path.is_file() {
        Some(path)
    } else {
        common::missing("bad_inputs", &format!("{} does not exist (cargo build -p {name})", path.display()))
    }
}


/// One row of the matrix.
struct Case {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    /// Run as another user (nobody) so file permissions apply even when the tests run as root.
    as_nobody: bool,
    rc: i32,
    /// The exact first line of stderr; `{dir}` stands for the case folder.
    first_line: String,
    /// Paths that must not exist afterwards (destinations), and folders that must hold no staging area.
    absent: Vec<PathBuf>,
}

fn os(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    items.iter().map(|s| s.as_ref().to_os_string()).collect()
}

fn run(case: &Case) -> Output {
    let mut command = if case.as_nobody && common::is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(&case.program);
        c
    } else {
        Command::new(&case.program)
    };
    command
        .args(&case.args)
        .env_remove("MIEN_PLAN")
        .env_remove("MIEN_DETECTOR")
        .env_remove("MIEN_CONFIG")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn staging_areas(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".mien-staging-"))
                .collect()
        })
        .unwrap_or_default()
}

/// A small PNG (a mid-grey square) of the given size.
fn png(width: u32, height: u32) -> Vec<u8> {
    use image::ImageEncoder;
    let mut bytes = Vec::new();
    let pixels = vec![128u8; (width * height * 3) as usize];
    image::codecs::png::PngEncoder::new(&mut bytes).write_image(&pixels, width, height, image::ExtendedColorType::Rgb8).unwrap();
    bytes
}

/// A PNG whose header says WIDTHxHEIGHT and whose data is one row: refused from the header alone.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(1, 1);
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32fast::hash(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// A tmpfs of `size` mounted on `dir` while it lives (read-only when `read_only`).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str, read_only: bool) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let options = format!("size={size}{}", if read_only { ",ro" } else { "" });
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tmpfs"]).arg(dir).status().is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn bad_inputs_matrix() {
    let (Some(mien), Some(convert)) = (binary("mien"), binary("mien-convert")) else { return };
    let root = common::root();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    // Readable by the `nobody` cases.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let d = |name: &str| dir.join(name);
    let plan = root.join("models/tiny-vit/tiny-vit-int8.mien");
    let detector = root.join("models/blazeface/blazeface-short.mien");
    let onnx = root.join("models/tiny-vit/model.onnx");
    let fixtures = root.join("tests/data/onnx");
    let photo = root.join("tests/data/photos/astronaut.png");
    let plan_bytes = std::fs::read(&plan).unwrap();

    // Plans, broken in every way a disk, a download or a user can break them.
    std::fs::write(d("truncated-head.mien"), &plan_bytes[..10_000]).unwrap();
    std::fs::write(d("truncated-half.mien"), &plan_bytes[..plan_bytes.len() / 2]).unwrap();
    let mut corrupt = plan_bytes.clone();
    corrupt[100] ^= 0x55; // the first tar header's mode field: its checksum no longer matches
    std::fs::write(d("corrupt-header.mien"), &corrupt).unwrap();
    let mut corrupt = plan_bytes.clone();
    corrupt[600] ^= 0x55; // inside mien.json, the first entry
    std::fs::write(d("corrupt-manifest.mien"), &corrupt).unwrap();
    std::fs::write(d("empty.mien"), b"").unwrap();
    let unpack = |name: &str| {
        let target = d(name);
        std::fs::create_dir_all(&target).unwrap();
        assert!(Command::new("tar").arg("-xf").arg(&plan).arg("-C").arg(&target).status().unwrap().success());
        target
    };
    let edit_manifest = |name: &str, from: &str, to: &str| {
        let path = d(name).join("mien.json");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };
    unpack("bad-checksum");
    let graph = d("bad-checksum/graph.nnef");
    let mut bytes = std::fs::read(&graph).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&graph, bytes).unwrap();
    unpack("newer-format");
    edit_manifest("newer-format", "\"format_version\": 1", "\"format_version\": 9");
    unpack("missing-file");
    std::fs::remove_file(d("missing-file/graph.nnef")).unwrap();
    unpack("wrong-labels");
    edit_manifest("wrong-labels", "\"surprise\"", "\"surprise\", \"bored\"");
    std::fs::create_dir_all(d("not-a-plan")).unwrap();
    std::fs::write(d("unreadable.mien"), &plan_bytes).unwrap();
    std::fs::set_permissions(d("unreadable.mien"), std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();

    // Images and videos.
    std::fs::write(d("empty.png"), b"").unwrap();
    std::fs::write(d("one-pixel.png"), png(1, 1)).unwrap();
    std::fs::write(d("huge.png"), png_header_only(20_000, 20_000)).unwrap();
    std::fs::write(d("zero-width.png"), png_header_only(0, 10)).unwrap();
    std::fs::write(d("text.jpg"), b"this is not a picture\n").unwrap();
    let jpeg = std::fs::read(root.join("tests/data/photos/rocket.jpg")).unwrap();
    std::fs::write(d("truncated.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    std::fs::write(d("cut.y4m"), b"YUV4MPEG2 W64 H48 F10:1 C420jpeg\nFRAME\nabc").unwrap();
    std::fs::write(d("not.y4m"), b"NOT A Y4M FILE\n").unwrap();
    std::fs::write(d("huge.y4m"), b"YUV4MPEG2 W60000 H60000 F10:1\nFRAME\n").unwrap();
    std::fs::write(d("corrupt.mjpeg"), b"\xff\xd8\xff\xdb\x00\x43garbage\xff\xd9").unwrap();
    std::fs::create_dir_all(d("empty-folder")).unwrap();
    std::fs::create_dir_all(d("undecodable")).unwrap();
    std::fs::write(d("undecodable/a.png"), b"not a png").unwrap();
    std::fs::write(d("undecodable/b.jpg"), b"not a jpeg").unwrap();

    // ONNX.
    std::fs::write(d("garbage.onnx"), b"\x08\x07garbage that is no protobuf message").unwrap();
    std::fs::write(d("empty.onnx"), b"").unwrap();

    // Configs.
    std::fs::write(d("unknown-key.toml"), "[detector]\nmin_fase = 30\n").unwrap();
    std::fs::write(d("wrong-type.toml"), "[output]\njson = \"yes\"\n").unwrap();
    std::fs::write(d("bad-value.toml"), "[tracking]\nsmoothing = \"high\"\n").unwrap();
    std::fs::write(d("bad-syntax.toml"), "[source\ninput = \"x\"\n").unwrap();
    std::fs::write(d("needs-url.toml"), "[mqtt]\ndevice_id = \"lobby\"\n").unwrap();

    let out = d("out.mien");
    let out_dir = d("out-plan");
    let dirs = dir.display().to_string();
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |name: &'static str, program: &Path, args: Vec<OsString>, rc: i32, first_line: &str| {
        cases.push(Case {
            name,
            program: program.to_path_buf(),
            args,
            as_nobody: false,
            rc,
            first_line: first_line.replace("{dir}", &dirs),
            absent: vec![],
        });
    };

    // --- plans ---
    add("truncated plan (manifest cut)", &mien, os(&[&"info", &d("truncated-head.mien")]), 1,
        "mien: {dir}/truncated-head.mien: invalid mien.json: EOF while parsing an object at line 382 column 25");
    add("truncated plan (weights cut)", &mien, os(&[&"info", &d("truncated-half.mien")]), 1,
        "mien: plan {dir}/truncated-half.mien is corrupt: inner/vit/layers.0/attention/o_proj/MatMul.dequant.scale.dat: truncated (0 of 320 bytes)");
    add("corrupted tar header", &mien, os(&[&"info", &d("corrupt-header.mien")]), 1,
        "mien: plan {dir}/corrupt-header.mien is corrupt: unreadable tar entry: archive header checksum mismatch");
    add("corrupted manifest bytes", &mien, os(&[&"info", &d("corrupt-manifest.mien")]), 1,
        "mien: {dir}/corrupt-manifest.mien: invalid mien.json: control character (\\u0000-\\u001F) found while parsing a string at line 6 column 0");
    add("zero-byte plan", &mien, os(&[&"info", &d("empty.mien")]), 1,
        "mien: {dir}/empty.mien is not a mien plan: no mien.json (expected a directory or a NAME.mien file written by mien-convert)");
    add("wrong checksum", &mien, os(&[&"info", &d("bad-checksum")]), 1,
        "mien: plan {dir}/bad-checksum is corrupt: graph.nnef: checksum e147aeef does not match the manifest's 5830fff6");
    add("newer plan format", &mien, os(&[&"info", &d("newer-format")]), 1,
        "mien: {dir}/newer-format: plan format version 9 is newer than this mien supports (1): upgrade mien");
    add("file missing from a plan", &mien, os(&[&"info", &d("missing-file")]), 1,
        "mien: plan {dir}/missing-file is corrupt: graph.nnef is missing");
    add("manifest disagrees with the model", &mien, os(&[&"info", &d("wrong-labels")]), 1,
        "mien: {dir}/wrong-labels: invalid mien.json: field `labels`: expected 7 labels to match output \"logits\" shape [1, 7], found 8");
    add("folder that is not a plan", &mien, os(&[&"info", &d("not-a-plan")]), 1,
        "mien: {dir}/not-a-plan is not a mien plan: no mien.json (expected a directory or a NAME.mien file written by mien-convert)");
    add("image given as the plan", &mien, os(&[&"classify", &photo, &plan]), 1,
        &format!("mien: {} is not a mien plan: no mien.json (expected a directory or a NAME.mien file written by mien-convert)", photo.display()));
    add("plan that does not exist", &mien, os(&[&"info", &d("nowhere.mien")]), 1,
        "mien: {dir}/nowhere.mien: No such file or directory (os error 2)");
    add("detector plan as the classifier", &mien, os(&[&"run", &"--plan", &detector, &"--source", &photo, &"--json"]), 1,
        &format!("mien: --plan {0}: {0}: this is a detector plan (mien.json has a detector section), not a classifier", detector.display()));
    add("classifier plan as the detector", &mien, os(&[&"run", &"--plan", &plan, &"--detector", &plan, &"--source", &photo, &"--json"]), 1,
        &format!("mien: --detector {0}: {0}: not a detector plan (mien.json has no detector section); expected e.g. models/blazeface/blazeface-short.mien", plan.display()));

    // --- images ---
    add("zero-byte image", &mien, os(&[&"classify", &plan, &d("empty.png")]), 1,
        "mien: cannot decode image \"{dir}/empty.png\": the file is empty (0 bytes)");
    add("image without pixels", &mien, os(&[&"classify", &plan, &d("zero-width.png")]), 1,
        "mien: cannot decode image \"{dir}/zero-width.png\": the image is empty (0x10 pixels)");
    add("20000x20000 image", &mien, os(&[&"classify", &plan, &d("huge.png")]), 1,
        "mien: cannot decode image \"{dir}/huge.png\": 20000x20000 pixels is more than the 50 megapixels mien decodes");
    add("text named .jpg", &mien, os(&[&"classify", &plan, &d("text.jpg")]), 1,
        "mien: cannot decode image \"{dir}/text.jpg\": not a JPEG, PNG, BMP or TIFF image");
    add("truncated JPEG", &mien, os(&[&"classify", &plan, &d("truncated.jpg")]), 1,
        "mien: cannot decode image \"{dir}/truncated.jpg\": JPEG data is truncated");
    add("folder given as an image", &mien, os(&[&"classify", &plan, &d("empty-folder")]), 1,
        "mien: cannot read image \"{dir}/empty-folder\": Is a directory (os error 21)");
    add("1x1 image classifies", &mien, os(&[&"classify", &plan, &d("one-pixel.png"), &"--json"]), 0, "");
    add("run over an empty folder", &mien, os(&[&"run", &"--plan", &plan, &"--source", &d("empty-folder"), &"--json"]), 1,
        "mien: {dir}/empty-folder: no image files (jpg, jpeg, png, bmp, tif, tiff, pgm, ppm) in this folder");

    // --- videos and cameras ---
    add("truncated Y4M video", &mien, os(&[&"run", &"--plan", &plan, &"--source", &d("cut.y4m"), &"--json"]), 1,
        "mien: {dir}/cut.y4m: frame 0 is cut short: 3 of 4608 bytes");
    add("not a Y4M video", &mien, os(&[&"run", &"--plan", &plan, &"--source", &d("not.y4m"), &"--json"]), 1,
        "mien: {dir}/not.y4m: not a YUV4MPEG2 file (expected the header `YUV4MPEG2 W.. H.. ...`)");
    add("Y4M of 60000x60000 frames", &mien, os(&[&"run", &"--plan", &plan, &"--source", &d("huge.y4m"), &"--json"]), 1,
        "mien: {dir}/huge.y4m: 60000x60000 frames are more than the 50 megapixels mien decodes");
    add("raw video without its size", &mien, os(&[&"run", &"--plan", &plan, &"--source", &d("cut.y4m"), &"--raw-format", &"YUYV"]), 1,
        "mien: --raw-format and --raw-size go together (raw video has no header to say them)");
    add("camera node that is no V4L2 device", &mien, os(&[&"run", &"--plan", &plan, &"--source", &"/dev/null"]), 1,
        "mien: /dev/null: not a V4L2 video device (it does not answer VIDIOC_QUERYCAP)");
    add("capture from a node that is no V4L2 device", &mien, os(&[&"capture", &"--device", &"/dev/null", &"--count", &"1"]), 1,
        "mien: /dev/null: not a V4L2 video device (it does not answer VIDIOC_QUERYCAP)");
    add("source path that does not exist", &mien, os(&[&"run", &"--plan", &plan, &"--source", &d("nowhere/frames")]), 1,
        "mien: --source {dir}/nowhere/frames: no such file or folder");

    // --- flags ---
    add("margin out of range", &mien, os(&[&"run", &"--plan", &plan, &"--source", &photo, &"--margin", &"5"]), 1,
        "mien: --margin: expected a number in [0, 2], got 5");
    add("zero max frames", &mien, os(&[&"run", &"--plan", &plan, &"--source", &photo, &"--max-frames", &"0"]), 1,
        "mien: --max-frames: expected at least 1");
    add("short API token", &mien, os(&[&"run", &"--plan", &plan, &"--source", &photo, &"--serve", &"127.0.0.1:0", &"--api-token", &"abc"]), 1,
        "mien: --api-token: expected at least 8 printable ASCII characters without spaces");
    add("MQTT URL of another scheme", &mien, os(&[&"run", &"--plan", &plan, &"--source", &photo, &"--mqtt", &"http://broker"]), 1,
        "mien: --mqtt: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got `http://broker`");

    // --- config files ---
    add("config: unknown key", &mien, os(&[&"run", &"--config", &d("unknown-key.toml")]), 1,
        "mien: {dir}/unknown-key.toml: unknown key `detector.min_fase`; did you mean `detector.min_face`?");
    add("config: wrong type", &mien, os(&[&"run", &"--config", &d("wrong-type.toml")]), 1,
        "mien: {dir}/wrong-type.toml: `output.json`: expected true or false");
    add("config: bad value", &mien, os(&[&"config", &"check", &d("bad-value.toml")]), 1,
        "mien: {dir}/bad-value.toml: `tracking.smoothing`: invalid value 'high' for 'smoothing <SMOOTHING>': invalid float literal");
    add("config: bad syntax", &mien, os(&[&"config", &"check", &d("bad-syntax.toml")]), 1,
        "mien: {dir}/bad-syntax.toml: line 1: unclosed table, expected `]`");
    add("config: key without the key it needs", &mien, os(&[&"config", &"check", &d("needs-url.toml")]), 1,
        "mien: {dir}/needs-url.toml: `mqtt.device_id`: the following required arguments were not provided: --mqtt <URL>");
    add("config: file that does not exist", &mien, os(&[&"run", &"--config", &d("nowhere.toml")]), 1,
        "mien: {dir}/nowhere.toml: cannot read the config file: No such file or directory (os error 2)");

    // --- mien-convert ---
    let convert_case = |name: &'static str, args: Vec<OsString>, first_line: &str, cases: &mut Vec<Case>| {
        cases.push(Case {
            name,
            program: convert.clone(),
            args,
            as_nobody: false,
            rc: 1,
            first_line: first_line.replace("{dir}", &dirs),
            absent: vec![out.clone(), out_dir.clone()],
        });
    };
    convert_case("ONNX that is not ONNX", os(&[&d("garbage.onnx"), &"-o", &out]),
        "mien-convert: {dir}/garbage.onnx: tract could not read the model: failed to decode Protobuf message: invalid wire type value: 7", &mut cases);
    convert_case("zero-byte ONNX", os(&[&d("empty.onnx"), &"-o", &out]),
        "mien-convert: {dir}/empty.onnx: tract could not read the model: model proto does not contain a graph", &mut cases);
    convert_case("ONNX without inputs", os(&[&fixtures.join("no_inputs.onnx"), &"-o", &out]),
        &format!("mien-convert: {} is not an image classifier mien can run: it has 0 inputs (); an image classifier has exactly one image input", fixtures.join("no_inputs.onnx").display()), &mut cases);
    convert_case("ONNX with two inputs", os(&[&fixtures.join("two_inputs.onnx"), &"-o", &out]),
        &format!("mien-convert: {} is not an image classifier mien can run: it has 2 inputs (a, b); an image classifier has exactly one image input", fixtures.join("two_inputs.onnx").display()), &mut cases);
    convert_case("ONNX of token ids", os(&[&fixtures.join("text_input.onnx"), &"-o", &out]),
        &format!("mien-convert: {} is not an image classifier mien can run: input \"input_ids\" is I64; mien expects a float32 image tensor", fixtures.join("text_input.onnx").display()), &mut cases);
    convert_case("ONNX with an unknown operator", os(&[&fixtures.join("unknown_op.onnx"), &"-o", &out]),
        &format!("mien-convert: {}: unsupported ONNX operator `FaceMagic` (node \"logits\"): tract cannot run it; export the model without it", fixtures.join("unknown_op.onnx").display()), &mut cases);
    convert_case("dynamic size without --size", os(&[&fixtures.join("dynamic_hw.onnx"), &"-o", &out]),
        "mien-convert: --size: expected HxW: input \"image\" (N,3,H,W) has a dynamic height or width", &mut cases);
    convert_case("ONNX that does not exist", os(&[&d("nowhere.onnx"), &"-o", &out]),
        "mien-convert: {dir}/nowhere.onnx: no such ONNX file", &mut cases);
    convert_case("empty calibration folder", os(&[&onnx, &"-o", &out, &"--precision", &"int8", &"--calibrate", &d("empty-folder")]),
        "mien-convert: --calibrate: expected a folder of images; {dir}/empty-folder holds none", &mut cases);
    convert_case("calibration folder of undecodable files", os(&[&onnx, &"-o", &out, &"--precision", &"int8", &"--calibrate", &d("undecodable")]),
        "mien-convert: --calibrate: expected readable images; none of the 2 files in {dir}/undecodable could be decoded", &mut cases);
    convert_case("validation folder that is empty", os(&[&onnx, &"-o", &out, &"--precision", &"f16", &"--validate", &d("empty-folder")]),
        "mien-convert: --validate: expected {dir}/empty-folder: no images to evaluate", &mut cases);
    convert_case("calibration without int8", os(&[&onnx, &"-o", &out, &"--calibrate", &d("undecodable")]),
        "mien-convert: --calibrate/--validate: only used with --precision int8 or f16", &mut cases);
    convert_case("destination inside a file", os(&[&onnx, &"-o", &d("text.jpg").join("plan.mien")]),
        "mien-convert: {dir}/text.jpg: Not a directory (os error 20)", &mut cases);
    convert_case("directory plan onto a folder that is not a plan", os(&[&onnx, &"-o", &d("empty-folder")]),
        "mien-convert: {dir}/empty-folder: exists and is not a mien plan; refusing to replace it", &mut cases);
    cases.push(Case {
        name: "unreadable plan (permissions)",
        program: mien.clone(),
        args: os(&[&"info", &d("unreadable.mien")]),
        as_nobody: true,
        rc: 1,
        first_line: format!("mien: {dirs}/unreadable.mien: Permission denied (os error 13)"),
        absent: vec![],
    });

    // A full and a read-only destination: small tmpfs mounts (root only).
    let _full;
    let _read_only;
    if common::is_root() {
        _full = Tmpfs::mount(&d("full"), "48k", false).expect("mount a tmpfs (as root)");
        _read_only = Tmpfs::mount(&d("read-only"), "1m", true).expect("mount a read-only tmpfs (as root)");
        convert_case("destination on a full file system", os(&[&onnx, &"-o", &d("full/plan.mien")]),
            "mien-convert: {dir}/full: No space left on device (os error 28)", &mut cases);
        convert_case("read-only destination", os(&[&onnx, &"-o", &d("read-only/plan.mien")]),
            "mien-convert: {dir}/read-only: Read-only file system (os error 30)", &mut cases);
        let last = cases.len();
        cases[last - 2].absent = vec![d("full/plan.mien"), d("full")];
        cases[last - 1].absent = vec![d("read-only/plan.mien"), d("read-only")];
    } else {
        common::missing::<()>("bad_inputs", "the full and read-only destinations need root to mount a tmpfs: 2 cases not run");
    }

    let mut failures = Vec::new();
    for case in &cases {
        let output = run(case);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The error's line (warnings about skipped inputs may come before it).
        let first = stderr
            .lines()
            .find(|l| l.starts_with("mien: ") || l.starts_with("mien-convert: "))
            .or_else(|| stderr.lines().next())
            .unwrap_or("");
        let rc = output.status.code().unwrap_or(-1);
        let mut problems = Vec::new();
        if rc != case.rc {
            problems.push(format!("exit code {rc}, expected {}", case.rc));
        }
        if first != case.first_line {
            problems.push(format!("first line\n      got:      {first}\n      expected: {}", case.first_line));
        }
        if stderr.contains("panicked") || stderr.contains("stack backtrace") || stderr.contains("RUST_BACKTRACE") {
            problems.push(format!("panic or backtrace:\n{stderr}"));
        }
        for path in &case.absent {
            if path.is_dir() {
                let leftovers = staging_areas(path);
                if !leftovers.is_empty() {
                    problems.push(format!("staging left in {}: {leftovers:?}", path.display()));
                }
            } else if path.exists() {
                problems.push(format!("{} exists after a failed run", path.display()));
            }
        }
        if !staging_areas(dir).is_empty() {
            problems.push(format!("staging left in {}: {:?}", dir.display(), staging_areas(dir)));
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
    }
    eprintln!("bad_inputs: {} cases, {} failed", cases.len(), failures.len());
    assert!(failures.is_empty(), "{} of {} cases failed:\n  {}", failures.len(), cases.len(), failures.join("\n  "));
    assert!(cases.len() >= 40, "{} cases", cases.len());
}

/// Kills `mien-convert` (SIGTERM, then SIGKILL) at delays spread over a conversion: the destination
/// always holds the old plan or the new one, complete; SIGTERM removes the staging area (all but rarely:
/// a write in flight can recreate part of it just before the exit), and whatever a SIGKILL or such a race
/// left is removed by the next conversion into that folder.
#[test]
fn interrupted_conversions_leave_the_old_plan_or_none() {
    let Some(convert) = binary("mien-convert") else { return };
    let root = common::root();
    let onnx = root.join("models/tiny-vit/model.onnx");
    let photos = root.join("tests/data/photos");
    let work = tempfile::tempdir().unwrap();
    let destination = work.path().join("plan.mien");
    let old = std::fs::read(root.join("models/tiny-vit/tiny-vit.mien")).unwrap();
    let args = |out: &Path| -> Vec<OsString> {
        os(&[&onnx, &"-o", &out, &"--precision", &"int8", &"--calibrate", &photos, &"--json"])
    };
    // How long a whole conversion takes here, so the kills land before, during and after writing.
    let started = std::time::Instant::now();
    let full = Command::new(&convert).args(args(&work.path().join("reference.mien"))).output().unwrap();
    assert!(full.status.success(), "{}", String::from_utf8_lossy(&full.stderr));
    let whole = started.elapsed();
    let new = std::fs::read(work.path().join("reference.mien")).unwrap();

    let mut interrupted = 0;
    let mut term_leftovers = 0;
    for signal in ["TERM", "KILL"] {
        for step in 0..12u32 {
            std::fs::write(&destination, &old).unwrap();
            let mut child = Command::new(&convert).args(args(&destination)).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
            std::thread::sleep(whole.mul_f64(f64::from(step) / 10.0));
            // The shell's own kill: no procps needed.
            let _ = Command::new("sh").arg("-c").arg(format!("kill -{signal} {}", child.id())).status();
            let status = child.wait().unwrap();
            interrupted += !status.success() as u32;
            let now = std::fs::read(&destination).unwrap_or_default();
            assert!(now == old || now == new, "SIGKILL/SIGTERM at step {step}: the destination is neither the old plan nor the new one ({} bytes)", now.len());
            // SIGTERM: mien-convert removes its staging area before exiting, unless a write still in
            // flight recreates part of it in the moment before the exit; the next writer removes that.
            if signal == "TERM" {
                term_leftovers += staging_areas(work.path()).len();
            }
        }
    }
    assert!(interrupted >= 6, "only {interrupted} of 24 runs were interrupted: the kills came too late");
    assert!(term_leftovers <= 3, "{term_leftovers} of 12 SIGTERMs left a staging area");
    eprintln!("bad_inputs: {interrupted} of 24 conversions interrupted; {term_leftovers} SIGTERM(s) left a staging area");
    // A SIGKILLed writer's staging area goes with the next conversion into the folder.
    let again = Command::new(&convert).args(args(&destination)).output().unwrap();
    assert!(again.status.success());
    assert_eq!(std::fs::read(&destination).unwrap(), new);
    let leftovers = staging_areas(work.path());
    assert!(leftovers.is_empty(), "staging areas of killed writers were not removed: {leftovers:?}");
}
