//! Every committed input of the core fuzz targets, replayed on stable.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use syncfolder_core::fuzz_targets;

#[test]
fn every_committed_fuzz_input_keeps_the_core_properties() {
    for target in fuzz_targets::TARGETS {
        let run = fuzz_targets::target(target).expect("a listed target has a function");
        replay::replay(target, run);
        replay::check_fuzz_target_file(target);
    }
}
