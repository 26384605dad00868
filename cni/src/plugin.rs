//! The skeleton every Berth CNI plugin shares: [`run`] turns the `CNI_*`
//! variables and stdin into one answer (VERSION, environment and config
//! checks, dispatch of ADD/DEL/CHECK, CNI JSON errors in the caller's
//! version), and [`main`] is the whole body of a plugin binary.

use std::collections::HashMap;
use std::io::{Read, Write};

use crate::spec::{self, code, CniError, CniResult, Command, RuntimeEnv};

/// Output of one plugin invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

/// A usable interface name (1-15 bytes, no `/`, space or `:`).
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty() && s.len() <= 15 && !s.contains(['/', ' ', ':']) && s != "." && s != ".."
}

/// One plugin's operations on its validated network config `N`.
pub struct Plugin<N, E> {
    /// For logs, e.g. `berth-bridge`.
    pub name: &'static str,
    /// Parse and validate stdin (codes 1, 6, 7 as the spec says).
    pub parse: fn(&[u8]) -> Result<N, CniError>,
    /// The config's `cniVersion` (results are printed in it).
    pub cni_version: fn(&N) -> &str,
    pub add: fn(&N, &RuntimeEnv) -> Result<CniResult, E>,
    pub del: fn(&N, &RuntimeEnv) -> Result<(), E>,
    pub check: fn(&N, &RuntimeEnv) -> Result<(), E>,
    /// The CNI error (with its code) for a failed operation.
    pub to_cni: fn(&E) -> CniError,
}

/// Runs one invocation of `plugin`.
pub fn run<N, E: std::fmt::Display>(
    plugin: &Plugin<N, E>,
    vars: &HashMap<String, String>,
    stdin: &[u8],
) -> Outcome {
    let version_hint = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .filter(|v| spec::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.0.0".to_string());
    let fail = |e: CniError| Outcome {
        stdout: e.to_json(&version_hint),
        exit_code: 1,
    };
    let env = match RuntimeEnv::from_vars(vars) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    if env.command == Command::Version {
        return Outcome {
            stdout: spec::version_json(&version_hint),
            exit_code: 0,
        };
    }
    if !valid_ifname(&env.ifname) {
        return fail(CniError::new(
            code::INVALID_ENV,
            format!("invalid CNI_IFNAME {:?}", env.ifname),
        ));
    }
    let net = match (plugin.parse)(stdin) {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    let result = match env.command {
        Command::Add => (plugin.add)(&net, &env).map(|r| {
            serde_json::to_string(&r.for_version((plugin.cni_version)(&net))).unwrap_or_default()
        }),
        Command::Del => (plugin.del)(&net, &env).map(|()| String::new()),
        Command::Check => (plugin.check)(&net, &env).map(|()| String::new()),
        Command::Version => Ok(String::new()),
    };
    match result {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
        },
        Err(e) => {
            tracing::warn!(plugin = plugin.name, error = %e, "plugin failed");
            fail((plugin.to_cni)(&e))
        }
    }
}

/// A plugin binary: logs to stderr (`BERTH_CNI_LOG`, default warn), reads
/// the environment and stdin, prints `run`'s answer, exits with its code.
pub fn main(run: fn(&HashMap<String, String>, &[u8]) -> Outcome) -> ! {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_CNI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let vars = std::env::vars().collect();
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(&vars, &stdin),
        Err(e) => Outcome {
            stdout: CniError::new(code::IO_FAILURE, format!("reading stdin: {e}")).to_json("1.0.0"),
            exit_code: 1,
        },
    };
    let mut out = std::io::stdout();
    // Nothing useful can be done if stdout is gone; the exit code still tells.
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    std::process::exit(outcome.exit_code);
}
