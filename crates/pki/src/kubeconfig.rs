//! Admin kubeconfig files, laid out as k3s's `k3s.yaml`.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::error::Result;
use crate::fsutil::{self, PRIVATE};

/// Renders a kubeconfig with one cluster, user and context, all called
/// `name`, embedding the CA and client credentials as base64 PEM.
pub fn render_kubeconfig(
    server_url: &str,
    ca_pem: &str,
    client_cert_pem: &str,
    client_key_pem: &str,
    name: &str,
) -> String {
    let name = yaml_scalar(name);
    format!(
        "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: {name}
contexts:
- context:
    cluster: {name}
    user: {name}
  name: {name}
current-context: {name}
kind: Config
preferences: {{}}
users:
- name: {name}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
",
        ca = STANDARD.encode(ca_pem),
        server = yaml_scalar(server_url),
        cert = STANDARD.encode(client_cert_pem),
        key = STANDARD.encode(client_key_pem),
    )
}

/// Writes [`render_kubeconfig`]'s output to `path` with mode 0600, through a
/// temporary file and a rename so that a running `kubectl` never reads half a
/// file. k3s names cluster, user and context `default`.
pub fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    client_cert_pem: &str,
    client_key_pem: &str,
    name: &str,
) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsutil::create_private_dir(parent)?;
    }
    let text = render_kubeconfig(server_url, ca_pem, client_cert_pem, client_key_pem, name);
    fsutil::write_atomic(path, text.as_bytes(), PRIVATE)
}

/// `s` as a YAML scalar: plain when that reads back as the same string,
/// double-quoted otherwise.
fn yaml_scalar(s: &str) -> String {
    const RESERVED: [&str; 12] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "", "-",
    ];
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:/@[]%+=~".contains(c))
        && !s.ends_with(':')
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn renders_k3s_layout() {
        let text = render_kubeconfig("https://127.0.0.1:6443", "CA", "CERT", "KEY", "default");
        assert_eq!(
            text,
            "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
"
        );
    }

    #[test]
    fn quotes_names_that_are_not_plain_strings() {
        assert_eq!(yaml_scalar("https://[::1]:6443"), "https://[::1]:6443");
        assert_eq!(yaml_scalar("yes"), "\"yes\"");
        assert_eq!(yaml_scalar("123"), "\"123\"");
        assert_eq!(yaml_scalar("a b#c"), "\"a b#c\"");
        assert_eq!(yaml_scalar("x\"y"), "\"x\\\"y\"");
    }

    #[test]
    fn write_is_private_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kubeconfig.yaml");
        write_kubeconfig(&path, "https://localhost:6443", "a", "b", "c", "default").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_kubeconfig(&path, "https://localhost:7443", "a", "b", "c", "default").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("server: https://localhost:7443\n"));
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("kubeconfig.yaml")]);
    }
}
