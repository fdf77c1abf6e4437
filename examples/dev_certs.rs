//! # dev_certs: a development CA and node certificates, as PEM files
//!
//! For running the examples on several machines or containers, where the
//! nodes cannot share the temp-directory development CA:
//!
//! ```sh
//! cargo run --example dev_certs -- --out deploy/certs kv1 kv2 kv3
//! ```
//!
//! writes `ca.crt` and, per node id, `<id>.crt` and `<id>.key` (a certificate
//! whose DNS name is the node id, issued by the CA). Pass them to a node with
//! `--cert <id>.crt --key <id>.key --ca ca.crt`. **Development only**: the
//! CA's key is thrown away, and nothing here is fit for production.

use std::path::PathBuf;

use clap::Parser;
use footlight::remote::transport::tls::DevCa;

/// Writes a development CA and node certificates as PEM files.
#[derive(Parser)]
struct Cli {
    /// Directory to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// The cluster name (shown in the CA's name).
    #[arg(long, default_value = "footlight")]
    cluster: String,
    /// Node ids to issue certificates for.
    #[arg(required = true)]
    nodes: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.out)?;
    let ca = DevCa::generate(&cli.cluster)?;
    std::fs::write(cli.out.join("ca.crt"), ca.ca_pem())?;
    for node in &cli.nodes {
        let (cert, key) = ca.issue_pem(node)?;
        std::fs::write(cli.out.join(format!("{node}.crt")), cert)?;
        std::fs::write(cli.out.join(format!("{node}.key")), key)?;
    }
    println!("wrote ca.crt and {} node certificates to {}", cli.nodes.len(), cli.out.display());
    Ok(())
}
