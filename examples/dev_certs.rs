//! # dev_certs: a development CA and node certificates, as PEM files
//!
//! For running the examples on several machines or containers, where the
//! nodes cannot share the temp-directory development CA:
//!
//! ```sh
//! cargo run --example dev_certs -- --ca-dir deploy/ca --out deploy/certs kv1 kv2 kv3
//! cargo run --example dev_certs -- --ca-dir deploy/ca --out deploy/certs kv4   # later: same CA
//! ```
//!
//! keeps the CA in `--ca-dir` (`ca.crt` and `ca.key`, created on first use
//! and reused after, so that a node added later is trusted by the others;
//! without `--ca-dir`, in `--out`) and writes to `--out`, per node id,
//! `<id>.crt` and `<id>.key` (a certificate whose DNS name is the node id,
//! issued by the CA), and a copy of `ca.crt`. Pass them to a node with
//! `--cert <id>.crt --key <id>.key --ca ca.crt`; `ca.key` stays with whoever
//! issues certificates: keep `--ca-dir` apart from what is mounted on the
//! nodes. Private keys are written readable by
//! their owner only (0600 on Unix). **Development only**: nothing here is fit
//! for production (issue node certificates from your own CA).

use std::path::{Path, PathBuf};

use clap::Parser;
use footlight::remote::transport::tls::DevCa;

/// Writes a development CA (or reuses the one in `--out`) and node
/// certificates as PEM files.
#[derive(Parser)]
struct Cli {
    /// Directory to write the node certificates into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Where the CA is kept (created if missing); a CA already there
    /// (`ca.crt` and `ca.key`) issues the new certificates. Default: `--out`.
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// The cluster name (shown in the CA's name).
    #[arg(long, default_value = "footlight")]
    cluster: String,
    /// Node ids to issue certificates for.
    #[arg(required = true)]
    nodes: Vec<String>,
}

/// Writes `contents` to `path`, readable by its owner only when `private`.
fn write(path: &Path, contents: &str, private: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path)?;
    std::io::Write::write_all(&mut file, contents.as_bytes())?;
    // A file that existed keeps its mode through `open`: set it again.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.out)?;
    let ca_dir = cli.ca_dir.clone().unwrap_or_else(|| cli.out.clone());
    std::fs::create_dir_all(&ca_dir)?;
    let (ca_crt, ca_key) = (ca_dir.join("ca.crt"), ca_dir.join("ca.key"));
    let ca = if ca_crt.exists() && ca_key.exists() {
        let ca = DevCa::from_pem(&cli.cluster, &std::fs::read_to_string(&ca_crt)?, &std::fs::read_to_string(&ca_key)?)
            .map_err(|e| format!("the CA in {} does not load: {e}", ca_dir.display()))?;
        println!("issuing from the CA in {}", ca_dir.display());
        ca
    } else {
        let ca = DevCa::generate(&cli.cluster)?;
        write(&ca_crt, &ca.ca_pem(), false)?;
        write(&ca_key, &ca.key_pem(), true)?;
        println!("created a CA in {} (keep ca.key off the nodes)", ca_dir.display());
        ca
    };
    if ca_dir != cli.out {
        write(&cli.out.join("ca.crt"), &ca.ca_pem(), false)?;
    }
    for node in &cli.nodes {
        let (cert, key) = ca.issue_pem(node)?;
        write(&cli.out.join(format!("{node}.crt")), &cert, false)?;
        write(&cli.out.join(format!("{node}.key")), &key, true)?;
    }
    println!("wrote {} node certificates to {}", cli.nodes.len(), cli.out.display());
    Ok(())
}
