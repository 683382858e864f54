//! The plan committed for the README quick start must be what today's converter makes of the committed
//! ONNX (conversion is deterministic), so a converter change cannot silently leave it stale.

mod common;

use common::*;
use mien_plan::Plan;

#[test]
fn committed_tiny_plan_is_current() {
    let committed = Plan::open(root().join("models/tiny-vit/tiny-vit.mien")).expect("committed plan loads");
    let fresh = Plan::open(tiny_plan()).unwrap();
    let (c, f) = (committed.manifest(), fresh.manifest());
    assert_eq!(c.files, f.files, "graph files differ: regenerate with mien-convert models/tiny-vit/model.onnx -o models/tiny-vit/tiny-vit.mien");
    assert_eq!(c.labels, f.labels);
    assert_eq!(c.preprocessing, f.preprocessing);
    assert_eq!(c.input, f.input);
    assert_eq!(c.model.source_sha256, f.model.source_sha256);
}
