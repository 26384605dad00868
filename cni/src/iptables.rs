//! Outbound masquerade rules in a dedicated `nat` chain, driven through the
//! `iptables` binary. Each container's rule carries a comment naming it, so
//! removal deletes exactly that container's rules and nothing else.

use std::process::Command;

/// Errors from iptables invocations.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("running iptables {args:?}: {source}")]
    Spawn {
        args: Vec<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("iptables {args:?} exited with {status}: {stderr}")]
    Failed {
        args: Vec<String>,
        status: i32,
        stderr: String,
    },
}

/// The chain Berth keeps its masquerade rules in.
pub const CHAIN: &str = "BERTH-POSTROUTING";

fn run(args: &[&str]) -> Result<(bool, String, String), IptablesError> {
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|source| IptablesError::Spawn {
            args: owned,
            source,
        })?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn must(args: &[&str]) -> Result<String, IptablesError> {
    let (ok, stdout, stderr) = run(args)?;
    if ok {
        Ok(stdout)
    } else {
        Err(IptablesError::Failed {
            args: args.iter().map(|s| s.to_string()).collect(),
            status: -1,
            stderr: stderr.trim().to_string(),
        })
    }
}

/// The rule arguments (after `-A CHAIN`) masquerading traffic from
/// `source` to anywhere outside `subnet`.
fn masquerade(source: &str, subnet: &str, comment: &str) -> Vec<String> {
    [
        "-s",
        source,
        "!",
        "-d",
        subnet,
        "-m",
        "comment",
        "--comment",
        comment,
        "-j",
        "MASQUERADE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The rule arguments (after `-A CHAIN`) masquerading `ip`'s traffic that
/// leaves `subnet`.
pub fn masquerade_rule(ip: &str, subnet: &str, comment: &str) -> Vec<String> {
    masquerade(&format!("{ip}/32"), subnet, comment)
}

/// From `iptables -S CHAIN` output, the rule argument lists (without
/// `-A CHAIN`) whose comment is exactly `comment`.
pub fn rules_with_comment(listing: &str, chain: &str, comment: &str) -> Vec<Vec<String>> {
    let prefix = format!("-A {chain} ");
    listing
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            rest.split_whitespace()
                .map(|w| w.trim_matches('"').to_string())
                .collect::<Vec<_>>()
        })
        .filter(|words| {
            words
                .windows(2)
                .any(|w| w[0] == "--comment" && w[1] == comment)
        })
        .collect()
}

/// From `iptables -S CHAIN` output, the distinct comments that start with
/// `prefix`, in order of first appearance.
pub fn comments_in(listing: &str, chain: &str, prefix: &str) -> Vec<String> {
    let start = format!("-A {chain} ");
    let mut out: Vec<String> = Vec::new();
    for line in listing.lines().filter(|l| l.starts_with(&start)) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for w in words.windows(2) {
            if w[0] == "--comment" {
                let c = w[1].trim_matches('"');
                if c.starts_with(prefix) && !out.iter().any(|o| o == c) {
                    out.push(c.to_string());
                }
            }
        }
    }
    out
}

/// The distinct comments starting with `prefix` in Berth's chain. An absent
/// chain means none.
pub fn comments_with_prefix(prefix: &str) -> Result<Vec<String>, IptablesError> {
    let (ok, stdout, _) = run(&["-t", "nat", "-S", CHAIN])?;
    if !ok {
        return Ok(Vec::new());
    }
    Ok(comments_in(&stdout, CHAIN, prefix))
}

/// Ensures the chain exists, is jumped to from `POSTROUTING`, and holds the
/// masquerade rule for `ip`.
pub fn ensure_masquerade(ip: &str, subnet: &str, comment: &str) -> Result<(), IptablesError> {
    ensure_rule(&masquerade_rule(ip, subnet, comment))
}

/// The rule arguments (after `-A CHAIN`) masquerading traffic from anywhere
/// in `subnet` to anywhere outside it (a whole overlay network's egress).
pub fn subnet_masquerade_rule(subnet: &str, comment: &str) -> Vec<String> {
    masquerade(subnet, subnet, comment)
}

/// Ensures the chain exists, is jumped to from `POSTROUTING`, and holds
/// `rule` (arguments after `-A CHAIN`) exactly once.
pub fn ensure_rule(rule: &[String]) -> Result<(), IptablesError> {
    let (exists, listing, _) = run(&["-t", "nat", "-S", CHAIN])?;
    if !exists {
        let (created, _, stderr) = run(&["-t", "nat", "-N", CHAIN])?;
        // A concurrent ADD may have created it in between.
        if !created && !run(&["-t", "nat", "-S", CHAIN])?.0 {
            return Err(IptablesError::Failed {
                args: vec!["-N".into(), CHAIN.into()],
                status: -1,
                stderr,
            });
        }
    }
    if !run(&["-t", "nat", "-C", "POSTROUTING", "-j", CHAIN])?.0 {
        must(&["-t", "nat", "-A", "POSTROUTING", "-j", CHAIN])?;
    }
    let present = match listed(&listing, rule) {
        Some(known) => known,
        None => {
            let mut check: Vec<&str> = vec!["-t", "nat", "-C", CHAIN];
            check.extend(rule.iter().map(String::as_str));
            run(&check)?.0
        }
    };
    if !present {
        let mut add: Vec<&str> = vec!["-t", "nat", "-A", CHAIN];
        add.extend(rule.iter().map(String::as_str));
        must(&add)?;
    }
    Ok(())
}

/// Whether `rule` (arguments after `-A CHAIN`) is in `listing` (`iptables
/// -S CHAIN` output, empty when the chain was just made), when the listing
/// alone can tell: `Some(true)` when it shows the rule word for word,
/// `Some(false)` when no rule carries the rule's comment at all, `None`
/// otherwise (a rule with the comment that reads differently: ask
/// iptables `-C`). Spares ensuring a fresh rule one iptables run.
pub fn listed(listing: &str, rule: &[String]) -> Option<bool> {
    let comment = rule
        .windows(2)
        .find(|w| w[0] == "--comment")
        .map(|w| w[1].as_str())?;
    let same = rules_with_comment(listing, CHAIN, comment);
    if same.iter().any(|r| r == rule) {
        Some(true)
    } else if same.is_empty() {
        Some(false)
    } else {
        None
    }
}

/// Lists the rules carrying `comment`. An absent chain means none.
pub fn list_with_comment(comment: &str) -> Result<Vec<Vec<String>>, IptablesError> {
    let (ok, stdout, _) = run(&["-t", "nat", "-S", CHAIN])?;
    if !ok {
        return Ok(Vec::new());
    }
    Ok(rules_with_comment(&stdout, CHAIN, comment))
}

/// Deletes every rule carrying `comment`. Idempotent; returns how many were
/// removed.
pub fn remove_with_comment(comment: &str) -> Result<usize, IptablesError> {
    let rules = list_with_comment(comment)?;
    for rule in &rules {
        let mut del: Vec<&str> = vec!["-t", "nat", "-D", CHAIN];
        del.extend(rule.iter().map(String::as_str));
        must(&del)?;
    }
    Ok(rules.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_in_table() {
        let listing = "-N BERTH-POSTROUTING\n\
            -A BERTH-POSTROUTING -s 10.0.0.2/32 ! -d 10.0.0.0/24 -m comment --comment \"berth:n:a\" -j MASQUERADE\n\
            -A BERTH-POSTROUTING -s 10.0.0.3/32 ! -d 10.0.0.0/24 -m comment --comment \"berth:n:b\" -j MASQUERADE\n\
            -A BERTH-POSTROUTING -s 10.0.0.4/32 ! -d 10.0.0.0/24 -m comment --comment \"berth:n:a\" -j MASQUERADE\n\
            -A BERTH-POSTROUTING -s 10.1.0.2/32 ! -d 10.1.0.0/24 -m comment --comment \"berth:m:c\" -j MASQUERADE\n\
            -A OTHER -m comment --comment \"berth:n:z\" -j ACCEPT\n";
        let cases: &[(&str, &[&str])] = &[
            ("berth:n:", &["berth:n:a", "berth:n:b"]),
            ("berth:m:", &["berth:m:c"]),
            ("berth:", &["berth:n:a", "berth:n:b", "berth:m:c"]),
            ("berth:x:", &[]),
        ];
        for (prefix, want) in cases {
            assert_eq!(comments_in(listing, CHAIN, prefix), *want, "{prefix}");
        }
    }

    #[test]
    fn listed_table() {
        let listing = "-N BERTH-POSTROUTING\n\
            -A BERTH-POSTROUTING -s 10.0.0.2/32 ! -d 10.0.0.0/24 -m comment --comment \"berth:n:a\" -j MASQUERADE\n\
            -A BERTH-POSTROUTING -s 10.0.0.9/32 -m comment --comment \"berth:n:odd\" -j MASQUERADE\n\
            -A OTHER -m comment --comment \"berth:n:other\" -j ACCEPT\n";
        let cases: &[(Vec<String>, Option<bool>)] = &[
            (
                masquerade_rule("10.0.0.2", "10.0.0.0/24", "berth:n:a"),
                Some(true),
            ),
            (
                masquerade_rule("10.0.0.3", "10.0.0.0/24", "berth:n:b"),
                Some(false),
            ),
            // Only in another chain: not ours.
            (
                masquerade_rule("10.0.0.4", "10.0.0.0/24", "berth:n:other"),
                Some(false),
            ),
            // Same comment, different words: iptables must decide.
            (
                masquerade_rule("10.0.0.9", "10.0.0.0/24", "berth:n:odd"),
                None,
            ),
            (vec!["-j".into(), "MASQUERADE".into()], None),
        ];
        for (rule, want) in cases {
            assert_eq!(listed(listing, rule), *want, "{rule:?}");
        }
        assert_eq!(
            listed(
                "",
                &subnet_masquerade_rule("10.199.0.0/16", "berth-awsvpc:b")
            ),
            Some(false)
        );
    }

    #[test]
    fn rules_with_comment_table() {
        let listing = "-N BERTH-POSTROUTING\n\
            -A BERTH-POSTROUTING -s 10.0.0.2/32 ! -d 10.0.0.0/24 -m comment --comment \"berth:n:abc\" -j MASQUERADE\n\
            -A BERTH-POSTROUTING -s 10.0.0.3/32 ! -d 10.0.0.0/24 -m comment --comment \"berth:n:abcd\" -j MASQUERADE\n\
            -A OTHER -m comment --comment \"berth:n:abc\" -j ACCEPT\n";
        let cases: &[(&str, usize, Option<&str>)] = &[
            ("berth:n:abc", 1, Some("10.0.0.2/32")),
            ("berth:n:abcd", 1, Some("10.0.0.3/32")),
            ("berth:n:ab", 0, None),
            ("", 0, None),
        ];
        for (comment, n, src) in cases {
            let got = rules_with_comment(listing, CHAIN, comment);
            assert_eq!(got.len(), *n, "{comment}");
            if let Some(src) = src {
                assert_eq!(got[0][1], *src);
                assert_eq!(
                    got[0],
                    masquerade_rule(&src[..src.len() - 3], "10.0.0.0/24", comment)
                );
            }
        }
    }
}
