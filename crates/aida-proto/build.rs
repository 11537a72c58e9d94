//! Compiles `proto/` with protox (pure Rust, so a fresh machine needs no
//! protoc) and generates the prost messages and tonic clients and servers.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "aida/common.proto",
        "aida/orchestrator.proto",
        "aida/worker.proto",
        "aida/aggregator.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    let fds = protox::compile(files, [&root])?;
    // Reflection serves this set, so grpcurl works with no .proto at hand.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("aida_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
