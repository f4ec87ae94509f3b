//! The mesh's certificates, made per scenario with `openssl` as Istio's CA
//! would issue them: a root, and one workload certificate per pod whose SAN
//! is the pod's SPIFFE identity (the server's also carries its DNS name and
//! IP). Both sides present theirs and check the other's (mTLS).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// A workload's certificate and key, and the root that signed every one.
pub(crate) struct Identity {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
    /// `spiffe://cluster.local/ns/NAMESPACE/sa/POD`, what the peer checks.
    pub(crate) spiffe: String,
}

pub(crate) struct MeshCerts {
    pub(crate) client: Identity,
    pub(crate) server: Identity,
}

/// SPIFFE identity of `pod` in `namespace` (service account = pod name here).
pub(crate) fn spiffe(namespace: &str, pod: &str) -> String {
    format!("spiffe://cluster.local/ns/{namespace}/sa/{pod}")
}

/// Makes a root and the client (`client_pod`) and server (`server_pod`, at
/// `server_ip`) certificates in `dir`, readable by the sidecar user.
pub(crate) fn make(
    dir: &Path,
    namespace: &str,
    client_pod: &str,
    server_pod: &str,
    server_ip: &str,
) -> Result<MeshCerts> {
    std::fs::create_dir_all(dir)?;
    let ca = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/O=cluster.local/CN=lab root CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        path(&ca_key),
        "-out",
        path(&ca),
    ])?;
    let leaf = |pod: &str, sans: &str| -> Result<Identity> {
        let key = dir.join(format!("{pod}.key"));
        let csr = dir.join(format!("{pod}.csr"));
        let cert = dir.join(format!("{pod}.crt"));
        let ext = dir.join(format!("{pod}.ext"));
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/O=cluster.local/CN={pod}"),
            "-keyout",
            path(&key),
            "-out",
            path(&csr),
        ])?;
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth,clientAuth\n\
                 subjectAltName={sans}\n"
            ),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            path(&csr),
            "-CA",
            path(&ca),
            "-CAkey",
            path(&ca_key),
            "-CAcreateserial",
            "-extfile",
            path(&ext),
            "-out",
            path(&cert),
        ])?;
        // Envoy runs as the sidecar user (uid 1337): it must read its key.
        readable_by_sidecar(&key)?;
        Ok(Identity {
            cert,
            key,
            ca: ca.clone(),
            spiffe: spiffe(namespace, pod),
        })
    };
    let client = leaf(
        client_pod,
        &format!("URI:{}", spiffe(namespace, client_pod)),
    )?;
    let server = leaf(
        server_pod,
        &format!(
            "URI:{},DNS:{server_pod}.{namespace}.svc.cluster.local,IP:{server_ip}",
            spiffe(namespace, server_pod)
        ),
    )?;
    Ok(MeshCerts { client, server })
}

fn path(p: &Path) -> &str {
    p.to_str().expect("lab paths are UTF-8")
}

fn readable_by_sidecar(key: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(key, Some(1337), Some(1337)).context("chown of a key to 1337")?;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o400))?;
    Ok(())
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl (run `cargo xtask setup`)")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
