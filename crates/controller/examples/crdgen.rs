//! Prints the SyncFolder CRD: `cargo run -p syncfolder-controller --example crdgen > crd/syncfolders.syncfolder.io.yaml`.

fn main() {
    print!("{}", syncfolder_controller::crd::crd_yaml());
}
