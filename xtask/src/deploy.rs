//! `cargo xtask deploy`: checks `deploy/` with the real tools, as far as a
//! machine without a cluster allows — manifests against the Kubernetes
//! schemas of the last three minors (`kubernetes-validate --strict`), the
//! alert rules with `promtool check rules` and `promtool test rules`, the
//! scrape config with `promtool check config`, the Operator's PrometheusRule
//! equal to the plain rules file, every kustomization's resources present,
//! and the Dockerfile linted (`hadolint`; no container engine runs here).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_yaml::Value;

/// The Kubernetes minors the manifests must validate against.
const KUBERNETES_VERSIONS: [&str; 3] = ["1.35.0", "1.36.0", "1.37.0"];

struct Check {
    name: &'static str,
    run: fn(&Path) -> Result<String>,
}

const CHECKS: &[Check] = &[
    Check {
        name: "manifests validate (strict) against Kubernetes 1.35, 1.36, 1.37",
        run: manifests_validate,
    },
    Check {
        name: "kustomizations list only files that exist",
        run: kustomizations_resolve,
    },
    Check {
        name: "promtool check rules",
        run: |deploy| promtool(deploy, &["check", "rules", "prometheus/rules.yml"]),
    },
    Check {
        name: "promtool test rules (each alert firing and not firing)",
        run: |deploy| promtool(deploy, &["test", "rules", "prometheus/rules_test.yml"]),
    },
    Check {
        name: "the PrometheusRule holds exactly the rules file's groups",
        run: operator_rules_match,
    },
    Check {
        name: "promtool check config (scrape config)",
        run: scrape_config,
    },
    Check {
        name: "hadolint Dockerfile",
        run: |deploy| {
            let hadolint = crate::setup::python_script("hadolint")
                .map_or_else(|| "hadolint".to_owned(), |p| p.display().to_string());
            run(deploy, &hadolint, &["Dockerfile"]).map(|_| "clean".to_owned())
        },
    },
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Runs every check; returns (passed, failed).
pub fn check() -> Result<(usize, usize)> {
    let deploy = deploy_dir();
    let (mut passed, mut failed) = (0, 0);
    for check in CHECKS {
        match (check.run)(&deploy) {
            Ok(detail) => {
                passed += 1;
                println!("deploy: {} ... ok ({detail})", check.name);
            }
            Err(e) => {
                failed += 1;
                println!("deploy: {} ... FAILED: {e:#}", check.name);
            }
        }
    }
    println!("deploy: {passed} passed, {failed} failed");
    Ok((passed, failed))
}

fn run(deploy: &Path, program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(deploy)
        .output()
        .with_context(|| format!("running {program} (cargo xtask setup installs it)"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), text.trim());
    }
    Ok(text)
}

fn promtool(deploy: &Path, args: &[&str]) -> Result<String> {
    let text = run(deploy, "promtool", args)?;
    Ok(text
        .lines()
        .find(|l| l.contains("SUCCESS"))
        .unwrap_or("SUCCESS")
        .trim()
        .to_owned())
}

/// The plain Kubernetes manifests (the Operator's kinds have no schema there).
fn manifests(deploy: &Path) -> Result<Vec<String>> {
    let mut files: Vec<String> = std::fs::read_dir(deploy.join("base"))?
        .flatten()
        .map(|e| format!("base/{}", e.file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    Ok(files)
}

fn manifests_validate(deploy: &Path) -> Result<String> {
    let files = manifests(deploy)?;
    for version in KUBERNETES_VERSIONS {
        let mut args = vec![
            "-m",
            "kubernetes_validate",
            "--strict",
            "--quiet",
            "-k",
            version,
        ];
        args.extend(files.iter().map(String::as_str));
        run(deploy, "python3", &args)?;
    }
    Ok(format!(
        "{} files × {} versions",
        files.len(),
        KUBERNETES_VERSIONS.len()
    ))
}

fn yaml(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn kustomizations_resolve(deploy: &Path) -> Result<String> {
    let mut count = 0;
    for dir in [deploy.to_owned(), deploy.join("prometheus-operator")] {
        let k = yaml(&dir.join("kustomization.yaml"))?;
        let resources = k["resources"]
            .as_sequence()
            .context("kustomization without resources")?;
        for r in resources {
            let r = r.as_str().context("resource is not a path")?;
            let path = dir.join(r);
            let exists = if r.ends_with('/') || path.is_dir() {
                path.join("kustomization.yaml").is_file()
            } else {
                path.is_file()
            };
            if !exists {
                bail!("{} lists {r}, which is not there", dir.display());
            }
            count += 1;
        }
    }
    Ok(format!("{count} resources"))
}

fn operator_rules_match(deploy: &Path) -> Result<String> {
    let plain = yaml(&deploy.join("prometheus/rules.yml"))?;
    let operator = yaml(&deploy.join("prometheus-operator/prometheusrule.yaml"))?;
    if operator["kind"] != "PrometheusRule" {
        bail!("prometheusrule.yaml is not a PrometheusRule");
    }
    if plain["groups"] != operator["spec"]["groups"] {
        bail!(
            "the groups differ: regenerate deploy/prometheus-operator/prometheusrule.yaml from deploy/prometheus/rules.yml"
        );
    }
    let alerts = plain["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|g| g["rules"].as_sequence())
        .flatten()
        .count();
    Ok(format!("{alerts} rules"))
}

/// Debian's Prometheus is built without Kubernetes service discovery, so the
/// shipped config is checked with its `kubernetes_sd_configs` replaced by a
/// static target; everything else (relabelling, rule files) as shipped.
fn scrape_config(deploy: &Path) -> Result<String> {
    let mut config = yaml(&deploy.join("prometheus/prometheus.yml"))?;
    let jobs = config["scrape_configs"]
        .as_sequence_mut()
        .context("no scrape_configs")?;
    for job in jobs.iter_mut() {
        let map = job.as_mapping_mut().context("scrape config is not a map")?;
        if map.remove("kubernetes_sd_configs").is_some() {
            map.insert(
                "static_configs".into(),
                serde_yaml::from_str("[{targets: ['127.0.0.1:9477']}]")?,
            );
        }
    }
    let dir = std::env::temp_dir().join(format!("conntracer-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        std::fs::copy(deploy.join("prometheus/rules.yml"), dir.join("rules.yml"))?;
        std::fs::write(dir.join("prometheus.yml"), serde_yaml::to_string(&config)?)?;
        promtool(&dir, &["check", "config", "prometheus.yml"])
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
