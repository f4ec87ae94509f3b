//! The shell script the guest runs: the host's environment (the parts that
//! matter), the working directory and the command, quoted for sh.

use std::path::Path;

/// Passed into the guest when set on the host.
const ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
];

pub fn guest_script(argv: &[String], cwd: &Path) -> String {
    let mut script = String::from("# Written by cargo xtask vm.\n");
    let passed =
        std::env::vars().filter(|(k, _)| ENV.contains(&k.as_str()) || k.starts_with("CONNTRACER_"));
    for (key, value) in passed {
        script.push_str(&format!("export {key}={}\n", quote(&value)));
    }
    script.push_str(&format!(
        "cd {} || exit 125\n",
        quote(&cwd.to_string_lossy())
    ));
    let words: Vec<String> = argv.iter().map(|a| quote(a)).collect();
    script.push_str(&format!("exec {}\n", words.join(" ")));
    script
}

/// Single quotes, with each `'` written as `'\''`.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_survive_quoting() {
        let script = guest_script(&["echo".into(), "it's a $HOME".into()], Path::new("/w d"));
        assert!(script.contains("cd '/w d' || exit 125\n"));
        assert!(script.ends_with("exec 'echo' 'it'\\''s a $HOME'\n"));
    }
}
