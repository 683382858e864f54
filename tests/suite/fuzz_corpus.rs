//! Every fuzz target (crates/mien-fuzz) over its committed corpus, fuzz/corpus/<target>/: the seeds, and
//! every input a fuzzing run found that crashed or hung, kept so the fix stays (a few seconds in all).
//! The fuzzing itself runs outside CI: `cargo +nightly fuzz run TARGET fuzz/corpus/TARGET` (fuzz/).

use crate::common;

#[test]
fn every_fuzz_target_survives_its_corpus() {
    let corpus = common::root().join("fuzz/corpus");
    let mut failures = Vec::new();
    for (name, target) in mien_fuzz::TARGETS {
        let folder = corpus.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{} has no seeds (python tools/make_fuzz_corpus.py)", folder.display());
        for input in &inputs {
            let data = std::fs::read(input).unwrap();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(format!("{name}: {}", input.display()));
            }
        }
        eprintln!("fuzz_corpus: {name}: {} inputs", inputs.len());
    }
    assert!(failures.is_empty(), "fuzz targets panicked on:\n  {}", failures.join("\n  "));
}

/// The seeds reach past the first check: a corpus of inputs every parser rejects at once would fuzz
/// nothing.
#[test]
fn the_seeds_are_valid_inputs() {
    let corpus = common::root().join("fuzz/corpus");
    let plan = corpus.join("plan_file/minimal.mien");
    let opened = mien_plan::Plan::open(&plan).unwrap_or_else(|e| panic!("{}: {e}", plan.display()));
    assert_eq!(opened.manifest().labels.len(), 7);
    for entry in std::fs::read_dir(corpus.join("image_decode")).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        mien_image::decode_rgb(&bytes).unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
    }
}
