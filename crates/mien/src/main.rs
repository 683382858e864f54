//! `mien`: the device binary. Thin command-line layer over `mien-runtime`.

mod bench;
#[cfg(target_os = "linux")]
mod capture;
mod classify;
mod config;
#[cfg(target_os = "linux")]
mod devices;
mod eval;
mod info;
mod live;
mod service;
mod tune;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  mien classify models/vit-s14-fer112/vit-s14-fer112-int8.mien tests/data/photos/astronaut.png
  mien classify plan.mien photos/*.jpg --json
  mien info plan.mien                      # manifest, CPU features, kernels, int8 path
  mien info --cpu --json                   # just the CPU features kernel choice depends on
  mien bench int8.mien --int8-path integer # force tract's integer kernels
  mien bench plan.mien --threads 2 --runs 20 --json
  mien bench int8.mien --profile --runs 3  # where the time goes, per op type
  mien eval plan.mien fer2013/public_test --json
  mien eval int8.mien --against f32.mien fer2013/public_test
  mien eval plan.mien jaffe/ --label-map AN=angry,DI=disgust,FE=fear,HA=happy,NE=neutral,SA=sad,SU=surprise
  mien devices                              # cameras, their formats, sizes and frame rates
  mien capture --device C920 --format YUYV --size 640x480 --count 10 --save frames/
  mien capture --count 100 --classify models/vit-s14-fer112/vit-s14-fer112-int8.mien --json
  mien run                                  # first camera, default models, live terminal view
  mien run --source /dev/video2 --format MJPEG --size 1280x720 --json
  mien run --source photos/ --json          # every image in a folder, each face classified on its own
  mien run --source frames/ --track         # frames taken from one video: tracked and smoothed
  mien run --serve                          # kiosk page and API on http://127.0.0.1:8080/
  mien run --serve 0.0.0.0:8080 --api-token \"$TOKEN\" --preview   # reachable from the network
  mien run --source photos/ --loop --max-fps 2 --serve            # a demo without a camera
  mien run --mqtt mqtt://homeassistant.local --device-id lobby-1  # state, events, Home Assistant discovery
  mien run --mqtt mqtts://broker:8883 --mqtt-ca ca.pem --mqtt-password-file /etc/mien/mqtt-password
  mien run --source clip.y4m --detector models/blazeface/blazeface-full.mien --save-crops crops/
  mien run --config /etc/mien/mien.toml --min-face 60   # settings from a file; flags override it
  mien config show                          # the effective settings and where each came from
  mien completions bash > /etc/bash_completion.d/mien";

/// On-device facial expression recognition with a Vision Transformer.
#[derive(Parser, Debug)]
#[command(name = "mien", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More logging on stderr (repeat for more; RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Live expression recognition: find every face in a camera's frames (or images, or a video file),
    /// classify it, track it, smooth it, report it. Photos from a folder or a list are not a sequence:
    /// each face is classified on its own unless --track is given.
    Run(live::LiveArgs),
    /// Classify image files (JPEG, PNG, BMP, TIFF) with a plan.
    Classify(classify::ClassifyArgs),
    /// Show a plan's manifest, its op counts and the kernels tract picks on this CPU.
    Info(info::InfoArgs),
    /// Measure load time, inference latency and peak memory of a plan.
    Bench(bench::BenchArgs),
    /// Find the fastest of a model's plans, paths and thread counts on this device, and write it into
    /// mien.toml (--write-config).
    Tune(tune::TuneArgs),
    /// Accuracy of a plan on DIR/<label>/* images, or its drift against another plan (--against).
    Eval(eval::EvalArgs),
    /// List V4L2 cameras with their formats, frame sizes and frame rates.
    #[cfg(target_os = "linux")]
    Devices(devices::DevicesArgs),
    /// Capture frames from a camera: report format, size, rate and dropped frames; save or classify them.
    #[cfg(target_os = "linux")]
    Capture(capture::CaptureArgs),
    /// Check a mien.toml settings file, or show the settings `mien run` would use and where each came
    /// from. Every `mien run` flag has a key: `--min-face 60` is `min_face = 60` in [detector].
    #[command(subcommand, after_help = CONFIG_HELP)]
    Config(config::ConfigCommand),
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (mien.1, mien-run.1, ...) into DIR.
    #[command(hide = true)]
    Man {
        /// Where to write them.
        dir: PathBuf,
    },
}

const CONFIG_HELP: &str = "\
mien.toml sections and keys (each is the `mien run` flag of the same name unless noted):
  [models]    plan, detector, threads, int8_path, f16_path
  [source]    input (--source; a string or a list), format, size, fps, timeout_ms, exit_on_camera_loss,
              raw_format, raw_size, file_fps, loop, max_fps, max_frames
  [detector]  min_face, min_score, margin
  [tracking]  track (true: --track, false: --no-track), smoothing, switch_margin, expiry_ms
  [output]    json, quiet, save_crops
  [http]      listen (--serve; an address, or true for 127.0.0.1:8080), api_token, max_clients,
              preview (\"local\", \"any\" or true), preview_width, preview_quality, stale_after, cors_origin,
              label_names (a table: { happy = \"fröhlich\" })
  [mqtt]      url (--mqtt), device_id, prefix, username, password_file, ca, cert, key, interval,
              ha_prefix, ha_discovery (false: --no-ha-discovery), exit_on_error
Precedence: flags, then environment variables (MIEN_PLAN, MIEN_DETECTOR, MIEN_API_TOKEN), then the
file, then the defaults. The file: --config FILE, $MIEN_CONFIG, or /etc/mien/mien.toml for the service.

Examples:
  mien config check /etc/mien/mien.toml
  mien config show --json
  mien config show -- --config kiosk.toml --min-face 60";

/// mien.1 and one page per subcommand (mien-run.1, ...), as written by clap_mangen.
fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    let command = command();
    let mut pages = vec![("mien".to_string(), command.clone())];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        pages.push((format!("mien-{}", sub.get_name()), sub.clone().display_name(format!("mien-{}", sub.get_name())).bin_name(format!("mien {}", sub.get_name()))));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let temporary = dir.join(format!(".{name}.1.partial"));
        let mut text = Vec::new();
        clap_mangen::Man::new(page).render(&mut text)?;
        std::fs::write(&temporary, text).with_context(|| format!("{}: cannot write", temporary.display()))?;
        std::fs::rename(&temporary, &path).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Options shared by the commands that run a plan.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The plan: a NAME.mien file or a plan directory, as written by mien-convert.
    pub plan: PathBuf,
    /// Inference threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// How int8 plans run their matmuls: `integer` (i8 kernels: tract's, or mien's on ARM cores without
    /// SDOT), `dequantized` (float kernels on weights converted at load) or `auto` (integer where it pays:
    /// ARM, x86 with VNNI). MIEN_INT8_PATH overrides auto.
    #[arg(long, default_value = "auto", value_name = "auto|integer|dequantized")]
    pub int8_path: mien_runtime::Int8Path,
    /// How f16 plans run: `f16` (16-bit arithmetic), `f32` (widened at load) or `auto` (f16 where the CPU
    /// has FP16 arithmetic: Cortex-A76/A78). MIEN_F16_PATH overrides auto.
    #[arg(long, default_value = "auto", value_name = "auto|f16|f32")]
    pub f16_path: mien_runtime::HalfPath,
    /// Run f32 linear layers and softmaxes, and int8 linear layers on cores without SDOT, on tract's own
    /// kernels instead of mien's (for comparing the two; f32 results differ within rounding, int8 ones
    /// not at all).
    #[arg(long)]
    pub tract_kernels: bool,
}

impl RunArgs {
    fn options(&self) -> mien_runtime::RuntimeOptions {
        mien_runtime::RuntimeOptions {
            threads: self.threads,
            int8_path: self.int8_path,
            f16_path: self.f16_path,
            tract_float_kernels: self.tract_kernels,
            ..Default::default()
        }
    }
}

/// How to configure a camera (`mien capture`, `mien run`).
#[derive(Args, Debug, Clone)]
pub struct CameraFormatArgs {
    /// Camera pixel format: YUYV, NV12, I420, UYVY, MJPEG, RGB24, BGR24 or GREY. Default: the first of
    /// these the camera offers.
    #[arg(long)]
    pub format: Option<mien_capture::PixelFormat>,
    /// Camera frame size WIDTHxHEIGHT (the driver may choose the nearest it supports; a warning says so).
    #[arg(long, value_parser = parse_size, value_name = "WxH")]
    pub size: Option<(u32, u32)>,
    /// Camera frame rate to ask for.
    #[arg(long)]
    pub fps: Option<u32>,
}

/// Parses `WIDTHxHEIGHT` (frame sizes on the command line).
pub fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let parsed = text.split_once(['x', 'X']).and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    match parsed {
        Some((w, h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => Err(format!("expected WIDTHxHEIGHT such as 640x480, got `{text}`")),
    }
}

/// The int8 or f16 path a plan took, as JSON: {`path`, `reason`}, or `null` when the plan has no such ops.
pub fn path_json<P: std::fmt::Display>(choice: Option<mien_runtime::PathChoice<P>>) -> serde_json::Value {
    match choice {
        Some(c) => serde_json::json!({"path": c.path.to_string(), "reason": c.reason}),
        None => serde_json::Value::Null,
    }
}

/// The `mien` command as clap sees it, with global flags propagated into subcommands.
fn command() -> clap::Command {
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    command
}

/// `mien run`'s clap command.
fn run_command() -> clap::Command {
    command().find_subcommand("run").expect("mien has a run subcommand").clone()
}

/// The arguments after the subcommand: the first argument that is not a (global) flag is it.
fn after_subcommand(argv: &[std::ffi::OsString]) -> &[std::ffi::OsString] {
    let position = argv.iter().skip(1).position(|a| !a.to_string_lossy().starts_with('-')).map_or(argv.len(), |p| p + 2);
    &argv[position.min(argv.len())..]
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(&argv);
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let level = match cli.verbose {
        // tract warns when /proc/cpuinfo lacks ARM feature lines (under qemu-user it is the host's); it
        // then relies on HWCAP, which is right, so that warning is noise at the default level.
        0 => "warn,tract_linalg::arm64=error",
        1 => "info",
        _ => "debug",
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // The journal stamps every line itself.
    if journal {
        logs.without_time().init();
    } else {
        logs.init();
    }
    let result = match cli.command {
        // Parsed again, merged with the config file (flags override it).
        Command::Run(_) => config::merge(&run_command(), after_subcommand(&argv)).and_then(|merged| {
            let args = <live::LiveArgs as clap::FromArgMatches>::from_arg_matches(&merged.matches)?;
            live::run(args, cli.verbose > 0)
        }),
        Command::Config(command) => config::run(command, &run_command()),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut command(), "mien", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => write_man_pages(&dir),
        Command::Classify(args) => classify::run(args),
        Command::Info(args) => info::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Tune(args) => tune::run(args, &run_command()),
        #[cfg(target_os = "linux")]
        Command::Devices(args) => devices::run(args),
        #[cfg(target_os = "linux")]
        Command::Capture(args) => capture::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mien: {e:#}");
            ExitCode::FAILURE
        }
    }
}
