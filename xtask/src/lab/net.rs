//! Pods as network namespaces on a bridge (inside a namespace of its own,
//! so the host's network is left alone). Removed on drop.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `cmd` inside network namespace `netns`.
pub fn netns_exec(netns: &str, cmd: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(cmd)
        .output()?;
    if !out.status.success() {
        bail!(
            "{} in {netns}: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub struct Pod {
    pub netns: String,
    pub ip: String,
    pub veth: String,
}

/// `NAMESPACE.frontend` and `NAMESPACE.cart` on one bridge, 10.213.N.0/24.
pub struct Network {
    pub switch: String,
    pub frontend: Pod,
    pub cart: Pod,
    /// Pods added with `add_pod`.
    pub extra: Vec<Pod>,
    namespace: String,
    subnet: u8,
}

impl Network {
    pub fn new(namespace: &str, subnet: u8) -> Result<Self> {
        let switch = format!("{namespace}-switch");
        let _ = Command::new("ip").args(["netns", "del", &switch]).output();
        ip(&["netns", "add", &switch])?;
        let net = Network {
            switch: switch.clone(),
            frontend: Pod {
                netns: format!("{namespace}.frontend"),
                ip: format!("10.213.{subnet}.10"),
                veth: "eth0".into(),
            },
            cart: Pod {
                netns: format!("{namespace}.cart"),
                ip: format!("10.213.{subnet}.20"),
                veth: "eth0".into(),
            },
            extra: Vec::new(),
            namespace: namespace.to_owned(),
            subnet,
        };
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for (i, pod) in [&net.frontend, &net.cart].into_iter().enumerate() {
            plug(&switch, pod, i)?;
        }
        Ok(net)
    }

    /// Another pod `NAMESPACE.name` at 10.213.N.`host`.
    pub fn add_pod(&mut self, name: &str, host: u8) -> Result<Pod> {
        let pod = Pod {
            netns: format!("{}.{name}", self.namespace),
            ip: format!("10.213.{}.{host}", self.subnet),
            veth: "eth0".into(),
        };
        plug(&self.switch, &pod, 2 + self.extra.len())?;
        self.extra.push(Pod {
            netns: pod.netns.clone(),
            ip: pod.ip.clone(),
            veth: pod.veth.clone(),
        });
        Ok(pod)
    }

    /// Istio's inbound capture: TCP arriving for `port` goes to the sidecar's `to`.
    pub fn redirect_inbound(&self, pod: &Pod, port: u16, to: u16) -> Result<()> {
        netns_exec(
            &pod.netns,
            &[
                "iptables",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                &pod.veth,
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "-j",
                "REDIRECT",
                "--to-ports",
                &to.to_string(),
            ],
        )
    }
}

/// Creates the pod's namespace and plugs it into the bridge as port `p{index}`.
fn plug(switch: &str, pod: &Pod, index: usize) -> Result<()> {
    let _ = Command::new("ip")
        .args(["netns", "del", &pod.netns])
        .output();
    ip(&["netns", "add", &pod.netns])?;
    let port = format!("p{index}");
    ip(&[
        "-n", switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
        &pod.netns,
    ])?;
    ip(&["-n", switch, "link", "set", &port, "master", "br0", "up"])?;
    ip(&[
        "-n",
        &pod.netns,
        "addr",
        "add",
        &format!("{}/24", pod.ip),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", &pod.netns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &pod.netns, "link", "set", "lo", "up"])
}

impl Drop for Network {
    fn drop(&mut self) {
        let extra = self.extra.iter().map(|p| &p.netns);
        for ns in [&self.frontend.netns, &self.cart.netns]
            .into_iter()
            .chain(extra)
            .chain([&self.switch])
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
    }
}
