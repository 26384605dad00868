//! `berth-awsvpc` CNI plugin binary: reads `CNI_*` variables and the network
//! config from stdin, runs [`berth_cni::awsvpc::run`], prints its answer.

use std::io::{Read, Write};

fn main() {
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
        Ok(_) => berth_cni::awsvpc::run(&vars, &stdin),
        Err(e) => berth_cni::awsvpc::Outcome {
            stdout: berth_cni::spec::CniError::new(
                berth_cni::spec::code::IO_FAILURE,
                format!("reading stdin: {e}"),
            )
            .to_json("1.0.0"),
            exit_code: 1,
        },
    };
    let mut out = std::io::stdout();
    // Nothing useful can be done if stdout is gone; the exit code still tells.
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    std::process::exit(outcome.exit_code);
}
