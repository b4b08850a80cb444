//! What `psk-edge up` prints once it serves: where each port is and how to try it.

use std::net::SocketAddr;
use std::path::Path;

use super::args::{DEMO_ACCOUNT, DEMO_ICCID, demo_psk};

pub(super) struct Banner<'a> {
    pub(super) data_dir: &'a Path,
    pub(super) sim_addr: SocketAddr,
    pub(super) admin_addr: SocketAddr,
    pub(super) operator_key: &'a str,
    pub(super) operator_file: Option<&'a Path>,
    pub(super) cert_path: &'a Path,
    pub(super) demo: bool,
    pub(super) broker: &'a str,
    pub(super) broker_endpoint: SocketAddr,
}

pub(super) fn print_banner(b: &Banner) {
    // A node listening on every address is still reached on loopback from this machine.
    let sim_host = if b.sim_addr.ip().is_unspecified() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        b.sim_addr.ip()
    };
    let sim_port = b.sim_addr.port();
    let secret_hint = match b.operator_file {
        Some(path) => format!("the text after ':' in {} (mode 0600)", path.display()),
        None => "from PSK_EDGE_OPERATOR_SECRET".into(),
    };
    println!("psk-edge");
    println!("  data directory  {}", b.data_dir.display());
    println!("  SIM port        {} (TLS 1.3 PSK-only)", b.sim_addr);
    println!(
        "  admin port      https://{} (certificate {})",
        b.admin_addr,
        b.cert_path.display()
    );
    println!("  operator key    {}", b.operator_key);
    println!("  operator secret {secret_hint}");
    println!("  MQTT broker     {}", b.broker);
    println!(
        "  broker endpoint http://{} (brokers ask here; key in {})",
        b.broker_endpoint,
        b.data_dir.join("broker.key").display()
    );
    if b.demo {
        let psk_hex = hex::encode(demo_psk());
        println!();
        println!(
            "Demo SIM {DEMO_ICCID} (account {DEMO_ACCOUNT}). Create a device and get its MQTT credentials:"
        );
        println!(
            "  printf 'POST /v1/dev/dev-1?iccid={DEMO_ICCID} HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n' | \\\n    openssl s_client -quiet -connect {sim_host}:{sim_port} -tls1_3 -psk_identity {DEMO_ICCID} -psk {psk_hex} -ciphersuites TLS_AES_128_CCM_SHA256"
        );
    }
    println!();
}
