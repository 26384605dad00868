//! Every real-world task definition in `shared/corpus/ecs-taskdefs` (113
//! definitions written for Amazon ECS by others) passes `validate_register`,
//! and `render` returns every member that was sent, unchanged (deep subset
//! comparison: the response may add members, never change or drop one).

use std::path::{Path, PathBuf};

use berth_coordinator::taskdef::{containers_for_run, render, validate_register};
use serde_json::Value;

fn corpus_dir() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/corpus/ecs-taskdefs"
    ))
    .to_path_buf()
}

/// Paths where `got` does not contain `sent` unchanged.
fn subset_diffs(sent: &Value, got: &Value, path: &str, out: &mut Vec<String>) {
    let here = if path.is_empty() { "<root>" } else { path };
    match (sent, got) {
        (Value::Object(s), Value::Object(g)) => {
            for (k, v) in s {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match g.get(k) {
                    Some(gv) => subset_diffs(v, gv, &sub, out),
                    None => out.push(format!("{sub}: sent {v}, missing")),
                }
            }
        }
        (Value::Array(s), Value::Array(g)) => {
            if s.len() != g.len() {
                out.push(format!("{here}: sent {} items, got {}", s.len(), g.len()));
                return;
            }
            for (i, (sv, gv)) in s.iter().zip(g).enumerate() {
                subset_diffs(sv, gv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {
            if sent != got {
                out.push(format!("{here}: sent {sent}, got {got}"));
            }
        }
    }
}

#[test]
fn taskdef_subset_comparison_reports_what_differs() {
    use serde_json::json;
    let cases: Vec<(Value, Value, usize)> = vec![
        (json!({"a": 1}), json!({"a": 1, "b": 2}), 0),
        (json!({"a": 1}), json!({"a": 2}), 1),
        (
            json!({"a": [{"b": 1}]}),
            json!({"a": [{"b": 1, "c": 0}]}),
            0,
        ),
        (json!({"a": [1, 2]}), json!({"a": [2, 1]}), 2),
        (json!({"a": [1]}), json!({"a": []}), 1),
        (json!({"a": {"x": true}}), json!({}), 1),
        (json!({"a": 1}), json!({"a": "1"}), 1),
    ];
    for (sent, got, n) in cases {
        let mut diffs = Vec::new();
        subset_diffs(&sent, &got, "", &mut diffs);
        assert_eq!(diffs.len(), n, "{sent} vs {got}: {diffs:?}");
    }
}

#[test]
fn taskdef_corpus_registers_and_renders_unchanged() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        113,
        "expected 113 corpus files in {}",
        dir.display()
    );

    let mut failures = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let sent: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let reg = match validate_register(&sent) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: rejected: {e}"));
                continue;
            }
        };
        assert_eq!(Some(reg.family.as_str()), sent["family"].as_str(), "{name}");
        let arn = format!(
            "arn:aws:ecs:us-east-1:123456789012:task-definition/{}:1",
            reg.family
        );
        let rendered = render(
            &reg.definition,
            &arn,
            1,
            "ACTIVE",
            1_700_000_000.0,
            None,
            None,
        );
        let mut sent_without_tags = sent.clone();
        if let Value::Object(m) = &mut sent_without_tags {
            m.remove("tags");
        }
        let mut diffs = Vec::new();
        subset_diffs(&sent_without_tags, &rendered, "", &mut diffs);
        if !diffs.is_empty() {
            failures.push(format!("{name}: {}", diffs.join("; ")));
        }
        for key in [
            "taskDefinitionArn",
            "revision",
            "status",
            "registeredAt",
            "requiresAttributes",
            "compatibilities",
        ] {
            if rendered.get(key).is_none() {
                failures.push(format!("{name}: rendered definition lacks {key}"));
            }
        }
        // The stored definition also yields runnable containers.
        match containers_for_run(&reg.definition, None) {
            Ok((specs, req)) => {
                let sent_count = sent["containerDefinitions"].as_array().map_or(0, Vec::len);
                if specs.len() != sent_count {
                    failures.push(format!(
                        "{name}: {} container specs for {sent_count} containers",
                        specs.len()
                    ));
                }
                if req != reg.requirements {
                    failures.push(format!(
                        "{name}: requirements differ between registration and run"
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: containers_for_run: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// Every JSON path of a value (object keys and list indexes), depth first.
fn paths(v: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(PathStep::Key(k.clone()));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(PathStep::Index(i));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn at_mut<'a>(v: &'a mut Value, path: &[PathStep]) -> Option<&'a mut Value> {
    let mut cur = v;
    for step in path {
        cur = match step {
            PathStep::Key(k) => cur.get_mut(k.as_str())?,
            PathStep::Index(i) => cur.get_mut(*i)?,
        };
    }
    Some(cur)
}

/// Replacing any member of any corpus definition with a value of another type
/// or an extreme value never panics and never answers a server error: the
/// answer is a client-side exception, or an accepted definition that renders
/// and runs.
#[test]
fn taskdef_corpus_mutations_never_panic() {
    use berth_coordinator::error::ErrorKind;
    use serde_json::json;
    let replacements = [
        Value::Null,
        json!(0),
        json!(-1),
        json!(65536),
        json!(2147483648u64),
        json!(1.5),
        json!(""),
        json!("x"),
        json!(true),
        json!([]),
        json!({}),
        json!([null]),
        json!("a".repeat(300)),
    ];
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let (mut accepted, mut rejected) = (0usize, 0usize);
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
        let original: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let mut all = Vec::new();
        paths(&original, &mut Vec::new(), &mut all);
        for p in &all {
            for r in &replacements {
                let mut mutated = original.clone();
                if let Some(slot) = at_mut(&mut mutated, p) {
                    *slot = r.clone();
                }
                match validate_register(&mutated) {
                    Ok(reg) => {
                        accepted += 1;
                        let out = render(&reg.definition, "arn", 1, "ACTIVE", 0.0, None, None);
                        if !r.is_null()
                            && !matches!(p.first(), Some(PathStep::Key(k)) if k == "tags")
                        {
                            // What was accepted reads back unchanged.
                            let mut diffs = Vec::new();
                            subset_diffs(&mutated, &out, "", &mut diffs);
                            assert!(
                                diffs.is_empty(),
                                "{}: {p:?} = {r}: {diffs:?}",
                                path.display()
                            );
                        }
                        if let Err(e) = containers_for_run(&reg.definition, None) {
                            panic!(
                                "{}: {p:?} = {r}: accepted but not runnable: {e}",
                                path.display()
                            );
                        }
                    }
                    Err(e) => {
                        rejected += 1;
                        assert!(
                            matches!(
                                e.kind,
                                ErrorKind::ClientException
                                    | ErrorKind::InvalidParameterException
                                    | ErrorKind::SerializationException
                            ),
                            "{}: {p:?} = {r}: {e}",
                            path.display()
                        );
                    }
                }
            }
        }
    }
    assert!(
        accepted > 0 && rejected > 0,
        "accepted {accepted}, rejected {rejected}"
    );
}
