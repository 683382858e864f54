//! Node names that tract's NNEF parser cannot read back.
//!
//! tract writes each node's output under an identifier made from the node's name. Its parser (0.23.9)
//! tries literals before identifiers where a value is expected, and a literal matches a prefix: an
//! identifier that starts with `true`, `false` or `inf` is read as that literal followed by garbage, so
//! a graph that uses it (`truediv = mul(sub, truediv_fix_rank_3)`, tf2onnx's name for a division by a
//! constant) does not load. Any op can have such a name; renaming the nodes before writing is the
//! general fix. The plan's manifest keeps the ONNX model's input and output names.

use std::collections::HashSet;

use tract_core::prelude::*;

/// What tract's literal parsers accept at the start of a value: logical literals and `inf`.
const LITERAL_PREFIXES: [&str; 3] = ["true", "false", "inf"];

fn reads_as_literal(name: &str) -> bool {
    LITERAL_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Prefixes `_` to every node name and output label that would be read as a literal, keeping names
/// unique; returns how many were renamed.
pub fn rename_literal_lookalikes(model: &mut TypedModel) -> usize {
    let mut taken: HashSet<String> = model.nodes().iter().map(|n| n.name.clone()).collect();
    let fresh = |name: &str, taken: &mut HashSet<String>| {
        let mut candidate = format!("_{name}");
        while taken.contains(&candidate) {
            candidate.insert(0, '_');
        }
        taken.insert(candidate.clone());
        candidate
    };
    let mut renamed = 0;
    for id in 0..model.nodes().len() {
        if reads_as_literal(&model.node(id).name) {
            let name = fresh(&model.node(id).name.clone(), &mut taken);
            model.node_mut(id).name = name;
            renamed += 1;
        }
    }
    let labelled: Vec<(OutletId, String)> =
        model.outlet_labels.iter().filter(|(_, label)| reads_as_literal(label)).map(|(o, l)| (*o, l.clone())).collect();
    for (outlet, label) in labelled {
        let name = fresh(&label, &mut taken);
        model.outlet_labels.insert(outlet, name);
        renamed += 1;
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x → mul(x, 2) named `truediv` → add named `inference` → output labelled `false_positive`.
    fn model() -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("true_input", f32::fact([1, 3])).unwrap();
        let two = model.add_const("infinity", tensor2(&[[2f32, 2., 2.]])).unwrap();
        let y = model.wire_node("truediv", tract_core::ops::math::mul(), &[x, two]).unwrap()[0];
        let z = model.wire_node("inference", tract_core::ops::math::add(), &[y, two]).unwrap()[0];
        model.select_output_outlets(&[z]).unwrap();
        model.set_outlet_label(z, "false_positive".into()).unwrap();
        model
    }

    fn roundtrip(model: &TypedModel) -> TractResult<TypedModel> {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan");
        tract_nnef::nnef().write_to_dir(model, &plan)?;
        tract_nnef::nnef().model_for_path(&plan)
    }

    #[test]
    fn names_read_as_literals_are_renamed_and_the_graph_loads_back() {
        let mut model = model();
        let unreadable = roundtrip(&model).unwrap_err();
        assert!(format!("{unreadable:?}").contains("at line"), "tract 0.23.9 cannot parse these names; if it can now, drop the rename: {unreadable:?}");
        assert_eq!(rename_literal_lookalikes(&mut model), 5);
        let names: Vec<&str> = model.nodes().iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["_true_input", "_infinity", "_truediv", "_inference"]);
        let reloaded = roundtrip(&model).unwrap().into_runnable().unwrap();
        let out = reloaded.run(tvec!(tensor2(&[[1f32, 2., 3.]]).into_tvalue())).unwrap();
        assert_eq!(out[0].to_plain_array_view::<f32>().unwrap().as_slice().unwrap(), [4., 6., 8.]);
    }

    #[test]
    fn other_names_stay_and_renames_stay_unique() {
        let mut model = model();
        model.node_mut(1).name = "Truediv".into();
        model.node_mut(3).name = "_truediv".into();
        rename_literal_lookalikes(&mut model);
        let names: Vec<&str> = model.nodes().iter().map(|n| n.name.as_str()).collect();
        // Case matters (True is no literal), and `_truediv` is taken, so `__truediv`.
        assert_eq!(names, ["_true_input", "Truediv", "__truediv", "_truediv"]);
    }
}
