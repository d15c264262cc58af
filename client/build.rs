//! Compile client/proto/quorumlite.proto and libSQL's replication protocol
//! (client/proto/libsql/) with protox (pure Rust: no system protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/quorumlite.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    let libsql = protox::compile(
        ["replication_log.proto", "proxy.proto", "metadata.proto"],
        ["proto/libsql"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(libsql)?;
    Ok(())
}
