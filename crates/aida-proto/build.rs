//! Compiles `proto/` with protox (pure Rust, so a fresh machine needs no
//! protoc) and generates the prost messages and tonic clients and servers.

use std::path::PathBuf;

use prost::Message;

/// Messages whose Debug hides their secrets.
const REDACTED: [&str; 10] = [
    "aida.auth.LoginRequest",
    "aida.auth.RefreshRequest",
    "aida.auth.LogoutRequest",
    "aida.auth.Session",
    "aida.auth.AuthenticateRequest",
    "aida.auth.CreateUserRequest",
    "aida.auth.UpdateUserRequest",
    "aida.auth.CreatedApiToken",
    "aida.orchestrator.PutContextRequest",
    "aida.common.SubtaskRun",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "aida/common.proto",
        "aida/orchestrator.proto",
        "aida/worker.proto",
        "aida/aggregator.proto",
        "aida/auth.proto",
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
        // Messages that carry passwords or tokens get a Debug of our own
        // (src/redacted.rs) that never prints them.
        .skip_debug(REDACTED)
        // Stored as JSON by the orchestrator as they are.
        .type_attribute(
            "aida.common.DeliverSpec",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            "aida.common.PullRequestSpec",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            "aida.common.VerifySpec",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            "aida.common.Verification",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            "aida.common.WorktreeSetup",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .compile_fds(fds)?;
    Ok(())
}
