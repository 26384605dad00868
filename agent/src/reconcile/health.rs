//! Container health checks, the pure half: a definition's `healthCheck` turned
//! into a [`HealthConfig`] (argv and ECS defaults), and the state machine that
//! turns one check's result into the container's health ([`next`]). The
//! driver's checker task runs the checks through `Runtime::exec`.
//!
//! Semantics follow Docker's (which ECS's agent uses):
//! - the first check runs `interval` after the container starts, then one
//!   `interval` after each check finishes;
//! - a pass makes the container HEALTHY and resets the failure streak;
//! - a failure (non-zero exit, timeout, a command that cannot be started)
//!   adds to the streak; `retries` consecutive failures make it UNHEALTHY;
//! - within `startPeriod` of the start, failures do not count while the
//!   container has not yet been healthy (once it has, they count as usual);
//! - a check the agent could not run at all (containerd unreachable) changes
//!   nothing.

use std::time::Duration;

use berth_api::{HealthCheck, HealthStatus};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    #[error("healthCheck command is empty")]
    EmptyCommand,
    #[error("healthCheck command must start with CMD or CMD-SHELL, not {0:?}")]
    UnknownForm(String),
    #[error("healthCheck {0} has nothing to run")]
    MissingArgs(&'static str),
}

/// A health check ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// ECS's defaults and allowed ranges, in seconds: (default, min, max).
const INTERVAL: (u32, u32, u32) = (30, 5, 300);
const TIMEOUT: (u32, u32, u32) = (5, 2, 120);
const RETRIES: (u32, u32, u32) = (3, 1, 10);
const START_PERIOD: (u32, u32, u32) = (0, 0, 300);

fn bounded(value: Option<u32>, (default, min, max): (u32, u32, u32)) -> u32 {
    value.unwrap_or(default).clamp(min, max)
}

impl HealthConfig {
    /// `["CMD-SHELL", "cmd"]` runs `/bin/sh -c cmd`; `["CMD", exe, args...]`
    /// runs exe directly; `["NONE"]` disables the check (`Ok(None)`). Values
    /// outside ECS's ranges (which ECS refuses at registration) are clamped.
    pub fn from_check(check: &HealthCheck) -> Result<Option<HealthConfig>, HealthError> {
        let (form, rest) = check
            .command
            .split_first()
            .ok_or(HealthError::EmptyCommand)?;
        let argv = match form.as_str() {
            "NONE" => return Ok(None),
            "CMD-SHELL" => {
                if rest.is_empty() || rest.iter().all(|s| s.trim().is_empty()) {
                    return Err(HealthError::MissingArgs("CMD-SHELL"));
                }
                vec!["/bin/sh".to_string(), "-c".to_string(), rest.join(" ")]
            }
            "CMD" => {
                if rest.first().is_none_or(|s| s.is_empty()) {
                    return Err(HealthError::MissingArgs("CMD"));
                }
                rest.to_vec()
            }
            other => return Err(HealthError::UnknownForm(other.to_string())),
        };
        let secs = |v, range| Duration::from_secs(u64::from(bounded(v, range)));
        Ok(Some(HealthConfig {
            argv,
            interval: secs(check.interval, INTERVAL),
            timeout: secs(check.timeout, TIMEOUT),
            retries: bounded(check.retries, RETRIES),
            start_period: secs(check.start_period, START_PERIOD),
        }))
    }
}

/// What one check amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    Pass,
    /// Non-zero exit, timeout, or the command could not be started.
    Fail,
    /// The agent could not run the check (containerd unreachable): no verdict.
    Skipped,
}

/// A container's health and its current failure streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthState {
    pub status: HealthStatus,
    pub failures: u32,
}

/// The container's health after one check that finished `since_start` after
/// the container started (or its checker was started, after an agent restart).
pub fn next(
    state: HealthState,
    result: CheckResult,
    since_start: Duration,
    cfg: &HealthConfig,
) -> HealthState {
    match result {
        CheckResult::Skipped => state,
        CheckResult::Pass => HealthState {
            status: HealthStatus::Healthy,
            failures: 0,
        },
        CheckResult::Fail
            if since_start < cfg.start_period && state.status == HealthStatus::Unknown =>
        {
            state
        }
        CheckResult::Fail => {
            let failures = state.failures.saturating_add(1);
            HealthState {
                status: if failures >= cfg.retries {
                    HealthStatus::Unhealthy
                } else {
                    state.status
                },
                failures,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::{Healthy, Unhealthy, Unknown};

    fn check(command: &[&str]) -> HealthCheck {
        HealthCheck {
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn from_check_table() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        type Argv = Result<Option<Vec<String>>, HealthError>;
        let cases: Vec<(&str, HealthCheck, Argv)> = vec![
            (
                "shell",
                check(&["CMD-SHELL", "test -f /tmp/ok"]),
                Ok(Some(s(&["/bin/sh", "-c", "test -f /tmp/ok"]))),
            ),
            (
                "shell, split words joined",
                check(&["CMD-SHELL", "curl", "-f", "localhost"]),
                Ok(Some(s(&["/bin/sh", "-c", "curl -f localhost"]))),
            ),
            (
                "exec form",
                check(&["CMD", "/bin/true", "x"]),
                Ok(Some(s(&["/bin/true", "x"]))),
            ),
            ("none", check(&["NONE"]), Ok(None)),
            ("empty", check(&[]), Err(HealthError::EmptyCommand)),
            (
                "bare argv",
                check(&["curl", "-f"]),
                Err(HealthError::UnknownForm("curl".into())),
            ),
            (
                "shell without command",
                check(&["CMD-SHELL", " "]),
                Err(HealthError::MissingArgs("CMD-SHELL")),
            ),
            (
                "cmd without exe",
                check(&["CMD"]),
                Err(HealthError::MissingArgs("CMD")),
            ),
        ];
        for (name, input, want) in cases {
            let got = HealthConfig::from_check(&input).map(|c| c.map(|c| c.argv));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn defaults_and_clamping() {
        let cfg = HealthConfig::from_check(&check(&["CMD", "true"]))
            .expect("valid")
            .expect("enabled");
        assert_eq!(
            (cfg.interval, cfg.timeout, cfg.retries, cfg.start_period),
            (
                Duration::from_secs(30),
                Duration::from_secs(5),
                3,
                Duration::ZERO
            )
        );
        let wild = HealthCheck {
            command: vec!["CMD".into(), "true".into()],
            interval: Some(1),
            timeout: Some(1000),
            retries: Some(0),
            start_period: Some(9999),
        };
        let cfg = HealthConfig::from_check(&wild)
            .expect("valid")
            .expect("enabled");
        assert_eq!(
            (cfg.interval, cfg.timeout, cfg.retries, cfg.start_period),
            (
                Duration::from_secs(5),
                Duration::from_secs(120),
                1,
                Duration::from_secs(300)
            )
        );
    }

    #[test]
    fn next_table() {
        let cfg = HealthConfig {
            argv: vec!["true".into()],
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            retries: 2,
            start_period: Duration::from_secs(20),
        };
        let st = |status, failures| HealthState { status, failures };
        let early = Duration::from_secs(10);
        let late = Duration::from_secs(30);
        use CheckResult::{Fail, Pass, Skipped};
        let cases = [
            (
                "pass makes healthy",
                st(Unknown, 0),
                Pass,
                late,
                st(Healthy, 0),
            ),
            (
                "pass in start period",
                st(Unknown, 0),
                Pass,
                early,
                st(Healthy, 0),
            ),
            (
                "pass resets the streak",
                st(Healthy, 1),
                Pass,
                late,
                st(Healthy, 0),
            ),
            (
                "pass recovers",
                st(Unhealthy, 5),
                Pass,
                late,
                st(Healthy, 0),
            ),
            ("first failure", st(Unknown, 0), Fail, late, st(Unknown, 1)),
            (
                "retries reached",
                st(Unknown, 1),
                Fail,
                late,
                st(Unhealthy, 2),
            ),
            (
                "healthy, one failure",
                st(Healthy, 0),
                Fail,
                late,
                st(Healthy, 1),
            ),
            (
                "healthy, retries reached",
                st(Healthy, 1),
                Fail,
                late,
                st(Unhealthy, 2),
            ),
            (
                "stays unhealthy",
                st(Unhealthy, 2),
                Fail,
                late,
                st(Unhealthy, 3),
            ),
            (
                "start period ignores failures",
                st(Unknown, 0),
                Fail,
                early,
                st(Unknown, 0),
            ),
            (
                "start period, already healthy",
                st(Healthy, 1),
                Fail,
                early,
                st(Unhealthy, 2),
            ),
            (
                "skipped changes nothing",
                st(Healthy, 1),
                Skipped,
                late,
                st(Healthy, 1),
            ),
            (
                "skipped when unknown",
                st(Unknown, 1),
                Skipped,
                late,
                st(Unknown, 1),
            ),
        ];
        for (name, state, result, since, want) in cases {
            assert_eq!(next(state, result, since, &cfg), want, "{name}");
        }
        let boundary = Duration::from_secs(20);
        assert_eq!(
            next(st(Unknown, 1), Fail, boundary, &cfg),
            st(Unhealthy, 2),
            "the start period is half-open"
        );
    }
}
