//! Embeds the kernel programs: exports the eBPF object's path as `VETH_ROUTE_EBPF_OBJECT`
//! for `aya::include_bytes_aligned!` in `src/datapath/loader.rs`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=VETH_ROUTE_EBPF_OBJ");
    let object = match std::env::var_os("VETH_ROUTE_EBPF_OBJ") {
        Some(p) => PathBuf::from(p),
        None => {
            // Where `cargo xtask build-ebpf` puts it (xtask/src/ebpf.rs).
            let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
            manifest.join("../target/ebpf/bpfel-unknown-none/release/veth-route-ebpf")
        }
    };
    if !object.is_file() {
        eprintln!(
            "error: eBPF object {} not found.\n\
             Build the kernel programs first: run `cargo xtask build-ebpf` \
             (or point VETH_ROUTE_EBPF_OBJ at a built veth-route-ebpf object).",
            object.display()
        );
        std::process::exit(1);
    }
    let object = object.canonicalize().expect("canonicalize eBPF object path");
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rustc-env=VETH_ROUTE_EBPF_OBJECT={}", object.display());
}
