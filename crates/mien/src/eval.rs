//! `mien eval`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mien_eval::{compare, evaluate, scan, LabelMap, Unreadable, UnknownFolder};
use mien_runtime::Classifier;

use crate::RunArgs;

/// Arguments of `mien eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Image folder: DIR/<label>/* (labelled) or images directly in DIR (unlabelled).
    dir: PathBuf,
    /// Reference plan: report drift of PLAN against it (agreement, KL, logit cosine, differences).
    #[arg(long, value_name = "PLAN_B")]
    against: Option<PathBuf>,
    /// Folder-name to label map: `AN=angry,DI=disgust,...` or a file of such lines. Names match
    /// case-insensitively; unmapped folder names are matched to labels directly.
    #[arg(long)]
    label_map: Option<String>,
    /// Print the report as JSON (schema mien.eval/1, or mien.eval.compare/1 with --against).
    #[arg(long)]
    json: bool,
}

fn progress_bar(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images  {per_sec}  eta {eta}").expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn report_skipped(unreadable: &[Unreadable], unknown: &[UnknownFolder]) {
    for folder in unknown {
        eprintln!(
            "warning: folder {:?} ({} files) matches no label of the plan and was not evaluated (use --label-map {}=LABEL)",
            folder.name, folder.files, folder.name
        );
    }
    for u in unreadable {
        eprintln!("warning: skipped {}", u.error);
    }
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let options = args.run.options();
    let a = Classifier::load(&args.run.plan, &options)?;
    let map = match &args.label_map {
        Some(spec) => LabelMap::parse(spec)?,
        None => LabelMap::default(),
    };
    let dataset = scan(&args.dir, a.labels(), &map)?;
    let bar = progress_bar(dataset.items.len());
    let tick = |done: usize, _total: usize| bar.set_position(done as u64);

    if let Some(reference) = &args.against {
        let b = Classifier::load(reference, &options)?;
        let result = compare(&a, &b, &dataset, &tick);
        bar.finish_and_clear();
        let report = result?;
        report_skipped(&report.unreadable, &report.unknown_folders);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("A {} vs B {} on {} images ({:.1} images/s)", report.plan_a.display(), report.plan_b.display(), report.images, report.images_per_second);
            println!("top-1 agreement   {:.2} %", report.agreement * 100.0);
            println!("mean KL(B||A)     {:.3e}", report.mean_kl);
            println!("logit cosine      {:.6}", report.logit_cosine);
            println!("|logit diff|      mean {:.3e}, max {:.3e}", report.mean_abs_diff, report.max_abs_diff);
            if let (Some(acc_a), Some(acc_b)) = (report.accuracy_a, report.accuracy_b) {
                println!("accuracy          A {:.2} %, B {:.2} % ({:+.2} points)", acc_a * 100.0, acc_b * 100.0, (acc_a - acc_b) * 100.0);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    let result = evaluate(&a, &dataset, &tick);
    bar.finish_and_clear();
    let report = result?;
    report_skipped(&report.unreadable, &report.unknown_folders);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} on {}: {} images ({:.1} images/s)", report.plan.display(), args.dir.display(), report.images, report.images_per_second);
    match (&report.accuracy, &report.macro_f1, &report.confusion) {
        (Some(accuracy), Some(f1), Some(confusion)) => {
            println!("accuracy {:.2} %, macro-F1 {:.4}", accuracy * 100.0, f1);
            let width = report.labels.iter().map(|l| l.len()).max().unwrap_or(5).max(6);
            print!("{:>width$}  {:>7}  |", "truth", "recall");
            for label in &report.labels {
                print!(" {:>w$}", &label[..label.len().min(8)], w = 8);
            }
            println!();
            for (i, label) in report.labels.iter().enumerate() {
                let recall = report.recall[label].map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "-".into());
                print!("{label:>width$}  {recall:>7}  |");
                for count in &confusion[i] {
                    print!(" {count:>8}");
                }
                println!();
            }
        }
        _ => {
            println!("unlabelled: predicted label counts");
            for (label, count) in &report.predicted {
                println!("  {label:>12} {count}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
