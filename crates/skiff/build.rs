//! The release binary is linked in the order of tools/hot-functions/skiff.order.gz (by
//! tools/link-cc, outside cargo's view); this makes cargo relink when that order changes.
fn main() {
    println!("cargo:rerun-if-changed=../../tools/hot-functions/skiff.order.gz");
    println!("cargo:rerun-if-changed=../../tools/link-cc");
}
