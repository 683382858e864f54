//! `mien tune`: which of a model's plans, which path and how many threads run fastest on this device.
//!
//! Every candidate is timed on the device itself with the wall clock (a warm-up inference, then several
//! timed ones): which path wins depends on the core (SDOT or not, FP16 arithmetic or not, VNNI or not),
//! its caches and its memory, and a table measured elsewhere cannot know them.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mien_plan::{Drift, Manifest, Precision};
use mien_runtime::{Classifier, HalfPath, Int8Path, RgbImage, RuntimeOptions};
use serde::Serialize;
use serde_json::json;

/// Settings within this fraction of the fastest median count as equally fast; among them the one with
/// the fewest threads wins, which leaves cores to the camera, the face detector and the server.
const EQUALLY_FAST: f64 = 0.05;
/// Bounds on the timed inferences per setting when `--runs` is not given.
const MIN_RUNS: usize = 3;
const MAX_RUNS: usize = 20;

/// Arguments of `mien tune`.
#[derive(Args, Debug)]
#[command(after_help = "\
Each plan is tried on every path it has (f32 plans: one; int8 plans: `integer` and `dequantized`; f16
plans: `f16` where the CPU has FP16 arithmetic, and `f32`) at 1 to --max-threads threads. Plans whose
recorded drift fails their conversion gate (or --min-agreement) are not tried. The fastest setting by
median latency wins; one with fewer threads within 5 % of it is preferred, to leave cores to the camera
and the face detector.

Examples:
  mien tune models/vit-s14-fer112/*.mien
  mien tune /usr/share/mien/models/vit-s14-fer112/*.mien --write-config /etc/mien/mien.toml
  mien tune face.mien face-int8.mien --max-threads 2 --runs 10 --json")]
pub struct TuneArgs {
    /// Plans of one model, e.g. its f32, int8 and f16 plans as written by mien-convert.
    #[arg(required = true, value_name = "PLAN")]
    plans: Vec<PathBuf>,
    /// Try 1 to N threads (above 4: 1, 2, 3, 4, then powers of two and N). Default: all cores.
    #[arg(long, value_name = "N")]
    max_threads: Option<usize>,
    /// Timed inferences per setting. Default: as many as fit --budget, 3 to 20.
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// Rough limit in seconds on the timed inferences, shared by all settings (loading is extra).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    budget: u64,
    /// Also drop reduced-precision plans whose recorded top-1 agreement with the float model is below
    /// this fraction, or that have no drift record (converted without --validate).
    #[arg(long, value_name = "FRACTION")]
    min_agreement: Option<f64>,
    /// Write the choice into the [models] section of this mien.toml (plan, threads, and int8_path or
    /// f16_path when the chosen plan has such ops, removing them otherwise), keeping the rest of the file
    /// and its comments; the file is created if missing.
    #[arg(long, value_name = "FILE")]
    write_config: Option<PathBuf>,
    /// Print JSON (schema mien.tune/1) instead of the table.
    #[arg(long)]
    json: bool,
}

/// One way to run one plan.
#[derive(Debug, Clone, Serialize)]
struct Candidate {
    plan: PathBuf,
    precision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    int8_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    f16_path: Option<String>,
    #[serde(skip)]
    options: RuntimeOptions,
}

impl Candidate {
    fn path_label(&self) -> &str {
        self.int8_path.as_deref().or(self.f16_path.as_deref()).unwrap_or("-")
    }
}

/// A candidate timed at one thread count.
#[derive(Debug, Clone, Serialize)]
struct Timing {
    #[serde(flatten)]
    candidate: Candidate,
    threads: usize,
    runs: usize,
    latency_ms: Latency,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Latency {
    p50: f64,
    min: f64,
    max: f64,
}

/// A plan or path that was not timed, and why.
#[derive(Debug, Clone, Serialize)]
struct Skipped {
    plan: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    reason: String,
}

/// The thread counts to try up to `max`: every count to 4, then powers of two, then `max` itself.
fn thread_counts(max: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = (1..=max.min(4)).collect();
    let mut n = 8;
    while n < max {
        counts.push(n);
        n *= 2;
    }
    if max > 4 {
        counts.push(max);
    }
    counts
}

/// The plan's recorded drift from its float model, for reduced-precision plans.
fn drift(manifest: &Manifest) -> Option<&Drift> {
    match manifest.precision {
        Precision::Int8 => manifest.quantization.as_ref()?.drift.as_ref(),
        Precision::F16 => manifest.half.as_ref()?.drift.as_ref(),
        Precision::F32 => None,
    }
}

/// How `b` shows it is another model than `a` (converted from another ONNX file, or other labels).
fn other_model(a: &Manifest, b: &Manifest) -> Option<&'static str> {
    if let (Some(x), Some(y)) = (&a.model.source_sha256, &b.model.source_sha256) {
        if x != y {
            return Some("converted from another model file");
        }
    }
    (a.labels != b.labels).then_some("other labels")
}

/// Why a plan must not be tried, from its manifest; `None` when it may.
fn gate_refusal(manifest: &Manifest, min_agreement: Option<f64>) -> Option<String> {
    if manifest.precision == Precision::F32 {
        return None;
    }
    match (drift(manifest), min_agreement) {
        (Some(d), _) if d.top1_agreement < d.min_agreement => Some(format!(
            "recorded top-1 agreement {:.2}% is below its gate {:.2}%",
            d.top1_agreement * 100.0,
            d.min_agreement * 100.0
        )),
        (Some(d), Some(min)) if d.top1_agreement < min => Some(format!(
            "recorded top-1 agreement {:.2}% is below --min-agreement {:.2}%",
            d.top1_agreement * 100.0,
            min * 100.0
        )),
        (None, Some(_)) => Some("no drift record (convert it with --validate) and --min-agreement was given".into()),
        _ => None,
    }
}

/// The ways a plan of this precision can run here; paths this CPU cannot run well are skipped, with why.
fn candidates(plan: &Path, precision: Precision) -> (Vec<Candidate>, Vec<Skipped>) {
    let base = |int8: Option<Int8Path>, half: Option<HalfPath>| Candidate {
        plan: plan.to_path_buf(),
        precision: precision.to_string(),
        int8_path: int8.map(|p| p.to_string()),
        f16_path: half.map(|p| p.to_string()),
        options: RuntimeOptions {
            threads: 1,
            int8_path: int8.unwrap_or_default(),
            f16_path: half.unwrap_or_default(),
            ..Default::default()
        },
    };
    match precision {
        Precision::F32 => (vec![base(None, None)], vec![]),
        Precision::Int8 => {
            (vec![base(Some(Int8Path::Integer), None), base(Some(Int8Path::DequantizedWeights), None)], vec![])
        }
        Precision::F16 if mien_runtime::half::fp16_arithmetic() => {
            (vec![base(None, Some(HalfPath::F16)), base(None, Some(HalfPath::F32))], vec![])
        }
        Precision::F16 => (
            vec![base(None, Some(HalfPath::F32))],
            vec![Skipped {
                plan: plan.to_path_buf(),
                path: Some(HalfPath::F16.to_string()),
                reason: "this CPU has no FP16 arithmetic (f16 would be emulated)".into(),
            }],
        ),
    }
}

fn latency(mut ms: Vec<f64>) -> Latency {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let p50 = if n % 2 == 1 { ms[n / 2] } else { (ms[n / 2 - 1] + ms[n / 2]) / 2.0 };
    Latency { p50, min: ms[0], max: ms[n - 1] }
}

/// The winner: the fastest median, or a setting with fewer threads within [`EQUALLY_FAST`] of it.
fn choose(timings: &[Timing]) -> Option<&Timing> {
    let fastest = timings.iter().min_by(|a, b| a.latency_ms.p50.total_cmp(&b.latency_ms.p50))?;
    let limit = fastest.latency_ms.p50 * (1.0 + EQUALLY_FAST);
    timings
        .iter()
        .filter(|t| t.latency_ms.p50 <= limit)
        .min_by(|a, b| a.threads.cmp(&b.threads).then(a.latency_ms.p50.total_cmp(&b.latency_ms.p50)))
}

/// A progress bar on a terminal; hidden otherwise (indicatif draws nothing when stderr is not one).
fn progress(settings: usize) -> ProgressBar {
    let bar = ProgressBar::new(settings as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} settings  {msg}  [{elapsed}]").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Runs `mien tune`. `run_command` is `mien run`'s clap command, which checks a written config file.
pub fn run(args: TuneArgs, run_command: &clap::Command) -> Result<ExitCode> {
    if args.runs == Some(0) {
        bail!("--runs: expected at least 1");
    }
    if args.max_threads == Some(0) {
        bail!("--max-threads: expected at least 1");
    }
    if let Some(min) = args.min_agreement {
        if !(0.0..=1.0).contains(&min) {
            bail!("--min-agreement: expected a fraction between 0 and 1, got {min}");
        }
    }
    // A file that cannot be updated is refused before minutes of timing, not after.
    let config = args.write_config.as_deref().map(read_config).transpose()?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = thread_counts(args.max_threads.unwrap_or(cores));

    // Manifests first: refusals cost nothing, and every plan must be of the same model.
    let mut skipped = Vec::new();
    let mut tried = Vec::new();
    let mut first: Option<(PathBuf, Manifest)> = None;
    for path in &args.plans {
        let plan = mien_plan::Plan::open_unverified(path)?;
        let manifest = plan.manifest();
        if manifest.detector.is_some() {
            bail!("{}: a face detector plan; give classifier plans", path.display());
        }
        match &first {
            Some((first_path, first_manifest)) => {
                if let Some(difference) = other_model(first_manifest, manifest) {
                    bail!(
                        "{}: not the same model as {} ({difference}); tune the plans of one model at a time",
                        path.display(),
                        first_path.display()
                    );
                }
            }
            None => first = Some((path.clone(), manifest.clone())),
        }
        if let Some(reason) = gate_refusal(manifest, args.min_agreement) {
            skipped.push(Skipped { plan: path.clone(), path: None, reason });
            continue;
        }
        let (ways, not_here) = candidates(path, manifest.precision);
        tried.extend(ways);
        skipped.extend(not_here);
    }
    if tried.is_empty() {
        let reasons: Vec<String> = skipped.iter().map(|s| format!("{}: {}", s.plan.display(), s.reason)).collect();
        bail!("no plan left to try ({})", reasons.join("; "));
    }

    let settings = tried.len() * threads.len();
    let budget_per_setting = Duration::from_secs(args.budget).as_secs_f64() / settings as f64;
    let bar = progress(settings);
    // A camera-sized picture, so every plan sees the same input.
    let image = RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]));
    let mut timings = Vec::with_capacity(settings);
    for candidate in &tried {
        let name = candidate.plan.file_name().map_or_else(|| candidate.plan.display().to_string(), |n| n.to_string_lossy().into_owned());
        bar.set_message(format!("loading {name} ({})", candidate.path_label()));
        let mut classifier = Classifier::load(&candidate.plan, &candidate.options)?;
        let input = classifier.preprocessor().run(&image);
        for &n in &threads {
            bar.set_message(format!("{name} ({}), {n} threads", candidate.path_label()));
            classifier.set_threads(n);
            let warm_up = Instant::now();
            classifier.run_logits(&input)?;
            let warm_up = warm_up.elapsed().as_secs_f64();
            let runs = args.runs.unwrap_or_else(|| ((budget_per_setting / warm_up.max(1e-6)) as usize).clamp(MIN_RUNS, MAX_RUNS));
            let mut ms = Vec::with_capacity(runs);
            for _ in 0..runs {
                let start = Instant::now();
                classifier.run_logits(&input)?;
                ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
            timings.push(Timing { candidate: candidate.clone(), threads: n, runs, latency_ms: latency(ms) });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let choice = choose(&timings).expect("at least one setting was timed").clone();
    let plan = std::fs::canonicalize(&choice.candidate.plan)
        .with_context(|| format!("{}: cannot resolve the path", choice.candidate.plan.display()))?;
    let written = match (&args.write_config, config) {
        (Some(file), Some(document)) => {
            write_config(file, document, &plan, &choice, run_command)?;
            Some(file.clone())
        }
        _ => None,
    };

    if args.json {
        let value = json!({
            "schema": "mien.tune/1",
            "cpu": mien_runtime::cpu::summary(),
            "threads_tried": threads,
            "timings": timings,
            "skipped": skipped,
            "choice": {
                "plan": plan,
                "precision": choice.candidate.precision,
                "int8_path": choice.candidate.int8_path,
                "f16_path": choice.candidate.f16_path,
                "threads": choice.threads,
                "latency_ms": choice.latency_ms,
            },
            "config_written": written,
            "run_flags": run_flags(&plan, &choice),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("cpu  {}", mien_runtime::cpu::summary());
    let width = timings.iter().map(|t| t.candidate.plan.display().to_string().chars().count()).max().unwrap_or(0).max(4);
    println!("{:<width$} {:<9} {:<11} {:>7} {:>4} {:>9} {:>17}", "plan", "precision", "path", "threads", "runs", "p50 ms", "min-max ms");
    for t in &timings {
        let mark = if same_setting(t, &choice) { "  <- choice" } else { "" };
        println!(
            "{:<width$} {:<9} {:<11} {:>7} {:>4} {:>9.2} {:>17}{mark}",
            t.candidate.plan.display(),
            t.candidate.precision,
            t.candidate.path_label(),
            t.threads,
            t.runs,
            t.latency_ms.p50,
            format!("{:.2}-{:.2}", t.latency_ms.min, t.latency_ms.max)
        );
    }
    for s in &skipped {
        match &s.path {
            Some(path) => println!("not tried: {} ({path}): {}", s.plan.display(), s.reason),
            None => println!("not tried: {}: {}", s.plan.display(), s.reason),
        }
    }
    println!(
        "choice: {} ({}, {}), {} thread{}: {:.2} ms median",
        plan.display(),
        choice.candidate.precision,
        choice.candidate.path_label(),
        choice.threads,
        if choice.threads == 1 { "" } else { "s" },
        choice.latency_ms.p50
    );
    match written {
        Some(file) => println!("written to [models] in {}", file.display()),
        None => {
            println!("mien run flags: {}", run_flags(&plan, &choice));
            if std::io::stdout().is_terminal() {
                println!("(--write-config FILE puts them in a mien.toml)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn same_setting(a: &Timing, b: &Timing) -> bool {
    a.threads == b.threads
        && a.candidate.plan == b.candidate.plan
        && a.candidate.int8_path == b.candidate.int8_path
        && a.candidate.f16_path == b.candidate.f16_path
}

/// The choice as `mien run` flags.
fn run_flags(plan: &Path, choice: &Timing) -> String {
    let mut flags = format!("--plan {} --threads {}", shell_word(&plan.display().to_string()), choice.threads);
    if let Some(path) = &choice.candidate.int8_path {
        flags.push_str(&format!(" --int8-path {path}"));
    }
    if let Some(path) = &choice.candidate.f16_path {
        flags.push_str(&format!(" --f16-path {path}"));
    }
    flags
}

/// Quotes a path for a POSIX shell when it needs it.
fn shell_word(text: &str) -> String {
    if text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c)) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The settings file `--write-config` names, parsed with its layout (empty when it does not exist yet).
fn read_config(file: &Path) -> Result<toml_edit::DocumentMut> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let folder = folder_of(file);
            if !folder.is_dir() {
                bail!("--write-config {}: the folder {} does not exist", file.display(), folder.display());
            }
            String::new()
        }
        Err(e) => return Err(e).with_context(|| format!("--write-config {}: cannot read", file.display())),
    };
    let document: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| anyhow::anyhow!("--write-config {}: {}", file.display(), one_line(&e.to_string())))?;
    if document.get("models").is_some_and(|m| !m.is_table_like()) {
        bail!("--write-config {}: `models` is not a table; expected a [models] section", file.display());
    }
    Ok(document)
}

fn folder_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Sets the choice's keys in the [models] section of `document` (read from `file`), keeping everything
/// else, and checks the result as `mien run` would read it before it replaces the file (a temporary
/// name, then a rename).
fn write_config(
    file: &Path,
    mut document: toml_edit::DocumentMut,
    plan: &Path,
    choice: &Timing,
    run_command: &clap::Command,
) -> Result<()> {
    let models = document.entry("models").or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()));
    let models = models.as_table_like_mut().expect("read_config refused a [models] that is not a table");
    let plan_text = plan.to_str().with_context(|| format!("{}: the plan's path is not UTF-8", plan.display()))?;
    models.insert("plan", toml_edit::value(plan_text));
    if let Some(mut key) = models.key_mut("plan") {
        key.leaf_decor_mut().set_prefix(format!(
            "# Chosen by `mien tune`: {:.2} ms median on {}.\n",
            choice.latency_ms.p50,
            mien_runtime::cpu::summary()
        ));
    }
    models.insert("threads", toml_edit::value(choice.threads as i64));
    // A path key left from an earlier choice would describe a plan no longer chosen.
    for (key, path) in [("int8_path", &choice.candidate.int8_path), ("f16_path", &choice.candidate.f16_path)] {
        match path {
            Some(path) => {
                models.insert(key, toml_edit::value(path.as_str()));
            }
            None => {
                models.remove(key);
            }
        }
    }

    let folder = folder_of(file);
    let name = file.file_name().with_context(|| format!("--write-config {}: not a file name", file.display()))?;
    let temporary = folder.join(format!(".{}.tune-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut text = document.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        std::fs::write(&temporary, text)
            .with_context(|| format!("--write-config {}: cannot write {}", file.display(), temporary.display()))?;
        if let Ok(metadata) = std::fs::metadata(file) {
            std::fs::set_permissions(&temporary, metadata.permissions())
                .with_context(|| format!("--write-config {}: cannot keep its permissions", file.display()))?;
        }
        crate::config::check_file(run_command, &temporary)
            .with_context(|| format!("--write-config {}: the updated file would not be valid", file.display()))?;
        std::fs::rename(&temporary, file).with_context(|| format!("--write-config {}: cannot replace it", file.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_cover_small_boards_and_sample_large_ones() {
        assert_eq!(thread_counts(1), vec![1]);
        assert_eq!(thread_counts(4), vec![1, 2, 3, 4]);
        assert_eq!(thread_counts(6), vec![1, 2, 3, 4, 6]);
        assert_eq!(thread_counts(8), vec![1, 2, 3, 4, 8]);
        assert_eq!(thread_counts(16), vec![1, 2, 3, 4, 8, 16]);
        assert_eq!(thread_counts(20), vec![1, 2, 3, 4, 8, 16, 20]);
    }

    fn timing(plan: &str, threads: usize, p50: f64) -> Timing {
        let (candidates, _) = candidates(Path::new(plan), Precision::F32);
        Timing { candidate: candidates[0].clone(), threads, runs: 3, latency_ms: Latency { p50, min: p50, max: p50 } }
    }

    #[test]
    fn fewer_threads_win_when_nearly_as_fast() {
        let timings = [timing("a", 1, 100.0), timing("a", 2, 60.0), timing("a", 4, 58.0), timing("b", 3, 59.0)];
        let choice = choose(&timings).unwrap();
        assert_eq!((choice.candidate.plan.to_str(), choice.threads), (Some("a"), 2));
        let timings = [timing("a", 1, 100.0), timing("a", 2, 70.0), timing("a", 4, 50.0)];
        assert_eq!(choose(&timings).unwrap().threads, 4);
    }

    #[test]
    fn plans_failing_their_gate_or_the_minimum_are_not_tried() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/vit-s14-fer/vit-s14-fer-int8.mien");
        let mut manifest = mien_plan::Plan::open_unverified(&path).unwrap().manifest().clone();
        let agreement = drift(&manifest).expect("the committed int8 plan records its drift").top1_agreement;
        assert_eq!(gate_refusal(&manifest, None), None);
        assert_eq!(gate_refusal(&manifest, Some(agreement)), None);
        let refusal = gate_refusal(&manifest, Some(agreement + 0.001)).unwrap();
        assert!(refusal.contains("below --min-agreement"), "{refusal}");
        let recorded = manifest.quantization.as_mut().unwrap().drift.as_mut().unwrap();
        recorded.min_agreement = agreement + 0.01;
        assert!(gate_refusal(&manifest, None).unwrap().contains("below its gate"));
        manifest.quantization.as_mut().unwrap().drift = None;
        assert_eq!(gate_refusal(&manifest, None), None);
        assert!(gate_refusal(&manifest, Some(0.5)).unwrap().starts_with("no drift record"));
        manifest.precision = Precision::F32;
        assert_eq!(gate_refusal(&manifest, Some(0.99)), None, "float plans are the reference");
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(latency(vec![3.0, 1.0, 2.0]).p50, 2.0);
        let l = latency(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!((l.p50, l.min, l.max), (2.5, 1.0, 4.0));
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/usr/share/mien/a-int8.mien"), "/usr/share/mien/a-int8.mien");
        assert_eq!(shell_word("/tmp/my plan's.mien"), r"'/tmp/my plan'\''s.mien'");
    }
}
